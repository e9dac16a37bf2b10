"""The mastery engine on the real parts: events produced with a plain Kafka client
become mastery in Postgres, read over gRPC and through Envoy; duplicates, crashes,
poison and disorder change nothing they should not."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import httpx
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from services.kit.auth import DEV_TENANT
from services.kit.bus import KafkaBus, decode_headers
from services.kit.config import Settings
from services.kit.db import scope
from tests.conftest import MintToken, bearer, wait_for
from tests.support.dead_letters import dead_letters
from tests.support.rich_errors import rich_error

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SOURCE = "//learnflow.dev/test-producer"
Topic: TypeAlias = common_pb2.Topic.ValueType
FUNCTIONS = common_pb2.TOPIC_FUNCTIONS


def stamp(moment: datetime | None = None) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment or datetime.now(UTC))
    return ts


def ref(
    student: str, cohort: str = "", time_zone: str = "UTC", tenant: str = DEV_TENANT
) -> events_pb2.StudentRef:
    return events_pb2.StudentRef(
        student_id=student, cohort=cohort, time_zone=time_zone, tenant=tenant
    )


def exercise(
    student: str,
    score: float,
    exercise_id: str = "functions-001",
    topic: Topic = FUNCTIONS,
    **kw: Any,
) -> Message:
    return events_pb2.ExerciseGraded(
        student=ref(student, **kw),
        topic=topic,
        exercise_id=exercise_id,
        score=score,
        occur_time=stamp(),
    )


def quiz(student: str, score: float, topic: Topic = FUNCTIONS, **kw: Any) -> Message:
    return events_pb2.QuizGraded(
        student=ref(student, **kw),
        topic=topic,
        quiz=f"students/{student}/quizzes/{uuid.uuid4().hex[:6]}",
        score=score,
        occur_time=stamp(),
    )


def review(student: str, quality: int, topic: Topic = FUNCTIONS, **kw: Any) -> Message:
    return events_pb2.CodeReviewed(
        student=ref(student, **kw),
        topic=topic,
        code_review=f"students/{student}/codeReviews/r1",
        quality_score=quality,
        occur_time=stamp(),
    )


class Events:
    """A plain confluent-kafka producer speaking CloudEvents binary mode."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap})

    def send(
        self,
        message: Message,
        key: str,
        *,
        event_id: str | None = None,
        topic: str = "progress.events",
        value: bytes | None = None,
    ) -> str:
        event_id = event_id or uuid.uuid4().hex
        headers = {
            "ce_specversion": "1.0",
            "ce_id": event_id,
            "ce_source": SOURCE,
            "ce_type": message.DESCRIPTOR.full_name,
            "ce_time": datetime.now(UTC).isoformat(),
            "ce_subject": key,
            "content-type": "application/protobuf",
        }
        self.producer.produce(
            topic,
            key=key.encode(),
            value=value if value is not None else message.SerializeToString(),
            headers=list(headers.items()),
        )
        return event_id

    def flush(self) -> None:
        assert self.producer.flush(10) == 0


@pytest.fixture(scope="module")
def stub(mesh: dict[str, int]) -> Iterator[mastery_pb2_grpc.MasteryServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh['mastery']}") as channel:
        yield mastery_pb2_grpc.MasteryServiceStub(channel)


@pytest.fixture(scope="module")
def operations(mesh: dict[str, int]) -> Iterator[operations_pb2_grpc.OperationsStub]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh['mastery']}") as channel:
        yield operations_pb2_grpc.OperationsStub(channel)


def new_student() -> str:
    return f"stu-{uuid.uuid4().hex[:10]}"


def mastery_when(
    stub: mastery_pb2_grpc.MasteryServiceStub,
    token: str,
    student: str,
    ready: Callable[[mastery_pb2.Mastery], bool],
) -> mastery_pb2.Mastery:
    def probe() -> mastery_pb2.Mastery | None:
        try:
            m = stub.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
                metadata=bearer(token),
                timeout=5,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return m if ready(m) else None

    return wait_for(probe, what=f"mastery of {student}")


def evidence_total(m: mastery_pb2.Mastery) -> int:
    e = m.evidence
    return e.completion.event_count + e.quiz.event_count + e.quality.event_count


# -- from Kafka to GetMastery ---------------------------------------------------------


