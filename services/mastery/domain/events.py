"""Progress events as the domain sees them, their validation, and batch pre-aggregation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.mastery.domain.model import BatchAggregates, Component, ExerciseAttempt

# Curriculum topics are learnflow.common.v1.Topic values 1..MAX_TOPIC.
MAX_TOPIC = 13
MAX_CLOCK_SKEW = timedelta(days=1)


class InvalidEventError(ValueError):
    """The event can never be applied (it goes to the dead-letter queue)."""


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    source: str
    event_id: str
    event_type: str
    student_id: str
    cohort: str
    time_zone: str  # IANA name; "" means UTC
    topic: int
    component: Component | None  # None: activity only (e.g. a hint was shown)
    subject: str  # exercise id, quiz or review name
    value: float  # in [0, 1]
    occur_time: datetime  # timezone-aware

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.event_id)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidEventError(f"unknown time zone {name!r}") from None


def local_day(moment: datetime, time_zone: str) -> date:
    return moment.astimezone(zone(time_zone)).date()


def validate(event: ProgressEvent, now: datetime | None = None) -> ProgressEvent:
    now = now or datetime.now(UTC)
    problems = []
    if not event.student_id:
        problems.append("no student id")
    if not 1 <= event.topic <= MAX_TOPIC:
        problems.append(f"topic {event.topic} is not a curriculum topic")
    if not (math.isfinite(event.value) and 0.0 <= event.value <= 1.0):
        problems.append(f"value {event.value!r} is outside [0, 1]")
    if event.component is not None and not event.subject:
        problems.append("no subject (exercise, quiz or review)")
    if event.occur_time.tzinfo is None:
        problems.append("occur_time has no time zone")
    elif event.occur_time > now + MAX_CLOCK_SKEW:
        problems.append(f"occur_time {event.occur_time.isoformat()} is in the future")
    if problems:
        raise InvalidEventError(f"{event.event_type} {event.event_id}: " + "; ".join(problems))
    zone(event.time_zone)  # raises for an unknown zone
    return event


def aggregate_batch(
    events: Iterable[ProgressEvent], time_zone_of: Mapping[str, str]
) -> BatchAggregates:
    """Merge a batch so each aggregate key is written once (best score per exercise,
    additive quiz and quality totals, the set of active days)."""
    batch = BatchAggregates()
    for event in events:
        student = event.student_id
        day = local_day(event.occur_time, time_zone_of.get(student, event.time_zone))
        batch.active_days.add((student, event.topic, day))
        if event.component is Component.COMPLETION:
            key = (student, event.subject)
            attempt = batch.exercises.get(key)
            if attempt is None:
                batch.exercises[key] = ExerciseAttempt(event.subject, event.topic, event.value)
            else:
                attempt.merge(event.value)
        elif event.component is not None:
            totals = batch.totals.setdefault((student, event.topic), [0.0, 0, 0.0, 0])
            offset = 0 if event.component is Component.QUIZ else 2
            totals[offset] += event.value
            totals[offset + 1] += 1
    return batch
