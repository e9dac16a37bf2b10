"""Erasing a student everywhere (issue 14), through the running mesh on the real
Postgres, Redis and Kafka.

A student of a school of their own leaves data in every service: a graded submission
(exercise; then mastery's evidence and the updates notify logs from it), a diagnosis
(debug, and its windows in Redis), a code review (review), a question (triage), a
struggle alert (notify), and the audit trail of all those calls. Their school's admin
erases them; the operation is done once every service has confirmed. Then every table
of every schema (scoped to that school), every Redis database and the live streams
replayed from their start (the cohort's, the student's own) are searched for the
student's id: nothing is found, while the audit trail still holds the calls under the
student's pseudonym. A progress event of theirs that arrives afterwards goes to the
DLQ with the reason, and their mastery does not come back.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Sequence

import grpc
import psycopg
import pytest
import redis
from google.longrunning import operations_pb2, operations_pb2_grpc
from learnflow.audit.v1 import audit_pb2, audit_pb2_grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc
from psycopg import sql

from services.exercise.domain.bank import default_bank
from services.kit.config import Settings
from services.kit.erasure import ERASING_SERVICES, pseudonym
from services.kit.runtime import Runtime
from services.mastery.domain.events import ErasedStudentError
from services.mastery.main import MIGRATIONS as MASTERY_MIGRATIONS
from services.mastery.store import STUDENT_TABLES, MasteryStore, OutboxMessage
from tests.conftest import MintToken, wait_for
from tests.integration.test_alerts import struggle_event
from tests.integration.test_mastery import Events, exercise
from tests.integration.test_mastery_rules import NOW, random_events
from tests.support.dead_letters import dead_letters

pytestmark = pytest.mark.integration

COHORT = "c-erase"
DIVIDE = "def mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([]))\n"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "main.py", line 4, in <module>\n'
    "    print(mean([]))\n"
    '  File "main.py", line 2, in mean\n'
    "    return sum(xs) / len(xs)\n"
    "ZeroDivisionError: division by zero\n"
)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def events(settings: Settings, mesh: dict[str, int]) -> Events:
    assert settings.kafka_bootstrap_servers
    return Events(settings.kafka_bootstrap_servers)


def leave_data_everywhere(
    channels: dict[str, grpc.Channel], events: Events, token: str, student: str, tenant: str
) -> None:
    metadata = bearer(token)
    item = default_bank().exercises[0]
    exercise_pb2_grpc.ExerciseServiceStub(channels["exercise"]).CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{student}",
            submission=exercise_pb2.Submission(
                exercise=f"exercises/{item.exercise_id}", code=item.reference_solution
            ),
        ),
        metadata=metadata,
        timeout=60,
    )
    debug_pb2_grpc.DebugServiceStub(channels["debug"]).CreateDiagnosis(
        debug_pb2.CreateDiagnosisRequest(
            parent=f"students/{student}",
            diagnosis=debug_pb2.Diagnosis(code=DIVIDE, traceback=TRACEBACK),
        ),
        metadata=metadata,
        timeout=30,
    )
    review_pb2_grpc.ReviewServiceStub(channels["review"]).CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{student}",
            code_review=review_pb2.CodeReview(code=DIVIDE, topic=3),  # type: ignore[arg-type]
        ),
        metadata=metadata,
        timeout=30,
    )
    list(
        triage_pb2_grpc.TriageServiceStub(channels["triage"]).Ask(
            triage_pb2.AskRequest(student=f"students/{student}", question="how do for loops work?"),
            metadata=metadata,
            timeout=60,
        )
    )
    struggle = struggle_event(student, COHORT, f"ep-{uuid.uuid4().hex[:6]}", tenant=tenant)
    events.send(struggle, student, topic="struggle.detected")
    events.flush()


def rows_naming(database_url: str, tenant: str, student: str) -> dict[str, int]:
    """Rows of every table of every LearnFlow schema, as the tenant sees them, whose
    text holds the student's id."""
    found: dict[str, int] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('learnflow.tenant', %s, false)", (tenant,))
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}.{} t WHERE t::text LIKE %s").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = conn.execute(query, (f"%{student}%",)).fetchone()
            if row and row[0]:
                found[f"{schema}.{table}"] = int(row[0])
    return found


def keys_naming(redis_url: str, student: str) -> list[str]:
    """Keys in every Redis database that name the student, or hold a string that does."""
    found = []
    for db in range(16):
        client = redis.Redis.from_url(redis_url, db=db)
        try:
            for key in client.scan_iter(count=1000):
                named = student.encode() in key
                if not named and client.type(key) == b"string":
                    value = client.get(key)
                    named = value is not None and student.encode() in value
                if named:
                    found.append(f"{db}:{key.decode(errors='replace')}")
        finally:
            client.close()
    return found