def test_events_become_mastery_over_grpc_and_envoy(
    events: Events,
    stub: mastery_pb2_grpc.MasteryServiceStub,
    mint_token: MintToken,
    gateway_url: str,
    settings: Settings,
) -> None:
    student = new_student()
    ids = [
        events.send(exercise(student, 0.8, cohort="c-e2e"), student),
        events.send(quiz(student, 0.6), student),
        events.send(review(student, 70), student),
    ]
    events.flush()
    token = mint_token(student)
    m = mastery_when(stub, token, student, lambda m: evidence_total(m) == 3)
    # 0.4*0.8 + 0.3*0.6 + 0.2*0.7 + 0.1*(1 active day / 30)
    assert m.score == pytest.approx(0.32 + 0.18 + 0.14 + 0.1 / 30)
    assert m.band == 2  # yellow (64 %)
    assert (m.components.completion, m.components.quiz, m.components.quality) == (0.8, 0.6, 0.7)
    assert m.cohort == "cohorts/c-e2e" and m.streak.current_days == 1
    assert [t.topic for t in m.topics] == [3]
    assert m.evidence.completion.latest[0].event_id == ids[0]  # traceable to the event
    assert m.evidence.completion.latest[0].subject == "functions-001"

    reply = httpx.get(
        f"{gateway_url}/v1/students/{student}/mastery",
        headers={"authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["band"] == "MASTERY_BAND_YELLOW"
    assert body["evidence"]["quality"]["latest"][0]["eventId"] == ids[2]

    cached = redis.Redis.from_url(settings.redis_url or "").get(
        f"mastery:v1:{DEV_TENANT}:{student}"
    )
    assert isinstance(cached, bytes) and mastery_pb2.Mastery.FromString(cached).score == m.score

    # A new event invalidates the cached entry and shows up at once.
    events.send(exercise(student, 1.0, exercise_id="functions-002"), student)
    events.flush()
    m2 = mastery_when(stub, token, student, lambda m: evidence_total(m) == 4)
    assert m2.components.completion == pytest.approx(0.9)


def test_duplicate_delivery_changes_nothing(
    events: Events, stub: mastery_pb2_grpc.MasteryServiceStub, mint_token: MintToken
) -> None:
    student = new_student()
    token = mint_token(student)
    first = exercise(student, 0.5)
    event_id = events.send(first, student)
    events.flush()
    once = mastery_when(stub, token, student, lambda m: evidence_total(m) == 1)
    for _ in range(3):  # the same CloudEvent delivered again
        events.send(first, student, event_id=event_id)
    marker = events.send(quiz(student, 1.0), student)  # proves the duplicates were consumed
    events.flush()
    after = mastery_when(stub, token, student, lambda m: m.evidence.quiz.event_count == 1)
    assert after.evidence.completion.event_count == 1
    assert after.components.completion == once.components.completion == 0.5
    assert after.evidence.quiz.latest[0].event_id == marker


def test_events_out_of_order_give_the_same_mastery(
    events: Events, stub: mastery_pb2_grpc.MasteryServiceStub, mint_token: MintToken
) -> None:
    a, b = new_student(), new_student()
    plan = [("ex1", 0.3), ("ex1", 0.9), ("ex2", 0.6), ("ex1", 0.5)]
    for student, order in ((a, plan), (b, list(reversed(plan)))):
        for exercise_id, score in order:
            events.send(exercise(student, score, exercise_id=exercise_id), student)
        events.send(quiz(student, 0.4), student)
    events.flush()
    ma = mastery_when(stub, mint_token(a), a, lambda m: evidence_total(m) == 5)
    mb = mastery_when(stub, mint_token(b), b, lambda m: evidence_total(m) == 5)
    assert ma.components == mb.components and ma.score == mb.score
    assert ma.components.completion == pytest.approx((0.9 + 0.6) / 2)  # best per exercise


def test_poison_goes_to_the_dlq_and_the_stream_continues(
    events: Events,
    stub: mastery_pb2_grpc.MasteryServiceStub,
    mint_token: MintToken,
    settings: Settings,
) -> None:
    student = new_student()
    bad_bytes = events.send(exercise(student, 0.5), student, value=b"\xff\x00 not protobuf")
    bad_value = events.send(exercise(student, 7.0), student)  # score outside [0, 1]
    good = events.send(exercise(student, 0.25), student)
    events.flush()
    m = mastery_when(stub, mint_token(student), student, lambda m: evidence_total(m) == 1)
    assert m.evidence.completion.latest[0].event_id == good

    assert settings.kafka_bootstrap_servers
    found = dead_letters(
        settings.kafka_bootstrap_servers, "progress.events.dlq", {bad_bytes, bad_value}
    )
    assert set(found) == {bad_bytes, bad_value}
    assert found[bad_bytes]["dlq_error_class"] == "DecodeFailureError"
    assert "outside [0, 1]" in found[bad_value]["dlq_error_message"]
    for headers in found.values():
        assert headers["dlq_original_topic"] == "progress.events"
        assert headers["dlq_consumer_group"] == "mastery-engine"
        assert int(headers["dlq_original_offset"]) >= 0


def test_schools_are_kept_apart(
    events: Events,
    stub: mastery_pb2_grpc.MasteryServiceStub,
    mint_token: MintToken,
    settings: Settings,
) -> None:
    """The same student id in the same-named cohort of two schools is two students:
    each school's callers see their own, an operator sees the school it names, and an
    event that names no school is dead-lettered."""
    student, cohort = new_student(), f"c-{uuid.uuid4().hex[:6]}"
    for tenant, score in (("school-a", 0.9), ("school-b", 0.1)):
        events.send(exercise(student, score, cohort=cohort, tenant=tenant), student)
    orphan = events.send(exercise(student, 0.5, cohort=cohort, tenant=""), student)
    events.flush()

    def completion(token: str) -> float:
        m = mastery_when(stub, token, student, lambda m: evidence_total(m) == 1)
        return m.components.completion

    # Each school's student reads their own (the roster learns their cohort from it),
    # then each school's teacher of the cohort reads that school's.
    for tenant, score in (("school-a", 0.9), ("school-b", 0.1)):
        assert completion(mint_token(student, "student", [cohort], tenant=tenant)) == score
        assert completion(mint_token("tess", "teacher", [cohort], tenant=tenant)) == score
    operator = mint_token("ops", "operator", tenant="platform")
    as_school_a = [*bearer(operator), ("x-learnflow-tenant", "school-a")]
    m = stub.GetMastery(
        mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
        metadata=as_school_a,
        timeout=5,
    )
    assert m.components.completion == 0.9

    def code(metadata: list[tuple[str, str]], call: Callable[..., Any], request: Any) -> Any:
        try:
            call(request, metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    get = mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery")
    # school-c has no such student: its admin finds nothing (not even that the id exists
    # elsewhere), and its teacher of the same-named cohort is refused (not their student).
    admin_c = bearer(mint_token("root", "admin", tenant="school-c"))
    teacher_c = bearer(mint_token("tess", "teacher", [cohort], tenant="school-c"))
    assert code(admin_c, stub.GetMastery, get) == grpc.StatusCode.NOT_FOUND
    assert code(teacher_c, stub.GetMastery, get) == grpc.StatusCode.PERMISSION_DENIED
    # Naming another school is an operator's privilege only.
    admin_a = bearer(mint_token("root", "admin", tenant="school-a"))
    forged = [*admin_a, ("x-learnflow-tenant", "school-b")]
    assert code(forged, stub.GetMastery, get) == grpc.StatusCode.PERMISSION_DENIED
    # A cohort listing counts its own school's students only.
    listing = mastery_pb2.ListCohortMasteriesRequest(cohort=f"cohorts/{cohort}")
    for tenant, score in (("school-a", 0.9), ("school-b", 0.1)):
        teacher = bearer(mint_token("tess", "teacher", [cohort], tenant=tenant))
        page = stub.ListCohortMasteries(listing, metadata=teacher, timeout=5)
        assert page.total_size == 1 and page.masteries[0].components.completion == score
    empty = stub.ListCohortMasteries(listing, metadata=teacher_c, timeout=5)
    assert empty.total_size == 0 and not empty.masteries

    assert settings.kafka_bootstrap_servers
    found = dead_letters(settings.kafka_bootstrap_servers, "progress.events.dlq", {orphan})
    assert "no tenant" in found[orphan]["dlq_error_message"]


def test_a_crash_between_db_commit_and_offset_commit_loses_and_doubles_nothing(
    events: Events, settings: Settings, mesh: dict[str, int]
) -> None:
    """A consumer process killed (os._exit) right after its database commit and before
    its offset commit: the restarted consumer gets the batch again and applies nothing
    twice."""
    assert settings.kafka_bootstrap_servers and settings.database_url
    topic, group = f"crash-test-{uuid.uuid4().hex[:8]}", f"crash-{uuid.uuid4().hex[:8]}"
    KafkaBus(settings.kafka_bootstrap_servers).ensure_topics([topic], partitions=1)
    student = new_student()
    sent = [
        events.send(
            exercise(student, (n % 10) / 10, exercise_id=f"ex{n % 4}"), student, topic=topic
        )
        for n in range(40)
    ]
    events.flush()

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "tests/integration/crash_consumer.py",
                mode,
                topic,
                group,
                str(len(sent)),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={
                "PATH": "/usr/bin:/bin",
                "DATABASE_URL": str(settings.database_url),
                "REDIS_URL": settings.redis_url or "",
                "KAFKA_BOOTSTRAP_SERVERS": str(settings.kafka_bootstrap_servers),
                "JWKS_PATH": str(settings.jwks_path),
                "LOG_LEVEL": "WARNING",
            },
        )

    crashed = run("crash")
    assert crashed.returncode == 17, crashed.stderr
    with psycopg.connect(settings.database_url) as conn:
        scope(conn, DEV_TENANT)
        committed = conn.execute(
            "SELECT count(*) FROM mastery.evidence WHERE student_id = %s", (student,)
        ).fetchone()
    assert committed is not None and committed[0] > 0  # the batch reached the database

    restarted = run("normal")
    assert restarted.returncode == 0, restarted.stderr
    with psycopg.connect(settings.database_url) as conn:
        scope(conn, DEV_TENANT)
        rows = conn.execute(
            "SELECT event_id FROM mastery.evidence WHERE student_id = %s", (student,)
        ).fetchall()
        best = conn.execute(
            "SELECT exercise_id, best, attempts FROM mastery.exercise_best WHERE student_id = %s "
            "ORDER BY exercise_id",
            (student,),
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(sent)  # every event, once
    expected = {f"ex{k}": [(n % 10) / 10 for n in range(40) if n % 4 == k] for k in range(4)}
    assert best == [(k, max(v), len(v)) for k, v in sorted(expected.items())]


def test_mastery_updated_is_published(
    events: Events,
    settings: Settings,
    mint_token: MintToken,
    stub: mastery_pb2_grpc.MasteryServiceStub,
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"updates-{uuid.uuid4().hex}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["mastery.updated"])
    wait_for(
        lambda: consumer.assignment() or (consumer.poll(0.2) and None) or None, 30, "assignment"
    )
    student = new_student()
    cause = events.send(exercise(student, 1.0, cohort="c-upd"), student)
    events.flush()
    update: events_pb2.MasteryUpdated | None = None
    deadline = time.monotonic() + 30
    try:
        while update is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.key() != student.encode():
                continue
            headers = decode_headers(msg.headers())
            assert headers["ce_type"] == "learnflow.events.v1.MasteryUpdated"
            assert headers["ce_source"] == "//learnflow.dev/mastery"
            update = events_pb2.MasteryUpdated.FromString(msg.value() or b"")
    finally:
        consumer.close()
    assert update is not None, "no mastery.updated for the student"
    assert update.cause_event_id == cause
    assert update.student.cohort == "c-upd"
    assert update.previous_band == 0 and update.band == 1  # 0.4 + 1/300: red
    assert update.score == pytest.approx(0.4 + 0.1 / 30)
    assert [t.topic for t in update.topics] == [3]


# -- authorisation and validation --------------------------------------------------------


def test_access_rules(
    events: Events,
    stub: mastery_pb2_grpc.MasteryServiceStub,
    mint_token: MintToken,
    gateway_url: str,
) -> None:
    student = new_student()
    events.send(exercise(student, 0.5, cohort="c-acl"), student)
    events.flush()
    # The student's class is the roster's, learnt from their own token (not the event's).
    own_token = mint_token(student, "student", ["c-acl"])
    mastery_when(stub, own_token, student, lambda m: evidence_total(m) == 1)
    request = mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery")

    def code(token: str, req: mastery_pb2.GetMasteryRequest = request) -> grpc.StatusCode:
        try:
            stub.GetMastery(req, metadata=bearer(token), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    assert code(mint_token("someone-else")) == grpc.StatusCode.PERMISSION_DENIED
    assert code(mint_token("tess", "teacher", ["c-acl"])) == grpc.StatusCode.OK
    assert code(mint_token("tom", "teacher", ["c-other"])) == grpc.StatusCode.PERMISSION_DENIED
    assert code(mint_token("root", "admin")) == grpc.StatusCode.OK
    missing = mastery_pb2.GetMasteryRequest(name="students/nobody-at-all/mastery")
    assert code(mint_token("root", "admin"), missing) == grpc.StatusCode.NOT_FOUND
    # A student asking for a stranger learns nothing about whether they exist.
    assert code(mint_token("curious"), missing) == grpc.StatusCode.PERMISSION_DENIED

    # Through Envoy; a query parameter overriding the path is authorised on the message.
    own = {"authorization": f"Bearer {mint_token(student)}"}
    assert httpx.get(f"{gateway_url}/v1/students/{student}/mastery", headers=own).status_code == 200
    other = new_student()
    sneaky = httpx.get(
        f"{gateway_url}/v1/students/{student}/mastery",
        params={"name": f"students/{other}/mastery"},
        headers=own,
    )
    assert sneaky.status_code == 403
    assert sneaky.json()["details"][0]["reason"] == "ACCESS_DENIED"


def test_bad_requests_name_their_fields(
    stub: mastery_pb2_grpc.MasteryServiceStub, mint_token: MintToken
) -> None:
    admin = bearer(mint_token("root", "admin"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetMastery(mastery_pb2.GetMasteryRequest(name="learners/x"), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(caught.value) == ("INVALID_FIELDS", ["name"])

    with pytest.raises(grpc.RpcError) as caught:
        stub.QueryMasteryHistory(
            mastery_pb2.QueryMasteryHistoryRequest(
                name="students/x/mastery",
                start_date=date_pb2.Date(year=2026, month=11, day=20),
                end_date=date_pb2.Date(year=2026, month=2, day=30),
                topic=77,  # type: ignore[arg-type]  # deliberately not a topic
            ),
            metadata=admin,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(caught.value) == ("INVALID_FIELDS", ["end_date", "granularity", "topic"])

    with pytest.raises(grpc.RpcError) as caught:
        stub.ListCohortMasteries(
            mastery_pb2.ListCohortMasteriesRequest(
                cohort="cohorts/c1",
                page_size=-5,
                order_by="shoe_size",
                band=9,  # type: ignore[arg-type]  # deliberately not a band
            ),
            metadata=admin,
        )
    assert rich_error(caught.value) == ("INVALID_FIELDS", ["band", "order_by", "page_size"])


# -- cohorts, history, recalculation ---------------------------------------------------


def test_cohort_listing_pages_and_orders(
    events: Events, stub: mastery_pb2_grpc.MasteryServiceStub, mint_token: MintToken
) -> None:
    cohort = f"c-list-{uuid.uuid4().hex[:6]}"
    students = [new_student() for _ in range(5)]
    for n, student in enumerate(students):
        events.send(exercise(student, 0.2 * n, cohort=cohort), student)
    events.flush()
    teacher = bearer(mint_token("tess", "teacher", [cohort]))

    def page(
        token: str = "", size: int = 2, order: str = "score desc"
    ) -> mastery_pb2.ListCohortMasteriesResponse:
        reply: mastery_pb2.ListCohortMasteriesResponse = stub.ListCohortMasteries(
            mastery_pb2.ListCohortMasteriesRequest(
                cohort=f"cohorts/{cohort}", page_size=size, page_token=token, order_by=order
            ),
            metadata=teacher,
            timeout=5,
        )
        return reply

    wait_for(lambda: page(size=10).total_size == 5 or None, what="the cohort's students")
    names, token = [], ""
    while True:
        reply = page(token)
        assert reply.total_size == 5 and len(reply.masteries) <= 2
        names += [m.name for m in reply.masteries]
        token = reply.next_page_token
        if not token:
            break
    assert names == [f"students/{s}/mastery" for s in reversed(students)]  # highest first
    lowest = page(size=1, order="score").masteries[0]
    assert lowest.name == f"students/{students[0]}/mastery"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListCohortMasteries(
            mastery_pb2.ListCohortMasteriesRequest(cohort="cohorts/c-else"), metadata=teacher
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_history_shows_todays_snapshot(
    events: Events, stub: mastery_pb2_grpc.MasteryServiceStub, mint_token: MintToken
) -> None:
    student = new_student()
    events.send(exercise(student, 0.5), student)
    events.flush()
    token = mint_token(student)
    current = mastery_when(stub, token, student, lambda m: evidence_total(m) == 1)
    today = datetime.now(UTC).date()
    start = today - timedelta(days=6)
    reply = stub.QueryMasteryHistory(
        mastery_pb2.QueryMasteryHistoryRequest(
            name=f"students/{student}/mastery",
            start_date=date_pb2.Date(year=start.year, month=start.month, day=start.day),
            end_date=date_pb2.Date(year=today.year, month=today.month, day=today.day),
            granularity=mastery_pb2.GRANULARITY_DAILY,
        ),
        metadata=bearer(token),
        timeout=5,
    )
    assert len(reply.points) == 1  # nothing before today
    assert reply.points[-1].score == pytest.approx(current.score)
    assert reply.points[-1].event_count == 1
    assert reply.summary.max_score == pytest.approx(current.score)


def test_recalculation_is_a_long_running_operation(
    events: Events,
    stub: mastery_pb2_grpc.MasteryServiceStub,
    operations: operations_pb2_grpc.OperationsStub,
    mint_token: MintToken,
    gateway_url: str,
) -> None:
    cohort = f"c-recalc-{uuid.uuid4().hex[:6]}"
    students = [new_student() for _ in range(3)]
    for student in students:
        events.send(quiz(student, 0.9, cohort=cohort), student)
    events.flush()
    teacher_token = mint_token("tess", "teacher", [cohort])
    teacher = bearer(teacher_token)
    wait_for(
        lambda: (
            stub.ListCohortMasteries(
                mastery_pb2.ListCohortMasteriesRequest(cohort=f"cohorts/{cohort}"), metadata=teacher
            ).total_size
            == 3
            or None
        ),
        what="the cohort",
    )
    operation = stub.RecalculateMastery(
        mastery_pb2.RecalculateMasteryRequest(cohort=f"cohorts/{cohort}"),
        metadata=teacher,
        timeout=5,
    )
    assert operation.name.startswith("operations/recalculate-")
    done = wait_for(
        lambda: (
            (
                (
                    op := operations.GetOperation(
                        operations_pb2.GetOperationRequest(name=operation.name), metadata=teacher
                    )
                ).done
                and op
            )
            or None
        ),
        what="the recalculation",
    )
    response = mastery_pb2.RecalculateMasteryResponse()
    assert done.response.Unpack(response)
    assert response.processed_students == 3
    assert response.changed_students == 0  # nothing drifted: rebuilt from evidence, same result
    metadata = mastery_pb2.RecalculateMasteryMetadata()
    assert done.metadata.Unpack(metadata) and metadata.processed_students == 3

    via_envoy = httpx.get(
        f"{gateway_url}/v1/{operation.name}",
        headers={"authorization": f"Bearer {teacher_token}"},
        timeout=5,
    )
    assert via_envoy.status_code == 200 and via_envoy.json()["done"] is True

    # Everyone is admin-only; another teacher cannot see this operation.
    with pytest.raises(grpc.RpcError) as caught:
        stub.RecalculateMastery(
            mastery_pb2.RecalculateMasteryRequest(all_students=True), metadata=teacher
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        operations.GetOperation(
            operations_pb2.GetOperationRequest(name=operation.name),
            metadata=bearer(mint_token("tom", "teacher", ["c-x"])),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_recalculation_can_be_cancelled(
    runtime: Any, mesh: dict[str, int], settings: Settings
) -> None:
    """Cancellation is honoured between chunks: seeded students, chunks of one, cancel."""
    from services.mastery.engine import MasteryEngine
    from services.mastery.main import MIGRATIONS
    from services.mastery.publisher import OutboxSender, encode_changes
    from services.mastery.recalculation import Recalculations
    from services.mastery.store import MasteryStore

    cohort = f"c-cancel-{uuid.uuid4().hex[:6]}"
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        scope(conn, DEV_TENANT)
        conn.execute(
            "INSERT INTO mastery.students (student_id, cohort) "
            "SELECT %s || '-' || n, %s FROM generate_series(1, 300) n",
            (cohort, cohort),
        )
    engine = MasteryEngine(
        MasteryStore(runtime.database("mastery", MIGRATIONS)),
        runtime.cache,
        encode_changes,
        OutboxSender(runtime.bus),
    )
    recalculations = Recalculations(engine, chunk_size=1)
    name = recalculations.start(DEV_TENANT, cohort, created_by="root")
    engine.request_cancel(DEV_TENANT, name)
    recalculations.wait(30)
    record = engine.operation(DEV_TENANT, name)
    assert record is not None
    assert record.done and record.cancel_requested and record.response is None
    assert (record.error_code, record.error_message) == (1, "cancelled")  # google.rpc CANCELLED
    progress = mastery_pb2.RecalculateMasteryMetadata()
    from google.protobuf import any_pb2

    assert any_pb2.Any.FromString(record.metadata).Unpack(progress)
    assert progress.total_students == 300 and 0 < progress.processed_students < 300
    assert progress.cancel_requested
