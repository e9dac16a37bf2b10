"""The audit recorder in the kit's call steps (services/kit/audit.py), through real gRPC
calls on both server models: one record per authenticated call, with who, what, whose,
when, where from and the outcome; exempt and unauthenticated calls unrecorded; a bus
that fails never fails a call."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from learnflow.audit.v1 import audit_pb2
from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.audit import AuditTrail
from services.kit.auth import TENANT_METADATA, Principal, Role
from services.kit.bus import AUDIT_EVENTS, EVENT_TYPES, InProcessBus, Record, decode
from services.kit.catalogue import ServiceSpec
from services.kit.config import Settings
from services.kit.errors import NotFound, PermissionDenied
from services.kit.interceptors import CallContext, CallOutcome, current_principal
from services.kit.server import LearnFlowServer, ServiceParts
from tests.conftest import MintToken, wait_for

MASTERY = ServiceSpec("mastery", "learnflow.mastery.v1", ("MasteryService",), 0)
TRIAGE = ServiceSpec("triage", "learnflow.triage.v1", ("TriageService",), 0)
NOTIFY = ServiceSpec("notify", "learnflow.notify.v1", ("NotifyService",), 0)
GET_MASTERY = "/learnflow.mastery.v1.MasteryService/GetMastery"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def auth(token: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), *extra]


class _Mastery(mastery_pb2_grpc.MasteryServiceServicer):
    """alice's mastery is readable; bob's is not the caller's; anyone else's is missing."""

    def GetMastery(
        self, request: mastery_pb2.GetMasteryRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.Mastery:
        principal = current_principal()
        if request.name == "students/bob/mastery":
            raise PermissionDenied(f"{principal.subject} may not read bob")
        if request.name != "students/alice/mastery":
            raise NotFound(f"{request.name} does not exist")
        return mastery_pb2.Mastery(name=request.name)


class _Triage(triage_pb2_grpc.TriageServiceServicer):
    def Ask(
        self, request: triage_pb2.AskRequest, context: grpc.ServicerContext
    ) -> Iterator[triage_pb2.AskResponse]:
        yield triage_pb2.AskResponse()
        yield triage_pb2.AskResponse()


class _Notify(notify_pb2_grpc.NotifyServiceServicer):
    def GetAlert(
        self, request: notify_pb2.GetAlertRequest, context: grpc.aio.ServicerContext
    ) -> notify_pb2.Alert:
        return notify_pb2.Alert(name=request.name)

    async def StreamUpdates(
        self, request: notify_pb2.StreamUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notify_pb2.Update]:
        yield notify_pb2.Update(cursor="1")
        await asyncio.sleep(0)


class FailingBus(InProcessBus):
    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str]
    ) -> None:
        raise RuntimeError("the broker is on fire")


def published(bus: InProcessBus) -> list[tuple[Record, audit_pb2.AuditEvent]]:
    """Each published event with the record (the batch) that carried it."""
    found = []
    for record in bus.records(AUDIT_EVENTS):
        message = decode(record).message
        assert isinstance(message, events_pb2.AuditBatch)
        assert message.audit_events  # no empty batches
        found += [(record, event) for event in message.audit_events]
    return found


def eventually(
    trail: AuditTrail, bus: InProcessBus, count: int
) -> list[tuple[Record, audit_pb2.AuditEvent]]:
    """The published records once there are `count` (a stream's end may trail its
    last message by a moment)."""

    def probe() -> list[tuple[Record, audit_pb2.AuditEvent]] | None:
        trail.flush()
        found = published(bus)
        return found if len(found) >= count else None

    return wait_for(probe, timeout=5, what=f"{count} audit records")


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def trail(bus: InProcessBus) -> Iterator[AuditTrail]:
    trail = AuditTrail(lambda: bus, interval=0.01)
    yield trail
    trail.close()


def _serve(
    spec: ServiceSpec, parts: ServiceParts, settings: Settings, trail: AuditTrail
) -> LearnFlowServer:
    server = LearnFlowServer(spec, parts, settings, port=0, audit=trail)
    server.start()
    return server


@pytest.fixture
def mastery(settings: Settings, trail: AuditTrail) -> Iterator[mastery_pb2_grpc.MasteryServiceStub]:
    servicer = _Mastery()  # type: ignore[abstract]  # the other RPCs: UNIMPLEMENTED
    parts = ServiceParts(
        register=lambda s: mastery_pb2_grpc.add_MasteryServiceServicer_to_server(servicer, s)
    )
    server = _serve(MASTERY, parts, settings, trail)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield mastery_pb2_grpc.MasteryServiceStub(channel)
    server.stop(grace=0.5)


def _get(
    stub: mastery_pb2_grpc.MasteryServiceStub, name: str, metadata: list[tuple[str, str]]
) -> grpc.StatusCode:
    try:
        stub.GetMastery(mastery_pb2.GetMasteryRequest(name=name), metadata=metadata, timeout=5)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_the_audit_batch_is_a_known_event_type() -> None:
    assert EVENT_TYPES["learnflow.events.v1.AuditBatch"] is events_pb2.AuditBatch


def test_one_record_per_call_with_who_what_whose_when_where_and_outcome(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    trail: AuditTrail,
    bus: InProcessBus,
    mint_token: MintToken,
) -> None:
    token = mint_token("t1", "teacher", ["c1"], tenant="school-a")
    before = time.time()
    code = _get(
        mastery,
        "students/alice/mastery",
        auth(
            token,
            ("x-request-id", "req-1"),
            ("traceparent", TRACEPARENT),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
        ),
    )
    assert code is grpc.StatusCode.OK
    trail.flush()
    ((record, event),) = published(bus)
    assert re.fullmatch(r"auditEvents/[0-9a-f]{32}", event.name)
    assert event.name != f"auditEvents/{record.event_id}"  # the batch is an event of its own
    assert (event.actor.subject, event.actor.role, event.actor.tenant) == (
        "t1",
        "teacher",
        "school-a",
    )
    assert event.tenant == "school-a"
    assert event.method == GET_MASTERY
    assert list(event.resources) == ["students/alice/mastery"]
    assert list(event.students) == ["alice"]
    assert event.request_id == "req-1"
    assert event.trace_id == TRACE
    assert event.peer == "198.51.100.7"  # the hop the gateway appended, not the client's say-so
    assert event.code == "OK"
    assert before - 1 <= event.event_time.ToNanoseconds() / 1e9 <= time.time()
    # A batch in the CloudEvents envelope, keyed by tenant, from the recording service.
    assert record.key == "school-a"
    assert record.headers["ce_type"] == "learnflow.events.v1.AuditBatch"
    assert record.headers["ce_source"] == "//learnflow.dev/mastery"
    assert record.headers["ce_subject"] == "school-a"
    # ce_time is when the batch was published: after the call.
    ce_time = datetime.fromisoformat(record.headers["ce_time"].replace("Z", "+00:00"))
    assert ce_time >= event.event_time.ToDatetime(tzinfo=UTC)


def test_denied_and_missing_reads_are_recorded_with_their_codes(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    trail: AuditTrail,
    bus: InProcessBus,
    mint_token: MintToken,
) -> None:
    metadata = auth(mint_token("t1", "teacher", ["c1"], tenant="school-a"))
    assert _get(mastery, "students/bob/mastery", metadata) is grpc.StatusCode.PERMISSION_DENIED
    assert _get(mastery, "students/zoe/mastery", metadata) is grpc.StatusCode.NOT_FOUND
    trail.flush()
    events = [event for _, event in published(bus)]
    assert [(e.code, list(e.students)) for e in events] == [
        ("PERMISSION_DENIED", ["bob"]),
        ("NOT_FOUND", ["zoe"]),
    ]
    # Without a forwarded address the peer is the connection's.
    assert all(e.peer.startswith(("ipv4:127.0.0.1:", "ipv6:")) for e in events)
    assert all(e.trace_id == "" for e in events)


def test_envoys_external_address_is_preferred(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    trail: AuditTrail,
    bus: InProcessBus,
    mint_token: MintToken,
) -> None:
    metadata = auth(
        mint_token("alice", tenant="school-a"),
        ("x-envoy-external-address", "192.0.2.44"),
        ("x-forwarded-for", "10.9.9.9, 192.0.2.44"),
    )
    assert _get(mastery, "students/alice/mastery", metadata) is grpc.StatusCode.OK
    trail.flush()
    ((_, event),) = published(bus)
    assert event.peer == "192.0.2.44"


def test_an_operator_is_recorded_in_the_tenant_it_acts_in(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    trail: AuditTrail,
    bus: InProcessBus,
    mint_token: MintToken,
) -> None:
    token = mint_token("op1", "operator", tenant="platform")
    code = _get(mastery, "students/alice/mastery", auth(token, (TENANT_METADATA, "school-b")))
    assert code is grpc.StatusCode.OK
    trail.flush()
    ((record, event),) = published(bus)
    assert (event.tenant, event.actor.tenant, event.actor.role) == (
        "school-b",
        "platform",
        "operator",
    )
    assert record.key == "school-b"
    assert list(event.resources) == ["students/alice/mastery"]


def test_a_refused_attempt_to_act_in_another_tenant_is_recorded_in_the_callers_own(
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    trail: AuditTrail,
    bus: InProcessBus,
    mint_token: MintToken,
) -> None:
    token = mint_token("t1", "teacher", ["c1"], tenant="school-a")
    code = _get(mastery, "students/alice/mastery", auth(token, (TENANT_METADATA, "school-b")))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    trail.flush()
    ((_, event),) = published(bus)
    assert (event.tenant, event.actor.tenant, event.code) == (
        "school-a",
        "school-a",
        "PERMISSION_DENIED",
    )
    # Which tenant it tried to act in is part of what it did.
    assert list(event.resources) == ["students/alice/mastery", "tenants/school-b"]


def test_unauthenticated_health_and_reflection_calls_are_not_recorded(
    settings: Settings, trail: AuditTrail, bus: InProcessBus, mint_token: MintToken
) -> None:
    servicer = _Mastery()  # type: ignore[abstract]
    parts = ServiceParts(
        register=lambda s: mastery_pb2_grpc.add_MasteryServiceServicer_to_server(servicer, s)
    )
    server = _serve(MASTERY, parts, settings, trail)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = mastery_pb2_grpc.MasteryServiceStub(channel)
            assert _get(stub, "students/alice/mastery", []) is grpc.StatusCode.UNAUTHENTICATED
            bad = auth("not-a-token")
            assert _get(stub, "students/alice/mastery", bad) is grpc.StatusCode.UNAUTHENTICATED
            # Health, with and without a token: exempt.
            health = health_pb2_grpc.HealthStub(channel)
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            health.Check(health_pb2.HealthCheckRequest(), metadata=auth(mint_token("a")), timeout=5)
            assert ProtoReflectionDescriptorDatabase(channel).get_services()
    finally:
        server.stop(grace=0.5)
    trail.flush()
    assert published(bus) == []


def test_a_failing_bus_never_fails_the_call(settings: Settings, mint_token: MintToken) -> None:
    trail = AuditTrail(FailingBus, interval=0.01)
    servicer = _Mastery()  # type: ignore[abstract]
    parts = ServiceParts(
        register=lambda s: mastery_pb2_grpc.add_MasteryServiceServicer_to_server(servicer, s)
    )
    server = _serve(MASTERY, parts, settings, trail)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = mastery_pb2_grpc.MasteryServiceStub(channel)
            metadata = auth(mint_token("alice"))
            for _ in range(3):
                assert _get(stub, "students/alice/mastery", metadata) is grpc.StatusCode.OK
        wait_for(lambda: trail.stats.failed == 3 or None, timeout=5, what="3 failed records")
        assert trail.stats.published == 0
    finally:
        server.stop(grace=0.5)
        trail.close()


def test_a_bus_that_cannot_be_reached_keeps_records_waiting(
    settings: Settings, mint_token: MintToken
) -> None:
    bus = InProcessBus()
    reachable = threading.Event()

    def get_bus() -> InProcessBus:
        if not reachable.is_set():
            raise ConnectionError("no broker yet")
        return bus

    trail = AuditTrail(get_bus, interval=0.01)
    servicer = _Mastery()  # type: ignore[abstract]
    parts = ServiceParts(
        register=lambda s: mastery_pb2_grpc.add_MasteryServiceServicer_to_server(servicer, s)
    )
    server = _serve(MASTERY, parts, settings, trail)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = mastery_pb2_grpc.MasteryServiceStub(channel)
            assert _get(stub, "students/alice/mastery", auth(mint_token("alice"))) is (
                grpc.StatusCode.OK
            )
        time.sleep(0.1)
        assert published(bus) == []
        reachable.set()
        wait_for(lambda: published(bus) or None, timeout=5, what="the waiting record")
    finally:
        server.stop(grace=0.5)
        trail.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    never = threading.Event()

    def stuck_bus() -> InProcessBus:
        never.wait(5)
        raise ConnectionError("still away")

    trail = AuditTrail(stuck_bus, capacity=2, interval=0.01)
    recorder = trail.recorder("mastery")
    outcome = _outcome()
    started = time.perf_counter()
    for _ in range(5):
        recorder.record(GET_MASTERY, mastery_pb2.GetMasteryRequest(), outcome, started)
    assert time.perf_counter() - started < 0.5  # never waited for the bus
    assert trail.stats.dropped >= 3
    never.set()
    trail.close(timeout=1)


def test_a_disabled_trail_records_nothing(bus: InProcessBus) -> None:
    trail = AuditTrail(lambda: bus, enabled=False)
    trail.recorder("mastery").record(
        GET_MASTERY, mastery_pb2.GetMasteryRequest(), _outcome(), time.perf_counter()
    )
    trail.enable()
    trail.recorder("mastery").record(
        GET_MASTERY, mastery_pb2.GetMasteryRequest(), _outcome(), time.perf_counter()
    )
    trail.close()
    assert len(published(bus)) == 1


def test_a_stream_is_recorded_once_when_it_ends(
    settings: Settings, trail: AuditTrail, bus: InProcessBus, mint_token: MintToken
) -> None:
    servicer = _Triage()  # type: ignore[abstract]
    parts = ServiceParts(
        register=lambda s: triage_pb2_grpc.add_TriageServiceServicer_to_server(servicer, s)
    )
    server = _serve(TRIAGE, parts, settings, trail)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            replies = list(
                triage_pb2_grpc.TriageServiceStub(channel).Ask(
                    triage_pb2.AskRequest(student="students/alice", question="what is a/b?"),
                    metadata=auth(mint_token("alice")),
                    timeout=5,
                )
            )
        assert len(replies) == 2
        eventually(trail, bus, 1)
    finally:
        server.stop(grace=0.5)
    ((_, event),) = published(bus)
    assert event.method == "/learnflow.triage.v1.TriageService/Ask"
    assert list(event.resources) == ["students/alice"]
    assert list(event.students) == ["alice"]
    assert event.code == "OK"


def test_the_asyncio_server_records_the_same(
    settings: Settings, trail: AuditTrail, bus: InProcessBus, mint_token: MintToken
) -> None:
    servicer = _Notify()  # type: ignore[abstract]
    parts = ServiceParts(
        register=lambda s: notify_pb2_grpc.add_NotifyServiceServicer_to_server(servicer, s),
        asynchronous=True,
    )
    server = _serve(NOTIFY, parts, settings, trail)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            metadata = auth(mint_token("t1", "teacher", ["c1"], tenant="school-a"))
            stub.GetAlert(
                notify_pb2.GetAlertRequest(name="cohorts/c1/alerts/a1"),
                metadata=metadata,
                timeout=5,
            )
            updates = list(
                stub.StreamUpdates(
                    notify_pb2.StreamUpdatesRequest(subscriber="students/alice"),
                    metadata=metadata,
                    timeout=5,
                )
            )
            assert len(updates) == 1
            with pytest.raises(grpc.RpcError):
                stub.ListAlerts(notify_pb2.ListAlertsRequest(), metadata=metadata, timeout=5)
        eventually(trail, bus, 3)
    finally:
        server.stop(grace=0.5)
    events = {event.method.rsplit("/", 1)[1]: event for _, event in published(bus)}
    assert list(events["GetAlert"].resources) == ["cohorts/c1/alerts/a1"]
    assert list(events["GetAlert"].students) == []
    assert list(events["StreamUpdates"].students) == ["alice"]
    assert events["StreamUpdates"].code == "OK"
    assert events["ListAlerts"].code == "UNIMPLEMENTED"
    assert {e.tenant for e in events.values()} == {"school-a"}


class _Context:
    def peer(self) -> str:
        return "ipv4:127.0.0.1:4242"


def _outcome(tenant: str = "school-a") -> CallOutcome:
    """A finished call's outcome, as the call steps leave it."""
    outcome = CallOutcome()
    principal = Principal("alice", Role.STUDENT, tenant=tenant)
    outcome.call = CallContext(GET_MASTERY, "req-9", principal, _Context(), None)
    return outcome


