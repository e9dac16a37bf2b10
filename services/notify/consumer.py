"""Events in, through the kit's ConsumerLoop (poison to `<topic>.dlq`):

- the alert consumer: struggle.detected and mastery.updated turned into domain values,
  then into alerts by the engine (whose changes write their live updates);
- the updates consumer: learning.responses and mastery.updated written to the update
  log for the live streams (a student's answers and mastery; their teachers' band
  changes), once per event by (ce_source, ce_id).

Every event belongs to the tenant its `student.tenant` names, and both consumers work
in that tenant only (a batch may hold several: each tenant's events are applied in a
transaction scoped to it). An event without a tenant can never apply: it is poison,
dead-lettered with "no tenant".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.events.v1 import events_pb2
from learnflow.notify.v1 import notify_pb2

from services.kit.bus import (
    DEFAULT_STALL_SECONDS,
    LEARNING_RESPONSES,
    MASTERY_UPDATED,
    STRUGGLE_DETECTED,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    event_tenant,
)
from services.kit.names import MAX_ID_LENGTH
from services.notify.domain.model import Kind
from services.notify.domain.rules import (
    BandChange,
    MasteryChange,
    Struggle,
    falling_behind,
    struggle_signal,
)
from services.notify.engine import NO_COHORT, Detection, NotifyEngine
from services.notify.updates import UpdateRow

STRUGGLE_KINDS = {
    events_pb2.StruggleDetected.KIND_REPEATED_ERROR: Kind.REPEATED_ERROR,
    events_pb2.StruggleDetected.KIND_WHEEL_SPINNING: Kind.WHEEL_SPINNING,
}
MAX_EVIDENCE_IDS = 100


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _student(envelope: Envelope, student: events_pb2.StudentRef) -> str:
    student_id = student.student_id
    if not student_id or len(student_id) > MAX_ID_LENGTH or "/" in student_id:
        raise PoisonEventError(
            f"{envelope.record.event_type} {envelope.record.event_id}: no usable student id"
        )
    return student_id


def to_detection(envelope: Envelope) -> Detection:
    """What one event means; PoisonEventError if it can never apply."""
    record, message = envelope.record, envelope.message
    if isinstance(message, events_pb2.StruggleDetected):
        tenant = event_tenant(envelope.record, message.student.tenant)
        student_id = _student(envelope, message.student)
        kind = STRUGGLE_KINDS.get(message.kind)
        if kind is None:
            raise PoisonEventError(f"struggle {record.event_id}: unknown kind {message.kind}")
        if not message.episode_id or not message.HasField("detect_time"):
            raise PoisonEventError(f"struggle {record.event_id}: no episode id or detect_time")
        struggle = Struggle(
            source=record.source,
            event_id=record.event_id,
            student_id=student_id,
            cohort=message.student.cohort,
            kind=kind,
            topic=int(message.topic),
            error_type=message.error_type,
            exercise_id=message.exercise_id,
            occurrence_count=message.occurrence_count,
            episode_id=message.episode_id,
            detect_time=_time(message.detect_time),
            window_start=_time(message.window_start_time)
            if message.HasField("window_start_time")
            else None,
            evidence_ids=tuple(message.evidence_ids[:MAX_EVIDENCE_IDS]),
        )
        return Detection(tenant, record.source, record.event_id, [struggle_signal(struggle)])
    if isinstance(message, events_pb2.MasteryUpdated):
        tenant = event_tenant(envelope.record, message.student.tenant)
        student_id = _student(envelope, message.student)
        if not message.HasField("update_time"):
            raise PoisonEventError(f"mastery {record.event_id}: no update_time")
        overall = BandChange(
            topic=0,
            previous_band=int(message.previous_band),
            band=int(message.band),
            previous_score=message.previous_score,
            score=message.score,
            evidence_count=message.evidence_count,
        )
        topics = [
            BandChange(
                topic=int(t.topic),
                previous_band=int(t.previous_band),
                band=int(t.band),
                previous_score=t.previous_score,
                score=t.score,
                evidence_count=t.evidence_count,
            )
            for t in message.topics
        ]
        change = MasteryChange(
            source=record.source,
            event_id=record.event_id,
            student_id=student_id,
            cohort=message.student.cohort,
            changes=(overall, *topics),
            update_time=_time(message.update_time),
        )
        return Detection(tenant, record.source, record.event_id, falling_behind(change))
    raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")


def alert_consumer(
    bus: Bus,
    engine: NotifyEngine,
    *,
    group_id: str,
    topics: Sequence[str] = (STRUGGLE_DETECTED, MASTERY_UPDATED),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """The consumer that makes alerts. Its health: `ConsumerLoop.health_check`. An
    erased student's late events are dead-lettered (the store refuses them)."""

    def handle(batch: Sequence[Envelope]) -> None:
        engine.ingest([to_detection(envelope) for envelope in batch])

    return ConsumerLoop(
        bus,
        group_id=group_id,
        topics=list(topics),
        handler=handle,
        # The database or broker briefly away is retried; so is losing a race to open
        # an episode's alert (the retry extends the winner's).
        transient=(psycopg.OperationalError, psycopg.errors.UniqueViolation, TimeoutError),
        batch_size=200,
        stall_seconds=stall_seconds,
    )


