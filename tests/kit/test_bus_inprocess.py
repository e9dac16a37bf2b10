"""The event bus kit on the in-process log (no infrastructure): CloudEvents binary mode,
decoding, the DLQ, transient retries and at-least-once delivery; and the in-process cache."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pytest
from learnflow.events.v1 import events_pb2

from services.kit import cache as cache_module
from services.kit.bus import (
    CONTENT_TYPE,
    REFERENCE_FORMAT,
    ConsumerClient,
    ConsumerLoop,
    DecodeFailureError,
    Envelope,
    InProcessBus,
    Publisher,
    Record,
    RecordRejectedError,
    cloudevent_headers,
    decode,
    dlq_topic,
    record_size,
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
        student=events_pb2.StudentRef(student_id=student, cohort="c1", tenant="dev"),
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

            def lag(self) -> int | None:
                return inner.lag()

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


# -- dead letters that cannot be copied whole ------------------------------------------


class _RefusingBus(InProcessBus):
    """An in-process bus whose DLQ is away (TimeoutError) for the first `outage` writes
    (of references only, with `references_only`)."""

    def __init__(
        self, outage: int, max_message_bytes: int | None = None, references_only: bool = False
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.outage = outage
        self.references_only = references_only
        self.attempts: list[dict[str, str]] = []
        self.failures = 0

    def deliver(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        headers: dict[str, str],
        timeout: float = 10.0,
    ) -> None:
        if topic.endswith(".dlq"):
            self.attempts.append(headers)
            affected = not self.references_only or headers.get("dlq_format") == "reference"
            if affected and self.failures < self.outage:
                self.failures += 1
                raise TimeoutError("broker unreachable")
        super().deliver(topic, key, value, headers, timeout)


def test_in_process_bus_refuses_records_over_its_limit_like_kafka() -> None:
    bus = InProcessBus(max_message_bytes=1000)
    bus.publish_raw(TOPIC, "k", b"x" * 900, {"h": "v"})
    with pytest.raises(RecordRejectedError, match="exceed"):
        bus.publish_raw(TOPIC, "k", b"x" * 1000, {})
    with pytest.raises(RecordRejectedError):
        bus.deliver(TOPIC, "k", b"x" * 990, {"header": "12345678901"})
    assert len(bus.records(TOPIC)) == 1
    assert bus.consumer("g", [TOPIC]).lag() == 1  # waiting beyond the group's position
    with pytest.raises(RecordRejectedError):  # by default, Kafka's message.max.bytes
        InProcessBus().publish_raw(TOPIC, None, b"x" * 1_000_001, {})


def test_a_record_too_large_to_dead_letter_whole_is_dead_lettered_as_a_reference(
    bus: InProcessBus, loops: list[ConsumerLoop]
) -> None:
    # The source record fits the bus; its DLQ copy, with the dlq_* headers, does not.
    limit = 20_000
    bus = InProcessBus(max_message_bytes=limit)
    group = f"g-{uuid.uuid4().hex}"
    message = graded(student="stu-big")
    headers = _good_headers(message, "stu-big")
    big = b"\xff" * (limit - record_size("stu-big", b"", headers) - 10)  # undecodable
    bus.publish_raw(TOPIC, "stu-big", big, headers)
    good = Publisher(bus, source=SOURCE).publish(TOPIC, graded(student="stu-ok"), key="stu-ok")
    sink = Sink()

    loop = start_loop(loops, bus, group, sink.record)

    assert wait_until(lambda: good in sink.ids() and not uncommitted(bus, group))
    [ref] = bus.records(dlq_topic(TOPIC))
    assert ref.key == "stu-big"
    h = ref.headers
    assert h["dlq_format"] == "reference"
    assert h["dlq_original_topic"] == TOPIC
    assert (h["dlq_original_partition"], h["dlq_original_offset"]) == ("0", "0")
    assert h["dlq_original_size"] == str(len(big))
    assert h["dlq_original_key"] == "stu-big"
    assert h["dlq_consumer_group"] == group
    assert h["dlq_error_class"] == "DecodeFailureError"
    assert "undecodable" in h["dlq_error_message"]
    assert h["dlq_copy_error_class"] == "RecordRejectedError"
    assert h["ce_id"] == headers["ce_id"]  # found by its CloudEvent id, as a whole copy is
    assert h["content-type"] == "application/json"
    body = json.loads(ref.value)
    assert body["format"] == REFERENCE_FORMAT
    assert (body["topic"], body["partition"], body["offset"]) == (TOPIC, 0, 0)
    assert body["value_size"] == len(big) and body["key"] == "stu-big"
    assert body["error"]["class"] == "DecodeFailureError"
    assert body["copy_error"]["class"] == "RecordRejectedError"
    assert "ce_id" in body["header_names"]
    assert len(ref.value) + sum(len(k) + len(v) for k, v in h.items()) < 8_000
    assert (loop.stats.dead_lettered, loop.stats.referenced, loop.stats.rejoins) == (1, 1, 0)


def test_a_reference_carries_only_short_original_headers_and_a_cut_key() -> None:
    record = Record(
        TOPIC,
        2,
        41,
        "k" * 5000,
        b"v" * 10,
        {"ce_id": "id-1", "ce_subject": "s" * 5000, "x-other": "o", "traceparent": "00-a-b-01"},
    )
    facts = {
        "dlq_original_topic": TOPIC,
        "dlq_consumer_group": "g",
        "dlq_error_class": "E",
        "dlq_error_message": "m",
        "dlq_time": "t",
    }
    key, value, headers = ConsumerLoop.reference(record, facts, RecordRejectedError("too big"))
    assert key == "k" * 256 and headers["dlq_original_key"] == key
    assert headers["ce_id"] == "id-1" and headers["traceparent"] == "00-a-b-01"
    assert "ce_subject" not in headers and "x-other" not in headers
    body = json.loads(value)
    assert body["key_truncated"] is True and body["key_size"] == 5000
    assert body["header_count"] == 4 and body["partition"] == 2 and body["offset"] == 41


def test_a_dead_letter_that_cannot_be_written_is_retried_and_nothing_is_committed(
    loops: list[ConsumerLoop],
) -> None:
    bus = _RefusingBus(outage=3)
    group = f"g-{uuid.uuid4().hex}"
    bus.publish_raw(TOPIC, "stu-1", b"\xff\xff", _good_headers(graded(), "stu-1"))
    good = Publisher(bus, source=SOURCE).publish(TOPIC, graded(student="stu-2"), key="stu-2")
    sink = Sink()
    committed_during_outage: list[int] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        sink.record(envelopes)

    original = bus.deliver

    def watching(*args: Any, **kwargs: Any) -> None:
        committed_during_outage.append(len(uncommitted(bus, group)))
        original(*args, **kwargs)

    bus.deliver = watching  # type: ignore[method-assign]
    loop = start_loop(loops, bus, group, handler, max_backoff=0.05)

    assert wait_until(lambda: good in sink.ids() and not uncommitted(bus, group))
    assert len(bus.attempts) == 4  # three failures, then the whole copy
    assert committed_during_outage[:4] == [2, 2, 2, 2]  # nothing committed meanwhile
    [dead] = bus.records(dlq_topic(TOPIC))
    assert "dlq_format" not in dead.headers and dead.value == b"\xff\xff"  # whole
    assert loop.stats.retries == 3 and loop.stats.rejoins == 0


def test_a_reference_that_cannot_be_written_is_retried_until_it_is(
    loops: list[ConsumerLoop],
) -> None:
    # The whole copy is refused, then the reference meets an outage.
    bus = _RefusingBus(outage=3, max_message_bytes=5_000, references_only=True)
    group = f"g-{uuid.uuid4().hex}"
    bus.publish_raw(TOPIC, "stu-1", b"\xff" * 4_500, _good_headers(graded(), "stu-1"))
    loop = start_loop(loops, bus, group, lambda _: None, max_backoff=0.05)

    assert wait_until(lambda: not uncommitted(bus, group))
    # The whole copy once (refused: never retried), the reference three times in vain,
    # then once more, written.
    assert [a.get("dlq_format") for a in bus.attempts] == [None] + ["reference"] * 4
    [ref] = bus.records(dlq_topic(TOPIC))
    assert ref.headers["dlq_format"] == "reference"
    assert loop.stats.referenced == 1 and loop.stats.retries == 3
