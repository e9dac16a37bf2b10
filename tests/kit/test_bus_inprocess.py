"""The event bus kit on the in-process log (no infrastructure): CloudEvents binary mode,
decoding, the DLQ, transient retries and at-least-once delivery; and the in-process cache."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import pytest
from learnflow.events.v1 import events_pb2

from services.kit import cache as cache_module
from services.kit.bus import (
    CONTENT_TYPE,
    ConsumerClient,
    ConsumerLoop,
    DecodeFailureError,
    Envelope,
    InProcessBus,
    Publisher,
    Record,
    cloudevent_headers,
    decode,
    dlq_topic,
)
from services.kit.cache import InProcessCache
from services.kit.interceptors import CallContext, _current

TOPIC = "progress.events"
SOURCE = "//learnflow/exercise"
DEADLINE_S = 5.0


class TransientError(Exception):
    """Stands in for a database that is briefly unavailable."""


def graded(
    student: str = "stu-1", exercise: str = "functions-003", score: float = 0.75
) -> events_pb2.ExerciseGraded:
    return events_pb2.ExerciseGraded(
        student=events_pb2.StudentRef(student_id=student, cohort="c1"),
        exercise_id=exercise,
        submission=f"students/{student}/submissions/{uuid.uuid4().hex[:8]}",
        score=score,
        tests_passed=3,
        tests_total=4,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    """Poll `predicate` until true or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def uncommitted(bus: InProcessBus, group: str, topic: str = TOPIC) -> list[Record]:
    """What a fresh consumer of `group` would get: everything not yet committed."""
    return bus.consumer(group, [topic]).poll(1000, 0)


class Sink:
    """An idempotent effect store keyed by (ce_source, ce_id), as services keep one."""

    def __init__(self) -> None:
        self.effects: dict[tuple[str, str], events_pb2.ExerciseGraded] = {}
        self.deliveries = 0
        self.lock = threading.Lock()

    def record(self, envelopes: Sequence[Envelope]) -> None:
        with self.lock:
            for env in envelopes:
                self.deliveries += 1
                self.effects.setdefault((env.record.source, env.record.event_id), env.message)  # type: ignore[arg-type]

    def ids(self) -> set[str]:
        with self.lock:
            return {event_id for _, event_id in self.effects}


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def loops() -> Iterator[list[ConsumerLoop]]:
    started: list[ConsumerLoop] = []
    yield started
    for loop in started:
        loop.stop(timeout=2.0)


def start_loop(
    loops: list[ConsumerLoop],
    bus: InProcessBus,
    group: str,
    handler: Callable[[Sequence[Envelope]], None],
    **kwargs: object,
) -> ConsumerLoop:
    loop = ConsumerLoop(
        bus,
        group_id=group,
        topics=[TOPIC],
        handler=handler,
        poll_timeout=0.02,
        **kwargs,  # type: ignore[arg-type]
    )
    loop.start()
    loops.append(loop)
    return loop


# -- CloudEvents on the wire ----------------------------------------------------------


def test_published_record_carries_cloudevents_binary_mode_headers(bus: InProcessBus) -> None:
    publisher = Publisher(bus, source=SOURCE)
    message = graded(student="stu-42")

    first_id = publisher.publish(TOPIC, message, key="stu-42")
    second_id = publisher.publish(TOPIC, message, key="stu-42")

    first, second = bus.records(TOPIC)
    assert first.key == "stu-42"
    assert first.value == message.SerializeToString()
    headers = first.headers
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == first_id
    assert headers["ce_source"] == SOURCE
    assert headers["ce_type"] == "learnflow.events.v1.ExerciseGraded"
    assert headers["ce_type"] == message.DESCRIPTOR.full_name
    assert headers["ce_subject"] == "stu-42"
    assert headers["content-type"] == "application/protobuf" == CONTENT_TYPE
    # RFC 3339 in UTC with a Z suffix, and recent.
    assert headers["ce_time"].endswith("Z")
    ce_time = datetime.fromisoformat(headers["ce_time"])
    assert ce_time.utcoffset() is not None
    assert ce_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(time.time() - ce_time.timestamp()) < 60
    # Every event gets its own id.
    assert first_id != second_id
    assert second.headers["ce_id"] == second_id
    many = {cloudevent_headers(message, source=SOURCE, subject="s")["ce_id"] for _ in range(100)}
    assert len(many) == 100


