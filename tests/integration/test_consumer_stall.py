"""Consumers never stall, on the real broker: a ~1 MB record whose DLQ copy the producer
refuses is dead-lettered as a reference and the mastery engine applies the events behind
it; a consumer that is behind and commits nothing reports NOT_SERVING under its own
health name while the server stays ready."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import grpc
import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from services.kit.bus import (
    REFERENCE_FORMAT,
    ConsumerLoop,
    Envelope,
    KafkaBus,
    Publisher,
    cloudevent_headers,
    decode_headers,
    dlq_topic,
)
from services.kit.catalogue import SERVICES_BY_NAME, ServiceSpec
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer, ServiceParts
from services.mastery.main import CONSUMER_HEALTH, build
from tests.conftest import MintToken, wait_for

pytestmark = pytest.mark.integration

SOURCE = "//learnflow.dev/test-producer"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The service's producer keeps librdkafka's default message.max.bytes (1,000,000): a
# value of that size alone is too large to copy whole. The broker (and so the source
# topic) takes records up to 1,048,588 bytes; this producer is allowed as much.
SERVICE_PRODUCER_LIMIT = 1_000_000
BIG_PRODUCER_LIMIT = 1_048_576


def bootstrap() -> str:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
def topic() -> Iterator[str]:
    """A fresh one-partition topic and its DLQ: every record lands behind the last."""
    name = f"test.stall.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    for future in admin.create_topics(
        [NewTopic(name, num_partitions=1), NewTopic(dlq_topic(name), num_partitions=1)]
    ).values():
        future.result(timeout=15)
    yield name
    for future in admin.delete_topics([name, dlq_topic(name)], operation_timeout=10).values():
        future.result(timeout=15)


def produce(
    producer: Producer, topic: str, message: Message, key: str, value: bytes | None = None
) -> tuple[str, int]:
    """Sends a CloudEvent and waits for it: (ce_id, offset)."""
    headers = cloudevent_headers(message, source=SOURCE, subject=key)
    delivered: list[tuple[object, int | None]] = []
    producer.produce(
        topic,
        key=key.encode(),
        value=value if value is not None else message.SerializeToString(),
        headers=[(k, v.encode()) for k, v in headers.items()],
        on_delivery=lambda err, msg: delivered.append((err, msg.offset())),
    )
    assert producer.flush(30) == 0
    [(error, offset)] = delivered
    assert error is None, error
    assert offset is not None
    return headers["ce_id"], offset


def now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def graded(student: str, score: float, submission: str = "s1") -> events_pb2.ExerciseGraded:
    return events_pb2.ExerciseGraded(
        student=events_pb2.StudentRef(student_id=student, time_zone="UTC", tenant="dev"),
        topic=common_pb2.TOPIC_FUNCTIONS,
        exercise_id="functions-001",
        submission=submission,
        score=score,
        occur_time=now(),
    )


def read_all(topic: str, minimum: int, settle: float = 2.0) -> list[tuple[dict[str, str], bytes]]:
    """Every message on `topic` (at least `minimum`, then `settle` seconds for more)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap(),
            "group.id": f"test-read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[tuple[dict[str, str], bytes]] = []
    deadline = time.monotonic() + 30
    quiet_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if len(got) >= minimum:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            got.append((decode_headers(msg.headers()), msg.value() or b""))
    finally:
        consumer.close()
    return got


