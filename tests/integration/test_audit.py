"""The audit trail through the running mesh (Kafka, Postgres, Envoy): every
authenticated call is recorded by the server it reached, published on audit.events,
stored by the audit service in the trail of the tenant the call acted in, and listed
to that tenant's admins (and operators acting in it) only.

A teacher of school-a's cohort c1 reads the mastery of a school-b student (denied: no
such student in school-a's roster) and of a school-a student of c1 (allowed). School-a's
admin then finds both, with their codes; school-b's admin finds neither; a student may
not list at all. The same through Envoy's JSON routes, where the record names the
address the gateway saw. An operator acting in school-a is recorded in school-a's trail
with its own tenant as the actor's.

Records arrive a moment after the calls (batched off the request path, then consumed):
the listings poll, with a timeout.
"""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from learnflow.audit.v1 import audit_pb2, audit_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from services.kit.auth import TENANT_METADATA
from tests.conftest import MintToken, wait_for

pytestmark = pytest.mark.integration

A, B = "school-a", "school-b"
COHORT = "c1"
GET_MASTERY = "/learnflow.mastery.v1.MasteryService/GetMastery"
LIST_AUDIT_EVENTS = "/learnflow.audit.v1.AuditService/ListAuditEvents"
ARRIVAL_SECONDS = 60.0
Metadata = list[tuple[str, str]]


def bearer(token: str, *extra: tuple[str, str]) -> Metadata:
    return [("authorization", f"Bearer {token}"), *extra]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def mastery(channels: dict[str, grpc.Channel]) -> mastery_pb2_grpc.MasteryServiceStub:
    return mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])


@pytest.fixture(scope="module")
def audit(channels: dict[str, grpc.Channel]) -> audit_pb2_grpc.AuditServiceStub:
    return audit_pb2_grpc.AuditServiceStub(channels["audit"])


def get_mastery(
    mastery: mastery_pb2_grpc.MasteryServiceStub, student: str, metadata: Metadata
) -> grpc.StatusCode:
    try:
        mastery.GetMastery(
            mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
            metadata=metadata,
            timeout=10,
        )
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def enrol(
    mastery: mastery_pb2_grpc.MasteryServiceStub, mint_token: MintToken, student: str, tenant: str
) -> None:
    """The roster learns a student's cohort from their own token: one call of theirs."""
    token = mint_token(student, "student", [COHORT], tenant=tenant)
    assert get_mastery(mastery, student, bearer(token)) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
    )


def listing(
    audit: audit_pb2_grpc.AuditServiceStub,
    metadata: Metadata,
    request: audit_pb2.ListAuditEventsRequest,
) -> list[audit_pb2.AuditEvent]:
    """Every page of a listing."""
    events: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                student=request.student,
                actor=request.actor,
                method=request.method,
                page_size=100,
                page_token=token,
            ),
            metadata=metadata,
            timeout=10,
        )
        events += page.audit_events
        token = page.next_page_token
        if not token:
            return events


def arrived(
    audit: audit_pb2_grpc.AuditServiceStub,
    metadata: Metadata,
    request: audit_pb2.ListAuditEventsRequest,
    count: int,
) -> list[audit_pb2.AuditEvent]:
    """The listing once it holds at least `count` events."""

    def probe() -> list[audit_pb2.AuditEvent] | None:
        events = listing(audit, metadata, request)
        return events if len(events) >= count else None

    return wait_for(probe, timeout=ARRIVAL_SECONDS, what=f"{count} audit events")


