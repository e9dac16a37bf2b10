"""ListAuditEvents through a real server (the kit's call steps, rich errors) over the
audit store on the real Postgres (a schema of its own, so only these records are in
it): only a tenant's admins and operators acting in it may list, each sees
only the tenant the call acts in, bad filters name every field, pages cover the trail
once, newest first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from learnflow.audit.v1 import audit_pb2, audit_pb2_grpc

from services.audit.domain.records import AuditRecord
from services.audit.main import MIGRATIONS
from services.audit.servicer import AuditServicer
from services.audit.store import AuditStore
from services.kit.auth import TENANT_METADATA
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer, ServiceParts
from tests.conftest import MintToken

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BASE = AuditRecord(
    event_id="",
    event_time=T0,
    tenant="school-a",
    actor_subject="t1",
    actor_role="teacher",
    actor_tenant="school-a",
    method="/learnflow.mastery.v1.MasteryService/GetMastery",
    resources=("students/alice/mastery",),
    students=("alice",),
    request_id="r",
    trace_id="",
    peer="192.0.2.1",
    code="OK",
)


def records() -> list[AuditRecord]:
    made = [replace(BASE, event_id=f"a{i}", event_time=T0 + timedelta(seconds=i)) for i in range(5)]
    made.append(replace(made[0], event_id="d1", code="PERMISSION_DENIED", students=("bob",)))
    made.append(replace(BASE, event_id="b1", tenant="school-b", actor_tenant="school-b"))
    return made


@pytest.fixture(scope="module")
def trail(runtime: Runtime) -> Iterator[AuditStore]:
    schema = f"audit_listing_{uuid.uuid4().hex[:8]}"
    store = AuditStore(runtime.database(schema, MIGRATIONS))
    by_tenant: dict[str, list[AuditRecord]] = {}
    for record in records():
        by_tenant.setdefault(record.tenant, []).append(record)
    for tenant_records in by_tenant.values():
        store.append(tenant_records)
    yield store
    with psycopg.connect(runtime.database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module")
def stub(settings: Settings, trail: AuditStore) -> Iterator[audit_pb2_grpc.AuditServiceStub]:
    parts = ServiceParts(
        register=lambda s: audit_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditServicer(trail), s
        )
    )
    server = LearnFlowServer(SERVICES_BY_NAME["audit"], parts, settings, port=0)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield audit_pb2_grpc.AuditServiceStub(channel)
    server.stop(grace=0.5)


def auth(token: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), *extra]


def bad_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    return []


@pytest.mark.parametrize(("role", "cohorts"), [("student", []), ("teacher", ["c1"])])
def test_only_admins_and_operators_may_list(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken, role: str, cohorts: list[str]
) -> None:
    token = mint_token("u1", role, cohorts, tenant="school-a")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=auth(token), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_admin_lists_their_tenants_trail_newest_first(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    token = mint_token("admin-a", "admin", tenant="school-a")
    reply = stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(actor="t1"), metadata=auth(token), timeout=5
    )
    names = [e.name for e in reply.audit_events]
    assert names == [f"auditEvents/{i}" for i in ("a4", "a3", "a2", "a1", "d1", "a0")]
    assert {e.tenant for e in reply.audit_events} == {"school-a"}
    assert reply.next_page_token == ""
    denied = [e for e in reply.audit_events if e.code == "PERMISSION_DENIED"]
    assert [list(e.students) for e in denied] == [["bob"]]


def test_an_admin_cannot_read_another_tenants_trail(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    token = mint_token("admin-a", "admin", tenant="school-a")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(),
            metadata=auth(token, (TENANT_METADATA, "school-b")),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_operator_lists_the_tenant_it_acts_in(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    token = mint_token("op1", "operator", tenant="platform")
    reply = stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(),
        metadata=auth(token, (TENANT_METADATA, "school-b")),
        timeout=5,
    )
    assert [e.name for e in reply.audit_events] == ["auditEvents/b1"]


def test_pages_cover_the_trail_once(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    metadata = auth(mint_token("admin-a", "admin", tenant="school-a"))
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                student="students/alice", page_size=2, page_token=token
            ),
            metadata=metadata,
            timeout=5,
        )
        pages += 1
        names += [e.name.rsplit("/", 1)[1] for e in reply.audit_events]
        token = reply.next_page_token
        if not token:
            break
    assert names == ["a4", "a3", "a2", "a1", "a0"]
    assert pages == 3


def test_time_filters(stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken) -> None:
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(T0 + timedelta(seconds=1))
    end.FromDatetime(T0 + timedelta(seconds=3))
    reply = stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(start_time=start, end_time=end),
        metadata=auth(mint_token("admin-a", "admin", tenant="school-a")),
        timeout=5,
    )
    assert [e.name for e in reply.audit_events] == ["auditEvents/a2", "auditEvents/a1"]


def test_bad_filters_name_every_field(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    later, earlier = Timestamp(seconds=2_000_000_000), Timestamp(seconds=1_000_000_000)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                student="students/a/b",
                method="nope",
                start_time=later,
                end_time=earlier,
                page_size=-3,
                page_token="x",
            ),
            metadata=auth(mint_token("admin-a", "admin", tenant="school-a")),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == [
        "student",
        "method",
        "end_time",
        "page_size",
        "page_token",
    ]


def test_an_out_of_range_timestamp_is_invalid(
    stub: audit_pb2_grpc.AuditServiceStub, mint_token: MintToken
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(start_time=Timestamp(seconds=10**12)),
            metadata=auth(mint_token("admin-a", "admin", tenant="school-a")),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["start_time"]
