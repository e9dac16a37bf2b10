"""The event bus on the real Kafka broker from the test command: CloudEvents binary mode
as a plain Kafka client sees it, the DLQ, and at-least-once delivery across a crash."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import cast

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    ConsumerLoop,
    Envelope,
    KafkaBus,
    Publisher,
    Record,
    cloudevent_headers,
    dlq_topic,
)

pytestmark = pytest.mark.integration

SOURCE = "//learnflow/exercise/test"
DEADLINE_S = 30.0  # a first group join on a fresh broker takes ~3 s


class TransientError(Exception):
    pass


def bootstrap() -> str:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def graded(student: str, exercise: str = "functions-003") -> events_pb2.ExerciseGraded:
    return events_pb2.ExerciseGraded(
        student=events_pb2.StudentRef(
            student_id=student, cohort="c1", time_zone="Europe/Berlin", tenant="dev"
        ),
        exercise_id=exercise,
        submission=f"students/{student}/submissions/{uuid.uuid4().hex[:8]}",
        score=0.75,
        tests_passed=3,
        tests_total=4,
    )


def raw_consumer(group: str | None = None) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap(),
            "group.id": group or f"test-raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 50,
        }
    )


def read_all(topic: str, count: int) -> list[Message]:
    """The first `count` messages of `topic`, read by a plain Kafka consumer."""
    consumer = raw_consumer()
    consumer.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    assert len(got) == count, f"read {len(got)} of {count} messages from {topic}"
    return got


def committed_offset(group: str, topic: str, partition: int) -> int:
    """The group's committed offset, asked without joining the group."""
    consumer = raw_consumer(group)
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def wire_headers(msg: Message) -> dict[str, bytes]:
    """A message's headers as a plain Kafka client sees them; no name may repeat."""
    pairs = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    headers = {name: value or b"" for name, value in pairs}
    assert len(headers) == len(pairs), f"repeated header in {pairs}"
    return headers


def position(msg: Message) -> tuple[int, int]:
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None
    assert offset is not None
    return partition, offset


class Sink:
    """An idempotent effect store keyed by (ce_source, ce_id), as services keep one."""

    def __init__(self) -> None:
        self.effects: dict[tuple[str, str], Envelope] = {}
        self.deliveries: list[str] = []
        self.lock = threading.Lock()

    def record(self, envelopes: Sequence[Envelope]) -> None:
        with self.lock:
            for env in envelopes:
                self.deliveries.append(env.record.event_id)
                self.effects.setdefault((env.record.source, env.record.event_id), env)

    def ids(self) -> set[str]:
        with self.lock:
            return {event_id for _, event_id in self.effects}


@pytest.fixture(scope="module")
def bus() -> Iterator[KafkaBus]:
    kafka = KafkaBus(bootstrap(), client_id="learnflow-test")
    kafka.check()
    yield kafka
    kafka.close()


@pytest.fixture(scope="module")
def created_topics() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    if names:
        admin = AdminClient({"bootstrap.servers": bootstrap()})
        for future in admin.delete_topics(names, operation_timeout=10).values():
            future.result(timeout=15)


@pytest.fixture
def topic(bus: KafkaBus, created_topics: list[str]) -> str:
    name = f"test.kafka.{uuid.uuid4().hex[:12]}"
    bus.ensure_topics([name, dlq_topic(name)])
    created_topics.extend([name, dlq_topic(name)])
    return name


@pytest.fixture
def loops() -> Iterator[list[ConsumerLoop]]:
    started: list[ConsumerLoop] = []
    yield started
    for loop in started:
        loop.stop(timeout=5.0)


def start_loop(
    loops: list[ConsumerLoop],
    bus: KafkaBus,
    group: str,
    topic: str,
    handler: Callable[[Sequence[Envelope]], None],
) -> ConsumerLoop:
    loop = ConsumerLoop(
        bus,
        group_id=group,
        topics=[topic],
        handler=handler,
        transient=(TransientError,),
        poll_timeout=0.1,
        max_backoff=0.2,
    )
    loop.start()
    loops.append(loop)
    return loop


