"""The mastery model on plain values: formula, bands, streaks, history, validation."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from services.kit.topics import Band, percent
from services.mastery.domain.events import (
    InvalidEventError,
    ProgressEvent,
    aggregate_batch,
    local_day,
    validate,
)
from services.mastery.domain.history import (
    DailySnapshot,
    Granularity,
    Trend,
    aggregate,
    summarise,
)
from services.mastery.domain.model import (
    DAY_BITS,
    Aggregates,
    Component,
    Components,
    band_of,
    day_bits,
    days_in_window,
    streak,
    student_mastery,
    weighted_score,
    window_start,
)
from services.mastery.domain.records import COHORT_ORDERS
from services.mastery.store import ORDERINGS

# (completion, quiz, quality, consistency) -> expected score, worked out by hand:
# 0.4*completion + 0.3*quiz + 0.2*quality + 0.1*consistency.
FORMULA_CASES = [
    ((0.0, 0.0, 0.0, 0.0), 0.0),
    ((1.0, 1.0, 1.0, 1.0), 1.0),
    ((1.0, 0.0, 0.0, 0.0), 0.4),
    ((0.0, 1.0, 0.0, 0.0), 0.3),
    ((0.0, 0.0, 1.0, 0.0), 0.2),
    ((0.0, 0.0, 0.0, 1.0), 0.1),
    ((0.8, 0.6, 0.7, 1 / 30), 0.32 + 0.18 + 0.14 + 0.1 / 30),  # 0.643333...
    ((0.5, 0.5, 0.5, 0.5), 0.5),
    ((0.9, 0.8, 0.75, 0.5), 0.36 + 0.24 + 0.15 + 0.05),  # 0.80
]


@pytest.mark.parametrize("parts,expected", FORMULA_CASES)
def test_weighted_formula(parts: tuple[float, float, float, float], expected: float) -> None:
    assert weighted_score(Components(*parts)) == pytest.approx(expected, abs=1e-12)


# Band boundaries: percent rounds half up (0.405 -> 41 %, yellow).
BAND_CASES = [
    (0.0, 0, Band.RED),
    (0.40, 40, Band.RED),
    (0.404999, 40, Band.RED),
    (0.405, 41, Band.YELLOW),
    (0.41, 41, Band.YELLOW),
    (0.70, 70, Band.YELLOW),
    (0.7049, 70, Band.YELLOW),
    (0.705, 71, Band.GREEN),
    (0.90, 90, Band.GREEN),
    (0.905, 91, Band.BLUE),
    (1.0, 100, Band.BLUE),
]


@pytest.mark.parametrize("score,expected_percent,expected_band", BAND_CASES)
def test_band_boundaries(score: float, expected_percent: int, expected_band: Band) -> None:
    assert percent(score) == expected_percent
    assert band_of(score) is expected_band


def test_no_evidence_means_no_band() -> None:
    result = student_mastery({}, overall_active_days_last_30=0)
    assert result.overall.band is Band.NONE and result.overall.score == 0
    assert result.topics == {}


def test_overall_pools_evidence_across_topics() -> None:
    # Functions: two exercises (best 1.0 and 0.5); strings: one exercise at 0.0 and a
    # quiz. Overall completion is the mean over all three exercises, not of topic means.
    per_topic = {
        3: Aggregates(exercise_best_sum=1.5, exercise_count=2, active_days_last_30=2),
        4: Aggregates(exercise_best_sum=0.0, exercise_count=1, quiz_sum=0.9, quiz_count=1),
    }
    result = student_mastery(per_topic, overall_active_days_last_30=3)
    assert result.overall.components == Components(0.5, 0.9, 0.0, 0.1)
    assert result.overall.score == pytest.approx(0.4 * 0.5 + 0.3 * 0.9 + 0.1 * 0.1)
    assert result.topics[3].components.completion == 0.75
    assert result.topics[4].components.quiz == 0.9


def test_streaks() -> None:
    today = date(2026, 11, 22)
    days = [today - timedelta(days=n) for n in (0, 1, 2, 5, 6, 7, 8)]
    assert streak(days, today).current_days == 3
    assert streak(days, today).longest_days == 4
    # Nothing yet today: yesterday's streak still counts; two days off breaks it.
    assert streak(days[1:], today).current_days == 2
    assert streak([today - timedelta(days=2)], today).current_days == 0
    assert streak([], today).longest_days == 0


def _event(
    n: int, component: Component | None, value: float, subject: str, day: int
) -> ProgressEvent:
    return ProgressEvent(
        source="//test",
        event_id=f"e{n}",
        event_type="t",
        student_id="s1",
        cohort="c1",
        time_zone="UTC",
        topic=3,
        component=component,
        subject=subject,
        value=value,
        occur_time=datetime(2026, 11, day, 12, tzinfo=UTC),
        tenant="school-a",
    )


def test_batch_aggregates_do_not_depend_on_order() -> None:
    events = [
        _event(1, Component.COMPLETION, 0.4, "ex1", 20),
        _event(2, Component.COMPLETION, 0.9, "ex1", 21),
        _event(3, Component.COMPLETION, 0.7, "ex2", 21),
        _event(4, Component.QUIZ, 0.5, "q1", 22),
        _event(5, Component.QUALITY, 0.8, "r1", 22),
        _event(6, None, 0.0, "d1", 19),
    ]
    results = set()
    for order in itertools.islice(itertools.permutations(events), 120):
        batch = aggregate_batch(order, {"s1": "UTC"})
        best = {k: (a.best, a.attempts) for k, a in batch.exercises.items()}
        totals = {k: tuple(v) for k, v in batch.totals.items()}
        results.add(
            (repr(sorted(best.items())), repr(sorted(totals.items())), frozenset(batch.active_days))
        )
    assert len(results) == 1
    best_seen, _, days = next(iter(results))
    assert "('s1', 'ex1'), (0.9, 2)" in best_seen
    assert len(days) == 4  # 19, 20, 21, 22 November


def test_active_day_is_the_students_local_day() -> None:
    late_evening_utc = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert local_day(late_evening_utc, "UTC") == date(2026, 11, 22)
    assert local_day(late_evening_utc, "Europe/Berlin") == date(2026, 11, 23)
    assert local_day(late_evening_utc, "America/Chicago") == date(2026, 11, 22)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"tenant": ""}, "no tenant"),
        ({"student_id": ""}, "no student id"),
        ({"topic": 0}, "not a curriculum topic"),
        ({"topic": 99}, "not a curriculum topic"),
        ({"value": 1.5}, "outside [0, 1]"),
        ({"value": float("nan")}, "outside [0, 1]"),
        ({"subject": ""}, "no subject"),
        ({"occur_time": datetime(2030, 1, 1, tzinfo=UTC)}, "in the future"),
        ({"occur_time": datetime(2026, 8, 23, tzinfo=UTC)}, "older than the 90-day history"),
        ({"time_zone": "Mars/Olympus_Mons"}, "unknown time zone"),
    ],
)
def test_invalid_events_are_refused(change: dict[str, object], message: str) -> None:
    good = _event(1, Component.COMPLETION, 0.5, "ex1", 20)
    validate(good, now=datetime(2026, 11, 22, tzinfo=UTC))
    bad = dataclasses.replace(good, **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match=re.escape(message)):
        validate(bad, now=datetime(2026, 11, 22, tzinfo=UTC))


def test_the_history_horizon_is_a_setting() -> None:
    event = dataclasses.replace(
        _event(1, Component.QUIZ, 0.5, "q1", 20), occur_time=datetime(2026, 11, 1, tzinfo=UTC)
    )
    now = datetime(2026, 11, 22, tzinfo=UTC)
    validate(event, now=now)  # 21 days old: within the default 90
    with pytest.raises(InvalidEventError, match="older than the 14-day history horizon"):
        validate(event, now=now, horizon=timedelta(days=14))


def _snap(day: date, score: float, events: int = 1) -> DailySnapshot:
    return DailySnapshot(day, score, Components(score, 0, 0, 0), events)


def test_history_daily_carries_scores_through_quiet_days() -> None:
    start = date(2026, 11, 1)
    snaps = [_snap(date(2026, 11, 2), 0.2), _snap(date(2026, 11, 4), 0.5, 3)]
    points = aggregate(
        snaps, start, date(2026, 11, 5), Granularity.DAILY, before=_snap(date(2026, 10, 30), 0.1)
    )
    assert [(p.period_start.day, p.score, p.event_count) for p in points] == [
        (1, 0.1, 0),
        (2, 0.2, 1),
        (3, 0.2, 0),
        (4, 0.5, 3),
        (5, 0.5, 0),
    ]


def test_history_weekly_and_monthly_take_the_end_of_each_period() -> None:
    snaps = [
        _snap(date(2026, 10, 5), 0.3),
        _snap(date(2026, 10, 8), 0.4),
        _snap(date(2026, 11, 10), 0.6),
    ]
    weekly = aggregate(snaps, date(2026, 10, 5), date(2026, 10, 18), Granularity.WEEKLY)
    assert [(p.period_start, p.score, p.event_count) for p in weekly] == [
        (date(2026, 10, 5), 0.4, 2),  # Monday 5 October: the week's last snapshot
        (date(2026, 10, 12), 0.4, 0),
    ]
    monthly = aggregate(
        snaps[2:], date(2026, 10, 15), date(2026, 11, 30), Granularity.MONTHLY, before=snaps[1]
    )
    assert [(p.period_start, p.score) for p in monthly] == [
        (date(2026, 10, 15), 0.4),
        (date(2026, 11, 1), 0.6),
    ]


def test_history_summary_and_trend() -> None:
    rising = aggregate(
        [_snap(date(2026, 11, d), 0.1 * d) for d in range(1, 6)],
        date(2026, 11, 1),
        date(2026, 11, 5),
        Granularity.DAILY,
    )
    summary = summarise(rising)
    assert summary.trend is Trend.IMPROVING and summary.slope == pytest.approx(0.1)
    assert summary.minimum == pytest.approx(0.1)
    assert summary.maximum == pytest.approx(0.5)
    assert summary.mean == pytest.approx(0.3)
    flat = aggregate(
        [_snap(date(2026, 11, 1), 0.5)], date(2026, 11, 1), date(2026, 11, 4), Granularity.DAILY
    )
    assert summarise(flat).trend is Trend.STABLE
    assert summarise([]).trend is Trend.UNKNOWN


def test_random_event_orders_give_the_same_components() -> None:
    rng = random.Random(7)
    events = [
        _event(
            n,
            rng.choice([Component.COMPLETION, Component.QUIZ, Component.QUALITY]),
            round(rng.random(), 3),
            f"x{rng.randint(1, 4)}",
            rng.randint(1, 20),
        )
        for n in range(40)
    ]
    seen = set()
    for _ in range(20):
        rng.shuffle(events)
        b = aggregate_batch(events, {"s1": "UTC"})
        # Sums of floats differ in the last bit by order: equal to 1e-9, the tolerance
        # the engine uses to decide whether mastery changed.
        best = sorted((k, a.best) for k, a in b.exercises.items())
        totals = sorted((k, tuple(round(v, 9) for v in t)) for k, t in b.totals.items())
        seen.add(repr(best) + repr(totals))
    assert len(seen) == 1


def test_every_cohort_order_the_api_offers_has_its_sql() -> None:
    assert set(ORDERINGS) == set(COHORT_ORDERS)


def test_a_day_mask_counts_the_window_as_the_day_list_does() -> None:
    """Active days kept as (last day, bitmask) count the consistency window exactly as
    the days themselves do, for any set of days: late, future (clock skew), or far older
    than the mask holds."""
    rng = random.Random(11)
    today = date(2026, 12, 3)
    for _ in range(2000):
        days = {today - timedelta(days=rng.randint(-1, 90)) for _ in range(rng.randint(1, 25))}
        last, bits = day_bits(days)
        in_window = {d for d in days if window_start(today) <= d <= today}
        assert days_in_window(last, bits, today) == len(in_window)
    assert days_in_window(None, 0, today) == 0
    # Older than the mask holds: dropped, never counted as a recent day.
    last, bits = day_bits([today, today - timedelta(days=DAY_BITS + 5)])
    assert bits == 1 and days_in_window(last, bits, today) == 1
