"""The circuit breaker's state machine, on a clock the test moves."""

from __future__ import annotations

from services.kit.breaker import BreakerState, CircuitBreaker


def state_of(breaker: CircuitBreaker) -> BreakerState:
    # A call, not the property: mypy would narrow the property across assertions.
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=10, clock=Clock())
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(2):
        breaker.record_failure()
    assert state_of(breaker) == BreakerState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) == BreakerState.OPEN
    assert not breaker.try_acquire()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_seconds=10, clock=clock)
    breaker.record_failure()
    clock.now = 9.9
    assert not breaker.try_acquire()
    clock.now = 10.0
    assert state_of(breaker) == BreakerState.HALF_OPEN
    assert breaker.try_acquire()  # the probe
    assert not breaker.try_acquire()  # everyone else still falls back
    breaker.record_success()
    assert state_of(breaker) == BreakerState.CLOSED
    assert breaker.try_acquire()


def test_failed_probe_reopens_for_a_full_interval() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=5, reset_seconds=10, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now = 10
    assert breaker.try_acquire()
    breaker.record_failure()  # one failed probe is enough, whatever the threshold
    assert state_of(breaker) == BreakerState.OPEN
    clock.now = 19.9
    assert not breaker.try_acquire()
    clock.now = 20
    assert breaker.try_acquire()


def test_abandoned_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_seconds=1, clock=clock)
    breaker.record_failure()
    clock.now = 1
    assert breaker.try_acquire()
    breaker.release_probe()
    assert breaker.try_acquire()