def test_published_event_is_a_binary_mode_cloudevent_on_the_wire(bus: KafkaBus, topic: str) -> None:
    message = graded("stu-wire")
    before = time.time()

    event_id = Publisher(bus, source=SOURCE).publish(topic, message, key="stu-wire")
    bus.flush()

    [msg] = read_all(topic, 1)
    assert msg.key() == b"stu-wire"
    headers = wire_headers(msg)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == event_id.encode()
    assert headers["ce_source"] == SOURCE.encode()
    assert headers["ce_type"] == b"learnflow.events.v1.ExerciseGraded"
    assert headers["ce_subject"] == b"stu-wire"
    assert headers["content-type"] == b"application/protobuf"
    ce_time = datetime.fromisoformat(headers["ce_time"].decode())
    assert headers["ce_time"].endswith(b"Z")
    assert before - 1 <= ce_time.timestamp() <= time.time() + 1
    # The value is the bare protobuf (binary mode), and parses back to the same message.
    assert events_pb2.ExerciseGraded.FromString(msg.value() or b"") == message


def test_poison_message_goes_to_the_dlq_and_the_loop_carries_on(
    bus: KafkaBus, topic: str, loops: list[ConsumerLoop]
) -> None:
    group = f"test-dlq-{uuid.uuid4().hex}"
    delivered: list[Message] = []
    poison_headers = cloudevent_headers(graded("stu-poison"), source=SOURCE, subject="stu-poison")
    producer = Producer({"bootstrap.servers": bootstrap()})
    producer.produce(
        topic,
        key=b"stu-poison",
        value=b"\xff\xff\xff not protobuf",
        # Well-formed CloudEvents headers; only the payload is broken.
        headers=[(k, v.encode()) for k, v in poison_headers.items()],
        on_delivery=lambda err, msg: delivered.append(msg) if err is None else None,
    )
    assert producer.flush(10) == 0
    [poison] = delivered
    poison_partition, poison_offset = position(poison)
    # Same key, so the good event lands after the poison in the same partition.
    good_id = Publisher(bus, source=SOURCE).publish(topic, graded("stu-poison"), key="stu-poison")
    bus.flush()

    sink = Sink()
    loop = start_loop(loops, bus, group, topic, sink.record)

    assert wait_until(lambda: good_id in sink.ids()), "the good event after the poison was handled"
    [dead] = read_all(dlq_topic(topic), 1)
    assert dead.key() == b"stu-poison"
    assert dead.value() == b"\xff\xff\xff not protobuf"
    headers = {name: value.decode() for name, value in wire_headers(dead).items()}
    assert headers["dlq_original_topic"] == topic
    assert headers["dlq_original_partition"] == str(poison_partition)
    assert headers["dlq_original_offset"] == str(poison_offset)
    assert headers["dlq_consumer_group"] == group
    assert headers["dlq_error_class"] == "DecodeFailureError"
    assert "undecodable learnflow.events.v1.ExerciseGraded" in headers["dlq_error_message"]
    for name, value in poison_headers.items():  # the original headers travel along
        assert headers[name] == value
    assert loop.stats.dead_lettered == 1
    # Both the poison and the good event are committed: nothing will come back.
    assert wait_until(lambda: committed_offset(group, topic, poison_partition) == poison_offset + 2)


def test_event_is_redelivered_after_a_crash_before_commit_and_applied_once(
    bus: KafkaBus, topic: str, loops: list[ConsumerLoop]
) -> None:
    group = f"test-crash-{uuid.uuid4().hex}"
    event_id = Publisher(bus, source=SOURCE).publish(topic, graded("stu-crash"), key="stu-crash")
    bus.flush()
    sink = Sink()
    partitions: list[int] = []

    def crashing(envelopes: Sequence[Envelope]) -> None:
        # The effect is committed, then the process dies before the offset commit.
        sink.record(envelopes)
        partitions.extend(env.record.partition for env in envelopes)
        raise TransientError("killed before the offset commit")

    first = start_loop(loops, bus, group, topic, crashing)
    assert wait_until(lambda: len(sink.deliveries) >= 1)
    first.stop(timeout=5.0)  # the consumer is closed without committing
    assert first.stats.batches == 0
    partition = partitions[0]
    assert committed_offset(group, topic, partition) == OFFSET_INVALID

    redelivered: list[str] = []

    def healthy(envelopes: Sequence[Envelope]) -> None:
        redelivered.extend(env.record.event_id for env in envelopes)
        sink.record(envelopes)

    second = start_loop(loops, bus, group, topic, healthy)

    assert wait_until(lambda: second.stats.batches >= 1)
    assert redelivered == [event_id]  # the same group got the event again
    assert len(sink.deliveries) >= 2  # delivered more than once...
    assert list(sink.effects) == [(SOURCE, event_id)]  # ...applied exactly once
    assert wait_until(lambda: committed_offset(group, topic, partition) >= 1)