def committed_offset(group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap(), "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def health_status(port: int, name: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=name)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


def test_a_record_too_large_to_dead_letter_whole_does_not_stall_the_mastery_engine(
    topic: str,
    runtime: Runtime,
    settings: Settings,
    mint_token: MintToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = Producer({"bootstrap.servers": bootstrap(), "message.max.bytes": BIG_PRODUCER_LIMIT})
    # A well-formed ExerciseGraded of ~1 MB that the engine rejects (score 7): poison
    # whose DLQ copy, with the dlq_* headers, is beyond the service producer's limit.
    poison_student = f"stu-{uuid.uuid4().hex[:10]}"
    poison = graded(poison_student, 7.0, submission="x" * SERVICE_PRODUCER_LIMIT)
    poison_value = poison.SerializeToString()
    assert SERVICE_PRODUCER_LIMIT < len(poison_value) < BIG_PRODUCER_LIMIT - 1_000
    poison_id, poison_offset = produce(big, topic, poison, poison_student)
    # Behind it, on the same partition, a valid event for another student.
    student = f"stu-{uuid.uuid4().hex[:10]}"
    good_id, good_offset = produce(big, topic, graded(student, 0.8), student)
    assert good_offset == poison_offset + 1

    group = f"test-stall-{uuid.uuid4().hex}"
    caplog.set_level(logging.WARNING, logger="learnflow.bus")
    mastery = SERVICES_BY_NAME["mastery"]
    server = LearnFlowServer(mastery, build(runtime, topic=topic, group_id=group), settings, port=0)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = mastery_pb2_grpc.MasteryServiceStub(channel)
            token = [("authorization", f"Bearer {mint_token(student)}")]

            def applied() -> mastery_pb2.Mastery | None:
                try:
                    m: mastery_pb2.Mastery = stub.GetMastery(
                        mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
                        metadata=token,
                        timeout=5,
                    )
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        return None
                    raise
                return m if m.evidence.completion.event_count == 1 else None

            # The valid event behind the poison is applied: the consumer moved on.
            m = wait_for(applied, timeout=60, what="the event behind the poison")
            assert m.evidence.completion.latest[0].event_id == good_id
            assert m.components.completion == pytest.approx(0.8)

        # Both offsets committed: a restart would not meet the poison again.
        assert wait_for(
            lambda: committed_offset(group, topic) == good_offset + 1 or None,
            timeout=30,
            what="the offset commit",
        )
        # The poison is dead-lettered once, as a reference naming where it is and why.
        [(headers, value)] = read_all(dlq_topic(topic), 1)
        assert headers["dlq_format"] == "reference"
        assert headers["dlq_original_topic"] == topic
        assert headers["dlq_original_partition"] == "0"
        assert headers["dlq_original_offset"] == str(poison_offset)
        assert headers["dlq_original_size"] == str(len(poison_value))
        assert headers["dlq_original_key"] == poison_student
        assert headers["dlq_consumer_group"] == group
        assert headers["dlq_error_class"] == "PoisonEventError"
        assert "outside [0, 1]" in headers["dlq_error_message"]
        assert headers["dlq_copy_error_class"] == "RecordRejectedError"
        assert "MSG_SIZE_TOO_LARGE" in headers["dlq_copy_error_message"]
        assert headers["ce_id"] == poison_id
        body = json.loads(value)
        assert body["format"] == REFERENCE_FORMAT
        assert (body["topic"], body["partition"], body["offset"]) == (topic, 0, poison_offset)
        assert body["value_size"] == len(poison_value)
        assert len(value) < 4_096
        # No rejoin loop, and the consumer's health name says it keeps up.
        rejoins = [r for r in caplog.records if "rejoining the group" in r.getMessage()]
        assert rejoins == []
        assert server.refresh_health() is True
        assert health_status(port, CONSUMER_HEALTH) == SERVING
        assert health_status(port, "") == SERVING
    finally:
        server.stop(grace=1.0)


class TransientError(Exception):
    pass


def test_a_consumer_behind_without_commits_is_not_serving_under_its_own_name_only(
    topic: str, settings: Settings, mint_token: MintToken
) -> None:
    bus = KafkaBus(bootstrap(), client_id="learnflow-test-stall")
    database_up = threading.Event()  # the handler's dependency, away at first
    handled: list[str] = []

    def handler(batch: Sequence[Envelope]) -> None:
        if not database_up.is_set():
            raise TransientError("database unavailable")
        handled.extend(e.record.event_id for e in batch)

    group = f"test-stall-health-{uuid.uuid4().hex}"
    loop = ConsumerLoop(
        bus,
        group_id=group,
        topics=[topic],
        handler=handler,
        transient=(TransientError,),
        poll_timeout=0.1,
        max_backoff=0.2,
        stall_seconds=2.0,
    )
    name = "learnflow.stalltest.consumer"
    spec = ServiceSpec("stalltest", "learnflow.stalltest.v1", ("Nothing",), 0)
    parts = ServiceParts(
        register=lambda _server: None,
        checks={"bus": bus.check, "consumer": loop.health_check(name)},
        start_background=[loop.start],
        on_stop=[loop.stop, bus.close],
    )
    server = LearnFlowServer(spec, parts, settings, port=0)
    port = server.start()

    def status_becomes(wanted: int) -> Callable[[], bool | None]:
        # The server's own monitor (every 5 s) sets the status: no refresh here.
        return lambda: health_status(port, name) == wanted or None

    try:
        assert health_status(port, name) == SERVING
        publisher = Publisher(bus, source=SOURCE)
        ids = [publisher.publish(topic, graded(f"stu-{n}", 0.5), key=f"stu-{n}") for n in range(3)]
        bus.flush()

        wait_for(status_becomes(NOT_SERVING), timeout=30, what="the consumer's NOT_SERVING")
        # Only the consumer's name: readiness follows the dependencies, which are fine.
        assert health_status(port, "") == SERVING
        assert health_status(port, "learnflow.stalltest.v1.Nothing") == SERVING
        assert committed_offset(group, topic) == OFFSET_INVALID  # nothing committed
        assert handled == []

        database_up.set()
        wait_for(status_becomes(SERVING), timeout=30, what="the consumer's SERVING again")
        assert handled == ids
        assert committed_offset(group, topic) == 3
        assert health_status(port, "") == SERVING
    finally:
        server.stop(grace=1.0)