def test_publisher_keeps_a_caller_supplied_event_id(bus: InProcessBus) -> None:
    publisher = Publisher(bus, source=SOURCE)
    event_id = publisher.publish(TOPIC, graded(), key="stu-1", event_id="fixed-1")
    assert event_id == "fixed-1"
    assert bus.records(TOPIC)[0].headers["ce_id"] == "fixed-1"


def test_decode_returns_the_typed_message(bus: InProcessBus) -> None:
    message = graded(student="stu-7", score=0.5)
    Publisher(bus, source=SOURCE).publish(TOPIC, message, key="stu-7")

    envelope = decode(bus.records(TOPIC)[0])

    assert isinstance(envelope.message, events_pb2.ExerciseGraded)
    assert envelope.message == message
    assert envelope.record.source == SOURCE
    assert envelope.record.event_type == "learnflow.events.v1.ExerciseGraded"


def _good_headers(message: events_pb2.ExerciseGraded, key: str) -> dict[str, str]:
    return cloudevent_headers(message, source=SOURCE, subject=key)


@pytest.mark.parametrize(
    ("mutate", "error_fragment"),
    [
        (lambda h, v: (h, b"\xff\xff\xff"), "undecodable"),
        (lambda h, v: ({**h, "ce_type": "learnflow.events.v1.Nope"}, v), "unknown event type"),
        (lambda h, v: ({k: x for k, x in h.items() if k != "ce_type"}, v), "missing"),
        (lambda h, v: ({}, v), "missing"),
        (lambda h, v: ({**h, "content-type": "application/json"}, v), "content-type"),
    ],
    ids=["bad-bytes", "unknown-type", "no-ce_type", "no-headers", "wrong-content-type"],
)
def test_decode_rejects_what_can_never_be_processed(
    mutate: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], error_fragment: str
) -> None:
    message = graded()
    headers, value = mutate(_good_headers(message, "stu-1"), message.SerializeToString())
    record = Record(TOPIC, 0, 0, "stu-1", value, headers)
    with pytest.raises(DecodeFailureError, match=error_fragment):
        decode(record)


# -- the consumer loop ----------------------------------------------------------------


def test_poison_records_go_to_the_dlq_and_good_ones_in_the_same_batch_are_handled(
    bus: InProcessBus, loops: list[ConsumerLoop]
) -> None:
    group = f"g-{uuid.uuid4().hex}"
    publisher = Publisher(bus, source=SOURCE)
    good = graded(student="stu-1")
    good_before = publisher.publish(TOPIC, good, key="stu-1")
    headers = _good_headers(good, "stu-2")
    poison = [
        ("stu-2", b"\xff\xff\xff", headers, "undecodable"),
        ("stu-3", good.SerializeToString(), {**headers, "ce_type": "x.Nope"}, "unknown event type"),
        ("stu-4", b"raw bytes, no headers", {}, "missing CloudEvents headers"),
    ]
    for key, value, hdrs, _ in poison:
        bus.publish_raw(TOPIC, key, value, hdrs)
    good_after = publisher.publish(TOPIC, graded(student="stu-5"), key="stu-5")

    sink = Sink()
    batches: list[int] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        batches.append(len(envelopes))
        sink.record(envelopes)

    loop = start_loop(loops, bus, group, handler)

    assert wait_until(lambda: loop.stats.batches >= 1 and not uncommitted(bus, group))
    assert batches == [2]  # one batch: the two good events, handled together
    assert sink.ids() == {good_before, good_after}
    dead = bus.records(dlq_topic(TOPIC))
    assert len(dead) == len(poison)
    assert loop.stats.dead_lettered == 3
    for record, (key, value, _, fragment) in zip(dead, poison, strict=True):
        assert record.topic == "progress.events.dlq"
        assert record.key == key
        assert record.value == value  # the original bytes, untouched
        assert record.headers["dlq_original_topic"] == TOPIC
        assert record.headers["dlq_original_partition"] == "0"
        assert record.headers["dlq_consumer_group"] == group
        assert record.headers["dlq_error_class"] == "DecodeFailureError"
        assert fragment in record.headers["dlq_error_message"]
        datetime.fromisoformat(record.headers["dlq_time"])
    # The offsets name exactly the poison records (1, 2, 3 on the source topic).
    assert [r.headers["dlq_original_offset"] for r in dead] == ["1", "2", "3"]
    # Original CloudEvents headers travel with the dead letter.
    assert dead[0].headers["ce_id"] == headers["ce_id"]


