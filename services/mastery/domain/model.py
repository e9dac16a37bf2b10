"""The mastery model: components, the weighted score, bands and streaks.

Pure, typed Python: no transport, no storage. Everything here is a function of the
evidence aggregates, and every aggregate is order-independent (a best score, sums and
counts, a set of active days), so events applied in any order give the same mastery.

Definitions (per student, per topic, and overall across topics):
- completion: the mean, over the exercises attempted, of the best score per exercise
  (a score is the share of tests passed, in [0, 1]); retrying an exercise can only
  raise its best score.
- quiz: the mean of all quiz scores (each in [0, 1]).
- quality: the mean code-review quality score / 100.
- consistency: days with any activity in the last 30 days (today included, counted in
  the student's time zone) / 30.
- mastery = 0.4 * completion + 0.3 * quiz + 0.2 * quality + 0.1 * consistency.
- No evidence for a component: it counts as 0 (and its evidence count is 0). No
  evidence at all: score 0 and no band (MASTERY_BAND_UNSPECIFIED).
- Band, from percent = score * 100 rounded half up to an integer: red 0-40,
  yellow 41-70, green 71-90, blue 91-100. So 0.405 is 41 % (yellow), 0.7049 is 70 %.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import IntEnum

from services.kit.topics import Band, percent

CONSISTENCY_WINDOW_DAYS = 30


class Component(IntEnum):
    """Values match learnflow.mastery.v1.Component."""

    COMPLETION = 1
    QUIZ = 2
    QUALITY = 3


@dataclass(frozen=True, slots=True)
class Components:
    completion: float = 0.0
    quiz: float = 0.0
    quality: float = 0.0
    consistency: float = 0.0


WEIGHTS = Components(completion=0.4, quiz=0.3, quality=0.2, consistency=0.1)


def weighted_score(c: Components) -> float:
    score = (
        WEIGHTS.completion * c.completion
        + WEIGHTS.quiz * c.quiz
        + WEIGHTS.quality * c.quality
        + WEIGHTS.consistency * c.consistency
    )
    return min(1.0, max(0.0, score))


def band_of(score: float) -> Band:
    p = percent(score)
    if p <= 40:
        return Band.RED
    if p <= 70:
        return Band.YELLOW
    if p <= 90:
        return Band.GREEN
    return Band.BLUE


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Order-independent evidence aggregates for one student and one topic (or overall)."""

    exercise_best_sum: float = 0.0
    exercise_count: int = 0
    quiz_sum: float = 0.0
    quiz_count: int = 0
    quality_sum: float = 0.0  # quality scores already divided by 100
    quality_count: int = 0
    active_days_last_30: int = 0

    @property
    def has_evidence(self) -> bool:
        return bool(self.exercise_count or self.quiz_count or self.quality_count)

    def components(self) -> Components:
        return Components(
            completion=self.exercise_best_sum / self.exercise_count if self.exercise_count else 0.0,
            quiz=self.quiz_sum / self.quiz_count if self.quiz_count else 0.0,
            quality=self.quality_sum / self.quality_count if self.quality_count else 0.0,
            consistency=min(1.0, self.active_days_last_30 / CONSISTENCY_WINDOW_DAYS),
        )


def evidence_count(aggregates: Aggregates) -> int:
    """Pieces of evidence behind a score: exercises attempted (each once, by its best
    score), quizzes and code reviews."""
    return aggregates.exercise_count + aggregates.quiz_count + aggregates.quality_count


@dataclass(frozen=True, slots=True)
class Mastery:
    """The mastery of one topic, or overall (topic 0)."""

    topic: int
    score: float
    band: Band
    components: Components

    @staticmethod
    def of(topic: int, aggregates: Aggregates) -> Mastery:
        components = aggregates.components()
        if not aggregates.has_evidence and aggregates.active_days_last_30 == 0:
            return Mastery(topic, 0.0, Band.NONE, components)
        score = weighted_score(components)
        return Mastery(topic, score, band_of(score), components)


