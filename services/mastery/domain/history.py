"""Mastery history: daily snapshots aggregated per day, ISO week or month."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import IntEnum

from services.mastery.domain.model import Components

MAX_RANGE_DAYS = 366
STABLE_SLOPE = 0.005


class Granularity(IntEnum):
    """Values match learnflow.mastery.v1.Granularity."""

    DAILY = 1
    WEEKLY = 2
    MONTHLY = 3


class Trend(IntEnum):
    """Values match learnflow.mastery.v1.HistorySummary.Trend."""

    UNKNOWN = 0
    IMPROVING = 1
    STABLE = 2
    DECLINING = 3


@dataclass(frozen=True, slots=True)
class DailySnapshot:
    day: date
    score: float
    components: Components
    event_count: int


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    period_start: date
    score: float
    components: Components
    event_count: int


@dataclass(frozen=True, slots=True)
class Summary:
    mean: float
    minimum: float
    maximum: float
    slope: float
    trend: Trend


def period_start(day: date, granularity: Granularity) -> date:
    if granularity is Granularity.WEEKLY:
        return day - timedelta(days=day.weekday())
    if granularity is Granularity.MONTHLY:
        return day.replace(day=1)
    return day


def _next_period(start: date, granularity: Granularity) -> date:
    if granularity is Granularity.DAILY:
        return start + timedelta(days=1)
    if granularity is Granularity.WEEKLY:
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def aggregate(
    snapshots: Sequence[DailySnapshot],
    start: date,
    end: date,
    granularity: Granularity,
    before: DailySnapshot | None = None,
) -> list[HistoryPoint]:
    """One point per period from `start` to `end` (inclusive): the mastery at the end of
    the period (the last snapshot so far; carried forward through quiet periods) and the
    events in it. `before` is the last snapshot before `start`, if any."""
    by_day = sorted((s for s in snapshots if start <= s.day <= end), key=lambda s: s.day)
    points: list[HistoryPoint] = []
    last = before
    index = 0
    period = period_start(start, granularity)
    while period <= end:
        following = _next_period(period, granularity)
        events = 0
        while index < len(by_day) and by_day[index].day < following:
            last = by_day[index]
            events += last.event_count
            index += 1
        if last is not None:
            points.append(HistoryPoint(max(period, start), last.score, last.components, events))
        period = following
    return points


def summarise(points: Sequence[HistoryPoint]) -> Summary:
    if not points:
        return Summary(0.0, 0.0, 0.0, 0.0, Trend.UNKNOWN)
    scores = [p.score for p in points]
    n = len(scores)
    mean = sum(scores) / n
    slope = 0.0
    if n >= 2:
        x_mean = (n - 1) / 2
        denominator = sum((x - x_mean) ** 2 for x in range(n))
        slope = sum((x - x_mean) * (y - mean) for x, y in enumerate(scores)) / denominator
    if n < 2:
        trend = Trend.UNKNOWN
    elif abs(slope) <= STABLE_SLOPE:
        trend = Trend.STABLE
    else:
        trend = Trend.IMPROVING if slope > 0 else Trend.DECLINING
    return Summary(mean, min(scores), max(scores), slope, trend)