def test_transient_handler_error_is_retried_and_committed_only_after_success(
    bus: InProcessBus, loops: list[ConsumerLoop]
) -> None:
    group = f"g-{uuid.uuid4().hex}"
    publisher = Publisher(bus, source=SOURCE)
    ids = [publisher.publish(TOPIC, graded(student=f"stu-{i}"), key=f"stu-{i}") for i in range(3)]

    sink = Sink()
    calls = 0
    uncommitted_during_failures: list[int] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            # While failing, nothing may be committed: a fresh consumer still sees it all.
            uncommitted_during_failures.append(len(uncommitted(bus, group)))
            raise TransientError("database is restarting")
        sink.record(envelopes)

    loop = start_loop(loops, bus, group, handler, transient=(TransientError,), max_backoff=0.1)

    assert wait_until(lambda: loop.stats.batches >= 1)
    assert calls == 4
    assert loop.stats.retries == 3
    assert loop.stats.errors["TransientError"] == 3
    assert uncommitted_during_failures == [3, 3, 3]
    assert sink.ids() == set(ids)  # no loss
    assert sink.deliveries == 3  # the successful call handled each event once
    assert bus.records(dlq_topic(TOPIC)) == []  # transient errors are never dead-lettered
    assert uncommitted(bus, group) == []  # committed after success


def test_undeclared_error_is_not_retried(bus: InProcessBus, loops: list[ConsumerLoop]) -> None:
    group = f"g-{uuid.uuid4().hex}"
    Publisher(bus, source=SOURCE).publish(TOPIC, graded(), key="stu-1")
    calls = 0

    def handler(envelopes: Sequence[Envelope]) -> None:
        nonlocal calls
        calls += 1
        raise TransientError("not declared transient for this loop")

    loop = start_loop(loops, bus, group, handler)

    assert wait_until(lambda: loop.stats.batches >= 1)
    assert loop.stats.retries == 0
    assert calls == 2  # the batch, then the event alone to find the culprit
    [dead] = bus.records(dlq_topic(TOPIC))
    assert dead.headers["dlq_error_class"] == "TransientError"
    assert uncommitted(bus, group) == []