def _event_time(envelope: Envelope) -> datetime | None:
    raw = envelope.record.headers.get("ce_time", "")
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def band_changed(message: events_pb2.MasteryUpdated) -> bool:
    """Overall or any topic moved to another band (what teachers' streams show)."""
    return message.band != message.previous_band or any(
        t.band != t.previous_band for t in message.topics
    )


CohortOf = Callable[[str, str], str | None]
"""(tenant, student id) -> the student's cohort in that tenant now (the roster's)."""


def to_update(
    envelope: Envelope, cohort_of: CohortOf, *, newer_than: datetime
) -> tuple[str, UpdateRow] | None:
    """The live update one event makes, with the tenant whose log it goes to (None: too
    old to deliver); PoisonEventError if it can never make one."""
    record, message = envelope.record, envelope.message
    when = _event_time(envelope)
    if when is not None and when < newer_than:
        return None  # older than the log keeps: no stream could be sent it
    if not isinstance(message, events_pb2.LearningResponse | events_pb2.MasteryUpdated):
        raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")
    tenant = event_tenant(envelope.record, message.student.tenant)
    student_id = _student(envelope, message.student)
    cohort = None
    if isinstance(message, events_pb2.LearningResponse):
        update = notify_pb2.Update(learning_response=message)
    else:
        update = notify_pb2.Update(mastery_updated=message)
        if band_changed(message):
            cohort = cohort_of(tenant, student_id) or message.student.cohort or NO_COHORT
    return tenant, UpdateRow(
        student_id=student_id,
        cohort=cohort,
        payload=update.SerializeToString(),
        ce_source=record.source,
        ce_id=record.event_id,
    )


class LogWriter(Protocol):
    """The writing side of the update log (services/notify/updates.py: UpdateLog)."""

    retention: timedelta

    def append(self, tenant: str, rows: Sequence[UpdateRow]) -> int: ...


def apply_updates(log: LogWriter, cohort_of: CohortOf, batch: Sequence[Envelope]) -> None:
    """Write a batch's updates to the log of each event's tenant, one transaction per
    tenant (a failure retries the batch; rows already written are skipped by (tenant,
    ce_source, ce_id)). Nothing is written when any event is poison."""
    newer_than = datetime.now(UTC) - log.retention + timedelta(minutes=1)
    placed = [to_update(envelope, cohort_of, newer_than=newer_than) for envelope in batch]
    by_tenant: dict[str, list[UpdateRow]] = {}
    for found in placed:
        if found is not None:
            by_tenant.setdefault(found[0], []).append(found[1])
    for tenant, rows in by_tenant.items():
        log.append(tenant, rows)


def updates_consumer(
    bus: Bus,
    log: LogWriter,
    cohort_of: CohortOf,
    *,
    group_id: str,
    topics: Sequence[str] = (LEARNING_RESPONSES, MASTERY_UPDATED),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """The consumer that writes students' answers and mastery changes to the update log
    of each event's tenant. Replicas share its group, so each event is written once.
    An erased student's late events are dead-lettered (the log refuses them)."""

    def handle(batch: Sequence[Envelope]) -> None:
        apply_updates(log, cohort_of, batch)

    return ConsumerLoop(
        bus,
        group_id=group_id,
        topics=list(topics),
        handler=handle,
        transient=(psycopg.OperationalError, TimeoutError),
        batch_size=500,
        stall_seconds=stall_seconds,
    )
