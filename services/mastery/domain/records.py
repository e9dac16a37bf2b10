"""What the mastery engine reads and reports: students, changes, wheel-spinning, and
the views GetMastery and cohort listings show. Plain data, no storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from services.mastery.domain.model import Mastery, StudentMastery, changed


@dataclass(frozen=True, slots=True)
class Student:
    student_id: str
    cohort: str
    time_zone: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """A student whose mastery changed, with what it was and what it is."""

    student: str
    cohort: str
    time_zone: str
    before: dict[int, Mastery]
    after: StudentMastery
    cause_event_id: str
    # Pieces of evidence behind each score after (exercises attempted, quizzes, code
    # reviews), per topic; OVERALL (0) sums every topic.
    evidence: dict[int, int] = field(default_factory=dict)
    tenant: str = ""  # the student's school

    def changed_topics(self) -> list[Mastery]:
        return [m for t, m in self.after.topics.items() if changed(self.before.get(t), m)]


# The same exercise attempted this many times without a pass (docs/architecture.md).
WHEEL_SPIN_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class WheelSpin:
    """A student who reached WHEEL_SPIN_ATTEMPTS attempts at an exercise without passing
    it. Reported once per (student, exercise): the attempt count crosses the threshold
    once, and a later pass ends it for good."""

    student: str
    cohort: str
    time_zone: str
    exercise_id: str
    topic: int
    attempts: int
    best: float
    tenant: str = ""  # the student's school


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    source: str
    event_id: str
    event_type: str
    component: int
    topic: int
    subject: str
    value: float
    occur_time: datetime


@dataclass(frozen=True, slots=True)
class Profile:
    """What a student's profile says beyond their Student record."""

    display_name: str
    time_zone_chosen: bool


@dataclass(frozen=True, slots=True)
class EvidenceQuery:
    """Which of a student's evidence to list, newest first: `topic` and `component`
    None for any (component 0: activity only), `start` inclusive, `end` exclusive,
    after the item at `after` (occur time, source, event id), at most `limit`."""

    limit: int
    topic: int | None = None
    component: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    after: tuple[datetime, str, str] | None = None


@dataclass
class EvidenceCounts:
    count: int = 0
    latest: list[EvidenceRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MasteryView:
    """Everything GetMastery shows, computed now from the aggregates."""

    student: Student
    mastery: StudentMastery
    active_days: list[date]
    active_days_last_30: int
    today: date
    # (topic, component) -> counts and latest; topic 0 is overall.
    evidence: dict[tuple[int, int], EvidenceCounts]
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class CohortRow:
    student_id: str
    cohort: str
    overall: Mastery | None
    topics: dict[int, Mastery]
    updated_at: datetime | None


# How a cohort's students may be listed (ListCohortMastery's order_by).
COHORT_ORDERS = ("name", "name desc", "score", "score desc", "update_time", "update_time desc")


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """A recalculation's long-running operation: its packed metadata and result stay
    opaque here (google.protobuf.Any bytes, made and read at the edge)."""

    name: str
    created_by: str
    done: bool
    cancel_requested: bool
    metadata: bytes
    response: bytes | None
    error_code: int | None
    error_message: str | None
