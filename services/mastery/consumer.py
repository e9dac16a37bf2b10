"""progress.events in: CloudEvents with protobuf payloads, turned into domain events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    DEFAULT_STALL_SECONDS,
    PROGRESS_EVENTS,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    event_tenant,
)
from services.mastery.domain.events import (
    HISTORY_HORIZON,
    ErasedStudentError,
    InvalidEventError,
    ProgressEvent,
    validate,
)
from services.mastery.domain.model import Component
from services.mastery.engine import MasteryEngine


def to_domain(
    envelope: Envelope, horizon: timedelta = HISTORY_HORIZON, now: datetime | None = None
) -> ProgressEvent:
    """The domain event for a decoded CloudEvent; PoisonEventError if it can never apply
    (malformed, or older than `horizon` before `now`)."""
    message = envelope.message
    record = envelope.record
    if isinstance(message, events_pb2.ExerciseGraded):
        component, subject, value = Component.COMPLETION, message.exercise_id, message.score
    elif isinstance(message, events_pb2.QuizGraded):
        component, subject, value = Component.QUIZ, message.quiz, message.score
    elif isinstance(message, events_pb2.CodeReviewed):
        if not 0 <= message.quality_score <= 100:
            raise PoisonEventError(f"quality_score {message.quality_score} is outside 0..100")
        component, subject, value = (
            Component.QUALITY,
            message.code_review,
            message.quality_score / 100,
        )
    elif isinstance(message, events_pb2.HintRevealed):
        component, subject, value = None, message.diagnosis, 0.0
    else:
        raise PoisonEventError(f"{record.event_type} does not belong on {PROGRESS_EVENTS}")
    student = message.student
    if not message.HasField("occur_time"):
        raise PoisonEventError(f"{record.event_type} {record.event_id}: no occur_time")
    try:
        return validate(
            ProgressEvent(
                source=record.source,
                event_id=record.event_id,
                event_type=record.event_type,
                student_id=student.student_id,
                cohort=student.cohort,
                time_zone=student.time_zone,
                topic=int(message.topic),
                component=component,
                subject=subject,
                value=value,
                occur_time=message.occur_time.ToDatetime(tzinfo=UTC),
                tenant=event_tenant(record, student.tenant),
            ),
            now,
            horizon,
        )
    except InvalidEventError as exc:
        raise PoisonEventError(str(exc)) from None


def progress_consumer(
    bus: Bus,
    engine: MasteryEngine,
    *,
    group_id: str,
    batch_size: int = 1000,
    topic: str = PROGRESS_EVENTS,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    horizon: timedelta = HISTORY_HORIZON,
) -> ConsumerLoop:
    """The engine's consumer of `topic` (progress.events; another topic for replays and
    tests). Its health: `ConsumerLoop.health_check`, stalled after `stall_seconds`.
    An erased student's late events (the store refuses them) are dead-lettered."""

    def handle(batch: Sequence[Envelope]) -> None:
        now = datetime.now(UTC)  # one clock reading per batch, not per event
        events = [to_domain(envelope, horizon, now) for envelope in batch]
        try:
            engine.ingest(events)
        except ErasedStudentError as exc:  # the loop then retries one by one: theirs go
            raise PoisonEventError(str(exc)) from None

    return ConsumerLoop(
        bus,
        group_id=group_id,
        topics=[topic],
        handler=handle,
        # The database or broker being briefly away is retried; nothing is committed meanwhile.
        transient=(psycopg.OperationalError, TimeoutError),
        batch_size=batch_size,
        stall_seconds=stall_seconds,
    )
