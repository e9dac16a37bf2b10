"""The outbox relay: woken after a commit it drains at once; unwoken it still drains
every interval (rows another process left); a failed drain is retried; stopping drains
one last time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from services.mastery.relay import OutboxRelay


class Outbox:
    def __init__(self, failures: int = 0) -> None:
        self.pending = 0
        self.sent = 0
        self.calls = 0
        self.failures = failures
        self.drained = threading.Event()

    def drain(self) -> int:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        sent, self.pending = self.pending, 0
        self.sent += sent
        if sent:
            self.drained.set()
        return sent


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_wake_drains_at_once_not_at_the_next_interval() -> None:
    outbox = Outbox()
    relay = OutboxRelay(outbox.drain, interval_seconds=60)
    relay.start()
    try:
        assert wait_for(lambda: outbox.calls >= 1)  # the first round: a crash's leftovers
        outbox.pending = 3
        relay.wake()
        assert outbox.drained.wait(5)  # the next unwoken round is a minute away
        assert outbox.sent == 3
    finally:
        relay.stop()


def test_unwoken_it_still_drains_every_interval() -> None:
    outbox = Outbox()
    relay = OutboxRelay(outbox.drain, interval_seconds=0.05)
    relay.start()
    try:
        assert wait_for(lambda: outbox.calls >= 1)
        outbox.pending = 2  # committed by another process: nobody wakes this relay
        assert outbox.drained.wait(5)
        assert outbox.sent == 2
    finally:
        relay.stop()


def test_a_failed_drain_is_retried_and_stopping_drains_once_more() -> None:
    outbox = Outbox(failures=2)
    outbox.pending = 4
    relay = OutboxRelay(outbox.drain, interval_seconds=0.05)
    relay.start()
    assert outbox.drained.wait(5)
    assert outbox.sent == 4 and outbox.calls >= 3
    outbox.pending = 1
    calls = outbox.calls
    relay.stop()
    assert outbox.calls > calls and outbox.sent == 5