def streamed(
    channels: dict[str, grpc.Channel], metadata: list[tuple[str, str]], subscriber: str
) -> list[str]:
    """Every update a live stream replays from the tenant's first one, as text (read
    until the stream has been quiet for the call's few seconds)."""
    call = notify_pb2_grpc.NotifyServiceStub(channels["notify"]).StreamUpdates(
        notify_pb2.StreamUpdatesRequest(subscriber=subscriber, cursor="0"),
        metadata=metadata,
        timeout=3,
    )
    seen = []
    try:
        for update in call:
            seen.append(str(update))
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED, exc
    return seen


def operation_done(
    operations: operations_pb2_grpc.OperationsStub, name: str, metadata: list[tuple[str, str]]
) -> operations_pb2.Operation:
    def probe() -> operations_pb2.Operation | None:
        operation = operations.GetOperation(
            operations_pb2.GetOperationRequest(name=name), metadata=metadata, timeout=10
        )
        return operation if operation.done else None

    done: operations_pb2.Operation = wait_for(probe, timeout=90, what=f"{name} done")
    return done


def test_an_erased_student_is_found_nowhere_and_their_late_events_are_refused(
    channels: dict[str, grpc.Channel],
    events: Events,
    settings: Settings,
    mint_token: MintToken,
) -> None:
    assert settings.database_url and settings.redis_url and settings.kafka_bootstrap_servers
    tenant = f"erase-{uuid.uuid4().hex[:6]}"
    student = f"gone-{uuid.uuid4().hex[:10]}"
    token = mint_token(student, "student", [COHORT], tenant=tenant)
    admin = bearer(mint_token("root", "admin", tenant=tenant))
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    leave_data_everywhere(channels, events, token, student, tenant)

    # Data everywhere first: mastery from the graded submission, the alert, the trail.
    def spread() -> dict[str, int] | None:
        found = rows_naming(settings.database_url or "", tenant, student)
        wanted = {
            "mastery.evidence",
            "exercise.submissions",
            "debug.diagnoses",
            "review.code_reviews",
            "notify.alerts",
            "audit.audit_events",
            "roster.students",
        }
        return found if wanted <= set(found) else None

    before = wait_for(spread, timeout=60, what="the student's data in every service")
    assert "notify.updates" in before
    teacher = bearer(mint_token("tess", "teacher", [COHORT], tenant=tenant))
    streams = ((teacher, f"cohorts/{COHORT}"), (admin, f"students/{student}"))
    for caller, subscriber in streams:
        assert any(student in text for text in streamed(channels, caller, subscriber))
    assert keys_naming(settings.redis_url, student)  # the diagnosis's windows at least

    started = mastery.EraseStudentData(
        mastery_pb2.EraseStudentDataRequest(name=f"students/{student}"),
        metadata=admin,
        timeout=10,
    )
    assert started.name.startswith("operations/erasure-")
    operations = operations_pb2_grpc.OperationsStub(channels["mastery"])
    done = operation_done(operations, started.name, admin)
    assert not done.HasField("error")
    response = mastery_pb2.EraseStudentDataResponse()
    assert done.response.Unpack(response)
    hidden = pseudonym(tenant, student)
    assert response.pseudonym == hidden
    assert sorted(s.service for s in response.services) == sorted(ERASING_SERVICES)
    erased = {s.service: s.erased_record_count for s in response.services}
    assert erased["exercise"] >= 1 and erased["debug"] >= 2 and erased["review"] >= 1
    metadata = mastery_pb2.EraseStudentDataMetadata()
    assert done.metadata.Unpack(metadata)
    assert not metadata.pending_services

    # The audit trail's rows are still there, naming the pseudonym; the erasure call
    # itself, recorded after it, too.
    def trail_settled() -> list[audit_pb2.AuditEvent] | None:
        assert rows_naming(settings.database_url or "", tenant, student) == {}
        listed = audit_pb2_grpc.AuditServiceStub(channels["audit"]).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(student=f"students/{hidden}", page_size=100),
            metadata=admin,
            timeout=10,
        )
        methods = {e.method.rsplit("/", 1)[1] for e in listed.audit_events}
        return list(listed.audit_events) if "EraseStudentData" in methods else None

    trail = wait_for(trail_settled, timeout=30, what="the pseudonymised trail")
    assert {"CreateSubmission", "CreateDiagnosis", "CreateCodeReview"} <= {
        e.method.rsplit("/", 1)[1] for e in trail
    }
    assert all(student not in str(e) for e in trail)
    assert keys_naming(settings.redis_url, student) == []
    for caller, subscriber in streams:
        assert not [t for t in streamed(channels, caller, subscriber) if student in t]

    # A late progress event: dead-lettered with the reason, never applied.
    late = events.send(exercise(student, 0.9, tenant=tenant), student)
    events.flush()
    letters = dead_letters(
        settings.kafka_bootstrap_servers, "progress.events.dlq", [late], timeout=60
    )
    assert "was erased" in letters[late]["dlq_error_message"]
    assert hidden in letters[late]["dlq_error_message"]
    time.sleep(1.0)
    with pytest.raises(grpc.RpcError) as missing:
        mastery.GetMastery(
            mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
            metadata=admin,
            timeout=10,
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert rows_naming(settings.database_url or "", tenant, student) == {}

    # Erasing again changes nothing and completes too.
    again = mastery.EraseStudentData(
        mastery_pb2.EraseStudentDataRequest(name=f"students/{student}"),
        metadata=admin,
        timeout=10,
    )
    repeated = operation_done(operations, again.name, admin)
    response = mastery_pb2.EraseStudentDataResponse()
    assert repeated.response.Unpack(response)
    assert {s.service: s.erased_record_count for s in response.services}["exercise"] == 0


def test_only_the_student_or_an_admin_may_erase_and_a_check_erases_nothing(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    request = mastery_pb2.EraseStudentDataRequest(name="students/someone-else")
    for token in (
        mint_token("other", "student", [COHORT]),
        mint_token("tess", "teacher", [COHORT]),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            mastery.EraseStudentData(request, metadata=bearer(token), timeout=10)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # The student themself may; validate_only checks that and erases nothing.
    preview = mastery.EraseStudentData(
        mastery_pb2.EraseStudentDataRequest(name="students/someone-else", validate_only=True),
        metadata=bearer(mint_token("someone-else", "student", [COHORT])),
        timeout=10,
    )
    assert preview.done and not preview.name
    metadata = mastery_pb2.EraseStudentDataMetadata()
    assert preview.metadata.Unpack(metadata)
    assert list(metadata.pending_services) == list(ERASING_SERVICES)
    with pytest.raises(grpc.RpcError) as bad:
        mastery.EraseStudentData(
            mastery_pb2.EraseStudentDataRequest(name="students/"),
            metadata=bearer(mint_token("root", "admin")),
            timeout=10,
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_the_mastery_store_erases_one_tenants_student_only(runtime: Runtime) -> None:
    """The same id in two schools is two students: erasing one leaves the other's rows
    and unsent announcements as they were (a private schema: no relay drains it)."""
    schema = f"mastery_erase_{uuid.uuid4().hex[:6]}"
    try:
        store = MasteryStore(runtime.database(schema, MASTERY_MIGRATIONS))
        sid = f"same-{uuid.uuid4().hex[:6]}"
        for tenant in ("school-a", "school-b"):
            event = random_events(random.Random(3), sid, "UTC", 3)
            store.apply_batch(
                [dataclasses.replace(e, tenant=tenant, occur_time=NOW) for e in event],
                NOW,
                lambda changes: [
                    OutboxMessage("mastery.updated", c.student, b"x", tenant=c.tenant)
                    for c in changes
                ],
            )
        kept_before = store.db.erase_student_rows("school-b", "nobody", STUDENT_TABLES)
        assert kept_before == 0
        erased = store.erase_student("school-a", sid, ["mastery.updated"])
        assert erased > 3  # evidence, aggregates, snapshots and the announcement
        assert store.student("school-a", sid) is None
        assert store.student("school-b", sid) is not None
        sent: list[Sequence[OutboxMessage]] = []
        store.drain_outbox(sent.append)
        assert [m.tenant for batch in sent for m in batch] == ["school-b"]
    finally:
        with psycopg.connect(runtime.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_batch_with_an_erased_students_event_is_refused_whole(runtime: Runtime) -> None:
    """The check the store makes inside each batch's transaction (ADR 0009): a batch
    naming an erased student writes nothing, and says whom by pseudonym."""
    schema = f"mastery_refuse_{uuid.uuid4().hex[:6]}"
    try:
        store = MasteryStore(runtime.database(schema, MASTERY_MIGRATIONS), tombstones=True)
        gone, kept = (f"{who}-{uuid.uuid4().hex[:6]}" for who in ("gone", "kept"))
        runtime.tombstones.bury("school-a", gone, "operations/erasure-test")
        events = [
            dataclasses.replace(e, tenant="school-a", occur_time=NOW)
            for sid in (kept, gone)
            for e in random_events(random.Random(5), sid, "UTC", 2)
        ]
        with pytest.raises(ErasedStudentError, match=pseudonym("school-a", gone)):
            store.apply_batch(events, NOW, lambda changes: [])
        assert store.student("school-a", kept) is None  # the whole batch rolled back
        # The same id in another school is another student.
        other = [dataclasses.replace(e, tenant="school-b") for e in events if e.student_id == gone]
        store.apply_batch(other, NOW, lambda changes: [])
        assert store.student("school-b", gone) is not None
    finally:
        with psycopg.connect(runtime.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