def test_non_transient_error_dead_letters_only_the_culprit(
    bus: InProcessBus, loops: list[ConsumerLoop]
) -> None:
    group = f"g-{uuid.uuid4().hex}"
    publisher = Publisher(bus, source=SOURCE)
    first = publisher.publish(TOPIC, graded(student="stu-1", exercise="ok-1"), key="stu-1")
    culprit = publisher.publish(TOPIC, graded(student="stu-2", exercise="rejected"), key="stu-2")
    last = publisher.publish(TOPIC, graded(student="stu-3", exercise="ok-2"), key="stu-3")

    sink = Sink()
    batch_sizes: list[int] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        batch_sizes.append(len(envelopes))
        for env in envelopes:
            assert isinstance(env.message, events_pb2.ExerciseGraded)
            if env.message.exercise_id == "rejected":
                raise ValueError(f"no such exercise {env.message.exercise_id!r}")
            sink.record([env])

    loop = start_loop(loops, bus, group, handler)

    assert wait_until(lambda: loop.stats.batches >= 1)
    assert batch_sizes[0] == 3  # the whole batch was tried first
    assert sink.ids() == {first, last}
    [dead] = bus.records(dlq_topic(TOPIC))
    assert dead.headers["ce_id"] == culprit
    assert dead.headers["dlq_error_class"] == "ValueError"
    assert "no such exercise 'rejected'" in dead.headers["dlq_error_message"]
    assert dead.headers["dlq_original_offset"] == "1"
    assert dead.headers["dlq_original_topic"] == TOPIC
    assert dead.value == bus.records(TOPIC)[1].value
    assert loop.stats.dead_lettered == 1
    assert uncommitted(bus, group) == []


def test_restarted_consumer_gets_uncommitted_records_again(
    bus: InProcessBus, loops: list[ConsumerLoop]
) -> None:
    group = f"g-{uuid.uuid4().hex}"
    publisher = Publisher(bus, source=SOURCE)
    ids = [publisher.publish(TOPIC, graded(student=f"stu-{i}"), key=f"stu-{i}") for i in range(2)]
    sink = Sink()
    crashed_calls = 0

    def crashing(envelopes: Sequence[Envelope]) -> None:
        # The effect commits, then the process dies before the offset commit.
        nonlocal crashed_calls
        crashed_calls += 1
        sink.record(envelopes)
        raise TransientError("connection reset")

    first = start_loop(loops, bus, group, crashing, transient=(TransientError,))
    assert wait_until(lambda: crashed_calls >= 1)
    first.stop(timeout=2.0)
    assert first.stats.batches == 0  # never completed a batch, so never committed
    assert {r.headers["ce_id"] for r in uncommitted(bus, group)} == set(ids)

    redelivered: list[str] = []

    def healthy(envelopes: Sequence[Envelope]) -> None:
        redelivered.extend(env.record.event_id for env in envelopes)
        sink.record(envelopes)

    second = start_loop(loops, bus, group, healthy, transient=(TransientError,))

    assert wait_until(lambda: second.stats.batches >= 1)
    assert redelivered == ids  # at-least-once: same events, same order
    assert sink.ids() == set(ids)  # and the idempotent sink holds each exactly once
    assert len(sink.effects) == 2
    assert sink.deliveries > len(ids)  # it really was delivered more than once
    assert uncommitted(bus, group) == []


def test_committed_records_are_not_redelivered_to_the_group(
    bus: InProcessBus, loops: list[ConsumerLoop]
) -> None:
    group = f"g-{uuid.uuid4().hex}"
    publisher = Publisher(bus, source=SOURCE)
    first_id = publisher.publish(TOPIC, graded(), key="stu-1")
    seen: list[str] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        seen.extend(env.record.event_id for env in envelopes)

    loop = start_loop(loops, bus, group, handler)
    assert wait_until(lambda: seen == [first_id])
    loop.stop(timeout=2.0)

    second_id = publisher.publish(TOPIC, graded(), key="stu-1")
    start_loop(loops, bus, group, handler)
    assert wait_until(lambda: len(seen) >= 2)
    assert seen == [first_id, second_id]

    # Another group reads the topic from the beginning, independently.
    other: list[str] = []
    start_loop(
        loops, bus, f"g-{uuid.uuid4().hex}", lambda es: other.extend(e.record.event_id for e in es)
    )
    assert wait_until(lambda: len(other) >= 2)
    assert other == [first_id, second_id]


# -- in-process cache -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(cache_module, "time", fake)
    return fake


