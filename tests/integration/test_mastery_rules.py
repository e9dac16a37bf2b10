"""The mastery store on real Postgres against the domain's one rule: random event streams
(late, out of order, duplicated, in random batches) applied incrementally give the
mastery a rebuild from the evidence gives, and the history the domain replays day by
day from the evidence. Plus: a late event corrects its own day and the days after."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.kit.runtime import Runtime
from services.mastery.domain.events import ProgressEvent, history, local_day
from services.mastery.domain.model import OVERALL, Component
from services.mastery.domain.records import Change
from services.mastery.main import MIGRATIONS
from services.mastery.store import MasteryStore, OutboxMessage

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
TENANT = "school-rules"
ZONES = ("UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Tokyo")


@pytest.fixture(scope="module")
def store(runtime: Runtime) -> MasteryStore:
    return MasteryStore(runtime.database("mastery", MIGRATIONS))


def no_messages(_changes: Any) -> list[OutboxMessage]:
    return []


def rules_event(
    student: str,
    event_id: str,
    time_zone: str,
    *,
    topic: int,
    component: Component | None,
    value: float,
    when: datetime,
    subject: str = "",
) -> ProgressEvent:
    return ProgressEvent(
        source="//test/rules",
        event_id=event_id,
        event_type="test",
        student_id=student,
        cohort="c-rules",
        time_zone=time_zone,
        topic=topic,
        component=component,
        subject=subject,
        value=value,
        occur_time=when,
        tenant=TENANT,
    )


def random_events(rng: random.Random, student: str, time_zone: str, n: int) -> list[ProgressEvent]:
    events = []
    for i in range(n):
        component = rng.choice([Component.COMPLETION, Component.QUIZ, Component.QUALITY, None])
        events.append(
            rules_event(
                student,
                f"{student}-{i}",
                time_zone,
                topic=rng.randint(1, 4),
                component=component,
                # Few exercises, so retries (best score) and two topics per exercise occur.
                subject=f"ex{rng.randint(1, 5)}" if component else "",
                value=round(rng.random(), 3),
                when=NOW - timedelta(hours=rng.uniform(0, 24 * 12)),
            )
        )
    return events


def rebuild(store: MasteryStore) -> None:
    """What the history job does: rebuild every queued student."""
    while store.rebuild_pending_history(NOW, settle=timedelta(0)):
        pass


def stored(
    store: MasteryStore, table: str, ids: list[str], tenant: str = TENANT
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    key_columns = {"mastery_current": 2, "mastery_daily": 3}[table]
    columns = {
        "mastery_current": "student_id, topic, score, band, completion, quiz, quality, consistency",
        "mastery_daily": "student_id, topic, day, score, completion, quiz, quality, consistency, "
        "event_count",
    }[table]
    with store.db.scoped(tenant) as conn:
        rows = conn.execute(
            f"SELECT {columns} FROM {table} WHERE student_id = ANY(%s)",
            (ids,),
        ).fetchall()
    return {
        tuple(r[:key_columns]): tuple(
            round(v, 9) if isinstance(v, float) else v for v in r[key_columns:]
        )
        for r in rows
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_rebuild_and_history_equals_the_replay(
    store: MasteryStore, seed: int
) -> None:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    streams = {
        f"rules-{run}-{n}": (zone, random_events(rng, f"rules-{run}-{n}", zone, rng.randint(5, 40)))
        for n, zone in enumerate(ZONES)
    }
    everything = [e for _, events in streams.values() for e in events]
    delivered = everything + rng.sample(everything, len(everything) // 5)  # redeliveries
    rng.shuffle(delivered)
    changes: list[Change] = []
    while delivered:
        size = rng.randint(1, 12)
        batch, delivered = delivered[:size], delivered[size:]
        changes += store.apply_batch(batch, NOW, no_messages)
    ids = sorted(streams)
    assert changes
    rebuild(store)

    # History: every day from a student's first event to today, as the domain replays it
    # (the days before today rebuilt by the history job, today's by ingestion).
    daily = stored(store, "mastery_daily", ids)
    for sid, (zone, events) in streams.items():
        today = local_day(NOW, zone)
        first = min(local_day(e.occur_time, zone) for e in events)
        if first == today:
            continue  # no late event: today's row only (checked through the current row)
        for day in history(events, zone, first, today):
            overall = daily[(sid, OVERALL, day.day)]
            assert overall[0] == round(day.mastery.overall.score, 9), (sid, day.day)
            assert overall[-1] == day.event_count, (sid, day.day)
            for topic, m in day.mastery.topics.items():
                assert daily[(sid, topic, day.day)][0] == round(m.score, 9)
        assert {d for (s, t, d) in daily if s == sid and t == OVERALL} == {
            first + timedelta(days=n) for n in range((today - first).days + 1)
        }

    # The current mastery: what today's replay says, and what a rebuild from the
    # evidence says (the rebuild changes nothing).
    current = stored(store, "mastery_current", ids)
    for sid, (zone, events) in streams.items():
        today = local_day(NOW, zone)
        (now_day,) = history(events, zone, today, today)
        assert current[(sid, OVERALL)][0] == round(now_day.mastery.overall.score, 9)
    assert store.recalculate(TENANT, ids, NOW, no_messages) == 0
    assert stored(store, "mastery_current", ids) == current

    # Retention, seen from 84 days on: the evidence of days more than 90 days back (about
    # half of it) is purged into the baseline; the mastery, a rebuild's mastery and the
    # rebuilt history of every day stay as they were, and purging again purges nothing.
    later, window = NOW + timedelta(days=84), timedelta(days=90)
    daily = stored(store, "mastery_daily", ids)
    kept = evidence_count(store, ids)
    assert store.purge_evidence(TENANT, later, window) > 0
    assert 0 < evidence_count(store, ids) < kept
    assert store.purge_evidence(TENANT, later, window) == 0
    assert stored(store, "mastery_current", ids) == current
    assert store.recalculate(TENANT, ids, NOW, no_messages) == 0
    assert stored(store, "mastery_current", ids) == current
    requeue_history(
        store,
        {
            sid: min(local_day(e.occur_time, z) for e in events)
            for sid, (z, events) in streams.items()
        },
    )
    rebuild(store)
    assert stored(store, "mastery_daily", ids) == daily


def evidence_count(store: MasteryStore, ids: list[str]) -> int:
    with store.db.scoped(TENANT) as conn:
        row = conn.execute(
            "SELECT count(*) FROM evidence WHERE student_id = ANY(%s)", (ids,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def requeue_history(store: MasteryStore, first_days: dict[str, date]) -> None:
    """Queue these students' history for a rebuild from their first day (as a late
    event of that day would)."""
    with store.db.scoped(TENANT) as conn:
        conn.execute(
            "INSERT INTO history_pending (tenant, student_id, from_day, queued_at) "
            "SELECT %s, u.sid, u.day, now() - interval '1 hour' "
            "FROM unnest(%s::text[], %s::date[]) AS u (sid, day) "
            "ON CONFLICT (tenant, student_id) DO UPDATE SET from_day = EXCLUDED.from_day",
            (TENANT, list(first_days), list(first_days.values())),
        )


def test_the_same_student_id_in_two_tenants_is_two_students(store: MasteryStore) -> None:
    """Batches mixing two schools' events for the same student id: each school's
    mastery is what its own events alone give, and a student of neither is not there."""
    rng = random.Random(11)
    sid = f"twin-{uuid.uuid4().hex[:8]}"
    schools = ("school-a", "school-b")
    streams = {
        school: [
            dataclasses.replace(e, tenant=school, event_id=f"{school}-{e.event_id}")
            for e in random_events(rng, sid, "Europe/Paris", 25)
        ]
        for school in schools
    }
    mixed = [e for events in streams.values() for e in events]
    rng.shuffle(mixed)
    while mixed:
        batch, mixed = mixed[:7], mixed[7:]
        store.apply_batch(batch, NOW, no_messages)
    scores = {}
    for school, events in streams.items():
        today = local_day(NOW, "Europe/Paris")
        (now_day,) = history(events, "Europe/Paris", today, today)
        current = stored(store, "mastery_current", [sid], school)
        scores[school] = current[(sid, OVERALL)][0]
        assert scores[school] == round(now_day.mastery.overall.score, 9), school
        assert store.student(school, sid) is not None
    assert scores["school-a"] != scores["school-b"]  # different evidence, told apart
    assert stored(store, "mastery_current", [sid], "school-c") == {}
    assert store.student("school-c", sid) is None


@pytest.mark.parametrize("seed", [4, 5])
def test_incremental_across_days_equals_rebuild(store: MasteryStore, seed: int) -> None:
    """Batches applied as the clock moves over days: a batch recomputes only the topics
    it touches for a student already recomputed that day, and every topic otherwise. A
    topic no event touched still has its consistency window moved on a new day; the
    rebuild finds nothing to correct."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    ids = [f"days-{run}-{n}" for n in range(6)]
    events = [
        # Over more than the 30-day window, so days leave it as the clock moves.
        dataclasses.replace(event, occur_time=NOW - timedelta(hours=rng.uniform(0, 24 * 40)))
        for n, sid in enumerate(ids)
        for event in random_events(rng, sid, ZONES[n % len(ZONES)], rng.randint(10, 30))
    ]
    events.sort(key=lambda e: e.occur_time)
    clock = NOW - timedelta(days=40)
    while events:
        size = rng.randint(1, 8)
        batch, events = events[:size], events[size:]
        clock = max(clock, *(e.occur_time for e in batch))
        store.apply_batch(batch, clock, no_messages)
    # Last, one event per student on a single topic, a day later.
    clock += timedelta(days=1)
    last = [
        rules_event(sid, f"{sid}-last", "", topic=1, component=None, value=0.0, when=clock)
        for sid in ids
    ]
    store.apply_batch(last, clock, no_messages)
    current = stored(store, "mastery_current", ids)
    assert store.recalculate(TENANT, ids, clock, no_messages) == 0
    assert stored(store, "mastery_current", ids) == current
    # Purged from 70 days on (the first half of the 40 days is older than 90 days then),
    # with days inside and outside the consistency window: nothing changes.
    kept = evidence_count(store, ids)
    assert store.purge_evidence(TENANT, clock + timedelta(days=70), timedelta(days=90)) > 0
    assert 0 < evidence_count(store, ids) < kept
    assert store.recalculate(TENANT, ids, clock, no_messages) == 0
    assert stored(store, "mastery_current", ids) == current


