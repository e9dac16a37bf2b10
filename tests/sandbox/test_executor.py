"""The bounded executor: a full sandbox says RESOURCE_EXHAUSTED instead of queueing, every
wait is bounded (a call without a deadline included), and one caller's programs are
limited to their fair share."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from services.kit.auth import Principal, Role
from services.kit.errors import DeadlineExceeded, ResourceExhausted, TooManyRequests
from services.kit.limits import InProcessLimiter
from services.sandbox.domain.limits import Limits
from services.sandbox.domain.precheck import PrecheckFailure
from services.sandbox.executor import FairShare, SandboxExecutor
from services.sandbox.isolation.base import RunResult, SandboxStartError, detect


def test_a_full_sandbox_refuses_instead_of_queueing() -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=0)
    limits = Limits(wall_seconds=3, cpu_seconds=3)
    started = threading.Event()
    results: list[RunResult | PrecheckFailure] = []

    def slow() -> None:
        started.set()
        results.append(executor.execute("import time; time.sleep(1)", "", limits, None, 10))

    worker = threading.Thread(target=slow)
    worker.start()
    started.wait(5)
    time.sleep(0.2)  # the slow program holds the only slot
    with pytest.raises(ResourceExhausted, match="busy"):
        executor.execute("print(1)", "", limits, None, 10)
    worker.join(10)
    assert isinstance(results[0], RunResult) and results[0].exit_code == 0
    # The slot is free again.
    again = executor.execute("print(2)", "", limits, None, 10)
    assert isinstance(again, RunResult) and again.stdout == "2\n"


def test_a_failed_precheck_runs_nothing() -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=0)
    outcome = executor.execute("import os\nos.system('x')", "", Limits(), ["math"], 10)
    assert isinstance(outcome, PrecheckFailure) and outcome.module == "os"


# --- every wait is bounded (a call without a deadline used to answer 500 INTERNAL) -------

# What grpc's time_remaining() reports for a call without a deadline: waiting that long
# overflowed time_t inside Semaphore.acquire (OverflowError -> INTERNAL).
NO_DEADLINE = 1.8e19


def _occupied(executor: SandboxExecutor, seconds: float, **kwargs: object) -> threading.Thread:
    """Starts a program that holds a slot for about `seconds`; returns once it runs."""
    code = f"import time; time.sleep({seconds})"
    limits = Limits(wall_seconds=seconds + 3, cpu_seconds=5)
    worker = threading.Thread(
        target=executor.execute, args=(code, "", limits, None, 30), kwargs=kwargs
    )
    worker.start()
    time.sleep(0.3)  # started: it holds its slot
    return worker


@pytest.mark.parametrize("remaining", [NO_DEADLINE, float("inf"), None])
def test_a_wait_without_a_deadline_is_bounded_and_says_retry(remaining: float | None) -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=4, max_wait_seconds=0.5)
    busy = _occupied(executor, 2.5)
    with pytest.raises(ResourceExhausted, match="no slot came free") as caught:
        executor.execute("print(1)", "", Limits(), None, remaining)
    assert busy.is_alive()  # refused after its bounded wait, not when the slot came free
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 5.5
    busy.join(10)


def test_a_wait_within_the_deadline_ends_with_deadline_exceeded() -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=4, max_wait_seconds=10)
    busy = _occupied(executor, 2.5)
    with pytest.raises(DeadlineExceeded):
        executor.execute("print(1)", "", Limits(), None, 0.3)
    busy.join(10)


def test_a_program_without_a_deadline_runs_when_a_slot_frees_in_time() -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=4, max_wait_seconds=8)
    busy = _occupied(executor, 0.5)
    outcome = executor.execute("print(1)", "", Limits(), None, NO_DEADLINE)
    assert isinstance(outcome, RunResult) and outcome.stdout == "1\n"
    busy.join(10)


# --- fair share ---------------------------------------------------------------------------


def _principal(role: Role = Role.STUDENT) -> Principal:
    return Principal(subject=f"u-{uuid.uuid4().hex[:8]}", role=role)


def _fair(user_wait: float = 0.6) -> SandboxExecutor:
    share = FairShare(
        InProcessLimiter(), runs_per_user=1, runs_per_staff=2, user_wait_seconds=user_wait
    )
    return SandboxExecutor(detect(), workers=4, queue_size=4, fair_share=share)


def test_a_students_second_program_waits_briefly_then_is_rate_limited() -> None:
    executor = _fair()
    student = _principal()
    busy = _occupied(executor, 2.5, principal=student)
    with pytest.raises(TooManyRequests) as caught:
        executor.execute("print(1)", "", Limits(), None, NO_DEADLINE, principal=student)
    assert busy.is_alive()  # gave up waiting for its own slot while the first still ran
    assert caught.value.reason == "RATE_LIMITED"
    # The hint is when the running program reaches its wall limit (2.5 + 3 s from its start).
    assert caught.value.retry_after is not None and 1.0 < caught.value.retry_after <= 5.5
    # Someone else is not affected.
    other = executor.execute("print(2)", "", Limits(), None, NO_DEADLINE, principal=_principal())
    assert isinstance(other, RunResult) and other.stdout == "2\n"
    busy.join(10)


def test_only_one_program_per_running_one_may_wait() -> None:
    executor = _fair(user_wait=3.0)
    student = _principal()
    busy = _occupied(executor, 1.5, principal=student)
    results: list[BaseException | RunResult | PrecheckFailure] = []

    def second() -> None:
        try:
            results.append(
                executor.execute("print(1)", "", Limits(), None, NO_DEADLINE, principal=student)
            )
        except Exception as exc:  # recorded for the assertion below
            results.append(exc)

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.2)  # the second one is waiting for the student's slot
    with pytest.raises(TooManyRequests):
        executor.execute("print(3)", "", Limits(), None, NO_DEADLINE, principal=student)
    assert not results  # refused while the second still waited: at once, not after a wait
    waiter.join(10)
    busy.join(10)
    # The waiting one ran once the student's first program had finished (1.5 s < 3 s).
    assert isinstance(results[0], RunResult) and results[0].stdout == "1\n"


def test_staff_may_run_two_programs_at_once() -> None:
    executor = _fair(user_wait=0)
    teacher = _principal(Role.TEACHER)
    busy = _occupied(executor, 2.0, principal=teacher)
    ran = executor.execute("print(1)", "", Limits(), None, NO_DEADLINE, principal=teacher)
    assert isinstance(ran, RunResult) and ran.stdout == "1\n"
    busy.join(10)


class _FailsOnce:
    """The real isolation, except that its first run fails to start."""

    def __init__(self) -> None:
        self._real = detect()
        self.mode = self._real.mode
        self.failed = False

    def run(self, code: str, stdin: str, limits: Limits) -> RunResult:
        if not self.failed:
            self.failed = True
            raise SandboxStartError("the sandbox could not start")
        return self._real.run(code, stdin, limits)


def test_a_share_is_given_back_when_the_run_fails() -> None:
    share = FairShare(InProcessLimiter(), runs_per_user=1, user_wait_seconds=0)
    executor = SandboxExecutor(_FailsOnce(), workers=1, queue_size=0, fair_share=share)
    student = _principal()
    with pytest.raises(SandboxStartError):
        executor.execute("print(1)", "", Limits(), None, 5, principal=student)
    again = executor.execute("print(1)", "", Limits(), None, 5, principal=student)
    assert isinstance(again, RunResult) and again.stdout == "1\n"