OVERALL = 0


@dataclass(frozen=True, slots=True)
class StudentMastery:
    overall: Mastery
    topics: Mapping[int, Mastery]


def student_mastery(
    per_topic: Mapping[int, Aggregates],
    overall_active_days_last_30: int,
    every_topic: Aggregates | None = None,
) -> StudentMastery:
    """Per-topic mastery and overall. Overall pools the evidence of every topic (a mean
    over all exercises, all quizzes, all reviews), not a mean of topic scores, so a
    topic with one exercise weighs as much as one exercise. `every_topic`: that pool,
    summed by the caller when `per_topic` holds only some topics (the others are known
    not to have changed); by default it is summed from `per_topic`."""
    topics = {
        topic: Mastery.of(topic, a)
        for topic, a in per_topic.items()
        if a.has_evidence or a.active_days_last_30
    }
    if every_topic is None:
        # Plain sums (this runs for every student of every batch).
        ex_sum = quiz_sum = quality_sum = 0.0
        ex_count = quiz_count = quality_count = 0
        for a in per_topic.values():
            ex_sum += a.exercise_best_sum
            ex_count += a.exercise_count
            quiz_sum += a.quiz_sum
            quiz_count += a.quiz_count
            quality_sum += a.quality_sum
            quality_count += a.quality_count
        every_topic = Aggregates(ex_sum, ex_count, quiz_sum, quiz_count, quality_sum, quality_count)
    total = replace(every_topic, active_days_last_30=overall_active_days_last_30)
    return StudentMastery(overall=Mastery.of(OVERALL, total), topics=topics)


def mastery_from(
    exercises: Mapping[int, tuple[float, int]],
    totals: Mapping[int, tuple[float, int, float, int]],
    active_days: Iterable[tuple[int, date]],
    today: date,
) -> tuple[StudentMastery, dict[int, Aggregates], int]:
    """A student's mastery at the end of `today` from their aggregates: per topic the
    (sum of best scores, exercises), the (quiz sum, count, quality sum, count), and the
    (topic, day) pairs with activity; consistency counts the window ending today.
    Returns the mastery, the aggregates per topic and the active days in the window."""
    start = window_start(today)
    per_topic_days: dict[int, set[date]] = {}
    overall_days: set[date] = set()
    for topic, day in active_days:
        if start <= day <= today:
            per_topic_days.setdefault(topic, set()).add(day)
            overall_days.add(day)
    days = {topic: len(found) for topic, found in per_topic_days.items()}
    return mastery_of(exercises, totals, days, len(overall_days))


def mastery_of(
    exercises: Mapping[int, tuple[float, int]],
    totals: Mapping[int, tuple[float, int, float, int]],
    window_days: Mapping[int, int],
    overall_window_days: int,
    every_topic: Aggregates | None = None,
) -> tuple[StudentMastery, dict[int, Aggregates], int]:
    """`mastery_from` with the active days already counted: per topic the days with
    activity in the consistency window (`window_start(today)` to today), and the days
    with any activity in it. A store may count them where the days are kept, and may
    pass only some topics with `every_topic`, the evidence of all pooled
    (`student_mastery`)."""
    no_exercises = (0.0, 0)
    no_totals = (0.0, 0, 0.0, 0)
    per_topic = {}
    for topic in exercises.keys() | totals.keys() | window_days.keys():
        ex_sum, ex_count = exercises.get(topic, no_exercises)
        quiz_sum, quiz_count, quality_sum, quality_count = totals.get(topic, no_totals)
        per_topic[topic] = Aggregates(
            ex_sum,
            ex_count,
            quiz_sum,
            quiz_count,
            quality_sum,
            quality_count,
            window_days.get(topic, 0),
        )
    mastery = student_mastery(per_topic, overall_window_days, every_topic)
    return mastery, per_topic, overall_window_days


