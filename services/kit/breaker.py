"""A circuit breaker for calls to one dependency, safe to share between threads.

Closed: calls go through; `failures` consecutive failures open it. Open: calls are
refused at once until `reset_seconds` have passed; then exactly one caller is let
through as the probe (half-open) while the others are still refused. The probe's
success closes the circuit; its failure opens it for another interval.

Written here rather than taken from pybreaker: pybreaker 1.4 holds its lock for the
whole guarded call, which would serialise every concurrent model call in a process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._opened_at is None:
                return BreakerState.CLOSED
            if self._probe_out or self._clock() - self._opened_at >= self._reset_seconds:
                return BreakerState.HALF_OPEN
            return BreakerState.OPEN

    def try_acquire(self) -> bool:
        """May a call go ahead now? A True while open makes the caller the probe; it
        must report back with `record_success` or `record_failure`."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probe_out or self._clock() - self._opened_at < self._reset_seconds:
                return False
            self._probe_out = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._consecutive_failures = 0
            self._opened_at = None
            self._probe_out = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive_failures += 1
            if self._probe_out or self._consecutive_failures >= self._threshold:
                self._opened_at = self._clock()
            self._probe_out = False

    def release_probe(self) -> None:
        """The probe ended without a verdict on the dependency (the caller gave up)."""
        with self._lock:
            self._probe_out = False
