"""Bounded, fair concurrency in front of the isolation.

Three bounds, checked in this order for every program that passed the pre-check:

1. Fair share (per caller, keyed by the token's subject, across every replica through
   the kit's `Limiter`): a student may have `runs_per_user` programs running (default
   1), teachers and admins `runs_per_staff` (default 2). A program over that allowance
   waits up to `user_wait_seconds` for its owner's own slot, with at most as many of the
   owner's programs waiting as running; beyond that, or when the wait runs out, it is
   refused with RESOURCE_EXHAUSTED (reason RATE_LIMITED) and a RetryInfo saying when the
   owner's running program will have ended. The short wait serves the legitimate
   overlaps (a double-clicked Run, a concept example proven while the student's own run
   finishes; a graded submission runs its tests one after another, so it never competes
   with itself) without letting one student queue twenty loops. Waiting here comes
   before the shared queue, so a flood holds no slot and no queue place of anyone else.
   Services that call the sandbox for a student (exercise, debug, concepts) forward the
   student's token: their runs count towards that student's share.
2. Capacity: at most `workers` programs run at once and at most `queue_size` wait for a
   slot; beyond that a program is refused (RESOURCE_EXHAUSTED) rather than queued
   without bound.
3. Time: every wait is bounded. A call's deadline bounds it (DEADLINE_EXCEEDED when that
   is what ran out); a call without one (an internal caller that set none; the gateway
   gives every unary call one), or with a longer one, waits at most `max_wait_seconds`,
   then RESOURCE_EXHAUSTED with a RetryInfo.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from services.kit.auth import Principal, Role
from services.kit.errors import DeadlineExceeded, ResourceExhausted, TooManyRequests
from services.kit.limits import Lease, Limiter
from services.sandbox.domain.limits import Limits
from services.sandbox.domain.precheck import PrecheckFailure, precheck
from services.sandbox.isolation.base import Isolation, RunResult

# How often a program waiting for its owner's slot looks again (a release on this replica
# wakes it at once; one on another replica is seen within this interval).
POLL_SECONDS = 0.05
# The retry hint when no run to wait for is known here (another replica runs it): the
# longest a default program may hold its slot.
FALLBACK_RETRY_SECONDS = Limits().wall_seconds
# The retry hint for a busy sandbox when nothing runs here to time it by.
BUSY_RETRY_SECONDS = 1.0
MIN_RETRY_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class FairShare:
    """Per-caller allowances (SANDBOX_RUNS_PER_USER, SANDBOX_RUNS_PER_STAFF) and the wait
    for one's own slot (SANDBOX_USER_WAIT_SECONDS), on a limiter shared by the replicas."""

    limiter: Limiter
    runs_per_user: int = 1
    runs_per_staff: int = 2
    user_wait_seconds: float = 2.0

    def allowance(self, principal: Principal) -> int:
        if principal.role in (Role.TEACHER, Role.ADMIN):
            return self.runs_per_staff
        return self.runs_per_user


@dataclass(frozen=True, slots=True)
class _Budget:
    """When this request stops waiting, and whether its own deadline set that time."""

    until: float  # time.monotonic()
    deadline_bound: bool

    def left(self) -> float:
        return self.until - time.monotonic()


