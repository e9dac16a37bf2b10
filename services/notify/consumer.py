"""struggle.detected and mastery.updated in: CloudEvents turned into domain values,
then into alerts by the engine. An event that can never make sense is poison and goes
to `<topic>.dlq` (the kit's ConsumerLoop)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    DEFAULT_STALL_SECONDS,
    MASTERY_UPDATED,
    STRUGGLE_DETECTED,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
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
from services.notify.engine import Detection, NotifyEngine

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
        return Detection(record.source, record.event_id, [struggle_signal(struggle)])
    if isinstance(message, events_pb2.MasteryUpdated):
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
        return Detection(record.source, record.event_id, falling_behind(change))
    raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")


def alert_consumer(
    bus: Bus,
    engine: NotifyEngine,
    *,
    group_id: str,
    topics: Sequence[str] = (STRUGGLE_DETECTED, MASTERY_UPDATED),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """The consumer that makes alerts. Its health: `ConsumerLoop.health_check`."""

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