def changed(before: Mastery | None, after: Mastery, tolerance: float = 1e-9) -> bool:
    if before is None:
        return after.band is not Band.NONE or after.score > 0
    return abs(before.score - after.score) > tolerance or before.band is not after.band


# -- streaks and activity -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Streak:
    current_days: int = 0
    longest_days: int = 0
    last_active: date | None = None


def streak(active_days: Iterable[date], today: date) -> Streak:
    """Consecutive active days. The current streak ends today or yesterday (a student
    who has not practised yet today keeps yesterday's streak); otherwise it is 0."""
    days = sorted(set(active_days))
    if not days:
        return Streak()
    longest = run = 1
    for previous, day in itertools.pairwise(days):
        run = run + 1 if day - previous == timedelta(days=1) else 1
        longest = max(longest, run)
    last = days[-1]
    current = 0
    if today - last <= timedelta(days=1):
        current = 1
        index = len(days) - 1
        while index > 0 and days[index] - days[index - 1] == timedelta(days=1):
            current += 1
            index -= 1
    return Streak(current_days=current, longest_days=longest, last_active=last)


def window_start(today: date) -> date:
    """First day counted by consistency: 30 days ending today."""
    return today - timedelta(days=CONSISTENCY_WINDOW_DAYS - 1)


# Active days as a bitmask: bit i is the day `i` days before the mask's last day. The
# store keeps one per student and topic (and overall), so consistency needs no scan of
# the days; DAY_BITS days cover the window (with the time zones' spread) and stay
# clear of a signed 64-bit integer's sign bit.
DAY_BITS = 62
assert CONSISTENCY_WINDOW_DAYS + 2 < DAY_BITS


def day_bits(days: Iterable[date]) -> tuple[date, int]:
    """These days as (last day, bitmask); days older than DAY_BITS before the last are
    no use to any window and are left out."""
    ordered = sorted(set(days))
    last = ordered[-1]
    bits = 0
    for day in ordered:
        age = (last - day).days
        if age < DAY_BITS:
            bits |= 1 << age
    return last, bits


def days_in_window(last: date | None, bits: int, today: date) -> int:
    """How many of a bitmask's days fall in the consistency window ending `today`."""
    if last is None:
        return 0
    newest = max(0, (last - today).days)  # bit of today (or of the newest day before it)
    oldest = min(DAY_BITS - 1, (last - window_start(today)).days)
    if oldest < newest:
        return 0
    return (bits >> newest & ((1 << (oldest - newest + 1)) - 1)).bit_count()


@dataclass
class ExerciseAttempt:
    """The best score of one exercise, merged across attempts."""

    exercise_id: str
    topic: int
    best: float
    attempts: int = 1

    def merge(self, score: float, topic: int, attempts: int = 1) -> None:
        self.best = max(self.best, score)
        self.topic = min(self.topic, topic)  # an exercise counts under its lowest topic
        self.attempts += attempts


@dataclass
class BatchAggregates:
    """What one batch of new events adds, pre-merged so each key is written once."""

    exercises: dict[tuple[str, str], ExerciseAttempt] = field(default_factory=dict)
    # (student, topic) -> [quiz_sum, quiz_count, quality_sum, quality_count]
    totals: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    active_days: set[tuple[str, int, date]] = field(default_factory=set)

    def update(self, other: BatchAggregates) -> None:
        """Add `other`'s evidence to this one's (the rule of adding its events one by
        one: a purged baseline and the evidence after it rebuild like the whole)."""
        for key, attempt in other.exercises.items():
            mine = self.exercises.get(key)
            if mine is None:
                self.exercises[key] = replace(attempt)
            else:
                mine.merge(attempt.best, attempt.topic, attempt.attempts)
        for topic_key, sums in other.totals.items():
            mine_sums = self.totals.setdefault(topic_key, [0.0, 0, 0.0, 0])
            for i, value in enumerate(sums):
                mine_sums[i] += value
        self.active_days |= other.active_days