def test_a_tenants_admin_sees_its_teachers_denied_and_allowed_reads(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    audit: audit_pb2_grpc.AuditServiceStub,
    mint_token: MintToken,
) -> None:
    a_student, b_student = unique("sa"), unique("sb")
    enrol(mastery, mint_token, a_student, A)
    enrol(mastery, mint_token, b_student, B)
    teacher = unique("teacher")
    teacher_token = mint_token(teacher, "teacher", [COHORT], tenant=A)
    request_id = unique("req")

    denied = get_mastery(mastery, b_student, bearer(teacher_token, ("x-request-id", request_id)))
    assert denied is grpc.StatusCode.PERMISSION_DENIED
    allowed = get_mastery(mastery, a_student, bearer(teacher_token))
    assert allowed in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)

    admin_a = bearer(mint_token(unique("admin"), "admin", tenant=A))
    events = arrived(audit, admin_a, audit_pb2.ListAuditEventsRequest(actor=teacher), 2)
    assert len(events) == 2
    assert [e.event_time.ToNanoseconds() for e in events] == sorted(
        (e.event_time.ToNanoseconds() for e in events), reverse=True
    )
    by_student = {tuple(e.students): e for e in events}
    assert set(by_student) == {(a_student,), (b_student,)}
    refused, read = by_student[(b_student,)], by_student[(a_student,)]
    assert refused.code == "PERMISSION_DENIED"
    assert read.code == allowed.name
    for event in events:
        assert event.method == GET_MASTERY
        assert event.tenant == A
        assert (event.actor.subject, event.actor.role, event.actor.tenant) == (
            teacher,
            "teacher",
            A,
        )
        assert event.name.startswith("auditEvents/")
        assert event.peer  # the connection's address (no gateway in between)
    assert list(refused.resources) == [f"students/{b_student}/mastery"]
    assert refused.request_id == request_id

    # Filters: by student, by method; the trail of school-a only.
    only_b = listing(
        audit, admin_a, audit_pb2.ListAuditEventsRequest(student=f"students/{b_student}")
    )
    assert [e.name for e in only_b if e.actor.subject == teacher] == [refused.name]
    by_method = listing(
        audit, admin_a, audit_pb2.ListAuditEventsRequest(actor=teacher, method=GET_MASTERY)
    )
    assert {e.name for e in by_method} == {refused.name, read.name}

    # School-b's admin: nothing of school-a's teacher (the events exist: found above).
    admin_b = bearer(mint_token(unique("admin"), "admin", tenant=B))
    assert listing(audit, admin_b, audit_pb2.ListAuditEventsRequest(actor=teacher)) == []
    # ...nor may school-a's admin read school-b's trail by naming it.
    with pytest.raises(grpc.RpcError) as caught:
        audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(actor=teacher),
            metadata=[*admin_a, (TENANT_METADATA, B)],
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_students_and_teachers_may_not_list(
    audit: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    for role, cohorts in (("student", [COHORT]), ("teacher", [COHORT])):
        token = mint_token(unique(role), role, cohorts, tenant=A)
        with pytest.raises(grpc.RpcError) as caught:
            audit.ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(), metadata=bearer(token), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, role


def test_a_denied_listing_is_itself_in_the_trail(
    audit: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    student = unique("curious")
    with pytest.raises(grpc.RpcError):
        audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(),
            metadata=bearer(mint_token(student, "student", [COHORT], tenant=A)),
            timeout=10,
        )
    admin_a = bearer(mint_token(unique("admin"), "admin", tenant=A))
    (event,) = arrived(audit, admin_a, audit_pb2.ListAuditEventsRequest(actor=student), 1)
    assert (event.method, event.code) == (LIST_AUDIT_EVENTS, "PERMISSION_DENIED")


def test_an_operator_acting_in_a_tenant_is_in_that_tenants_trail(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    audit: audit_pb2_grpc.AuditServiceStub,
    mint_token: MintToken,
) -> None:
    a_student = unique("sa")
    enrol(mastery, mint_token, a_student, A)
    operator = unique("op")
    acting_in_a = bearer(mint_token(operator, "operator", tenant="platform"), (TENANT_METADATA, A))
    assert get_mastery(mastery, a_student, acting_in_a) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
    )
    admin_a = bearer(mint_token(unique("admin"), "admin", tenant=A))
    (event,) = arrived(audit, admin_a, audit_pb2.ListAuditEventsRequest(actor=operator), 1)
    assert (event.tenant, event.actor.tenant, event.actor.role) == (A, "platform", "operator")
    assert list(event.students) == [a_student]
    # The operator lists school-a's trail too (acting in it), and that is recorded.
    events = arrived(audit, acting_in_a, audit_pb2.ListAuditEventsRequest(actor=operator), 2)
    assert {e.method for e in events} == {GET_MASTERY, LIST_AUDIT_EVENTS}


def test_through_the_gateway(
    gateway_url: str,
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    mint_token: MintToken,
) -> None:
    a_student, b_student = unique("sa"), unique("sb")
    enrol(mastery, mint_token, a_student, A)
    enrol(mastery, mint_token, b_student, B)
    teacher = unique("teacher")
    teacher_auth = {"authorization": f"Bearer {mint_token(teacher, 'teacher', [COHORT], tenant=A)}"}
    admin_auth = {"authorization": f"Bearer {mint_token(unique('admin'), 'admin', tenant=A)}"}
    student_auth = {
        "authorization": f"Bearer {mint_token(a_student, 'student', [COHORT], tenant=A)}"
    }
    with httpx.Client(base_url=gateway_url, timeout=10) as http:
        refused = http.get(f"/v1/students/{b_student}/mastery", headers=teacher_auth)
        assert refused.status_code == 403
        read = http.get(f"/v1/students/{a_student}/mastery", headers=teacher_auth)
        assert read.status_code in (200, 404)

        def probe() -> list[dict[str, object]] | None:
            reply = http.get("/v1/auditEvents", params={"actor": teacher}, headers=admin_auth)
            assert reply.status_code == 200, reply.text
            events: list[dict[str, object]] = reply.json().get("auditEvents", [])
            return events if len(events) >= 2 else None

        events = wait_for(probe, timeout=ARRIVAL_SECONDS, what="audit events through Envoy")
        codes: dict[tuple[str, ...], object] = {
            tuple(e["students"]): e["code"]  # type: ignore[arg-type]
            for e in events
        }
        assert codes[(b_student,)] == "PERMISSION_DENIED"
        assert codes[(a_student,)] == ("OK" if read.status_code == 200 else "NOT_FOUND")
        for event in events:
            assert event["method"] == GET_MASTERY
            assert event["tenant"] == A
            assert event["actor"] == {"subject": teacher, "role": "teacher", "tenant": A}
            # The address the gateway saw (forwarded), not Envoy's connection to mastery.
            assert isinstance(event["peer"], str) and event["peer"]
            assert not event["peer"].startswith(("ipv4:", "ipv6:"))

        by_student = http.get(
            "/v1/auditEvents",
            params={"actor": teacher, "student": f"students/{b_student}"},
            headers=admin_auth,
        )
        assert by_student.status_code == 200
        assert [e["code"] for e in by_student.json()["auditEvents"]] == ["PERMISSION_DENIED"]

        forbidden = http.get("/v1/auditEvents", headers=student_auth)
        assert forbidden.status_code == 403
        bad = http.get("/v1/auditEvents", params={"method": "nope"}, headers=admin_auth)
        assert bad.status_code == 400
