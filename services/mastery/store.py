"""The mastery engine's Postgres store (schema `mastery`).

Ingestion applies a batch of events in one transaction: claim the (source, id) pairs
(duplicates drop out here), record the evidence, merge the order-independent aggregates,
recompute the affected students, write snapshots and the outbox. Student rows are locked
in sorted order first, so concurrent batches and recalculations serialise per student
without deadlocks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import Cursor, sql

from services.kit.db import Database
from services.kit.topics import Band
from services.mastery.domain.events import ProgressEvent, aggregate_batch, history, local_day
from services.mastery.domain.history import DailySnapshot
from services.mastery.domain.model import (
    OVERALL,
    Aggregates,
    Component,
    Components,
    Mastery,
    StudentMastery,
    changed,
    evidence_count,
    mastery_from,
    window_start,
)
from services.mastery.domain.records import (
    WHEEL_SPIN_ATTEMPTS,
    Change,
    CohortRow,
    EvidenceCounts,
    EvidenceRow,
    MasteryView,
    OperationRecord,
    Student,
    WheelSpin,
)

LATEST_PER_COMPONENT = 5
# A student's queued history rebuild waits this long for more late events to join it.
HISTORY_SETTLE = timedelta(seconds=2)


WheelSpinEncoder = Callable[[Sequence[WheelSpin]], Iterable["OutboxMessage"]]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    topic: str
    key: str
    payload: bytes
    id: int = 0  # the outbox row, assigned by the table
    # The published event's id, assigned by the table: the same for a resend after a
    # crash, unique across databases.
    event_id: str = ""


ORDERINGS = {
    "name": "s.student_id ASC",
    "name desc": "s.student_id DESC",
    "score": "coalesce(m.score, 0) ASC, s.student_id",
    "score desc": "coalesce(m.score, 0) DESC, s.student_id",
    "update_time": "m.updated_at ASC NULLS FIRST, s.student_id",
    "update_time desc": "m.updated_at DESC NULLS LAST, s.student_id",
}


def _mastery_from_row(topic: int, row: Sequence[Any]) -> Mastery:
    score, band, completion, quiz, quality, consistency = row
    return Mastery(topic, score, Band(band), Components(completion, quiz, quality, consistency))


def _daily_row(student_id: str, m: Mastery, day: date, event_count: int) -> tuple[Any, ...]:
    """A `mastery_daily` row, in the column order of its inserts."""
    c = m.components
    return (
        student_id,
        m.topic,
        day,
        m.score,
        c.completion,
        c.quiz,
        c.quality,
        c.consistency,
        event_count,
    )


def _operation_record(row: Sequence[Any]) -> OperationRecord:
    name, created_by, done, cancel, metadata, response, error_code, error_message = row
    return OperationRecord(
        name,
        created_by,
        done,
        cancel,
        bytes(metadata),
        bytes(response) if response is not None else None,
        error_code,
        error_message,
    )


def _evidence_of(
    cur: Cursor[Any], ids: Sequence[str], students: dict[str, Student]
) -> dict[str, list[ProgressEvent]]:
    """Every piece of evidence of these students, as the events that brought it."""
    evidence: dict[str, list[ProgressEvent]] = defaultdict(list)
    for sid, source, event_id, event_type, component, topic, subject, value, occur in cur.execute(
        "SELECT student_id, source, event_id, event_type, component, topic, subject, value, "
        "  occur_time FROM evidence WHERE student_id = ANY(%s)",
        (list(ids),),
    ):
        student = students[sid]
        evidence[sid].append(
            ProgressEvent(
                source=source,
                event_id=event_id,
                event_type=event_type,
                student_id=sid,
                cohort=student.cohort,
                time_zone=student.time_zone,
                topic=topic,
                component=Component(component) if component else None,
                subject=subject,
                value=value,
                occur_time=occur,
            )
        )
    return evidence


class MasteryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- ingestion --------------------------------------------------------------

    def apply_batch(
        self,
        events: Sequence[ProgressEvent],
        now: datetime,
        encode: Callable[[Sequence[Change]], Iterable[OutboxMessage]],
        encode_wheel_spins: WheelSpinEncoder | None = None,
    ) -> list[Change]:
        with self.db.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            fresh = self._claim(cur, events)
            if not fresh:
                return []
            students = self._upsert_students(cur, fresh)
            self._record_evidence(cur, fresh)
            attempts_before = self._merge_aggregates(
                cur, fresh, {s: st.time_zone for s, st in students.items()}
            )
            if encode_wheel_spins is not None:
                spins = self._wheel_spins(cur, attempts_before, students)
                self._enqueue(cur, encode_wheel_spins(spins))
            changes = self._recompute(
                cur, students, now, cause={e.student_id: e.event_id for e in fresh}
            )
            self._write_history(cur, fresh, students, changes, now)
            self._enqueue(cur, encode(changes))
            return changes

    def _write_history(
        self,
        cur: Cursor[Any],
        events: Sequence[ProgressEvent],
        students: dict[str, Student],
        changes: Sequence[Change],
        now: datetime,
    ) -> None:
        """History by the day each event happened (the student's time zone): today's
        row moves with today's events; a student with an event from an earlier day is
        queued for the history job, which rebuilds their days from that one to today
        from the evidence (`rebuild_pending_history`)."""
        first_day: dict[str, date] = {}
        todays: dict[str, int] = defaultdict(int)
        for event in events:
            time_zone = students[event.student_id].time_zone
            day = local_day(event.occur_time, time_zone)
            if day < local_day(now, time_zone):
                seen = first_day.get(event.student_id)
                first_day[event.student_id] = day if seen is None else min(seen, day)
            else:
                todays[event.student_id] += 1
        self._write_snapshots(cur, changes, now, todays)
        if first_day:
            ids = sorted(first_day)
            cur.execute(
                "INSERT INTO history_pending AS h (student_id, from_day) "
                "SELECT * FROM unnest(%s::text[], %s::date[]) "
                "ON CONFLICT (student_id) DO UPDATE SET "
                "  from_day = least(h.from_day, EXCLUDED.from_day)",
                (ids, [first_day[i] for i in ids]),
            )

    def rebuild_pending_history(
        self, now: datetime, limit: int = 200, settle: timedelta = HISTORY_SETTLE
    ) -> int:
        """Rebuild the history of up to `limit` students queued at least `settle` ago
        (the database's clock; `now` says which day is today);
        returns how many. The queue entries are taken in a short transaction of their
        own, so ingestion never waits for a rebuild; rebuilds of one student take turns
        (an advisory lock), and a late event committed meanwhile queues it again."""
        with self.db.pool.connection() as conn:
            with conn.transaction():
                pending = conn.execute(
                    "DELETE FROM history_pending WHERE student_id IN ("
                    "  SELECT student_id FROM history_pending WHERE queued_at <= now() - %s "
                    "  ORDER BY queued_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING student_id, from_day",
                    (settle, limit),
                ).fetchall()
            if not pending:
                return 0
            first_day = {sid: day for sid, day in pending}
            ids = sorted(first_day)
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('mastery.history:' || id)) "
                    "FROM unnest(%s::text[]) AS id",
                    (ids,),
                )
                students = {
                    row[0]: Student(*row)
                    for row in cur.execute(
                        "SELECT student_id, cohort, time_zone, created_at, updated_at "
                        "FROM students WHERE student_id = ANY(%s)",
                        (ids,),
                    )
                }
                self._rebuild_days(cur, first_day, students, now)
            return len(ids)

    @staticmethod
    def _rebuild_days(
        cur: Cursor[Any], first_day: dict[str, date], students: dict[str, Student], now: datetime
    ) -> None:
        """Every day from each student's first day to yesterday, from the evidence.
        Today's row is the incremental path's: it already holds every event's effect."""
        ids = sorted(first_day)
        evidence = _evidence_of(cur, ids, students)
        rows = []
        for sid in ids:
            time_zone = students[sid].time_zone
            yesterday = local_day(now, time_zone) - timedelta(days=1)
            for day in history(evidence[sid], time_zone, first_day[sid], yesterday):
                masteries = [day.mastery.overall, *day.mastery.topics.values()]
                for m in masteries:
                    count = day.event_count if m.topic == OVERALL else 0
                    rows.append(_daily_row(sid, m, day.day, count))
            cur.execute(
                "DELETE FROM mastery_daily WHERE student_id = %s AND day >= %s AND day <= %s",
                (sid, first_day[sid], yesterday),
            )
        if rows:
            columns = list(zip(*rows, strict=True))
            cur.execute(
                "INSERT INTO mastery_daily (student_id, topic, day, score, completion, quiz, "
                "  quality, consistency, event_count) "
                "SELECT * FROM unnest(%s::text[], %s::smallint[], %s::date[], %s::float8[], "
                "  %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::int[])",
                [list(c) for c in columns],
            )

    @staticmethod
    def _claim(cur: Cursor[Any], events: Sequence[ProgressEvent]) -> list[ProgressEvent]:
        unique: dict[tuple[str, str], ProgressEvent] = {}
        for event in events:
            unique.setdefault(event.key, event)
        rows = cur.execute(
            "INSERT INTO processed_events (source, event_id) "
            "SELECT * FROM unnest(%s::text[], %s::text[]) "
            "ON CONFLICT DO NOTHING RETURNING source, event_id",
            ([k[0] for k in unique], [k[1] for k in unique]),
        ).fetchall()
        return [unique[(source, event_id)] for source, event_id in rows]

    @staticmethod
    def _upsert_students(cur: Cursor[Any], events: Sequence[ProgressEvent]) -> dict[str, Student]:
        # Per student, the most recent cohort and time zone the batch says anything about
        # (an event without them leaves the stored values as they are).
        cohort: dict[str, tuple[datetime, str]] = {}
        time_zone: dict[str, tuple[datetime, str]] = {}
        for event in events:
            for latest, value in ((cohort, event.cohort), (time_zone, event.time_zone)):
                seen = latest.get(event.student_id)
                if value and (seen is None or event.occur_time >= seen[0]):
                    latest[event.student_id] = (event.occur_time, value)
        ids = sorted({e.student_id for e in events})  # a fixed lock order: no deadlocks
        stored = {
            row[0]: (row[1], row[2])
            for row in cur.execute(
                "SELECT student_id, cohort, time_zone FROM students "
                "WHERE student_id = ANY(%s) ORDER BY student_id FOR UPDATE",
                (ids,),
            )
        }
        final_cohort = [cohort[i][1] if i in cohort else stored.get(i, ("", ""))[0] for i in ids]
        final_zone = [
            time_zone[i][1] if i in time_zone else stored.get(i, ("", "UTC"))[1] for i in ids
        ]
        rows = cur.execute(
            "INSERT INTO students AS s (student_id, cohort, time_zone) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
            "ON CONFLICT (student_id) DO UPDATE SET cohort = EXCLUDED.cohort, "
            "  time_zone = EXCLUDED.time_zone, updated_at = now() "
            "RETURNING student_id, cohort, time_zone, created_at, updated_at",
            (ids, final_cohort, final_zone),
        ).fetchall()
        return {row[0]: Student(*row) for row in rows}

    @staticmethod
    def _record_evidence(cur: Cursor[Any], events: Sequence[ProgressEvent]) -> None:
        with cur.copy(
            "COPY evidence (student_id, source, event_id, event_type, component, topic, "
            "subject, value, occur_time) FROM STDIN"
        ) as copy:
            for e in events:
                copy.write_row(
                    (
                        e.student_id,
                        e.source,
                        e.event_id,
                        e.event_type,
                        int(e.component or 0),
                        e.topic,
                        e.subject,
                        e.value,
                        e.occur_time,
                    )
                )

    @staticmethod
    def _merge_aggregates(
        cur: Cursor[Any], events: Sequence[ProgressEvent], time_zone_of: dict[str, str]
    ) -> dict[tuple[str, str], int]:
        """Merge the batch into the aggregates; per exercise touched, the attempts this
        batch added."""
        batch = aggregate_batch(events, time_zone_of)
        batch_attempts: dict[tuple[str, str], int] = {}
        if batch.exercises:
            keys = sorted(batch.exercises)
            attempts = [batch.exercises[k] for k in keys]
            batch_attempts = {k: a.attempts for k, a in zip(keys, attempts, strict=True)}
            cur.execute(
                "INSERT INTO exercise_best AS b (student_id, exercise_id, topic, best, attempts) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::smallint[], "
                "                     %s::float8[], %s::int[]) "
                "ON CONFLICT (student_id, exercise_id) DO UPDATE SET "
                "  best = greatest(b.best, EXCLUDED.best), "
                "  topic = least(b.topic, EXCLUDED.topic), "
                "  attempts = b.attempts + EXCLUDED.attempts",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [a.topic for a in attempts],
                    [a.best for a in attempts],
                    [a.attempts for a in attempts],
                ),
            )
        if batch.totals:
            keys_t = sorted(batch.totals)
            totals = [batch.totals[k] for k in keys_t]
            cur.execute(
                "INSERT INTO topic_totals AS t "
                "  (student_id, topic, quiz_sum, quiz_count, quality_sum, quality_count) "
                "SELECT * FROM unnest(%s::text[], %s::smallint[], %s::float8[], %s::int[], "
                "                     %s::float8[], %s::int[]) "
                "ON CONFLICT (student_id, topic) DO UPDATE SET "
                "  quiz_sum = t.quiz_sum + EXCLUDED.quiz_sum, "
                "  quiz_count = t.quiz_count + EXCLUDED.quiz_count, "
                "  quality_sum = t.quality_sum + EXCLUDED.quality_sum, "
                "  quality_count = t.quality_count + EXCLUDED.quality_count",
                (
                    [k[0] for k in keys_t],
                    [k[1] for k in keys_t],
                    [t[0] for t in totals],
                    [int(t[1]) for t in totals],
                    [t[2] for t in totals],
                    [int(t[3]) for t in totals],
                ),
            )
        days = sorted(batch.active_days)
        cur.execute(
            "INSERT INTO active_days (student_id, topic, day) "
            "SELECT * FROM unnest(%s::text[], %s::smallint[], %s::date[]) ON CONFLICT DO NOTHING",
            ([d[0] for d in days], [d[1] for d in days], [d[2] for d in days]),
        )
        return batch_attempts

    @staticmethod
    def _wheel_spins(
        cur: Cursor[Any], batch_attempts: dict[tuple[str, str], int], students: dict[str, Student]
    ) -> list[WheelSpin]:
        """Exercises whose attempts crossed WHEEL_SPIN_ATTEMPTS in this batch with no pass
        yet (a pass is every test passed). Crossing happens once, so one report each."""
        if not batch_attempts:
            return []
        keys = sorted(batch_attempts)
        spins = []
        for student, exercise, topic, best, attempts in cur.execute(
            "SELECT student_id, exercise_id, topic, best, attempts FROM exercise_best "
            "WHERE (student_id, exercise_id) IN "
            "  (SELECT * FROM unnest(%s::text[], %s::text[])) "
            "AND best < 1.0 AND attempts >= %s",
            ([k[0] for k in keys], [k[1] for k in keys], WHEEL_SPIN_ATTEMPTS),
        ).fetchall():
            if attempts - batch_attempts[(student, exercise)] < WHEEL_SPIN_ATTEMPTS:
                info = students[student]
                spins.append(
                    WheelSpin(student, info.cohort, info.time_zone, exercise, topic, attempts, best)
                )
        return spins

    # -- computing mastery from the aggregates -----------------------------------

    @staticmethod
    def _aggregates(
        cur: Cursor[Any], students: dict[str, Student], now: datetime
    ) -> dict[str, tuple[StudentMastery, dict[int, Aggregates], int]]:
        """Per student: mastery now (the end of today in their time zone) from the
        aggregate tables, the aggregates per topic behind it, and the active days in the
        consistency window."""
        ids = sorted(students)
        exercises: dict[str, dict[int, tuple[float, int]]] = defaultdict(dict)
        for sid, topic, total, count in cur.execute(
            "SELECT student_id, topic, sum(best), count(*) FROM exercise_best "
            "WHERE student_id = ANY(%s) GROUP BY 1, 2",
            (ids,),
        ):
            exercises[sid][topic] = (total, count)
        totals: dict[str, dict[int, tuple[float, int, float, int]]] = defaultdict(dict)
        for sid, topic, qs, qc, ls, lc in cur.execute(
            "SELECT student_id, topic, quiz_sum, quiz_count, quality_sum, quality_count "
            "FROM topic_totals WHERE student_id = ANY(%s)",
            (ids,),
        ):
            totals[sid][topic] = (qs, qc, ls, lc)
        # The earliest window start any time zone can have today (UTC-12 vs UTC+14).
        earliest = window_start(now.date()) - timedelta(days=2)
        days: dict[str, list[tuple[int, date]]] = defaultdict(list)
        for sid, topic, day in cur.execute(
            "SELECT student_id, topic, day FROM active_days "
            "WHERE student_id = ANY(%s) AND day >= %s",
            (ids, earliest),
        ):
            days[sid].append((topic, day))
        return {
            sid: mastery_from(
                exercises[sid], totals[sid], days[sid], local_day(now, student.time_zone)
            )
            for sid, student in students.items()
        }

    @staticmethod
    def _current(cur: Cursor[Any], ids: Sequence[str]) -> dict[str, dict[int, Mastery]]:
        current: dict[str, dict[int, Mastery]] = defaultdict(dict)
        for sid, topic, *values in cur.execute(
            "SELECT student_id, topic, score, band, completion, quiz, quality, consistency "
            "FROM mastery_current WHERE student_id = ANY(%s)",
            (list(ids),),
        ):
            current[sid][topic] = _mastery_from_row(topic, values)
        return current

    def _recompute(
        self,
        cur: Cursor[Any],
        students: dict[str, Student],
        now: datetime,
        cause: dict[str, str],
    ) -> list[Change]:
        aggregates = self._aggregates(cur, students, now)
        before = self._current(cur, sorted(students))
        changes: list[Change] = []
        rows: list[tuple[Any, ...]] = []
        for sid in sorted(students):
            after, per_topic, _ = aggregates[sid]
            previous = before.get(sid, {})
            masteries = [after.overall, *after.topics.values()]
            if not any(changed(previous.get(m.topic), m) for m in masteries):
                continue
            student = students[sid]
            evidence = {t: evidence_count(a) for t, a in per_topic.items()}
            evidence[OVERALL] = sum(evidence.values())
            changes.append(
                Change(
                    sid,
                    student.cohort,
                    student.time_zone,
                    previous,
                    after,
                    cause.get(sid, ""),
                    evidence,
                )
            )
            for m in masteries:
                if not changed(previous.get(m.topic), m):
                    continue  # only what changed is written: most events move one topic
                c = m.components
                rows.append(
                    (
                        sid,
                        m.topic,
                        m.score,
                        int(m.band),
                        c.completion,
                        c.quiz,
                        c.quality,
                        c.consistency,
                    )
                )
        if rows:
            columns = list(zip(*rows, strict=True))
            cur.execute(
                "INSERT INTO mastery_current AS m (student_id, topic, score, band, completion, "
                "  quiz, quality, consistency, updated_at) "
                "SELECT *, %s FROM unnest(%s::text[], %s::smallint[], %s::float8[], "
                "  %s::smallint[], %s::float8[], %s::float8[], %s::float8[], %s::float8[]) "
                "ON CONFLICT (student_id, topic) DO UPDATE SET score = EXCLUDED.score, "
                "  band = EXCLUDED.band, completion = EXCLUDED.completion, quiz = EXCLUDED.quiz, "
                "  quality = EXCLUDED.quality, consistency = EXCLUDED.consistency, "
                "  updated_at = EXCLUDED.updated_at",
                (now, *[list(c) for c in columns]),
            )
        return changes

    @staticmethod
    def _write_snapshots(
        cur: Cursor[Any], changes: Sequence[Change], now: datetime, events: dict[str, int]
    ) -> None:
        """Today's row in each changed student's history (in their time zone)."""
        rows = []
        for change in changes:
            day = local_day(now, change.time_zone)
            # Overall and the topics that moved; history carries the others forward.
            for m in [change.after.overall, *change.changed_topics()]:
                count = events.get(change.student, 0) if m.topic == OVERALL else 0
                rows.append(_daily_row(change.student, m, day, count))
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        cur.execute(
            "INSERT INTO mastery_daily AS d (student_id, topic, day, score, completion, quiz, "
            "  quality, consistency, event_count) "
            "SELECT * FROM unnest(%s::text[], %s::smallint[], %s::date[], %s::float8[], "
            "  %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::int[]) "
            "ON CONFLICT (student_id, topic, day) DO UPDATE SET score = EXCLUDED.score, "
            "  completion = EXCLUDED.completion, quiz = EXCLUDED.quiz, "
            "  quality = EXCLUDED.quality, consistency = EXCLUDED.consistency, "
            "  event_count = d.event_count + EXCLUDED.event_count",
            [list(c) for c in columns],
        )

    @staticmethod
    def _enqueue(cur: Cursor[Any], messages: Iterable[OutboxMessage]) -> None:
        batch = list(messages)
        if batch:
            cur.execute(
                "INSERT INTO outbox (topic, key, payload) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[])",
                ([m.topic for m in batch], [m.key for m in batch], [m.payload for m in batch]),
            )

    # -- outbox ---------------------------------------------------------------------

    def drain_outbox(
        self, send: Callable[[Sequence[OutboxMessage]], None], limit: int = 1000
    ) -> int:
        """Hand pending messages to `send` (which must not return before the broker has
        them) and delete them; returns how many. Concurrent drainers skip locked rows."""
        with self.db.pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT id, topic, key, payload, event_id FROM outbox ORDER BY id "
                "LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
            if not rows:
                return 0
            send(
                [
                    OutboxMessage(topic, key, bytes(payload), id_, str(event_id))
                    for id_, topic, key, payload, event_id in rows
                ]
            )
            conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
            return len(rows)

    # -- reads ------------------------------------------------------------------

    def student(self, student_id: str) -> Student | None:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "SELECT student_id, cohort, time_zone, created_at, updated_at FROM students "
                "WHERE student_id = %s",
                (student_id,),
            ).fetchone()
        return Student(*row) if row else None

    def mastery_view(self, student: Student, now: datetime) -> MasteryView:
        with self.db.pool.connection() as conn, conn.cursor() as cur:
            mastery, _, overall_days = self._aggregates(cur, {student.student_id: student}, now)[
                student.student_id
            ]
            today = local_day(now, student.time_zone)
            all_days = [
                row[0]
                for row in cur.execute(
                    "SELECT DISTINCT day FROM active_days WHERE student_id = %s ORDER BY day",
                    (student.student_id,),
                )
            ]
            evidence: dict[tuple[int, int], EvidenceCounts] = defaultdict(EvidenceCounts)
            for topic, component, count in cur.execute(
                "SELECT topic, component, count(*) FROM evidence "
                "WHERE student_id = %s AND component > 0 GROUP BY 1, 2",
                (student.student_id,),
            ):
                evidence[(topic, component)].count = count
                evidence[(OVERALL, component)].count += count
            for row in cur.execute(
                "SELECT source, event_id, event_type, component, topic, subject, value, occur_time "
                "FROM (SELECT *, row_number() OVER (PARTITION BY topic, component "
                "                                   ORDER BY occur_time DESC, event_id) AS rank "
                "      FROM evidence WHERE student_id = %s AND component > 0) ranked "
                "WHERE rank <= %s ORDER BY occur_time DESC, event_id",
                (student.student_id, LATEST_PER_COMPONENT),
            ):
                item = EvidenceRow(*row)
                evidence[(item.topic, item.component)].latest.append(item)
                overall = evidence[(OVERALL, item.component)].latest
                if len(overall) < LATEST_PER_COMPONENT:
                    overall.append(item)
            updated = cur.execute(
                "SELECT updated_at FROM mastery_current WHERE student_id = %s AND topic = 0",
                (student.student_id,),
            ).fetchone()
        return MasteryView(
            student=student,
            mastery=mastery,
            active_days=all_days,
            active_days_last_30=overall_days,
            today=today,
            evidence=dict(evidence),
            updated_at=updated[0] if updated else None,
        )

    def cohort_page(
        self, cohort: str, order_by: str, band: int, offset: int, limit: int
    ) -> tuple[list[CohortRow], int]:
        # Only whitelisted fragments are composed into the SQL; values are parameters.
        band_filter = sql.SQL("AND m.band = %(band)s" if band else "")
        params = {"cohort": cohort, "band": band, "limit": limit, "offset": offset}
        joined = sql.SQL(
            "FROM students s LEFT JOIN mastery_current m "
            "  ON m.student_id = s.student_id AND m.topic = 0 "
            "WHERE s.cohort = %(cohort)s {band_filter} "
        ).format(band_filter=band_filter)
        with self.db.pool.connection() as conn, conn.cursor() as cur:
            total = cur.execute(sql.SQL("SELECT count(*) ") + joined, params).fetchone()
            rows = cur.execute(
                sql.SQL(
                    "SELECT s.student_id, s.cohort, m.score, m.band, m.completion, m.quiz, "
                    "  m.quality, m.consistency, m.updated_at "
                )
                + joined
                + sql.SQL("ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s").format(
                    order=sql.SQL(ORDERINGS[order_by])
                ),
                params,
            ).fetchall()
            ids = [r[0] for r in rows]
            topics = self._current(cur, ids)
        page = []
        for sid, cohort_id, score, band_value, *components, updated_at in rows:
            overall = None
            if score is not None:
                overall = _mastery_from_row(OVERALL, (score, band_value, *components))
            per_topic = {t: m for t, m in topics.get(sid, {}).items() if t != OVERALL}
            page.append(CohortRow(sid, cohort_id, overall, per_topic, updated_at))
        return page, int(total[0]) if total else 0

    def daily_history(
        self, student_id: str, topic: int, start: date, end: date
    ) -> tuple[list[DailySnapshot], DailySnapshot | None]:
        with self.db.pool.connection() as conn, conn.cursor() as cur:
            rows = cur.execute(
                "SELECT day, score, completion, quiz, quality, consistency, event_count "
                "FROM mastery_daily WHERE student_id = %s AND topic = %s "
                "AND day BETWEEN %s AND %s ORDER BY day",
                (student_id, topic, start, end),
            ).fetchall()
            before = cur.execute(
                "SELECT day, score, completion, quiz, quality, consistency, event_count "
                "FROM mastery_daily WHERE student_id = %s AND topic = %s "
                "AND day < %s ORDER BY day DESC LIMIT 1",
                (student_id, topic, start),
            ).fetchone()

        def snapshot(row: Sequence[Any]) -> DailySnapshot:
            day, score, completion, quiz, quality, consistency, count = row
            return DailySnapshot(
                day, score, Components(completion, quiz, quality, consistency), count
            )

        return [snapshot(r) for r in rows], snapshot(before) if before else None

    # -- recalculation -----------------------------------------------------------

    def student_ids(self, cohort: str | None) -> list[str]:
        with self.db.pool.connection() as conn:
            if cohort is None:
                rows = conn.execute("SELECT student_id FROM students ORDER BY student_id")
            else:
                rows = conn.execute(
                    "SELECT student_id FROM students WHERE cohort = %s ORDER BY student_id",
                    (cohort,),
                )
            return [r[0] for r in rows]

    def recalculate(
        self,
        ids: Sequence[str],
        now: datetime,
        encode: Callable[[Sequence[Change]], Iterable[OutboxMessage]],
    ) -> int:
        """Rebuild the aggregates of these students from their evidence and recompute
        their mastery; returns how many changed."""
        with self.db.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            rows = cur.execute(
                "SELECT student_id, cohort, time_zone, created_at, updated_at FROM students "
                "WHERE student_id = ANY(%s) ORDER BY student_id FOR UPDATE",
                (list(ids),),
            ).fetchall()
            students = {r[0]: Student(*r) for r in rows}
            locked = sorted(students)
            for table in ("exercise_best", "topic_totals", "active_days"):
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE student_id = ANY(%s)").format(
                        sql.Identifier(table)
                    ),
                    (locked,),
                )
            # The rebuild applies every piece of evidence through the incremental path's
            # own merge: one aggregation rule (services/mastery/domain/events.py).
            evidence = _evidence_of(cur, locked, students)
            self._merge_aggregates(
                cur,
                [e for sid in locked for e in evidence[sid]],
                {sid: student.time_zone for sid, student in students.items()},
            )
            changes = self._recompute(cur, students, now, cause={})
            self._write_snapshots(cur, changes, now, {})
            self._enqueue(cur, encode(changes))
            return len(changes)

    # -- operations -------------------------------------------------------------

    def create_operation(self, name: str, created_by: str, metadata: bytes) -> None:
        with self.db.pool.connection() as conn:
            conn.execute(
                "INSERT INTO operations (name, created_by, metadata) VALUES (%s, %s, %s)",
                (name, created_by, metadata),
            )

    def update_operation(
        self,
        name: str,
        *,
        metadata: bytes,
        done: bool = False,
        response: bytes | None = None,
        error: tuple[int, str] | None = None,
    ) -> bool:
        """Store progress; returns whether cancellation was requested."""
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "UPDATE operations SET metadata = %s, done = %s, response = %s, error_code = %s, "
                "  error_message = %s, updated_at = now() WHERE name = %s "
                "RETURNING cancel_requested",
                (
                    metadata,
                    done,
                    response,
                    error[0] if error else None,
                    error[1] if error else None,
                    name,
                ),
            ).fetchone()
        return bool(row and row[0])

    def operation(self, name: str) -> OperationRecord | None:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "SELECT name, created_by, done, cancel_requested, metadata, response, error_code, "
                "  error_message FROM operations WHERE name = %s",
                (name,),
            ).fetchone()
        return _operation_record(row) if row else None

    def operations(self, created_by: str | None, offset: int, limit: int) -> list[OperationRecord]:
        with self.db.pool.connection() as conn:
            rows = conn.execute(
                "SELECT name, created_by, done, cancel_requested, metadata, response, error_code, "
                "  error_message FROM operations WHERE (%s::text IS NULL OR created_by = %s) "
                "ORDER BY created_at DESC, name LIMIT %s OFFSET %s",
                (created_by, created_by, limit, offset),
            ).fetchall()
        return [_operation_record(r) for r in rows]

    def request_cancel(self, name: str) -> bool:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "UPDATE operations SET cancel_requested = true, updated_at = now() "
                "WHERE name = %s RETURNING name",
                (name,),
            ).fetchone()
        return row is not None
