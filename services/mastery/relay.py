"""The outbox relay: publishes committed announcements in a thread of its own, so the
consumer goes on to its next batch while the broker acknowledges the last one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("learnflow.mastery.relay")

# Also drained this often unwoken: rows a crashed process or a failed send left behind.
INTERVAL_SECONDS = 1.0


class OutboxRelay:
    def __init__(self, drain: Callable[[], int], interval_seconds: float = INTERVAL_SECONDS):
        self._drain = drain
        self._interval = interval_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Something was committed to the outbox: send it now."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mastery-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after a last drain (what the stopping consumer committed goes out now,
        not when the next process starts)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._drain()
            except Exception:  # the rows stay; the next round sends them
                log.warning("outbox relay failed", exc_info=True)
                self._stop.wait(self._interval)
            if stopping:
                return
            self._wake.wait(self._interval)
            self._wake.clear()
