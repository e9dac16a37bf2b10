"""Exporting and erasing a student everywhere (issue 14), through the running mesh on
the real Postgres, Redis and Kafka.

A student of a school of their own leaves data in every service: a graded submission
(exercise; then mastery's evidence and the updates notify logs from it), a diagnosis
(debug, and its windows in Redis), a code review (review), a question (triage), a
struggle alert (notify), and the audit trail of all those calls. They export their data:
the archive holds a part from every service, as its manifest says. Their school's admin
then erases them; the operation is done once every service has confirmed. Then every table
of every schema (scoped to that school), every Redis database and the live streams
replayed from their start (the cohort's, the student's own) are searched for the
student's id: nothing is found, while the audit trail still holds the calls under the
student's pseudonym. A progress event of theirs that arrives afterwards goes to the
DLQ with the reason, and their mastery does not come back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import time
import uuid
import zipfile
from collections.abc import Sequence
from typing import Any

import grpc
import psycopg
import pytest
import redis
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import field_mask_pb2
from learnflow.audit.v1 import audit_pb2, audit_pb2_grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc
from psycopg import sql

from services.exercise.domain.bank import default_bank
from services.kit.bus import PoisonEventError
from services.kit.config import Settings
from services.kit.erasure import ERASING_SERVICES, pseudonym
from services.kit.runtime import Runtime
from services.mastery.domain.events import ErasedStudentError
from services.mastery.main import MIGRATIONS as MASTERY_MIGRATIONS
from services.mastery.store import STUDENT_TABLES, MasteryStore, OutboxMessage
from services.notify.convert import decode_update
from services.notify.hub import Hub
from services.notify.main import MIGRATIONS as NOTIFY_MIGRATIONS
from services.notify.store import AlertStore
from services.notify.updates import UpdateLog, UpdateRow
from tests.conftest import MintToken, bearer, wait_for
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
    ask(channels, token, student)
    struggle = struggle_event(student, COHORT, f"ep-{uuid.uuid4().hex[:6]}", tenant=tenant)
    events.send(struggle, student, topic="struggle.detected")
    events.flush()


def ask(channels: dict[str, grpc.Channel], token: str, student: str) -> None:
    """A question to triage, which caches the student's context."""
    list(
        triage_pb2_grpc.TriageServiceStub(channels["triage"]).Ask(
            triage_pb2.AskRequest(student=f"students/{student}", question="how do for loops work?"),
            metadata=bearer(token),
            timeout=60,
        )
    )


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


def export_of(
    channels: dict[str, grpc.Channel], metadata: list[tuple[str, str]], student: str
) -> tuple[mastery_pb2.StudentDataExport, dict[str, Any], dict[str, dict[str, list[Any]]]]:
    """A student's export, made and downloaded: its manifest as the operation answers
    it, the archive's manifest, and each service's file."""
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    started = mastery.ExportStudentData(
        mastery_pb2.ExportStudentDataRequest(name=f"students/{student}"),
        metadata=metadata,
        timeout=10,
    )
    assert started.name.startswith("operations/export-")
    done = operation_done(
        operations_pb2_grpc.OperationsStub(channels["mastery"]), started.name, metadata
    )
    export = mastery_pb2.StudentDataExport()
    assert done.response.Unpack(export)
    body = mastery.DownloadStudentDataExport(
        mastery_pb2.DownloadStudentDataExportRequest(name=export.name),
        metadata=metadata,
        timeout=10,
    )
    assert body.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body.data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        files = {}
        for part in manifest["parts"]:
            content = archive.read(part["file"])
            assert hashlib.sha256(content).hexdigest() == part["sha256"]
            files[part["service"]] = json.loads(content)
    return export, manifest, files


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

    # Their own export first: a part from every service, each file as its manifest says.
    ask(channels, token, student)  # triage's cached context went with the mastery update
    mastery.UpdateConsent(
        mastery_pb2.UpdateConsentRequest(
            consent=mastery_pb2.Consent(
                name=f"students/{student}/consent",
                analytics=mastery_pb2.ConsentDecision(granted=False),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["analytics"]),
        ),
        metadata=bearer(token),
        timeout=10,
    )
    export, manifest, files = export_of(channels, bearer(token), student)
    assert export.name.startswith(f"students/{student}/exports/")
    assert manifest["student"] == f"students/{student}" and manifest["export"] == export.name
    assert sorted(files) == sorted(ERASING_SERVICES)
    for part in export.parts:
        assert dict(part.record_counts) == {k: len(v) for k, v in files[part.service].items()}
        assert sum(part.record_counts.values()) > 0, f"nothing from {part.service}"
    assert files["exercise"]["submissions"][0]["message"]["code"]
    assert files["debug"]["diagnoses"][0]["message"]["error"]["error_type"] == "ZeroDivisionError"
    assert files["review"]["code_reviews"][0]["message"]["code"] == DIVIDE
    assert files["mastery"]["evidence"] and files["mastery"]["roster"] == [{"cohort": COHORT}]
    (choice,) = files["mastery"]["consent_records"]
    assert (choice["purpose"], choice["granted"], choice["recorded_by"]) == (
        "analytics",
        False,
        student,
    )
    assert files["notify"]["alerts"][0]["student_id"] == student
    assert files["triage"]["cached_contexts"][0]["context"]["name"] == f"students/{student}/context"
    assert "CreateSubmission" in {
        e["method"].rsplit("/", 1)[1] for e in files["audit"]["audit_events"]
    }

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