def test_a_late_event_corrects_its_own_day_and_the_days_after(store: MasteryStore) -> None:
    sid = f"late-{uuid.uuid4().hex[:8]}"

    def quiz(n: int, score: float, days_ago: int) -> ProgressEvent:
        return rules_event(
            sid,
            f"{sid}-{n}",
            "UTC",
            topic=2,
            component=Component.QUIZ,
            value=score,
            when=NOW - timedelta(days=days_ago),
            subject=f"quiz{n}",
        )

    store.apply_batch([quiz(1, 1.0, 5)], NOW, no_messages)
    rebuild(store)
    before = stored(store, "mastery_daily", [sid])
    days: dict[date, float] = {d: v[0] for (_, t, d), v in before.items() if t == OVERALL}
    assert sorted(days) == [NOW.date() - timedelta(days=n) for n in range(5, -1, -1)]

    store.apply_batch([quiz(2, 0.0, 3)], NOW, no_messages)  # arrives late, three days ago
    rebuild(store)
    after = stored(store, "mastery_daily", [sid])
    moved: dict[date, list[float]] = defaultdict(list)
    for (_, topic, day), values in after.items():
        if topic == OVERALL:
            moved[day].append(values[0])
    five, four, three = (NOW.date() - timedelta(days=n) for n in (5, 4, 3))
    assert moved[five] == [days[five]] and moved[four] == [days[four]]  # before it: as they were
    assert moved[three][0] < days[three]  # its day and every day since: lower
    assert all(moved[d][0] < days[d] for d in days if d >= three)
    assert after[(sid, OVERALL, three)][-1] == 1  # the day counts its event


def test_published_events_have_ids_no_other_database_reuses(runtime: Runtime) -> None:
    """Two mastery databases (a restored one, a benchmark's) number their outbox rows
    alike; the events they publish must still carry different ids, or a consumer that
    remembers applied ids would skip one as the other."""
    sent: list[Sequence[OutboxMessage]] = []
    schemas = [f"mastery_ids_{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        for schema in schemas:
            store = MasteryStore(runtime.database(schema, MIGRATIONS))
            sid = f"ids-{uuid.uuid4().hex[:6]}"
            event = random_events(random.Random(7), sid, "UTC", 1)[0]
            store.apply_batch(
                [dataclasses.replace(event, occur_time=NOW)],
                NOW,
                lambda changes: [
                    OutboxMessage("mastery.updated", c.student, b"x") for c in changes
                ],
            )
            store.drain_outbox(sent.append)
        (first,), (second,) = sent
        assert first.id == second.id == 1  # each database's first outbox row
        assert first.event_id and second.event_id and first.event_id != second.event_id
    finally:
        with psycopg.connect(runtime.database_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
