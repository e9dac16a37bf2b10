"""audit.events in, through the kit's ConsumerLoop: each batch stored in one
transaction, grouped by tenant, each group in its tenant's scope. At-least-once and
idempotent: an event stored before (same tenant, same event id) is left as it is.
An event that can never be stored (no tenant, no id, not an AuditEvent) goes to
`audit.events.dlq`."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from learnflow.audit.v1 import audit_pb2

from services.audit.convert import to_record
from services.audit.domain.records import AuditRecord, UnstorableRecordError, storable
from services.audit.store import AuditStore
from services.kit.bus import (
    AUDIT_EVENTS,
    DEFAULT_STALL_SECONDS,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    event_tenant,
)

BATCH_SIZE = 500


def record_of(envelope: Envelope) -> AuditRecord:
    """The record one event stores; PoisonEventError if it can never be stored."""
    record, message = envelope.record, envelope.message
    if not isinstance(message, audit_pb2.AuditEvent):
        raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")
    event_tenant(record, message.tenant)
    if not message.HasField("event_time"):
        raise PoisonEventError(f"audit event {record.event_id}: no event_time")
    try:
        return storable(to_record(message))
    except (UnstorableRecordError, ValueError, OverflowError) as exc:
        raise PoisonEventError(f"audit event {record.event_id}: {exc}") from None


def audit_consumer(
    bus: Bus,
    store: AuditStore,
    *,
    group_id: str,
    topics: Sequence[str] = (AUDIT_EVENTS,),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """The consumer that stores the trail. Replicas share its group, so each event is
    stored once (and again harmlessly, should it be redelivered)."""

    def handle(batch: Sequence[Envelope]) -> None:
        store.append([record_of(envelope) for envelope in batch])

    return ConsumerLoop(
        bus,
        group_id=group_id,
        topics=list(topics),
        handler=handle,
        transient=(psycopg.OperationalError, TimeoutError),
        batch_size=BATCH_SIZE,
        stall_seconds=stall_seconds,
    )