def test_who_may_export_and_download_and_a_guardians_export_is_audited(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    tenant = f"export-{uuid.uuid4().hex[:6]}"
    student = f"kid-{uuid.uuid4().hex[:6]}"
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    own = mastery_pb2.ExportStudentDataRequest(name=f"students/{student}")
    for token in (
        mint_token("other", "student", [COHORT], tenant=tenant),
        mint_token("tess", "teacher", [COHORT], tenant=tenant),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            mastery.ExportStudentData(own, metadata=bearer(token), timeout=10)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Only an admin acts for a guardian.
    student_token = bearer(mint_token(student, "student", [COHORT], tenant=tenant))
    for_guardian = mastery_pb2.ExportStudentDataRequest(
        name=f"students/{student}", guardian="guardians/mum-1"
    )
    with pytest.raises(grpc.RpcError) as denied:
        mastery.ExportStudentData(for_guardian, metadata=student_token, timeout=10)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    admin = bearer(mint_token("root", "admin", tenant=tenant))
    with pytest.raises(grpc.RpcError) as bad:
        mastery.ExportStudentData(
            mastery_pb2.ExportStudentDataRequest(name=f"students/{student}", guardian="mum"),
            metadata=admin,
            timeout=10,
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    started = mastery.ExportStudentData(for_guardian, metadata=admin, timeout=10)
    operations = operations_pb2_grpc.OperationsStub(channels["mastery"])
    export = mastery_pb2.StudentDataExport()
    assert operation_done(operations, started.name, admin).response.Unpack(export)
    assert export.guardian == "guardians/mum-1"
    # A student who holds nothing yet still gets every service's (empty) part.
    assert sorted(p.service for p in export.parts) == sorted(ERASING_SERVICES)
    # The student may download it; another student, or anyone for a made-up export, not.
    download = mastery_pb2.DownloadStudentDataExportRequest(name=export.name)
    assert mastery.DownloadStudentDataExport(download, metadata=student_token, timeout=10).data
    with pytest.raises(grpc.RpcError) as denied:
        mastery.DownloadStudentDataExport(
            download,
            metadata=bearer(mint_token("other", "student", [COHORT], tenant=tenant)),
            timeout=10,
        )
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as missing:
        mastery.DownloadStudentDataExport(
            mastery_pb2.DownloadStudentDataExportRequest(
                name=f"students/{student}/exports/{uuid.uuid4().hex}"
            ),
            metadata=admin,
            timeout=10,
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    # The trail says whom the admin exported for.

    def audited() -> list[audit_pb2.AuditEvent] | None:
        listed = audit_pb2_grpc.AuditServiceStub(channels["audit"]).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                student=f"students/{student}",
                method="/learnflow.mastery.v1.MasteryService/ExportStudentData",
            ),
            metadata=admin,
            timeout=10,
        )
        found = [e for e in listed.audit_events if e.code == "OK"]
        return found or None

    (event,) = wait_for(audited, timeout=30, what="the admin's export in the trail")
    assert event.actor.subject == "root"
    assert "guardians/mum-1" in event.resources


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


def test_notify_refuses_an_erased_students_events_inside_its_transactions(
    runtime: Runtime,
) -> None:
    """Notify's stores ask the tombstones once they hold a lock the erasure's conflicts
    with (ADR 0009): the alert transaction and the update log refuse an erased student
    of their tenant (and only of theirs) and write nothing."""
    schema = f"notify_refuse_{uuid.uuid4().hex[:6]}"
    try:
        db = runtime.database(schema, NOTIFY_MIGRATIONS)
        alerts, log = AlertStore(db), UpdateLog(db, Hub(), decode_update)
        gone = f"gone-{uuid.uuid4().hex[:6]}"
        runtime.tombstones.bury("school-a", gone, "operations/erasure-test")
        with (
            pytest.raises(PoisonEventError, match=pseudonym("school-a", gone)),
            alerts.transaction("school-a", students=[gone]) as tx,
        ):
            tx.claim("//test", "e1")
        row = UpdateRow(student_id=gone, cohort=None, payload=b"", ce_source="//t", ce_id="e2")
        with pytest.raises(PoisonEventError, match="was erased"):
            log.append("school-a", [row])
        assert log.append("school-b", [row]) == 1  # the same id in another school
        with alerts.transaction("school-a", students=[gone + "x"]) as tx:
            assert tx.claim("//test", "e1")  # nothing of the refused one was kept
    finally:
        with psycopg.connect(runtime.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
