"""The hub and one stream's walk (a coroutine), with plain values: who gets what (only
ever within the subscriber's tenant), replay then live without gaps or repeats,
heartbeats, a cancelled caller leaving at once, and a slow subscriber cut off alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Sequence

import pytest

from services.notify.hub import (
    REPLAY_PAGE,
    Audience,
    Beat,
    Entry,
    Hub,
    StreamOverflowError,
    Subscription,
    follow,
)

T = "school-a"


def entry(
    seq: int, student: str | None = None, cohort: str | None = None, tenant: str = T
) -> Entry:
    return Entry(tenant, seq, student, cohort, f"update {seq} of {tenant}")


class Log:
    """An update log in memory."""

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self.entries = list(entries)
        self.calls = 0

    def replay(self, audience: Audience, after: int, limit: int) -> list[Entry]:
        self.calls += 1
        return [e for e in self.entries if e.seq > after and audience.wants(e)][:limit]


def test_audiences() -> None:
    alice = Audience.student(T, "alice")
    c1 = Audience.of_cohorts(T, frozenset({"c1"}))
    every = Audience.of_cohorts(T, None)
    nothing = Audience.of_cohorts(T, frozenset())
    answer = entry(1, student="alice")
    band = entry(2, student="alice", cohort="c1")
    alert = entry(3, cohort="c2")
    assert [alice.wants(e) for e in (answer, band, alert)] == [True, True, False]
    assert [c1.wants(e) for e in (answer, band, alert)] == [False, True, False]
    assert [every.wants(e) for e in (answer, band, alert)] == [False, True, True]
    assert [nothing.wants(e) for e in (answer, band, alert)] == [False, False, False]


def test_the_hub_hands_each_entry_to_its_audience_only() -> None:
    hub = Hub()
    woken: list[str] = []

    def subscribe(name: str, audience: Audience) -> Subscription:
        return hub.subscribe(audience, lambda: woken.append(name))

    alice = subscribe("alice", Audience.student(T, "alice"))
    bob = subscribe("bob", Audience.student(T, "bob"))
    c1 = subscribe("c1", Audience.of_cohorts(T, frozenset({"c1", "c3"})))
    every = subscribe("every", Audience.of_cohorts(T, None))
    hub.publish(
        [entry(1, student="alice"), entry(2, student="alice", cohort="c1"), entry(3, cohort="c2")]
    )
    assert [e.seq for e in alice.drain()] == [1, 2]
    assert [e.seq for e in bob.drain()] == []
    assert [e.seq for e in c1.drain()] == [2]
    assert [e.seq for e in every.drain()] == [2, 3]
    assert sorted(woken) == ["alice", "alice", "c1", "every", "every"]  # once per entry
    assert len(hub) == 4
    for sub in (alice, bob, c1, every):
        sub.close()
    assert len(hub) == 0


def test_an_audience_wants_its_own_tenants_entries_only() -> None:
    c1 = Audience.of_cohorts(T, frozenset({"c1"}))
    every = Audience.of_cohorts(T, None)
    alice = Audience.student(T, "alice")
    for elsewhere in (
        entry(1, student="alice", cohort="c1", tenant="school-b"),
        entry(2, cohort="c1", tenant="school-b"),
    ):
        assert not c1.wants(elsewhere)
        assert not every.wants(elsewhere)
        assert not alice.wants(elsewhere)


def test_the_same_cohort_and_student_in_two_tenants_are_two_audiences() -> None:
    """School-a's teacher of "c1" never hears school-b's "c1", nor school-a's alice
    school-b's alice; an admin's every-cohort stream hears its own tenant only."""
    hub = Hub()
    heard: dict[str, list[Entry]] = {}

    def subscribe(name: str, audience: Audience) -> Subscription:
        heard[name] = []
        return hub.subscribe(audience, lambda: None)

    subs = {
        "a-c1": subscribe("a-c1", Audience.of_cohorts("school-a", frozenset({"c1"}))),
        "b-c1": subscribe("b-c1", Audience.of_cohorts("school-b", frozenset({"c1"}))),
        "a-every": subscribe("a-every", Audience.of_cohorts("school-a", None)),
        "b-every": subscribe("b-every", Audience.of_cohorts("school-b", None)),
        "a-alice": subscribe("a-alice", Audience.student("school-a", "alice")),
        "b-alice": subscribe("b-alice", Audience.student("school-b", "alice")),
    }
    a_alert = entry(1, cohort="c1", tenant="school-a")
    b_alert = entry(1, cohort="c1", tenant="school-b")  # the same seq: each tenant's own
    a_band = entry(2, student="alice", cohort="c1", tenant="school-a")
    b_answer = entry(2, student="alice", tenant="school-b")
    hub.publish([a_alert, b_alert, a_band, b_answer])
    got = {name: sub.drain() for name, sub in subs.items()}
    assert got == {
        "a-c1": [a_alert, a_band],
        "b-c1": [b_alert],
        "a-every": [a_alert, a_band],
        "b-every": [b_alert],
        "a-alice": [a_band],
        "b-alice": [b_answer],
    }
    for sub in subs.values():
        sub.close()
    assert len(hub) == 0


def test_each_tenant_has_its_own_position() -> None:
    hub = Hub()
    hub.start_at("school-a", 40)
    hub.start_at("school-b", 3)
    hub.publish([entry(41, cohort="c1", tenant="school-a")])
    assert (hub.position("school-a"), hub.position("school-b"), hub.position("new")) == (41, 3, 0)
    late = hub.subscribe(Audience.of_cohorts("school-b", frozenset({"c1"})), lambda: None)
    assert late.start == 3  # school-a's activity moves nothing in school-b
    hub.start_at("school-a", 7)  # never backwards
    assert hub.position("school-a") == 41
    late.close()


def test_a_stream_starts_at_its_tenants_position_and_skips_other_tenants() -> None:
    async def scenario() -> None:
        hub = Hub()
        hub.start_at("school-a", 500)
        hub.start_at("school-b", 2)
        log = Log([entry(n, cohort="c1", tenant="school-b") for n in (1, 2)])
        stream = walk(hub, Audience.of_cohorts("school-b", frozenset({"c1"})), None, log)
        assert await anext(stream) == Beat(2)  # school-b's cursor, not school-a's 500
        hub.publish([entry(501, cohort="c1", tenant="school-a")])
        hub.publish([entry(3, cohort="c1", tenant="school-b")])
        item = await anext(stream)
        assert isinstance(item, Entry) and (item.tenant, item.seq) == ("school-b", 3)
        assert log.calls == 0
        await stream.aclose()
        assert len(hub) == 0

    asyncio.run(scenario())


def walk(
    hub: Hub, audience: Audience, after: int | None, log: Log, heartbeat: float = 10
) -> AsyncGenerator[Entry | Beat, None]:
    return follow(hub, audience, after, log.replay, heartbeat=heartbeat)


def test_replay_then_live_without_gaps_or_repeats() -> None:
    async def scenario() -> None:
        hub = Hub()
        hub.start_at(T, 5)  # the log holds 1-5 when the stream starts from cursor 2
        log = Log([entry(n, student="alice") for n in range(1, 6)])
        stream = walk(hub, Audience.student(T, "alice"), 2, log)
        assert [await anext(stream) for _ in range(3)] == log.entries[2:5]
        # Entries 4 and 5 also reach the hub (committed around the replay), then 6 live.
        hub.publish([log.entries[3], log.entries[4], entry(6, student="alice")])
        assert await anext(stream) == Beat(5)  # caught up: the first heartbeat holds it
        assert (await anext(stream)).seq == 6  # type: ignore[union-attr]
        await stream.aclose()
        assert len(hub) == 0

    asyncio.run(scenario())


def test_a_stream_without_cursor_starts_where_the_hub_stands_and_reads_no_log() -> None:
    async def scenario() -> None:
        hub = Hub()
        hub.start_at(T, 3)
        log = Log([entry(n, cohort="c1") for n in (1, 2, 3)])
        hub.publish([entry(4, cohort="c1")])
        stream = walk(hub, Audience.of_cohorts(T, frozenset({"c1"})), None, log)
        assert await anext(stream) == Beat(4)
        hub.publish([entry(5, cohort="c1")])
        assert (await anext(stream)).seq == 5  # type: ignore[union-attr]
        assert log.calls == 0
        await stream.aclose()

    asyncio.run(scenario())


def test_a_cursor_ahead_of_this_replica_waits_for_its_hub_without_repeats() -> None:
    """A cursor from another replica whose listener is ahead of this one's: the log is
    not read, and what this hub brings up to the cursor is skipped."""

    async def scenario() -> None:
        hub = Hub()
        hub.start_at(T, 2)
        log = Log([entry(n, student="alice") for n in (1, 2, 3, 4)])
        stream = walk(hub, Audience.student(T, "alice"), 3, log)
        assert await anext(stream) == Beat(3)
        hub.publish([entry(3, student="alice"), entry(4, student="alice")])
        assert (await anext(stream)).seq == 4  # type: ignore[union-attr]
        assert log.calls == 0
        await stream.aclose()

    asyncio.run(scenario())


def test_an_idle_stream_beats_at_its_position() -> None:
    async def scenario() -> None:
        hub = Hub()
        stream = walk(hub, Audience.student(T, "alice"), 7, Log(), heartbeat=0.02)
        assert [await anext(stream) for _ in range(3)] == [Beat(7), Beat(7), Beat(7)]
        hub.publish([entry(8, student="alice")])
        assert (await anext(stream)).seq == 8  # type: ignore[union-attr]
        assert await anext(stream) == Beat(8)
        await stream.aclose()

    asyncio.run(scenario())


def test_a_cancelled_stream_leaves_the_hub_at_once() -> None:
    async def scenario() -> None:
        hub = Hub()
        first: asyncio.Future[Entry | Beat] = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for item in walk(hub, Audience.student(T, "alice"), 0, Log(), heartbeat=30):
                if not first.done():
                    first.set_result(item)

        reader = asyncio.create_task(read())
        assert await first == Beat(0)
        assert len(hub) == 1  # waiting for an update
        reader.cancel()  # the caller went away
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert len(hub) == 0

    asyncio.run(scenario())


def test_a_slow_subscriber_is_cut_off_alone_and_told_where_to_resume() -> None:
    async def scenario() -> None:
        hub = Hub(capacity=3)
        c1 = Audience.of_cohorts(T, frozenset({"c1"}))
        slow = walk(hub, c1, 0, Log())
        other = walk(hub, c1, 0, Log())
        assert await anext(slow) == Beat(0) and await anext(other) == Beat(0)
        hub.publish([entry(1, cohort="c1")])
        assert (await anext(slow)).seq == 1  # type: ignore[union-attr]
        assert (await anext(other)).seq == 1  # type: ignore[union-attr]
        hub.publish([entry(2, cohort="c1"), entry(3, cohort="c1")])
        assert [(await anext(other)).seq for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
        hub.publish([entry(4, cohort="c1"), entry(5, cohort="c1")])  # never waits for `slow`
        with pytest.raises(StreamOverflowError) as caught:
            await anext(slow)  # it held 2, 3 and 4 unread, and 5 did not fit
        assert caught.value.position == 1 and "cursor 1" in str(caught.value)
        assert len(hub) == 1  # only `other` is left, and missed nothing
        assert [(await anext(other)).seq for _ in range(2)] == [4, 5]  # type: ignore[union-attr]
        await other.aclose()
        assert len(hub) == 0

    asyncio.run(scenario())


def test_a_replay_outrun_by_live_updates_catches_up_from_the_log() -> None:
    async def scenario() -> None:
        hub = Hub(capacity=2)
        hub.start_at(T, REPLAY_PAGE + 1)
        log = Log([entry(n, student="alice") for n in range(1, REPLAY_PAGE + 2)])
        stream = walk(hub, Audience.student(T, "alice"), 0, log)
        assert (await anext(stream)).seq == 1  # type: ignore[union-attr]
        more = [entry(n, student="alice") for n in range(REPLAY_PAGE + 2, REPLAY_PAGE + 6)]
        log.entries += more
        hub.publish(more)  # overflows the live queue during the replay
        seqs = []
        while not isinstance(item := await anext(stream), Beat):
            seqs.append(item.seq)
        assert seqs == list(range(2, REPLAY_PAGE + 6))  # everything, once, in order
        assert item == Beat(REPLAY_PAGE + 5)
        await stream.aclose()

    asyncio.run(scenario())


def test_a_waiting_stream_wakes_for_an_entry_published_on_another_thread() -> None:
    async def scenario() -> None:
        hub = Hub()
        stream = walk(hub, Audience.student(T, "alice"), 0, Log(), heartbeat=30)
        assert await anext(stream) == Beat(0)
        timer = threading.Timer(0.05, lambda: hub.publish([entry(1, student="alice")]))
        timer.start()
        assert (await anext(stream)).seq == 1  # type: ignore[union-attr]
        await stream.aclose()

    asyncio.run(scenario())
