"""mastery.updated: what a change looks like on the wire, and how the outbox is sent."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    MASTERY_UPDATED,
    STRUGGLE_DETECTED,
    STUDENT_ERASURE,
    STUDENT_EXPORT,
    Bus,
    Publisher,
)
from services.mastery.domain.records import Change, WheelSpin
from services.mastery.store import OutboxMessage

SOURCE = "//learnflow.dev/mastery"


def encode_changes(changes: Sequence[Change]) -> list[OutboxMessage]:
    messages = []
    now = Timestamp()
    now.GetCurrentTime()
    for change in changes:
        before = change.before.get(0)
        after = change.after.overall
        event = events_pb2.MasteryUpdated(
            student=events_pb2.StudentRef(
                student_id=change.student,
                cohort=change.cohort,
                time_zone=change.time_zone,
                tenant=change.tenant,
            ),
            previous_score=before.score if before else 0.0,
            score=after.score,
            previous_band=int(before.band) if before else 0,  # type: ignore[arg-type]
            band=int(after.band),  # type: ignore[arg-type]
            topics=[
                events_pb2.MasteryUpdated.TopicChange(
                    topic=m.topic,  # type: ignore[arg-type]
                    previous_score=change.before[m.topic].score
                    if m.topic in change.before
                    else 0.0,
                    score=m.score,
                    band=int(m.band),  # type: ignore[arg-type]
                    previous_band=int(change.before[m.topic].band)  # type: ignore[arg-type]
                    if m.topic in change.before
                    else 0,
                    evidence_count=change.evidence.get(m.topic, 0),
                )
                for m in change.changed_topics()
            ],
            cause_event_id=change.cause_event_id,
            update_time=now,
            evidence_count=change.evidence.get(0, 0),
        )
        messages.append(
            OutboxMessage(
                MASTERY_UPDATED, change.student, event.SerializeToString(), tenant=change.tenant
            )
        )
    return messages


def encode_wheel_spins(spins: Sequence[WheelSpin]) -> list[OutboxMessage]:
    """struggle.detected (wheel-spinning) for teachers: the evidence is the attempt
    count and best score on one exercise."""
    messages = []
    now = Timestamp()
    now.GetCurrentTime()
    for spin in spins:
        event = events_pb2.StruggleDetected(
            student=events_pb2.StudentRef(
                student_id=spin.student,
                cohort=spin.cohort,
                time_zone=spin.time_zone,
                tenant=spin.tenant,
            ),
            kind=events_pb2.StruggleDetected.KIND_WHEEL_SPINNING,
            topic=spin.topic,  # type: ignore[arg-type]
            exercise_id=spin.exercise_id,
            occurrence_count=spin.attempts,
            # One episode per student and exercise (the threshold is crossed once).
            episode_id=f"wheel-spinning:{spin.tenant}/{spin.student}:{spin.exercise_id}",
            detect_time=now,
        )
        messages.append(
            OutboxMessage(
                STRUGGLE_DETECTED, spin.student, event.SerializeToString(), tenant=spin.tenant
            )
        )
    return messages


# What each outbox topic carries.
OUTBOX_TYPES: dict[str, type[Message]] = {
    MASTERY_UPDATED: events_pb2.MasteryUpdated,
    STRUGGLE_DETECTED: events_pb2.StruggleDetected,
    STUDENT_ERASURE: events_pb2.StudentErased,
    STUDENT_EXPORT: events_pb2.StudentExportRequested,
}


class OutboxSender:
    """Publishes outbox rows; returns only once the broker acknowledged them."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._publisher = Publisher(bus, SOURCE)

    def __call__(self, messages: Sequence[OutboxMessage]) -> None:
        for message in messages:
            # A stable id: a resend after a crash is recognisably the same event.
            self._publisher.publish_serialized(
                message.topic,
                OUTBOX_TYPES[message.topic].DESCRIPTOR.full_name,
                message.payload,
                key=message.key,
                event_id=f"mastery-{message.event_id}",
            )
        self._bus.flush()
