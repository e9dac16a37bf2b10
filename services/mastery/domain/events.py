"""Progress events as the domain sees them, their validation, and batch pre-aggregation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.mastery.domain.model import (
    BatchAggregates,
    Component,
    ExerciseAttempt,
    StudentMastery,
    mastery_from,
)

# Curriculum topics are learnflow.common.v1.Topic values 1..MAX_TOPIC.
MAX_TOPIC = 13
MAX_CLOCK_SKEW = timedelta(days=1)
# Events older than this go to the dead-letter queue: history is kept by the day an
# event happened, and days this old are no longer corrected.
HISTORY_HORIZON = timedelta(days=90)


class InvalidEventError(ValueError):
    """The event can never be applied (it goes to the dead-letter queue)."""


class ErasedStudentError(Exception):
    """A batch holds events of students who were erased (named by pseudonym): they are
    never applied (they go to the dead-letter queue)."""

    def __init__(self, tenant: str, pseudonyms: Sequence[str]) -> None:
        super().__init__(
            f"student {', '.join(pseudonyms)} of tenant {tenant} was erased: "
            "their late events are not stored"
        )


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
    tenant: str = ""  # the student's school; required (a student id is unique within it)

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


def validate(
    event: ProgressEvent, now: datetime | None = None, horizon: timedelta = HISTORY_HORIZON
) -> ProgressEvent:
    now = now or datetime.now(UTC)
    problems = []
    if not event.tenant:
        problems.append("no tenant")
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
    elif event.occur_time < now - horizon:
        problems.append(
            f"occur_time {event.occur_time.isoformat()} is older than the "
            f"{horizon.days}-day history horizon"
        )
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
        add(batch, event, time_zone_of.get(event.student_id, event.time_zone))
    return batch


def add(batch: BatchAggregates, event: ProgressEvent, time_zone: str) -> None:
    """The one aggregation rule: the best score per exercise (under its lowest topic),
    additive quiz and quality totals, the set of active days."""
    student = event.student_id
    batch.active_days.add((student, event.topic, local_day(event.occur_time, time_zone)))
    if event.component is Component.COMPLETION:
        key = (student, event.subject)
        attempt = batch.exercises.get(key)
        if attempt is None:
            batch.exercises[key] = ExerciseAttempt(event.subject, event.topic, event.value)
        else:
            attempt.merge(event.value, event.topic)
    elif event.component is not None:
        totals = batch.totals.setdefault((student, event.topic), [0.0, 0, 0.0, 0])
        offset = 0 if event.component is Component.QUIZ else 2
        totals[offset] += event.value
        totals[offset + 1] += 1


def parts_of(
    batch: BatchAggregates,
) -> tuple[dict[int, tuple[float, int]], dict[int, tuple[float, int, float, int]]]:
    """One student's aggregates as `mastery_from` takes them: per topic the (sum of best
    scores, exercises) and the (quiz sum, count, quality sum, count)."""
    exercises: dict[int, tuple[float, int]] = {}
    for attempt in batch.exercises.values():
        total, count = exercises.get(attempt.topic, (0.0, 0))
        exercises[attempt.topic] = (total + attempt.best, count + 1)
    totals = {topic: (t[0], int(t[1]), t[2], int(t[3])) for (_, topic), t in batch.totals.items()}
    return exercises, totals


@dataclass(frozen=True, slots=True)
class DayMastery:
    """A student's mastery as of the end of one day, and the events of that day."""

    day: date
    mastery: StudentMastery
    event_count: int


def history(
    events: Iterable[ProgressEvent],
    time_zone: str,
    first: date,
    last: date,
    start: BatchAggregates | None = None,
) -> list[DayMastery]:
    """One student's mastery at the end of each day from `first` to `last` (their time
    zone), each from the evidence that occurred up to then: the history a late event
    corrects, from its own day on. `start`: what evidence purged before `first` added
    (the retention job's baseline)."""
    by_day: dict[date, list[ProgressEvent]] = {}
    for event in events:
        by_day.setdefault(local_day(event.occur_time, time_zone), []).append(event)
    running = BatchAggregates()
    if start is not None:
        running.update(start)
    for day in sorted(d for d in by_day if d < first):
        for event in by_day[day]:
            add(running, event, time_zone)
    days = []
    day = first
    while day <= last:
        todays = by_day.get(day, [])
        for event in todays:
            add(running, event, time_zone)
        exercises, totals = parts_of(running)
        active = [(topic, d) for (_, topic, d) in running.active_days]
        mastery, _, _ = mastery_from(exercises, totals, active, day)
        days.append(DayMastery(day, mastery, len(todays)))
        day += timedelta(days=1)
    return days
