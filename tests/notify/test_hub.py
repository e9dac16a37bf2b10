"""The hub and one stream's walk, with plain values: who gets what, replay then live
without gaps or repeats, heartbeats, and a slow subscriber cut off alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from services.notify.hub import (
    REPLAY_PAGE,
    Audience,
    Beat,
    Entry,
    Hub,
    StreamOverflowError,
    follow,
)


def entry(seq: int, student: str | None = None, cohort: str | None = None) -> Entry:
    return Entry(seq, student, cohort, f"update {seq}")


class Log:
    """An update log in memory."""

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self.entries = list(entries)
        self.calls = 0

    def replay(self, audience: Audience, after: int, limit: int) -> list[Entry]:
        self.calls += 1
        return [e for e in self.entries if e.seq > after and audience.wants(e)][:limit]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_audiences() -> None:
    alice = Audience.student("alice")
    c1 = Audience.of_cohorts(frozenset({"c1"}))
    every = Audience.of_cohorts(None)
    nothing = Audience.of_cohorts(frozenset())
    answer = entry(1, student="alice")
    band = entry(2, student="alice", cohort="c1")
    alert = entry(3, cohort="c2")
    assert [alice.wants(e) for e in (answer, band, alert)] == [True, True, False]
    assert [c1.wants(e) for e in (answer, band, alert)] == [False, True, False]
    assert [every.wants(e) for e in (answer, band, alert)] == [False, True, True]
    assert [nothing.wants(e) for e in (answer, band, alert)] == [False, False, False]


def test_the_hub_hands_each_entry_to_its_audience_only() -> None:
    hub = Hub()
    alice = hub.subscribe(Audience.student("alice"))
    bob = hub.subscribe(Audience.student("bob"))
    c1 = hub.subscribe(Audience.of_cohorts(frozenset({"c1", "c3"})))
    every = hub.subscribe(Audience.of_cohorts(None))
    hub.publish(
        [entry(1, student="alice"), entry(2, student="alice", cohort="c1"), entry(3, cohort="c2")]
    )

    def drained(sub: object) -> list[int]:
        got = []
        while (e := sub.take(0)) is not None:  # type: ignore[attr-defined]
            got.append(e.seq)
        return got

    assert drained(alice) == [1, 2]
    assert drained(bob) == []
    assert drained(c1) == [2]
    assert drained(every) == [2, 3]
    assert len(hub) == 4
    for sub in (alice, bob, c1, every):
        sub.close()
    assert len(hub) == 0


def test_replay_then_live_without_gaps_or_repeats() -> None:
    hub = Hub()
    log = Log([entry(n, student="alice") for n in range(1, 6)])
    walk = follow(
        hub.subscribe(Audience.student("alice")),
        2,
        log.replay,
        heartbeat=10,
        is_active=lambda: True,
    )
    assert [next(walk) for _ in range(3)] == log.entries[2:5]
    # Entries 4 and 5 also reach the hub (committed around the replay), then 6 live.
    hub.publish([log.entries[3], log.entries[4], entry(6, student="alice")])
    assert next(walk) == Beat(5)  # caught up: the first heartbeat holds the position
    assert next(walk).seq == 6  # type: ignore[union-attr]
    walk.close()
    assert len(hub) == 0


def test_a_stream_without_cursor_starts_at_the_head_read_after_subscribing() -> None:
    hub = Hub()
    log = Log([entry(1, cohort="c1")])
    walk = follow(
        hub.subscribe(Audience.of_cohorts(frozenset({"c1"}))),
        lambda: 1,
        log.replay,
        heartbeat=10,
        is_active=lambda: True,
    )
    assert next(walk) == Beat(1)
    hub.publish([entry(1, cohort="c1"), entry(2, cohort="c1")])
    assert next(walk).seq == 2  # type: ignore[union-attr]
    walk.close()


def test_idle_streams_beat_and_notice_the_caller_leaving() -> None:
    hub = Hub()
    clock = Clock()
    active = [True]
    waits: list[float] = []
    walk = follow(
        hub.subscribe(Audience.student("alice")),
        7,
        Log().replay,
        heartbeat=3.0,
        wake=1.0,
        is_active=lambda: active[0],
        clock=clock,
    )
    assert next(walk) == Beat(7)
    sub = next(iter(hub._by_student["alice"]))
    real_take = sub.take

    def take(timeout: float) -> Entry | None:
        waits.append(timeout)
        clock.now += timeout
        return real_take(0)

    sub.take = take  # type: ignore[method-assign]
    assert next(walk) == Beat(7)
    assert waits == [1.0, 1.0, 1.0]  # woke every second, beat after three
    active[0] = False
    with pytest.raises(StopIteration):
        next(walk)
    assert len(hub) == 0


def test_a_slow_subscriber_is_cut_off_alone_and_told_where_to_resume() -> None:
    hub = Hub(capacity=3)
    walk = follow(
        hub.subscribe(Audience.of_cohorts(frozenset({"c1"}))),
        0,
        Log().replay,
        heartbeat=10,
        is_active=lambda: True,
    )
    other = follow(
        hub.subscribe(Audience.of_cohorts(frozenset({"c1"}))),
        0,
        Log().replay,
        heartbeat=10,
        is_active=lambda: True,
    )
    assert next(walk) == Beat(0) and next(other) == Beat(0)
    hub.publish([entry(1, cohort="c1")])
    assert next(walk).seq == 1  # type: ignore[union-attr]
    assert next(other).seq == 1  # type: ignore[union-attr]
    hub.publish([entry(2, cohort="c1"), entry(3, cohort="c1")])
    assert [next(other).seq for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
    hub.publish([entry(4, cohort="c1"), entry(5, cohort="c1")])  # never waits for `walk`
    with pytest.raises(StreamOverflowError) as caught:
        next(walk)  # it held 2, 3 and 4 unread, and 5 did not fit
    assert caught.value.position == 1 and "cursor 1" in str(caught.value)
    assert len(hub) == 1  # only `other` is left, and missed nothing
    assert [next(other).seq for _ in range(2)] == [4, 5]  # type: ignore[union-attr]
    other.close()
    assert len(hub) == 0


def test_a_replay_outrun_by_live_updates_catches_up_from_the_log() -> None:
    hub = Hub(capacity=2)
    log = Log([entry(n, student="alice") for n in range(1, REPLAY_PAGE + 2)])
    walk = follow(
        hub.subscribe(Audience.student("alice")),
        0,
        log.replay,
        heartbeat=10,
        is_active=lambda: True,
    )
    assert next(walk).seq == 1  # type: ignore[union-attr]
    more = [entry(n, student="alice") for n in range(REPLAY_PAGE + 2, REPLAY_PAGE + 6)]
    log.entries += more
    hub.publish(more)  # overflows the live queue during the replay
    seqs = []
    while True:
        item = next(walk)
        if isinstance(item, Beat):
            break
        seqs.append(item.seq)
    assert seqs == list(range(2, REPLAY_PAGE + 6))  # everything, once, in order


def test_a_waiting_stream_wakes_for_a_live_entry() -> None:
    hub = Hub()
    walk = follow(
        hub.subscribe(Audience.student("alice")),
        0,
        Log().replay,
        heartbeat=30,
        is_active=lambda: True,
    )
    assert next(walk) == Beat(0)
    timer = threading.Timer(0.1, lambda: hub.publish([entry(1, student="alice")]))
    timer.start()
    assert next(walk).seq == 1  # type: ignore[union-attr]
    walk.close()
