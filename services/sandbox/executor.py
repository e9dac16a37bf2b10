"""Bounded concurrency in front of the isolation: at most `workers` programs run at once
and at most `queue_size` wait; beyond that a request is refused (RESOURCE_EXHAUSTED)
rather than queued without bound."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from services.kit.errors import DeadlineExceeded, ResourceExhausted
from services.sandbox.domain.limits import Limits
from services.sandbox.domain.precheck import PrecheckFailure, precheck
from services.sandbox.isolation.base import Isolation, RunResult


class SandboxExecutor:
    def __init__(self, isolation: Isolation, workers: int, queue_size: int) -> None:
        self.isolation = isolation
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._capacity = workers + queue_size
        self._admitted = 0

    def execute(
        self,
        code: str,
        stdin: str,
        limits: Limits,
        allowed_imports: Sequence[str] | None,
        wait_seconds: float | None,
    ) -> RunResult | PrecheckFailure:
        """Pre-check on the host, then run in isolation; a failed pre-check runs nothing."""
        failure = precheck(code, allowed_imports)
        if failure is not None:
            return failure
        with self._lock:
            if self._admitted >= self._capacity:
                raise ResourceExhausted(
                    f"the sandbox is busy ({self._capacity} programs running or waiting); retry",
                    metadata={"capacity": str(self._capacity)},
                )
            self._admitted += 1
        try:
            if not self._slots.acquire(timeout=wait_seconds):
                raise DeadlineExceeded("deadline passed while waiting for a sandbox slot")
            try:
                return self.isolation.run(code, stdin, limits)
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._admitted -= 1