class SandboxExecutor:
    def __init__(
        self,
        isolation: Isolation,
        workers: int,
        queue_size: int,
        *,
        fair_share: FairShare | None = None,
        max_wait_seconds: float = 10.0,
    ) -> None:
        self.isolation = isolation
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._capacity = workers + queue_size
        self._admitted = 0
        self._share = fair_share
        self._max_wait = max_wait_seconds
        # Runs in progress here: id -> (owner key or "", when its wall limit ends them).
        self._running: dict[str, tuple[str, float]] = {}
        self._released = threading.Condition()

    def execute(
        self,
        code: str,
        stdin: str,
        limits: Limits,
        allowed_imports: Sequence[str] | None,
        wait_seconds: float | None,
        *,
        principal: Principal | None = None,
    ) -> RunResult | PrecheckFailure:
        """Pre-check on the host, then run in isolation; a failed pre-check runs nothing.

        `wait_seconds`: what is left of the caller's deadline (None, infinite or beyond
        the configured maximum: the maximum). `principal`: whose fair share the run
        counts against (None: no per-caller limit, for in-process callers)."""
        failure = precheck(code, allowed_imports)
        if failure is not None:
            return failure
        budget = self._budget(wait_seconds)
        key = f"sandbox:{principal.user_key}" if principal is not None else ""
        with contextlib.ExitStack() as held:
            if principal is not None and self._share is not None:
                held.enter_context(self._own_slot(key, principal, self._share, budget))
            held.enter_context(self._admission())
            held.enter_context(self._slot(budget))
            result = self._run(key, code, stdin, limits)
        return result

    def _run(self, key: str, code: str, stdin: str, limits: Limits) -> RunResult:
        run_id = uuid.uuid4().hex
        with self._lock:
            self._running[run_id] = (key, time.monotonic() + limits.wall_seconds)
        try:
            return self.isolation.run(code, stdin, limits)
        finally:
            with self._lock:
                del self._running[run_id]

    # -- the three bounds --------------------------------------------------------------

    def _budget(self, wait_seconds: float | None) -> _Budget:
        # grpc reports "no deadline" as a huge time_remaining(): a wait that long overflows
        # the platform's time_t inside Semaphore.acquire (the old 500 INTERNAL).
        now = time.monotonic()
        if wait_seconds is None or not math.isfinite(wait_seconds) or wait_seconds > self._max_wait:
            return _Budget(now + self._max_wait, deadline_bound=False)
        return _Budget(now + max(wait_seconds, 0.0), deadline_bound=True)

    @contextlib.contextmanager
    def _own_slot(
        self, key: str, principal: Principal, share: FairShare, budget: _Budget
    ) -> Iterator[None]:
        allowance = share.allowance(principal)
        lease = share.limiter.acquire(key, allowance)
        if lease is None:
            lease = self._wait_for_own_slot(key, allowance, share, budget)
        try:
            yield
        finally:
            lease.release()
            with self._released:
                self._released.notify_all()

    def _wait_for_own_slot(
        self, key: str, allowance: int, share: FairShare, budget: _Budget
    ) -> Lease:
        if share.user_wait_seconds <= 0:
            raise self._over_share(key, allowance)
        queued = share.limiter.acquire(f"{key}:waiting", allowance)
        if queued is None:
            raise self._over_share(key, allowance)  # as many waiting as may run: no more
        with queued:
            give_up = min(time.monotonic() + share.user_wait_seconds, budget.until)
            while True:
                lease = share.limiter.acquire(key, allowance)
                if lease is not None:
                    return lease
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                with self._released:
                    self._released.wait(min(POLL_SECONDS, left))
        if budget.deadline_bound and give_up >= budget.until:
            raise DeadlineExceeded("deadline passed while waiting for your running program")
        raise self._over_share(key, allowance)

    def _over_share(self, key: str, allowance: int) -> TooManyRequests:
        running = "a program" if allowance == 1 else f"{allowance} programs"
        return TooManyRequests(
            f"you already have {running} running in the sandbox; retry when it has finished",
            metadata={"runs_allowed": str(allowance)},
            retry_after=self._retry_after(key),
        )

    @contextlib.contextmanager
    def _admission(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self._capacity:
                raise ResourceExhausted(
                    f"the sandbox is busy ({self._capacity} programs running or waiting); retry",
                    metadata={"capacity": str(self._capacity)},
                    retry_after=self._retry_after(None, locked=True),
                )
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    @contextlib.contextmanager
    def _slot(self, budget: _Budget) -> Iterator[None]:
        if not self._slots.acquire(timeout=max(budget.left(), 0.0)):
            if budget.deadline_bound:
                raise DeadlineExceeded("deadline passed while waiting for a sandbox slot")
            raise ResourceExhausted(
                f"the sandbox is busy: no slot came free within {self._max_wait:g}s; retry",
                metadata={"max_wait_seconds": f"{self._max_wait:g}"},
                retry_after=self._retry_after(None),
            )
        try:
            yield
        finally:
            self._slots.release()

    def _retry_after(self, key: str | None, *, locked: bool = False) -> float:
        """Seconds until the soonest run here that frees what the caller waits for (the
        owner's own run for `key`, any run for None) reaches its wall limit."""
        with contextlib.nullcontext() if locked else self._lock:
            ends = [end for owner, end in self._running.values() if key is None or owner == key]
        if not ends:
            return FALLBACK_RETRY_SECONDS if key else BUSY_RETRY_SECONDS
        return max(min(ends) - time.monotonic(), MIN_RETRY_SECONDS)