def test_a_drain_publishes_a_batch_per_tenant_and_service_of_bounded_size(
    bus: InProcessBus,
) -> None:
    trail = AuditTrail(lambda: bus, interval=60)  # drained by flush alone
    mastery, review = trail.recorder("mastery"), trail.recorder("review")
    request = mastery_pb2.GetMasteryRequest(name="students/alice/mastery")
    calls = 1_200
    for i in range(calls):
        recorder = review if i % 3 == 0 else mastery
        outcome = _outcome("school-a" if i % 2 else "school-b")
        recorder.record(GET_MASTERY, request, outcome, time.perf_counter())
    trail.flush()
    trail.close()
    records = bus.records(AUDIT_EVENTS)
    by_batch = {}
    for record in records:
        batch = decode(record).message
        assert isinstance(batch, events_pb2.AuditBatch)
        assert {e.tenant for e in batch.audit_events} == {record.key}
        by_batch[record.event_id] = (record.key, record.source, len(batch.audit_events))
    assert trail.stats.published == calls
    events = [event for _, event in published(bus)]
    assert len({e.name for e in events}) == calls
    # Two tenants by two services; 400 calls to mastery in each tenant: one batch each,
    # 200 to review in each: one batch each. No batch over its bound.
    assert sorted(by_batch.values()) == [
        ("school-a", "//learnflow.dev/mastery", 400),
        ("school-a", "//learnflow.dev/review", 200),
        ("school-b", "//learnflow.dev/mastery", 400),
        ("school-b", "//learnflow.dev/review", 200),
    ]


def test_a_batch_is_split_at_its_bound(bus: InProcessBus) -> None:
    trail = AuditTrail(lambda: bus, interval=60)
    recorder = trail.recorder("mastery")
    request = mastery_pb2.GetMasteryRequest(name="students/alice/mastery")
    for _ in range(1_100):
        recorder.record(GET_MASTERY, request, _outcome(), time.perf_counter())
    trail.flush()
    trail.close()
    sizes = [len(decode(r).message.audit_events) for r in bus.records(AUDIT_EVENTS)]  # type: ignore[attr-defined]
    # The trail's thread wakes at 1,000 queued records and may drain while the loop still
    # records: where the last batches split varies, the bound and the total do not.
    assert sum(sizes) == 1_100 and max(sizes) == 500 and sizes.count(500) >= 2, sizes