def test_in_process_cache_expires_entries_after_their_ttl(clock: FakeClock) -> None:
    cache = InProcessCache()
    cache.set("short", b"1", ttl_seconds=10)
    cache.set("long", b"2", ttl_seconds=3600)

    clock.now += 9.9
    assert cache.get("short") == b"1"
    clock.now += 0.2
    assert cache.get("short") is None
    assert cache.get("long") == b"2"
    clock.now += 3600
    assert cache.get("long") is None


def test_in_process_cache_set_overwrites_and_renews_ttl(clock: FakeClock) -> None:
    cache = InProcessCache()
    cache.set("k", b"old", ttl_seconds=5)
    clock.now += 4
    cache.set("k", b"new", ttl_seconds=5)
    clock.now += 4
    assert cache.get("k") == b"new"


def test_in_process_cache_delete(clock: FakeClock) -> None:
    cache = InProcessCache()
    cache.set("a", b"1", 60)
    cache.set("b", b"2", 60)
    cache.set("c", b"3", 60)

    cache.delete("a", "b", "never-set")
    cache.delete()

    assert cache.get("a") is None
    assert cache.get("b") is None
    assert cache.get("c") == b"3"


def test_in_process_cache_is_bounded(clock: FakeClock) -> None:
    cache = InProcessCache(max_entries=3)
    cache.set("expired", b"x", 1)
    cache.set("b", b"2", 60)
    cache.set("c", b"3", 60)
    clock.now += 2
    cache.set("d", b"4", 60)  # full: the expired entry makes room
    assert [cache.get(k) for k in ("b", "c", "d")] == [b"2", b"3", b"4"]
    cache.set("e", b"5", 60)  # full of live entries: one is evicted, never more than 3
    assert sum(cache.get(k) is not None for k in ("b", "c", "d", "e")) == 3
    assert cache.get("e") == b"5"


def test_events_carry_the_inbound_trace() -> None:
    """A W3C traceparent is on every event: the caller's when inside an RPC, else new."""
    bus = InProcessBus()
    publisher = Publisher(bus, source="//learnflow.dev/test")
    publisher.publish("progress.events", graded("s1"), key="s1")
    fresh = bus.records("progress.events")[-1].headers["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", fresh)

    inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    token = _current.set(CallContext("/x/Y", "req", None, None, None, traceparent=inbound))
    try:
        publisher.publish("progress.events", graded("s1"), key="s1")
    finally:
        _current.reset(token)
    assert bus.records("progress.events")[-1].headers["traceparent"] == inbound


class _FlakyCommitBus(InProcessBus):
    """An in-process bus whose first commit fails, as a Kafka commit can in a rebalance."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_commits = 0

    def consumer(self, group_id: str, topics: Sequence[str]) -> ConsumerClient:
        inner = super().consumer(group_id, topics)
        bus = self

        class Client:
            def poll(self, max_records: int, timeout: float) -> list[Record]:
                return inner.poll(max_records, timeout)

            def commit(self, records: Sequence[Record]) -> None:
                if bus.failed_commits == 0:
                    bus.failed_commits += 1
                    raise RuntimeError("commit failed: rebalance in progress")
                inner.commit(records)

            def close(self) -> None:
                inner.close()

        return Client()


def test_consumer_survives_a_failed_commit_and_redelivers() -> None:
    bus = _FlakyCommitBus()
    publisher = Publisher(bus, source="//learnflow.dev/test")
    seen: list[str] = []
    loop = ConsumerLoop(
        bus,
        group_id="g-flaky",
        topics=["progress.events"],
        handler=lambda batch: seen.extend(e.record.event_id for e in batch),
        poll_timeout=0.05,
    )
    event_id = publisher.publish("progress.events", graded("s1"), key="s1")
    loop.start()
    deadline = time.monotonic() + 10
    while seen.count(event_id) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    loop.stop()
    # Handled once, commit failed, the loop rejoined and got the event again; alive.
    assert bus.failed_commits == 1
    assert seen.count(event_id) == 2
    assert loop.stats.processed >= 1
    assert wait_until(lambda: not uncommitted(bus, "g-flaky"))
