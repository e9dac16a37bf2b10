"""Struggle detection end to end on the real Kafka: one `struggle.detected` event per
episode, never one per occurrence, naming the student's tenant."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer
from learnflow.events.v1 import events_pb2

from services.kit.auth import DEV_TENANT
from services.kit.bus import decode_headers
from services.kit.config import Settings
from tests.integration.test_mastery import Events, exercise

pytestmark = pytest.mark.integration


class StruggleWatch:
    """Reads struggle.detected from the start, keeping the events about one student."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"struggle-watch-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe(["struggle.detected"])

    def collect(
        self, student: str, *, at_least: int, settle: float = 3.0, timeout: float = 40.0
    ) -> list[tuple[dict[str, str], events_pb2.StruggleDetected]]:
        """Events about `student`: waits for `at_least`, then `settle` seconds more so
        a duplicate would be seen too."""
        found: list[tuple[dict[str, str], events_pb2.StruggleDetected]] = []
        deadline = time.monotonic() + timeout
        settled_at: float | None = None
        while time.monotonic() < (settled_at or deadline):
            msg = self._consumer.poll(0.3)
            if msg is not None and not msg.error() and msg.key() == student.encode():
                event = events_pb2.StruggleDetected.FromString(msg.value() or b"")
                found.append((decode_headers(msg.headers()), event))
            if settled_at is None and len(found) >= at_least:
                settled_at = time.monotonic() + settle
        return found

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def watch(settings: Settings, mesh: dict[str, int]) -> Iterator[StruggleWatch]:
    assert settings.kafka_bootstrap_servers
    watcher = StruggleWatch(settings.kafka_bootstrap_servers)
    yield watcher
    watcher.close()


def test_wheel_spinning_is_reported_once_per_exercise(events: Events, watch: StruggleWatch) -> None:
    student = f"spin-{uuid.uuid4().hex[:8]}"
    # Graded work as the exercise service sends it: in a tenant (the development one).
    sent = [
        events.send(exercise(student, 0.4, cohort="c-spin", tenant=DEV_TENANT), student)
        for _ in range(9)
    ]
    events.flush()
    # Redelivered duplicates of earlier attempts are not attempts.
    for event_id in sent[:3]:
        events.send(
            exercise(student, 0.4, cohort="c-spin", tenant=DEV_TENANT), student, event_id=event_id
        )
    # The 10th attempt.
    events.send(exercise(student, 0.2, cohort="c-spin", tenant=DEV_TENANT), student)
    events.flush()
    for _ in range(3):  # still failing: the episode goes on, no new event
        events.send(exercise(student, 0.6, cohort="c-spin", tenant=DEV_TENANT), student)
    events.flush()

    found = watch.collect(student, at_least=1)
    assert len(found) == 1, [e for _, e in found]
    headers, event = found[0]
    assert event.kind == events_pb2.StruggleDetected.KIND_WHEEL_SPINNING
    assert event.exercise_id == "functions-001"
    assert event.occurrence_count >= 10  # a batch may bring several attempts at once
    assert (event.student.cohort, event.student.tenant) == ("c-spin", DEV_TENANT)
    # One episode per student of a tenant and exercise.
    assert event.episode_id == f"wheel-spinning:{DEV_TENANT}/{student}:functions-001"
    assert headers["ce_type"] == "learnflow.events.v1.StruggleDetected"
    assert headers["ce_source"] == "//learnflow.dev/mastery"


def test_a_pass_before_the_tenth_attempt_is_not_wheel_spinning(
    events: Events, watch: StruggleWatch
) -> None:
    student = f"spin-{uuid.uuid4().hex[:8]}"
    for score in [0.2] * 5 + [1.0] + [0.3] * 6:
        events.send(exercise(student, score, tenant=DEV_TENANT), student)
    events.flush()
    # A marker on another exercise that does spin, to know the consumer got this far.
    for _ in range(10):
        events.send(exercise(student, 0.1, exercise_id="functions-002", tenant=DEV_TENANT), student)
    events.flush()
    found = watch.collect(student, at_least=1)
    assert [e.exercise_id for _, e in found] == ["functions-002"]
