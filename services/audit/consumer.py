"""audit.events in, through the kit's ConsumerLoop: each poll's batches stored in one
transaction, grouped by tenant, each group in its tenant's scope. At-least-once and
idempotent: an event stored before (same tenant, same event id) is left as it is.
A batch that can never be stored whole (not an AuditBatch, an event without a tenant,
in another tenant than the batch's, or without an id) goes to `audit.events.dlq` as it
came: the trail built all its events, so one that cannot be stored is a fault to look
at, not one to store around."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from learnflow.audit.v1 import audit_pb2
from learnflow.events.v1 import events_pb2

from services.audit.convert import to_record
from services.audit.domain.records import (
    AuditRecord,
    UnstorableRecordError,
    named_students,
    pseudonymised,
    storable,
)
from services.audit.store import AuditStore
from services.kit.bus import (
    AUDIT_EVENTS,
    DEFAULT_STALL_SECONDS,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    Record,
    event_tenant,
)
from services.kit.erasure import Tombstones, pseudonym

BATCH_SIZE = 500


def records_of(envelope: Envelope) -> list[AuditRecord]:
    """The records one batch stores; PoisonEventError if it can never be stored."""
    record, message = envelope.record, envelope.message
    if not isinstance(message, events_pb2.AuditBatch):
        raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")
    tenant = event_tenant(record, record.subject)
    return [_record_of(record, tenant, event) for event in message.audit_events]


def _record_of(record: Record, tenant: str, event: audit_pb2.AuditEvent) -> AuditRecord:
    where = f"audit batch {record.event_id}, event {event.name!r}"
    if event.tenant != tenant:
        raise PoisonEventError(f"{where}: tenant {event.tenant[:80]!r}, not the batch's")
    if not event.HasField("event_time"):
        raise PoisonEventError(f"{where}: no event_time")
    try:
        return storable(to_record(event))
    except (UnstorableRecordError, ValueError, OverflowError) as exc:
        raise PoisonEventError(f"{where}: {exc}") from None


def hide_erased(records: list[AuditRecord], tombstones: Tombstones) -> list[AuditRecord]:
    """`records`, each naming erased students by their pseudonyms instead."""
    names: dict[str, set[str]] = {}
    for record in records:
        names.setdefault(record.tenant, set()).update(named_students(record))
    erased = {
        (tenant, student)
        for tenant, students in names.items()
        for student in tombstones.erased(tenant, students)
    }
    if not erased:
        return records
    hidden = []
    for record in records:
        kept = record
        for student in named_students(record):
            if (record.tenant, student) in erased:
                kept = pseudonymised(kept, student, pseudonym(record.tenant, student))
        hidden.append(kept)
    return hidden


def audit_consumer(
    bus: Bus,
    store: AuditStore,
    *,
    group_id: str,
    topics: Sequence[str] = (AUDIT_EVENTS,),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    tombstones: Tombstones | None = None,
) -> ConsumerLoop:
    """The consumer that stores the trail. Replicas share its group, so each event is
    stored once (and again harmlessly, should it be redelivered). Records naming an
    erased student (`tombstones`) are stored with the student's pseudonym."""

    def handle(batch: Sequence[Envelope]) -> None:
        records = [stored for envelope in batch for stored in records_of(envelope)]
        store.append(hide_erased(records, tombstones) if tombstones else records)

    return ConsumerLoop(
        bus,
        group_id=group_id,
        topics=list(topics),
        handler=handle,
        transient=(psycopg.OperationalError, TimeoutError),
        batch_size=BATCH_SIZE,
        stall_seconds=stall_seconds,
    )
