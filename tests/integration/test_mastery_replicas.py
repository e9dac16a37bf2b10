"""Mastery replicas share progress.events (6 partitions) across rebalances: beside the
mesh's engine, two `learnflow serve mastery` processes join its consumer group; one is
killed while the events are being applied, and every event is still counted once, as
a rebuild from the evidence counts it."""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from google.protobuf.message import Message
from learnflow.common.v1 import common_pb2

from services.kit.auth import DEV_TENANT
from services.kit.config import Settings
from services.kit.db import scope
from services.kit.runtime import Runtime
from services.mastery.main import MIGRATIONS
from services.mastery.store import MasteryStore
from tests.integration.processes import start_service, stop_service
from tests.integration.test_mastery import Events, exercise, quiz, review

pytestmark = pytest.mark.integration

STUDENTS = 40
EVENTS = 2000


@pytest.fixture
def replicas(
    settings: Settings, mesh: dict[str, int], tmp_path: Path
) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started = []
    try:
        for n in range(2):
            log = tmp_path / f"mastery{n}.log"
            process, _ = start_service(
                "mastery",
                settings,
                log,
                MASTERY_CONSUMER_GROUP=settings.mastery_consumer_group,  # the mesh engine's
                MASTERY_BATCH_SIZE="50",  # small batches: the kill lands mid-work
            )
            started.append((process, log))
        yield started
    finally:
        for process, log in started:
            if process.poll() is None:
                stop_service(process, log)


def counts(url: str, students: list[str]) -> dict[str, tuple[int, int]]:
    """Per kind of evidence: (events applied, what the aggregates count)."""
    with psycopg.connect(url) as conn:
        scope(conn, DEV_TENANT)

        def one(query: str) -> int:
            row = conn.execute(query, (students,)).fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return {
            "events": (one("SELECT count(*) FROM mastery.evidence WHERE student_id = ANY(%s)"), 0),
            "exercise attempts": (
                one(
                    "SELECT count(*) FROM mastery.evidence "
                    "WHERE student_id = ANY(%s) AND component = 1"
                ),
                one("SELECT sum(attempts) FROM mastery.exercise_best WHERE student_id = ANY(%s)"),
            ),
            "quizzes": (
                one(
                    "SELECT count(*) FROM mastery.evidence "
                    "WHERE student_id = ANY(%s) AND component = 2"
                ),
                one(
                    "SELECT sum(quiz_count) FROM mastery.topic_totals "
                    "WHERE student_id = ANY(%s) AND topic = 0"
                ),
            ),
            "reviews": (
                one(
                    "SELECT count(*) FROM mastery.evidence "
                    "WHERE student_id = ANY(%s) AND component = 3"
                ),
                one(
                    "SELECT sum(quality_count) FROM mastery.topic_totals "
                    "WHERE student_id = ANY(%s) AND topic = 0"
                ),
            ),
        }


def wait_until_assigned(settings: Settings, pids: set[int], timeout: float = 60) -> None:
    """Until each of these processes holds some of progress.events' partitions (a
    member's client id ends in its pid)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers or ""})
    group = settings.mastery_consumer_group
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = admin.describe_consumer_groups([group])[group].result()
        except Exception:  # the coordinator may be busy with the rebalance: ask again
            found = None
        holders = set()
        if found is not None and found.state == ConsumerGroupState.STABLE:
            for member in found.members:
                if member.assignment and member.assignment.topic_partitions:
                    suffix = member.client_id.rsplit("-", 1)[-1]
                    holders.add(int(suffix) if suffix.isdigit() else -1)
        if pids <= holders:
            return
        assert time.monotonic() < deadline, f"replicas {pids} not assigned: {found}"
        time.sleep(0.5)


def test_replicas_count_every_event_once_across_rebalances(
    replicas: list[tuple[subprocess.Popen[bytes], Path]],
    settings: Settings,
    runtime: Runtime,
) -> None:
    assert settings.database_url and settings.kafka_bootstrap_servers
    wait_until_assigned(settings, {process.pid for process, _ in replicas})
    run = uuid.uuid4().hex[:6]
    students = [f"replicas-{run}-{n}" for n in range(STUDENTS)]
    rng = random.Random(run)
    events = Events(settings.kafka_bootstrap_servers)
    topics = [common_pb2.TOPIC_FUNCTIONS, common_pb2.TOPIC_STRINGS, common_pb2.TOPIC_CONTROL_FLOW]
    sent: list[tuple[Message, str, str]] = []
    for n in range(EVENTS):
        student, topic = rng.choice(students), rng.choice(topics)
        kind = rng.random()
        if kind < 0.5:
            message = exercise(student, rng.random(), f"ex-{rng.randint(1, 8)}", topic)
        elif kind < 0.8:
            message = quiz(student, rng.random(), topic)
        else:
            message = review(student, rng.randint(0, 100), topic)
        sent.append((message, student, events.send(message, student)))
        if n == EVENTS // 2:
            events.flush()
            # A replica dies mid-work (no goodbye: its batch in hand may be committed in
            # Postgres and not in Kafka): after the session timeout its partitions move,
            # and what it had not committed is delivered again to another member.
            replicas[0][0].kill()
            replicas[0][0].wait(10)
    # And a tenth of the events delivered again (as a producer retrying would): applied
    # by whichever member holds their partition now, they must change nothing.
    for message, student, event_id in rng.sample(sent, EVENTS // 10):
        events.send(message, student, event_id=event_id)
    events.flush()

    deadline = time.monotonic() + 90
    while counts(settings.database_url, students)["events"][0] < EVENTS:
        assert time.monotonic() < deadline, counts(settings.database_url, students)
        time.sleep(0.5)
    time.sleep(3.0)  # the repeated events, behind the originals, have been dropped by now

    found = counts(settings.database_url, students)
    assert found.pop("events")[0] == EVENTS
    for name, (applied, counted) in found.items():
        assert applied == counted, (name, applied, counted)
    assert sum(applied for applied, _ in found.values()) == EVENTS
    # What the incremental path built is what a rebuild from the evidence builds.
    store = MasteryStore(runtime.database("mastery", MIGRATIONS))
    assert store.recalculate(DEV_TENANT, students, datetime.now(UTC), lambda changes: []) == 0
