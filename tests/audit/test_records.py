"""Stored audit records: what makes a consumed AuditBatch storable (else it is
dead-lettered, e.g. an event with no tenant or another tenant than the batch's),
cleaning, grouping by tenant, and the event's round trip through the record."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from learnflow.audit.v1 import audit_pb2
from learnflow.events.v1 import events_pb2

from services.audit.consumer import records_of
from services.audit.convert import to_event, to_record
from services.audit.domain.records import (
    AuditRecord,
    UnstorableRecordError,
    by_tenant,
    event_id_of,
    named_students,
    pseudonymised,
    storable,
)
from services.kit.bus import AUDIT_EVENTS, Envelope, PoisonEventError, Record, cloudevent_headers

EVENT_ID = "0123456789abcdef0123456789abcdef"
WHEN = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def event(**fields: object) -> audit_pb2.AuditEvent:
    message = audit_pb2.AuditEvent(
        name=f"auditEvents/{EVENT_ID}",
        actor=audit_pb2.AuditEvent.Actor(subject="t1", role="teacher", tenant="school-a"),
        tenant="school-a",
        method="/learnflow.mastery.v1.MasteryService/GetMastery",
        resources=["students/alice/mastery"],
        students=["alice"],
        request_id="req-1",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        peer="198.51.100.7",
        code="OK",
    )
    message.event_time.FromDatetime(WHEN)
    for key, value in fields.items():
        if value is None:
            message.ClearField(key)  # type: ignore[arg-type]
        else:
            setattr(message, key, value)
    return message


def envelope(message: object, tenant: str = "school-a") -> Envelope:
    """`message` as consumed from audit.events, an AuditEvent in a batch of its own."""
    if isinstance(message, audit_pb2.AuditEvent):
        message = events_pb2.AuditBatch(audit_events=[message])
    assert isinstance(message, events_pb2.AuditBatch | events_pb2.StudentRef)
    headers = cloudevent_headers(message, source="//learnflow.dev/mastery", subject=tenant)
    record = Record(AUDIT_EVENTS, 0, 7, tenant, message.SerializeToString(), headers)
    return Envelope(record, message)


def test_an_event_becomes_a_record_and_back() -> None:
    original = event()
    [record] = records_of(envelope(original))
    assert record == AuditRecord(
        event_id=EVENT_ID,
        event_time=WHEN,
        tenant="school-a",
        actor_subject="t1",
        actor_role="teacher",
        actor_tenant="school-a",
        method="/learnflow.mastery.v1.MasteryService/GetMastery",
        resources=("students/alice/mastery",),
        students=("alice",),
        request_id="req-1",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        peer="198.51.100.7",
        code="OK",
    )
    assert to_event(record) == original


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant": ""}, "not the batch's"),
        ({"tenant": "school-b"}, "not the batch's"),
        ({"event_time": None}, "no event_time"),
        ({"name": "alerts/1"}, "not an audit event name"),
        ({"name": "auditEvents/a b"}, "no usable event id"),
        ({"method": ""}, "no method"),
        ({"code": ""}, "no code"),
    ],
)
def test_events_that_can_never_be_stored_are_poison(change: dict[str, object], reason: str) -> None:
    good = event(name="auditEvents/good")
    with pytest.raises(PoisonEventError, match=reason):
        records_of(envelope(events_pb2.AuditBatch(audit_events=[good, event(**change)])))


@pytest.mark.parametrize(("tenant", "reason"), [("", "no tenant"), ("School A", "not a tenant id")])
def test_a_batch_keyed_by_no_tenant_is_poison(tenant: str, reason: str) -> None:
    with pytest.raises(PoisonEventError, match=reason):
        records_of(envelope(event(), tenant=tenant))


def test_a_batch_stores_each_of_its_events_in_order() -> None:
    first, second = event(name="auditEvents/one"), event(name="auditEvents/two")
    batch = events_pb2.AuditBatch(audit_events=[first, second])
    assert [r.event_id for r in records_of(envelope(batch))] == ["one", "two"]


def test_another_message_type_does_not_belong_on_the_topic() -> None:
    with pytest.raises(PoisonEventError, match="does not belong"):
        records_of(envelope(events_pb2.StudentRef(student_id="x")))


def test_no_actor_subject_is_unstorable() -> None:
    record = to_record(event())
    with pytest.raises(UnstorableRecordError, match="actor subject"):
        storable(replace(record, actor_subject=""))


def test_text_is_cleaned_and_bounded() -> None:
    record = to_record(event())
    cleaned = storable(
        replace(
            record,
            actor_subject="a\x00b",
            resources=("r/1", "", "r/1", *(f"cohorts/c{i}" for i in range(50))),
            students=("x" * 400, "alice", "alice"),
            peer="p" * 1000,
        )
    )
    assert cleaned.actor_subject == "a\ufffdb"
    assert cleaned.resources[:2] == ("r/1", "cohorts/c0")
    assert len(cleaned.resources) == 32
    assert cleaned.students == ("x" * 256, "alice")
    assert len(cleaned.peer) == 256


def test_event_ids() -> None:
    assert event_id_of(f"auditEvents/{EVENT_ID}") == EVENT_ID
    for bad in ("auditEvents/", "auditEvents/a/b", f"events/{EVENT_ID}", "auditEvents/" + "x" * 65):
        with pytest.raises(UnstorableRecordError):
            event_id_of(bad)


def test_records_are_grouped_by_tenant_in_order() -> None:
    a1 = to_record(event())
    b1 = replace(a1, tenant="school-b", event_id="b1")
    a2 = replace(a1, event_id="a2")
    assert by_tenant([a1, b1, a2]) == {"school-a": [a1, a2], "school-b": [b1]}


def test_a_record_of_an_erased_student_names_their_pseudonym() -> None:
    record = replace(
        to_record(event()),
        actor_subject="alice",
        actor_role="student",
        resources=("students/alice/mastery", "students/alice", "students/alicex/mastery"),
        students=("alice", "alicex"),
    )
    hidden = pseudonymised(record, "alice", "erased-1")
    assert hidden.resources == (
        "students/erased-1/mastery",
        "students/erased-1",
        "students/alicex/mastery",
    )
    assert hidden.students == ("erased-1", "alicex")
    assert hidden.actor_subject == "erased-1"
    assert named_students(record) == {"alice", "alicex"}
    # A teacher who happens to share the id keeps it: only a student acts as themself.
    teacher = replace(record, actor_role="teacher")
    assert pseudonymised(teacher, "alice", "erased-1").actor_subject == "alice"
