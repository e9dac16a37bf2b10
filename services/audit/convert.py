"""AuditEvent messages (learnflow.audit.v1) to stored records and back."""

from __future__ import annotations

from datetime import UTC

from learnflow.audit.v1 import audit_pb2

from services.audit.domain.records import AuditRecord, event_id_of


def to_record(event: audit_pb2.AuditEvent) -> AuditRecord:
    """The record of a published event (UnstorableRecordError for a bad name; an event
    time out of range raises ValueError or OverflowError)."""
    return AuditRecord(
        event_id=event_id_of(event.name),
        event_time=event.event_time.ToDatetime(tzinfo=UTC),
        tenant=event.tenant,
        actor_subject=event.actor.subject,
        actor_role=event.actor.role,
        actor_tenant=event.actor.tenant,
        method=event.method,
        resources=tuple(event.resources),
        students=tuple(event.students),
        request_id=event.request_id,
        trace_id=event.trace_id,
        peer=event.peer,
        code=event.code,
    )


def to_event(record: AuditRecord) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        name=record.name,
        actor=audit_pb2.AuditEvent.Actor(
            subject=record.actor_subject, role=record.actor_role, tenant=record.actor_tenant
        ),
        tenant=record.tenant,
        method=record.method,
        resources=record.resources,
        students=record.students,
        request_id=record.request_id,
        trace_id=record.trace_id,
        peer=record.peer,
        code=record.code,
    )
    event.event_time.FromDatetime(record.event_time)
    return event