def test_a_record_the_dlq_topic_refuses_is_dead_lettered_as_a_reference(
    bus: KafkaBus, created_topics: list[str], loops: list[ConsumerLoop]
) -> None:
    """The producer takes the whole copy, the broker refuses it (the DLQ topic's
    max.message.bytes is smaller than the record): a reference goes instead."""
    topic = f"test.kafka.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    wanted = [
        NewTopic(topic, num_partitions=1),
        NewTopic(dlq_topic(topic), num_partitions=1, config={"max.message.bytes": "100000"}),
    ]
    for future in admin.create_topics(wanted).values():
        future.result(timeout=15)
    created_topics.extend([topic, dlq_topic(topic)])
    poison_headers = cloudevent_headers(graded("stu-big"), source=SOURCE, subject="stu-big")
    # Undecodable (a tag that is no varint), and incompressible: even lz4-compressed, its
    # copy is twice what the DLQ topic takes.
    poison_value = b"\xff" * 16 + os.urandom(200_000)
    delivered: list[Message] = []
    producer = Producer({"bootstrap.servers": bootstrap()})
    producer.produce(
        topic,
        key=b"stu-big",
        value=poison_value,
        headers=[(k, v.encode()) for k, v in poison_headers.items()],
        on_delivery=lambda err, msg: delivered.append(msg) if err is None else None,
    )
    assert producer.flush(10) == 0
    [poison] = delivered
    _, poison_offset = position(poison)
    good_id = Publisher(bus, source=SOURCE).publish(topic, graded("stu-ok"), key="stu-ok")
    bus.flush()
    group = f"test-ref-{uuid.uuid4().hex}"
    sink = Sink()

    loop = start_loop(loops, bus, group, topic, sink.record)

    assert wait_until(lambda: good_id in sink.ids()), "the event behind the poison was handled"
    [ref] = read_all(dlq_topic(topic), 1)
    assert ref.key() == b"stu-big"
    headers = {name: value.decode() for name, value in wire_headers(ref).items()}
    assert headers["dlq_format"] == "reference"
    assert headers["dlq_original_topic"] == topic
    assert headers["dlq_original_partition"] == "0"
    assert headers["dlq_original_offset"] == str(poison_offset)
    assert headers["dlq_original_size"] == str(len(poison_value))
    assert headers["dlq_error_class"] == "DecodeFailureError"
    assert headers["dlq_copy_error_class"] == "RecordRejectedError"
    assert "MSG_SIZE_TOO_LARGE" in headers["dlq_copy_error_message"]
    assert headers["ce_id"] == poison_headers["ce_id"]
    body = json.loads(ref.value() or b"")
    assert (body["topic"], body["offset"], body["value_size"]) == (
        topic,
        poison_offset,
        len(poison_value),
    )
    assert (loop.stats.dead_lettered, loop.stats.referenced, loop.stats.rejoins) == (1, 1, 0)
    assert wait_until(lambda: committed_offset(group, topic, 0) == poison_offset + 2)


def test_consumer_lag_is_unknown_until_assigned_then_counts_what_waits(
    bus: KafkaBus, topic: str
) -> None:
    publisher = Publisher(bus, source=SOURCE)
    for _ in range(3):  # one key: one partition, three records in a row
        publisher.publish(topic, graded("stu-lag"), key="stu-lag")
    bus.flush()
    client = bus.consumer(f"test-lag-{uuid.uuid4().hex}", [topic])
    try:
        assert client.lag() is None  # not assigned yet: it cannot tell
        records: list[Record] = []
        deadline = time.monotonic() + DEADLINE_S
        while not records and time.monotonic() < deadline:
            records = client.poll(1, 0.2)
        assert len(records) == 1
        assert wait_until(lambda: client.lag() == 2)  # two more wait beyond its position
        while len(records) < 3 and time.monotonic() < deadline:
            records += client.poll(10, 0.2)
        client.commit(records)
        assert wait_until(lambda: client.poll(10, 0.1) == [] and client.lag() == 0)
    finally:
        client.close()
