"""The history job: rebuilds the history of students a late event queued
(`history_pending`), off the ingestion path, in a thread of its own."""

from __future__ import annotations

import logging
import threading
import time

from services.mastery.engine import MasteryEngine

log = logging.getLogger("learnflow.mastery.history")

IDLE_SECONDS = 1.0
# While a backfill keeps the queue full, the job works at most this share of the time:
# it shares the process (and its GIL) with ingestion, which must keep up with live
# events. The queue only grows by students, so a backfill's history is late, never lost.
BUSY_SHARE = 0.1
# Students rebuilt per round. A round is a stretch of pure Python; while it runs, every
# consumer thread waits a whole switch interval (5 ms) each time it takes the GIL back
# from a Postgres round trip, so rounds are kept short (a few tens of ms).
ROUND_STUDENTS = 20


class HistoryJob:
    def __init__(
        self,
        engine: MasteryEngine,
        idle_seconds: float = IDLE_SECONDS,
        busy_share: float = BUSY_SHARE,
    ) -> None:
        self._engine = engine
        self._idle = idle_seconds
        self._rest_per_second = (1.0 - busy_share) / busy_share
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
            started = time.monotonic()
            try:
                rebuilt = self._engine.rebuild_history(ROUND_STUDENTS)
            except Exception:  # the queue stays; the next round takes it again
                log.warning("history rebuild failed", exc_info=True)
                rebuilt = 0
            if rebuilt:
                self._stop.wait((time.monotonic() - started) * self._rest_per_second)
            else:
                self._stop.wait(self._idle)
