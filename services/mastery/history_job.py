"""The history job: rebuilds the history of students a late event queued
(`history_pending`), off the ingestion path, in a thread of its own."""

from __future__ import annotations

import logging
import threading

from services.mastery.engine import MasteryEngine

log = logging.getLogger("learnflow.mastery.history")

IDLE_SECONDS = 1.0


class HistoryJob:
    def __init__(self, engine: MasteryEngine, idle_seconds: float = IDLE_SECONDS) -> None:
        self._engine = engine
        self._idle = idle_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mastery-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rebuilt = self._engine.rebuild_history()
            except Exception:  # the queue stays; the next round takes it again
                log.warning("history rebuild failed", exc_info=True)
                rebuilt = 0
            if not rebuilt:
                self._stop.wait(self._idle)
