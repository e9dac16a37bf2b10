"""The mastery engine's Postgres store (schema `mastery`).

Every method works inside one tenant (row-level security, services/kit/db.py): the
methods take the tenant, and a batch of several tenants' events applies each tenant's
part in turn, scoped to it, in one transaction.

Ingestion applies a batch of events in one transaction: record the evidence (each
event's row is its claim: duplicates drop out here), merge the order-independent
aggregates, recompute the affected students (only the topics with new evidence, for a
student already recomputed today), write snapshots and the outbox. Student rows are locked
in sorted order first, so concurrent batches and recalculations serialise per student
without deadlocks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from psycopg import Cursor, sql

from services.kit.db import Database, delete_student_rows, scope
from services.kit.erasure import erased_in
from services.kit.export import Records, export_name, table_records
from services.kit.topics import Band
from services.mastery.domain.events import (
    ErasedStudentError,
    ProgressEvent,
    add,
    aggregate_batch,
    history,
    local_day,
)
from services.mastery.domain.events import zone as time_zone_info
from services.mastery.domain.history import DailySnapshot
from services.mastery.domain.model import (
    DAY_BITS,
    OVERALL,
    Aggregates,
    BatchAggregates,
    Component,
    Components,
    ExerciseAttempt,
    Mastery,
    StudentMastery,
    changed,
    day_bits,
    days_in_window,
    evidence_count,
    mastery_of,
)
from services.mastery.domain.records import (
    WHEEL_SPIN_ATTEMPTS,
    Change,
    CohortRow,
    EvidenceCounts,
    EvidenceQuery,
    EvidenceRow,
    MasteryView,
    OperationRecord,
    Profile,
    Student,
    WheelSpin,
)

LATEST_PER_COMPONENT = 5
DAY_MASK = (1 << DAY_BITS) - 1  # a day mask's bits, clear of the sign bit
# The evidence columns' types, in order (binary COPY needs them).
EVIDENCE_TYPES = ["text", "text", "text", "text", "int2", "int2", "text", "float8", "timestamptz"]
# Students whose evidence one retention transaction purges.
PURGE_CHUNK = 500
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
    # The tenant of the student it is about (an erasure deletes their unsent ones).
    tenant: str = ""


# Every table holding a student's rows (column student_id): what an erasure deletes.
STUDENT_TABLES = (
    "evidence",
    "exercise_best",
    "topic_totals",
    "active_days",
    "mastery_current",
    "mastery_daily",
    "history_pending",
    "students",
    "baseline_exercises",
    "baseline_totals",
    "baseline_days",
    "evidence_baseline",
)

ORDERINGS = {
    "name": "s.student_id ASC",
    "name desc": "s.student_id DESC",
    "score": "coalesce(m.score, 0) ASC, s.student_id",
    "score desc": "coalesce(m.score, 0) DESC, s.student_id",
    "update_time": "m.updated_at ASC NULLS FIRST, s.student_id",
    "update_time desc": "m.updated_at DESC NULLS LAST, s.student_id",
}


# Per student, the topics to read (overall always); a student not in it: every topic.
# None: every topic of everyone.
TopicFilter = Mapping[str, set[int]] | None


def _topic_filter(ids: Sequence[str], only: TopicFilter) -> tuple[list[str], list[int]]:
    """The parameters `_kept` adds: each student, and a bit per topic to keep (all set:
    every topic)."""
    every = -1
    if only is None:
        return list(ids), [every] * len(ids)
    masks = []
    for sid in ids:
        topics = only.get(sid)
        masks.append(every if topics is None else sum(1 << topic for topic in topics))
    return list(ids), masks


def _kept(query: str) -> sql.Composed:
    """`query` (rows of student_id, topic, ...; topic NULL or 0 for overall) cut to the
    rows `_topic_filter`'s parameters keep."""
    return sql.SQL(
        "SELECT q.* FROM ({}) AS q "
        "JOIN unnest(%b::text[], %b::int[]) AS k (student_id, topics) USING (student_id) "
        "WHERE q.topic IS NULL OR q.topic = 0 OR (k.topics >> q.topic) & 1 = 1"
    ).format(sql.SQL(query))  # a constant, never user input


# A student's state per topic (OVERALL: every topic pooled), and their stored mastery.
STATE_QUERY = _kept(
    "SELECT student_id, topic, exercise_sum, exercise_count, quiz_sum, quiz_count, "
    "  quality_sum, quality_count, days_last, days "
    "FROM topic_totals WHERE student_id = ANY(%b)"
)
CURRENT_QUERY = _kept(
    "SELECT student_id, topic, score, band, completion, quiz, quality, consistency "
    "FROM mastery_current WHERE student_id = ANY(%b)"
)


def _masteries(
    rows: Sequence[Sequence[Any]], students: dict[str, Student], now: datetime
) -> dict[str, tuple[StudentMastery, dict[int, Aggregates], int]]:
    """What `MasteryStore._aggregates` returns, from STATE_QUERY's rows."""
    today = {sid: local_day(now, student.time_zone) for sid, student in students.items()}
    exercises: dict[str, dict[int, tuple[float, int]]] = defaultdict(dict)
    totals: dict[str, dict[int, tuple[float, int, float, int]]] = defaultdict(dict)
    window_days: dict[str, dict[int, int]] = defaultdict(dict)
    every_topic = {sid: Aggregates() for sid in students}
    for sid, topic, ex_sum, ex_count, q_sum, q_count, l_sum, l_count, last, bits in rows:
        # The consistency window is the domain's (their time zone's today).
        in_window = days_in_window(last, bits, today[sid])
        if topic == OVERALL:
            every_topic[sid] = Aggregates(
                ex_sum, ex_count, q_sum, q_count, l_sum, l_count, in_window
            )
        else:
            exercises[sid][topic] = (ex_sum, ex_count)
            totals[sid][topic] = (q_sum, q_count, l_sum, l_count)
            window_days[sid][topic] = in_window
    result = {}
    for sid in sorted(students):
        pooled = every_topic[sid]
        mastery, per_topic, days = mastery_of(
            exercises[sid], totals[sid], window_days[sid], pooled.active_days_last_30, pooled
        )
        per_topic[OVERALL] = pooled
        result[sid] = (mastery, per_topic, days)
    return result


def _current_from(rows: Sequence[Sequence[Any]]) -> dict[str, dict[int, Mastery]]:
    current: dict[str, dict[int, Mastery]] = defaultdict(dict)
    for sid, topic, *values in rows:
        current[sid][topic] = _mastery_from_row(topic, values)
    return current


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


def _baseline_of(cur: Cursor[Any], ids: Sequence[str]) -> dict[str, BatchAggregates]:
    """What the evidence purged from these students added (the retention job's
    baseline), per student that has one."""
    baselines: dict[str, BatchAggregates] = defaultdict(BatchAggregates)
    for sid, exercise, topic, best, attempts in cur.execute(
        "SELECT student_id, exercise_id, topic, best, attempts FROM baseline_exercises "
        "WHERE student_id = ANY(%b)",
        (list(ids),),
    ).fetchall():
        baselines[sid].exercises[(sid, exercise)] = ExerciseAttempt(exercise, topic, best, attempts)
    for sid, topic, *sums in cur.execute(
        "SELECT student_id, topic, quiz_sum, quiz_count, quality_sum, quality_count "
        "FROM baseline_totals WHERE student_id = ANY(%b)",
        (list(ids),),
    ).fetchall():
        baselines[sid].totals[(sid, topic)] = list(sums)
    for sid, topic, day in cur.execute(
        "SELECT student_id, topic, day FROM baseline_days WHERE student_id = ANY(%b)",
        (list(ids),),
    ).fetchall():
        baselines[sid].active_days.add((sid, topic, day))
    return dict(baselines)


def _add_to_baseline(cur: Cursor[Any], purged: BatchAggregates) -> None:
    """Fold what purged evidence added into the baseline (the rule of `add`)."""
    exercises = sorted(purged.exercises.items())
    cur.execute(
        "INSERT INTO baseline_exercises AS b (student_id, exercise_id, topic, best, attempts) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::smallint[], %b::float8[], %b::int[]) "
        "ON CONFLICT (tenant, student_id, exercise_id) DO UPDATE SET "
        "  best = greatest(b.best, EXCLUDED.best), topic = least(b.topic, EXCLUDED.topic), "
        "  attempts = b.attempts + EXCLUDED.attempts",
        (
            [k[0] for k, _ in exercises],
            [k[1] for k, _ in exercises],
            [a.topic for _, a in exercises],
            [a.best for _, a in exercises],
            [a.attempts for _, a in exercises],
        ),
    )
    totals = sorted(purged.totals.items())
    cur.execute(
        "INSERT INTO baseline_totals AS b (student_id, topic, quiz_sum, quiz_count, "
        "  quality_sum, quality_count) "
        "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::float8[], %b::int[], "
        "  %b::float8[], %b::int[]) "
        "ON CONFLICT (tenant, student_id, topic) DO UPDATE SET "
        "  quiz_sum = b.quiz_sum + EXCLUDED.quiz_sum, "
        "  quiz_count = b.quiz_count + EXCLUDED.quiz_count, "
        "  quality_sum = b.quality_sum + EXCLUDED.quality_sum, "
        "  quality_count = b.quality_count + EXCLUDED.quality_count",
        (
            [k[0] for k, _ in totals],
            [k[1] for k, _ in totals],
            *([int(t[i]) if i % 2 else t[i] for _, t in totals] for i in range(4)),
        ),
    )
    days = sorted(purged.active_days)
    cur.execute(
        "INSERT INTO baseline_days (student_id, topic, day) "
        "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::date[]) ON CONFLICT DO NOTHING",
        ([d[0] for d in days], [d[1] for d in days], [d[2] for d in days]),
    )


def _progress_event(student: Student, row: Sequence[Any]) -> ProgressEvent:
    """An evidence row (source, event_id, event_type, component, topic, subject, value,
    occur_time) as the event that brought it."""
    source, event_id, event_type, component, topic, subject, value, occur = row
    return ProgressEvent(
        source=source,
        event_id=event_id,
        event_type=event_type,
        student_id=student.student_id,
        cohort=student.cohort,
        time_zone=student.time_zone,
        topic=topic,
        component=Component(component) if component else None,
        subject=subject,
        value=value,
        occur_time=occur,
    )


def _evidence_of(
    cur: Cursor[Any], ids: Sequence[str], students: dict[str, Student]
) -> dict[str, list[ProgressEvent]]:
    """Every piece of evidence of these students, as the events that brought it."""
    evidence: dict[str, list[ProgressEvent]] = defaultdict(list)
    for sid, *row in cur.execute(
        "SELECT student_id, source, event_id, event_type, component, topic, subject, value, "
        "  occur_time FROM evidence WHERE student_id = ANY(%b)",
        (list(ids),),
    ).fetchall():
        evidence[sid].append(_progress_event(students[sid], row))
    return evidence


class MasteryStore:
    def __init__(self, db: Database, *, tombstones: bool = False) -> None:
        """`tombstones`: refuse erased students' events inside each batch's transaction
        (the kit's `erasure.erased_students` must exist: `Runtime.tombstones`)."""
        self.db = db
        self._tombstones = tombstones

    # -- ingestion --------------------------------------------------------------

    def apply_batch(
        self,
        events: Sequence[ProgressEvent],
        now: datetime,
        encode: Callable[[Sequence[Change]], Iterable[OutboxMessage]],
        encode_wheel_spins: WheelSpinEncoder | None = None,
    ) -> list[Change]:
        by_tenant: dict[str, list[ProgressEvent]] = defaultdict(list)
        for event in events:
            by_tenant[event.tenant].append(event)
        changes: list[Change] = []
        with self.db.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for index, tenant in enumerate(sorted(by_tenant)):
                scope(conn, tenant)
                if self._tombstones:
                    self._refuse_erased(cur, tenant, by_tenant[tenant])
                fresh = self._claim(cur, by_tenant[tenant], reuse=index > 0)
                if not fresh:
                    continue
                # Pipeline mode (COPY, in the claim, cannot run in it): statements whose
                # results nobody waits for go out together, a round trip each saved.
                with conn.pipeline():
                    changes += self._apply_fresh(
                        cur,
                        tenant,
                        fresh,
                        now,
                        encode=encode,
                        encode_wheel_spins=encode_wheel_spins,
                    )
        return changes

    @staticmethod
    def _refuse_erased(cur: Cursor[Any], tenant: str, events: Sequence[ProgressEvent]) -> None:
        """ErasedStudentError when any event's student was erased. Asked once this
        transaction holds its lock on `evidence`: an erasure takes a conflicting one
        (`erase_student`), so a batch either committed before the erasure's deletes or
        sees its tombstone (written before the erasure began) here."""
        cur.execute("LOCK TABLE evidence IN ROW EXCLUSIVE MODE")
        erased = erased_in(cur, tenant, (e.student_id for e in events))
        if erased:
            raise ErasedStudentError(tenant, erased)

    def _apply_fresh(
        self,
        cur: Cursor[Any],
        tenant: str,
        fresh: Sequence[ProgressEvent],
        now: datetime,
        *,
        encode: Callable[[Sequence[Change]], Iterable[OutboxMessage]],
        encode_wheel_spins: WheelSpinEncoder | None,
    ) -> list[Change]:
        students, up_to_date = self._upsert_students(cur, fresh, now)
        crossings, topics = self._merge_aggregates(
            cur, fresh, {s: st.time_zone for s, st in students.items()}
        )
        if encode_wheel_spins is not None:
            spins = self._wheel_spins(tenant, crossings, students)
            self._enqueue(cur, encode_wheel_spins(spins))
        # Most students of a batch were recomputed earlier today: only the topics
        # with new evidence (and overall) can have changed for them.
        changes = self._recompute(
            cur,
            tenant,
            students,
            now,
            cause={e.student_id: e.event_id for e in fresh},
            only={sid: topics[sid] for sid in up_to_date},
        )
        self._write_history(cur, tenant, fresh, students, changes=changes, now=now)
        self._enqueue(cur, encode(changes))
        return changes

    def _write_history(
        self,
        cur: Cursor[Any],
        tenant: str,
        events: Sequence[ProgressEvent],
        students: dict[str, Student],
        *,
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
                "INSERT INTO history_pending AS h (tenant, student_id, from_day) "
                "SELECT %b, * FROM unnest(%b::text[], %b::date[]) "
                "ON CONFLICT (tenant, student_id) DO UPDATE SET "
                "  from_day = least(h.from_day, EXCLUDED.from_day)",
                (tenant, ids, [first_day[i] for i in ids]),
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
                    "DELETE FROM history_pending WHERE (tenant, student_id) IN ("
                    "  SELECT tenant, student_id FROM history_pending "
                    "  WHERE queued_at <= now() - %s "
                    "  ORDER BY queued_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING tenant, student_id, from_day",
                    (settle, limit),
                ).fetchall()
            if not pending:
                return 0
            by_tenant: dict[str, dict[str, date]] = defaultdict(dict)
            for tenant, sid, day in pending:
                by_tenant[tenant][sid] = day
            with conn.transaction(), conn.cursor() as cur:
                for tenant in sorted(by_tenant):
                    scope(conn, tenant)
                    first_day = by_tenant[tenant]
                    ids = sorted(first_day)
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(hashtext('mastery.history:' || %b "
                        "  || '/' || id)) FROM unnest(%b::text[]) AS id",
                        (tenant, ids),
                    )
                    students = {
                        row[0]: Student(*row)
                        for row in cur.execute(
                            "SELECT student_id, cohort, time_zone, created_at, updated_at "
                            "FROM students WHERE student_id = ANY(%b)",
                            (ids,),
                        ).fetchall()
                    }
                    self._rebuild_days(cur, first_day, students, now)
            return len(pending)

    @staticmethod
    def _rebuild_days(
        cur: Cursor[Any], first_day: dict[str, date], students: dict[str, Student], now: datetime
    ) -> None:
        """Every day from each student's first day to yesterday, from the evidence.
        Today's row is the incremental path's: it already holds every event's effect."""
        ids = sorted(first_day)
        evidence = _evidence_of(cur, ids, students)
        baselines = _baseline_of(cur, ids)
        # Days whose evidence was purged keep the snapshots made from it.
        purged_through = dict(
            cur.execute(
                "SELECT student_id, through_day FROM evidence_baseline WHERE student_id = ANY(%b)",
                (ids,),
            ).fetchall()
        )
        rows = []
        for sid in ids:
            time_zone = students[sid].time_zone
            yesterday = local_day(now, time_zone) - timedelta(days=1)
            first = first_day[sid]
            if sid in purged_through:
                first = max(first, purged_through[sid] + timedelta(days=1))
            days = history(evidence[sid], time_zone, first, yesterday, start=baselines.get(sid))
            for day in days:
                masteries = [day.mastery.overall, *day.mastery.topics.values()]
                for m in masteries:
                    count = day.event_count if m.topic == OVERALL else 0
                    rows.append(_daily_row(sid, m, day.day, count))
            cur.execute(
                "DELETE FROM mastery_daily WHERE student_id = %s AND day >= %s AND day <= %s",
                (sid, first, yesterday),
            )
        if rows:
            columns = list(zip(*rows, strict=True))
            cur.execute(
                "INSERT INTO mastery_daily (student_id, topic, day, score, completion, quiz, "
                "  quality, consistency, event_count) "
                "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::date[], %b::float8[], "
                "  %b::float8[], %b::float8[], %b::float8[], %b::float8[], %b::int[])",
                [list(c) for c in columns],
            )

    @staticmethod
    def _claim(
        cur: Cursor[Any], events: Sequence[ProgressEvent], *, reuse: bool = False
    ) -> list[ProgressEvent]:
        """Record the batch's evidence (one tenant's, in the scoped transaction) and
        return the events not applied before: the evidence row is the inbox (a
        redelivered event's row exists, so it drops out). Binary COPY into a scratch
        table, then one insert: the cheapest way in. `reuse`: the scratch table was
        filled earlier in this transaction (another tenant's part) and is emptied first."""
        unique: dict[tuple[str, str], ProgressEvent] = {}
        for event in events:
            unique.setdefault(event.key, event)
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming_evidence (student_id text, "
            "  source text, event_id text, event_type text, component smallint, "
            "  topic smallint, subject text, value float8, occur_time timestamptz) "
            "ON COMMIT DELETE ROWS"
        )
        if reuse:
            cur.execute("TRUNCATE incoming_evidence")
        with cur.copy("COPY incoming_evidence FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(EVIDENCE_TYPES)
            for e in unique.values():
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
        rows = cur.execute(
            "INSERT INTO evidence (student_id, source, event_id, event_type, component, "
            "  topic, subject, value, occur_time) SELECT * FROM incoming_evidence "
            "ON CONFLICT DO NOTHING RETURNING source, event_id"
        ).fetchall()
        return [unique[(source, event_id)] for source, event_id in rows]

    @staticmethod
    def _upsert_students(
        cur: Cursor[Any], events: Sequence[ProgressEvent], now: datetime
    ) -> tuple[dict[str, Student], set[str]]:
        """Create or update the batch's students (locked, in a fixed order: no
        deadlocks); returns them, and those whose stored mastery was computed earlier
        today in the time zone they still have: every topic of theirs holds today's
        consistency window, so a topic without new evidence cannot have changed."""
        # Per student, the most recent cohort and time zone the batch says anything about
        # (an event without them leaves the stored values as they are).
        cohort: dict[str, tuple[datetime, str]] = {}
        time_zone: dict[str, tuple[datetime, str]] = {}
        for event in events:
            for latest, value in ((cohort, event.cohort), (time_zone, event.time_zone)):
                seen = latest.get(event.student_id)
                if value and (seen is None or event.occur_time >= seen[0]):
                    latest[event.student_id] = (event.occur_time, value)
        ids = sorted({e.student_id for e in events})
        rows = cur.execute(
            "SELECT s.student_id, s.cohort, s.time_zone, m.updated_at, s.time_zone_chosen "
            "FROM students s "
            "LEFT JOIN mastery_current m ON m.student_id = s.student_id AND m.topic = 0 "
            "WHERE s.student_id = ANY(%b) ORDER BY s.student_id FOR UPDATE OF s",
            (ids,),
        ).fetchall()
        stored = {row[0]: (row[1], row[2], row[3]) for row in rows}
        # A time zone the student chose (UpdateStudent) is theirs whatever events say.
        chosen = {row[0] for row in rows if row[4]}
        final_cohort = [
            cohort[i][1] if i in cohort else stored.get(i, ("", "", None))[0] for i in ids
        ]
        final_zone = [
            time_zone[i][1]
            if i in time_zone and i not in chosen
            else stored.get(i, ("", "UTC", None))[1]
            for i in ids
        ]
        rows = cur.execute(
            "INSERT INTO students AS s (student_id, cohort, time_zone) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) "
            "ON CONFLICT (tenant, student_id) DO UPDATE SET cohort = EXCLUDED.cohort, "
            "  time_zone = EXCLUDED.time_zone, updated_at = now() "
            "RETURNING student_id, cohort, time_zone, created_at, updated_at",
            (ids, final_cohort, final_zone),
        ).fetchall()
        up_to_date = set()
        for sid, zone in zip(ids, final_zone, strict=True):
            _, stored_zone, computed_at = stored.get(sid, ("", "", None))
            if (
                computed_at is not None
                and stored_zone == zone
                and local_day(computed_at, zone) == local_day(now, zone)
            ):
                up_to_date.add(sid)
        return {row[0]: Student(*row) for row in rows}, up_to_date

    @staticmethod
    def _merge_aggregates(
        cur: Cursor[Any], events: Sequence[ProgressEvent], time_zone_of: dict[str, str]
    ) -> tuple[list[tuple[str, str, int, int, float]], dict[str, set[int]]]:
        """Merge the batch into the aggregates: the best score per exercise, each
        (student, topic)'s state in topic_totals and the student's overall (topic 0),
        the active days. Returns the exercises whose attempts crossed
        WHEEL_SPIN_ATTEMPTS without a pass, as (student, exercise, topic, attempts,
        best), and per student the topics whose state changed: those of the batch's
        events, and the stored topic of an exercise whose events name another (it stays
        under the lower of the two, and leaves the higher)."""
        return MasteryStore._merge_batch(cur, aggregate_batch(events, time_zone_of))

    @staticmethod
    def _merge_batch(
        cur: Cursor[Any], batch: BatchAggregates
    ) -> tuple[list[tuple[str, str, int, int, float]], dict[str, set[int]]]:
        """`_merge_aggregates` of evidence already aggregated."""
        topics: dict[str, set[int]] = defaultdict(set)
        # (student, topic): [exercise sum, exercise count, quiz sum, quiz count,
        #  quality sum, quality count] to add; topic OVERALL: the student's.
        deltas: dict[tuple[str, int], list[Any]] = defaultdict(lambda: [0.0, 0, 0.0, 0, 0.0, 0])
        days: dict[tuple[str, int], set[date]] = defaultdict(set)
        for student, topic, day in batch.active_days:  # every event marks its topic active
            topics[student].add(topic)
            days[(student, topic)].add(day)
            days[(student, OVERALL)].add(day)
        for (student, topic), sums in batch.totals.items():
            for key in ((student, topic), (student, OVERALL)):
                delta = deltas[key]
                for i in range(4):
                    delta[2 + i] += sums[i]
        crossings = []
        if batch.exercises:
            keys = sorted(batch.exercises)
            attempts = [batch.exercises[k] for k in keys]
            # Every part of the statement sees the table as it was before it: `before`
            # holds each exercise's row as the upsert found it.
            rows = cur.execute(
                "WITH incoming AS ("
                "  SELECT * FROM unnest(%b::text[], %b::text[], %b::smallint[], "
                "                       %b::float8[], %b::int[]) "
                "    AS i (student_id, exercise_id, topic, best, attempts)), "
                "before AS ("
                "  SELECT b.student_id, b.exercise_id, b.topic, b.best, b.attempts "
                "  FROM exercise_best b JOIN incoming i USING (student_id, exercise_id)), "
                "merged AS ("
                "  INSERT INTO exercise_best AS b (student_id, exercise_id, topic, best, attempts) "
                "  SELECT * FROM incoming "
                "  ON CONFLICT (tenant, student_id, exercise_id) DO UPDATE SET "
                "    best = greatest(b.best, EXCLUDED.best), "
                "    topic = least(b.topic, EXCLUDED.topic), "
                "    attempts = b.attempts + EXCLUDED.attempts "
                "  RETURNING student_id, exercise_id, topic, best, attempts) "
                "SELECT m.*, o.topic, o.best, o.attempts "
                "FROM merged m LEFT JOIN before o USING (student_id, exercise_id)",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [a.topic for a in attempts],
                    [a.best for a in attempts],
                    [a.attempts for a in attempts],
                ),
            ).fetchall()
            for student, exercise, topic, best, tries, old_topic, old_best, old_tries in rows:
                overall = deltas[(student, OVERALL)]
                topics[student].add(topic)  # its topic may be a lower one than its events'
                if old_topic is None:  # a new exercise
                    delta = deltas[(student, topic)]
                    delta[0] += best
                    delta[1] += 1
                    overall[0] += best
                    overall[1] += 1
                elif old_topic == topic:
                    deltas[(student, topic)][0] += best - old_best
                    overall[0] += best - old_best
                else:  # moved to a lower topic: it leaves the old one
                    left, joined = deltas[(student, old_topic)], deltas[(student, topic)]
                    left[0] -= old_best
                    left[1] -= 1
                    joined[0] += best
                    joined[1] += 1
                    overall[0] += best - old_best
                    topics[student].add(old_topic)
                if best < 1.0 and tries >= WHEEL_SPIN_ATTEMPTS > (old_tries or 0):
                    crossings.append((student, exercise, topic, tries, best))
        state_keys = sorted(deltas.keys() | days.keys())
        if not state_keys:  # students without evidence (a recalculation of them)
            return crossings, topics
        bits = [day_bits(days[k]) if k in days else (None, 0) for k in state_keys]
        columns = list(zip(*(deltas[k] for k in state_keys), strict=True))
        cur.execute(
            "INSERT INTO topic_totals AS t (student_id, topic, exercise_sum, exercise_count, "
            "  quiz_sum, quiz_count, quality_sum, quality_count, days_last, days) "
            "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::float8[], %b::int[], "
            "  %b::float8[], %b::int[], %b::float8[], %b::int[], %b::date[], %b::int8[]) "
            "ON CONFLICT (tenant, student_id, topic) DO UPDATE SET "
            "  exercise_sum = t.exercise_sum + EXCLUDED.exercise_sum, "
            "  exercise_count = t.exercise_count + EXCLUDED.exercise_count, "
            "  quiz_sum = t.quiz_sum + EXCLUDED.quiz_sum, "
            "  quiz_count = t.quiz_count + EXCLUDED.quiz_count, "
            "  quality_sum = t.quality_sum + EXCLUDED.quality_sum, "
            "  quality_count = t.quality_count + EXCLUDED.quality_count, "
            # The union of two day sets: both masks aligned on the later last day.
            "  days_last = greatest(t.days_last, EXCLUDED.days_last), "
            "  days = coalesce((t.days << least(%s, greatest(t.days_last, EXCLUDED.days_last) "
            "                   - t.days_last)) & %s, 0) "
            "       | coalesce((EXCLUDED.days << least(%s, greatest(t.days_last, "
            "                   EXCLUDED.days_last) - EXCLUDED.days_last)) & %s, 0)",
            (
                [k[0] for k in state_keys],
                [k[1] for k in state_keys],
                *[list(c) for c in columns],
                [b[0] for b in bits],
                [b[1] for b in bits],
                DAY_BITS,
                DAY_MASK,
                DAY_BITS,
                DAY_MASK,
            ),
        )
        active = sorted(batch.active_days)
        cur.execute(
            "INSERT INTO active_days (student_id, topic, day) "
            "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::date[]) ON CONFLICT DO NOTHING",
            ([d[0] for d in active], [d[1] for d in active], [d[2] for d in active]),
        )
        return crossings, topics

    @staticmethod
    def _wheel_spins(
        tenant: str,
        crossings: Sequence[tuple[str, str, int, int, float]],
        students: dict[str, Student],
    ) -> list[WheelSpin]:
        """Wheel-spinning reports for exercises whose attempts crossed
        WHEEL_SPIN_ATTEMPTS in this batch with no pass yet (a pass is every test
        passed). Crossing happens once, so one report each."""
        spins = []
        for student, exercise, topic, attempts, best in crossings:
            info = students[student]
            spins.append(
                WheelSpin(
                    student, info.cohort, info.time_zone, exercise, topic, attempts, best, tenant
                )
            )
        return spins

    # -- computing mastery from the aggregates -----------------------------------

    @staticmethod
    def _aggregates(
        cur: Cursor[Any], students: dict[str, Student], now: datetime, only: TopicFilter = None
    ) -> dict[str, tuple[StudentMastery, dict[int, Aggregates], int]]:
        """Per student: mastery now (the end of today in their time zone) from the
        aggregate tables, the aggregates behind it per topic (OVERALL: every topic's
        evidence pooled), and the active days in the consistency window. With `only`,
        just the topics it names (per student; overall always)."""
        ids = sorted(students)
        rows = cur.execute(STATE_QUERY, (ids, *_topic_filter(ids, only))).fetchall()
        return _masteries(rows, students, now)

    @staticmethod
    def _current(
        cur: Cursor[Any], ids: Sequence[str], only: TopicFilter = None
    ) -> dict[str, dict[int, Mastery]]:
        """The stored mastery of these students (with `only`: overall and the topics it
        names)."""
        ids = sorted(ids)
        rows = cur.execute(CURRENT_QUERY, (ids, *_topic_filter(ids, only))).fetchall()
        return _current_from(rows)

    def _recompute(
        self,
        cur: Cursor[Any],
        tenant: str,
        students: dict[str, Student],
        now: datetime,
        *,
        cause: dict[str, str],
        only: TopicFilter = None,
    ) -> list[Change]:
        """Recompute these students' mastery, store what changed and return the changes.
        With `only` (per student, the topics whose evidence changed), a student whose
        mastery is from today recomputes overall and those topics alone; the others,
        and everyone without `only`, every topic."""
        ids = sorted(students)
        params = (ids, *_topic_filter(ids, only))
        # Both reads go out before either is read: one round trip in pipeline mode.
        with cur.connection.cursor() as state:
            state.execute(STATE_QUERY, params)
            cur.execute(CURRENT_QUERY, params)
            aggregates = _masteries(state.fetchall(), students, now)
        before = _current_from(cur.fetchall())
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
            changes.append(
                Change(
                    sid,
                    student.cohort,
                    student.time_zone,
                    previous,
                    after,
                    cause.get(sid, ""),
                    evidence,
                    tenant,
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
                "SELECT *, %s FROM unnest(%b::text[], %b::smallint[], %b::float8[], "
                "  %b::smallint[], %b::float8[], %b::float8[], %b::float8[], %b::float8[]) "
                "ON CONFLICT (tenant, student_id, topic) DO UPDATE SET score = EXCLUDED.score, "
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
            "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::date[], %b::float8[], "
            "  %b::float8[], %b::float8[], %b::float8[], %b::float8[], %b::int[]) "
            "ON CONFLICT (tenant, student_id, topic, day) DO UPDATE SET score = EXCLUDED.score, "
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
                "INSERT INTO outbox (topic, key, payload, tenant) "
                "SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::text[])",
                (
                    [m.topic for m in batch],
                    [m.key for m in batch],
                    [m.payload for m in batch],
                    [m.tenant for m in batch],
                ),
            )

    # -- outbox ---------------------------------------------------------------------

    def drain_outbox(
        self, send: Callable[[Sequence[OutboxMessage]], None], limit: int = 1000
    ) -> int:
        """Hand pending messages to `send` (which must not return before the broker has
        them) and delete them; returns how many. Concurrent drainers skip locked rows."""
        with self.db.pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT id, topic, key, payload, event_id, tenant FROM outbox ORDER BY id "
                "LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
            if not rows:
                return 0
            send(
                [
                    OutboxMessage(topic, key, bytes(payload), id_, str(event_id), tenant)
                    for id_, topic, key, payload, event_id, tenant in rows
                ]
            )
            conn.execute("DELETE FROM outbox WHERE id = ANY(%b)", ([r[0] for r in rows],))
            return len(rows)

    # -- reads ------------------------------------------------------------------

    def student(self, tenant: str, student_id: str) -> Student | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT student_id, cohort, time_zone, created_at, updated_at FROM students "
                "WHERE student_id = %s",
                (student_id,),
            ).fetchone()
        return Student(*row) if row else None

    def profile(self, tenant: str, student_id: str) -> tuple[Student, Profile] | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT student_id, cohort, time_zone, created_at, updated_at, display_name, "
                "  time_zone_chosen FROM students WHERE student_id = %s",
                (student_id,),
            ).fetchone()
        return None if row is None else (Student(*row[:5]), Profile(*row[5:]))

    def update_profile(
        self,
        tenant: str,
        student_id: str,
        *,
        cohort: str,
        time_zone: str | None,
        display_name: str | None,
        precondition: Callable[[str, str], bool] | None = None,
    ) -> tuple[Student, Profile, bool] | None:
        """Change a student's profile (the student row is made if they have none yet);
        the profile, and whether their time zone changed. None when `precondition`, given
        the current time zone and display name under the row's lock, says no (a stale
        etag). A new time zone queues their history for a rebuild from their first
        evidence (their days have moved)."""
        with self.db.scoped(tenant) as conn, conn.cursor() as cur:
            before = cur.execute(
                "SELECT time_zone, display_name FROM students WHERE student_id = %s FOR UPDATE",
                (student_id,),
            ).fetchone()
            if precondition is not None and not precondition(*(before or ("UTC", ""))):
                return None
            row = cur.execute(
                "INSERT INTO students AS s (student_id, cohort, time_zone, display_name, "
                "  time_zone_chosen) VALUES (%s, %s, coalesce(%s::text, 'UTC'), "
                "  coalesce(%s::text, ''), %s::text IS NOT NULL) "
                "ON CONFLICT (tenant, student_id) DO UPDATE SET "
                "  time_zone = coalesce(%s::text, s.time_zone), "
                "  display_name = coalesce(%s::text, s.display_name), "
                "  time_zone_chosen = s.time_zone_chosen OR %s::text IS NOT NULL, "
                "  updated_at = now() "
                "RETURNING student_id, cohort, time_zone, created_at, updated_at, display_name, "
                "  time_zone_chosen",
                (
                    student_id,
                    cohort,
                    time_zone,
                    display_name,
                    time_zone,
                    time_zone,
                    display_name,
                    time_zone,
                ),
            ).fetchone()
            assert row is not None
            moved = before is not None and time_zone is not None and before[0] != time_zone
            if moved:
                cur.execute(
                    "INSERT INTO history_pending AS h (tenant, student_id, from_day) "
                    "SELECT %s, %s, (min(occur_time) AT TIME ZONE %s)::date - 1 FROM evidence "
                    "WHERE student_id = %s HAVING count(*) > 0 "
                    "ON CONFLICT (tenant, student_id) DO UPDATE SET "
                    "  from_day = least(h.from_day, EXCLUDED.from_day)",
                    (tenant, student_id, time_zone, student_id),
                )
        return Student(*row[:5]), Profile(*row[5:]), moved

    def evidence(self, tenant: str, student_id: str, query: EvidenceQuery) -> list[EvidenceRow]:
        """A page of a student's evidence, newest first (ListEvidence)."""
        conditions: list[sql.Composable] = [sql.SQL("student_id = %s")]
        params: list[Any] = [student_id]
        for column, operator, value in (
            ("topic", "=", query.topic),
            ("component", "=", query.component),
            ("occur_time", ">=", query.start),
            ("occur_time", "<", query.end),
        ):
            if value is not None:
                conditions.append(
                    sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(operator))
                )
                params.append(value)
        if query.after is not None:
            conditions.append(sql.SQL("(occur_time, source, event_id) < (%s, %s, %s)"))
            params += list(query.after)
        statement = sql.SQL(
            "SELECT source, event_id, event_type, component, topic, subject, value, occur_time "
            "FROM evidence WHERE {} ORDER BY occur_time DESC, source DESC, event_id DESC "
            "LIMIT %s"
        ).format(sql.SQL(" AND ").join(conditions))
        with self.db.scoped(tenant) as conn:
            rows = conn.execute(statement, [*params, query.limit]).fetchall()
        return [EvidenceRow(*row) for row in rows]

    def mastery_view(self, tenant: str, student: Student, now: datetime) -> MasteryView:
        with self.db.scoped(tenant) as conn, conn.cursor() as cur:
            mastery, _, overall_days = self._aggregates(cur, {student.student_id: student}, now)[
                student.student_id
            ]
            today = local_day(now, student.time_zone)
            all_days = [
                row[0]
                for row in cur.execute(
                    "SELECT DISTINCT day FROM active_days WHERE student_id = %s ORDER BY day",
                    (student.student_id,),
                ).fetchall()
            ]
            evidence: dict[tuple[int, int], EvidenceCounts] = defaultdict(EvidenceCounts)
            for topic, component, count in cur.execute(
                "SELECT topic, component, count(*) FROM evidence "
                "WHERE student_id = %s AND component > 0 GROUP BY 1, 2",
                (student.student_id,),
            ).fetchall():
                evidence[(topic, component)].count = count
                evidence[(OVERALL, component)].count += count
            for row in cur.execute(
                "SELECT source, event_id, event_type, component, topic, subject, value, occur_time "
                "FROM (SELECT *, row_number() OVER (PARTITION BY topic, component "
                "                                   ORDER BY occur_time DESC, event_id) AS rank "
                "      FROM evidence WHERE student_id = %s AND component > 0) ranked "
                "WHERE rank <= %s ORDER BY occur_time DESC, event_id",
                (student.student_id, LATEST_PER_COMPONENT),
            ).fetchall():
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
        self, tenant: str, cohort: str, *, order_by: str, band: int, offset: int, limit: int
    ) -> tuple[list[CohortRow], int]:
        # Only whitelisted fragments are composed into the SQL; values are parameters.
        band_filter = sql.SQL("AND m.band = %(band)s" if band else "")
        params = {"cohort": cohort, "band": band, "limit": limit, "offset": offset}
        joined = sql.SQL(
            "FROM students s LEFT JOIN mastery_current m "
            "  ON m.student_id = s.student_id AND m.topic = 0 "
            "WHERE s.cohort = %(cohort)s {band_filter} "
        ).format(band_filter=band_filter)
        with self.db.scoped(tenant) as conn, conn.cursor() as cur:
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
        self, tenant: str, student_id: str, topic: int, start: date, end: date
    ) -> tuple[list[DailySnapshot], DailySnapshot | None]:
        with self.db.scoped(tenant) as conn, conn.cursor() as cur:
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

    def student_ids(self, tenant: str, cohort: str | None) -> list[str]:
        with self.db.scoped(tenant) as conn:
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
        tenant: str,
        ids: Sequence[str],
        now: datetime,
        encode: Callable[[Sequence[Change]], Iterable[OutboxMessage]],
    ) -> int:
        """Rebuild the aggregates of these students of `tenant` from their evidence and
        recompute their mastery; returns how many changed."""
        with self.db.scoped(tenant) as conn, conn.cursor() as cur:
            rows = cur.execute(
                "SELECT student_id, cohort, time_zone, created_at, updated_at FROM students "
                "WHERE student_id = ANY(%b) ORDER BY student_id FOR UPDATE",
                (list(ids),),
            ).fetchall()
            students = {r[0]: Student(*r) for r in rows}
            locked = sorted(students)
            for table in ("exercise_best", "topic_totals", "active_days"):
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE student_id = ANY(%b)").format(
                        sql.Identifier(table)
                    ),
                    (locked,),
                )
            # The rebuild applies every piece of evidence through the incremental path's
            # own merge, on top of what the evidence purged by the retention job added:
            # one aggregation rule (services/mastery/domain/events.py).
            evidence = _evidence_of(cur, locked, students)
            batch = BatchAggregates()
            for baseline in _baseline_of(cur, locked).values():
                batch.update(baseline)
            for sid in locked:
                for event in evidence[sid]:
                    add(batch, event, students[sid].time_zone)
            self._merge_batch(cur, batch)
            changes = self._recompute(cur, tenant, students, now, cause={})
            self._write_snapshots(cur, changes, now, {})
            self._enqueue(cur, encode(changes))
            return len(changes)

    # -- retention --------------------------------------------------------------

    def purge_evidence(self, tenant: str, now: datetime, window: timedelta) -> int:
        """Purge `tenant`'s evidence of days before `now - window` (each student's time
        zone) into the baseline, which rebuilds start from: the mastery, and the history
        of the days after, stay as they were. Idempotent; how many rows were purged.
        The window must not be shorter than the history horizon, or a late event could
        land on a purged day (Settings checks)."""
        with self.db.scoped(tenant) as conn:
            ids = [r[0] for r in conn.execute("SELECT student_id FROM students ORDER BY 1")]
        purged = 0
        for start in range(0, len(ids), PURGE_CHUNK):
            purged += self._purge_chunk(tenant, ids[start : start + PURGE_CHUNK], now, window)
        return purged

    def _purge_chunk(
        self, tenant: str, ids: Sequence[str], now: datetime, window: timedelta
    ) -> int:
        with self.db.scoped(tenant) as conn, conn.cursor() as cur:
            # The students' rows first, as ingestion and recalculation take them; then
            # their history rebuilds' turn (the history job's lock).
            students = {
                row[0]: Student(*row)
                for row in cur.execute(
                    "SELECT student_id, cohort, time_zone, created_at, updated_at FROM students "
                    "WHERE student_id = ANY(%b) ORDER BY student_id FOR UPDATE",
                    (list(ids),),
                ).fetchall()
            }
            locked = sorted(students)
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext('mastery.history:' || %b || '/' || id)) "
                "FROM unnest(%b::text[]) AS id",
                (tenant, locked),
            )
            # Each student's first kept day: the local day `window` ago.
            kept_from = {sid: local_day(now - window, s.time_zone) for sid, s in students.items()}
            before = [
                datetime.combine(kept_from[sid], time(), time_zone_info(students[sid].time_zone))
                for sid in locked
            ]
            gone = cur.execute(
                "DELETE FROM evidence e USING unnest(%b::text[], %b::timestamptz[]) "
                "  AS c (student_id, before) "
                "WHERE e.student_id = c.student_id AND e.occur_time < c.before "
                "RETURNING e.student_id, e.source, e.event_id, e.event_type, e.component, "
                "  e.topic, e.subject, e.value, e.occur_time",
                (locked, before),
            ).fetchall()
            if not gone:
                return 0
            purged = BatchAggregates()
            for sid, *row in gone:
                add(purged, _progress_event(students[sid], row), students[sid].time_zone)
            _add_to_baseline(cur, purged)
            touched = sorted({row[0] for row in gone})
            cur.execute(
                "INSERT INTO evidence_baseline AS w (student_id, through_day) "
                "SELECT * FROM unnest(%b::text[], %b::date[]) "
                "ON CONFLICT (tenant, student_id) DO UPDATE SET "
                "  through_day = greatest(w.through_day, EXCLUDED.through_day)",
                (touched, [kept_from[sid] - timedelta(days=1) for sid in touched]),
            )
            return len(gone)

    def purge_operations(self, tenant: str, before: datetime) -> int:
        """Delete `tenant`'s operations finished before `before`; how many."""
        with self.db.scoped(tenant) as conn:
            return conn.execute(
                "DELETE FROM operations WHERE done AND updated_at < %s", (before,)
            ).rowcount

    # -- operations -------------------------------------------------------------

    def create_operation(self, tenant: str, name: str, created_by: str, metadata: bytes) -> None:
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO operations (name, created_by, metadata) VALUES (%s, %s, %s)",
                (name, created_by, metadata),
            )

    def update_operation(
        self,
        tenant: str,
        name: str,
        *,
        metadata: bytes,
        done: bool = False,
        response: bytes | None = None,
        error: tuple[int, str] | None = None,
    ) -> bool:
        """Store progress; returns whether cancellation was requested."""
        with self.db.scoped(tenant) as conn:
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

    def start_announced_operation(
        self, tenant: str, name: str, created_by: str, metadata: bytes, message: OutboxMessage
    ) -> None:
        """An operation and the announcement that starts it, together."""
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO operations (name, created_by, metadata) VALUES (%s, %s, %s)",
                (name, created_by, metadata),
            )
            conn.execute(
                "INSERT INTO outbox (topic, key, payload, tenant) VALUES (%s, %s, %s, %s)",
                (message.topic, message.key, message.payload, tenant),
            )

    def change_operation(
        self,
        tenant: str,
        name: str,
        change: Callable[[bytes, bytes | None], tuple[bytes, bytes | None, bool] | None],
    ) -> bool:
        """Apply `change` (metadata, response) -> (metadata, response, done), or None for
        no change, to an operation under its row lock; False when there is none."""
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT metadata, response FROM operations WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if row is None:
                return False
            changed = change(bytes(row[0]), None if row[1] is None else bytes(row[1]))
            if changed is not None:
                metadata, response, done = changed
                conn.execute(
                    "UPDATE operations SET metadata = %s, response = %s, done = %s, "
                    "updated_at = now() WHERE name = %s",
                    (metadata, response, done, name),
                )
        return True

    def export_student(self, tenant: str, student_id: str) -> Records:
        return table_records(self.db.student_rows(tenant, student_id, STUDENT_TABLES))

    def erase_student(self, tenant: str, student_id: str, topics: Sequence[str]) -> int:
        """Delete everything held of a student, their announcements not yet sent on
        `topics` (the outbox is keyed by student) and their exports' operations."""
        with self.db.scoped(tenant) as conn:
            # Waits for the batches in flight; later ones find the tombstone
            # (`_refuse_erased`).
            conn.execute("LOCK TABLE evidence IN SHARE ROW EXCLUSIVE MODE")
            erased = delete_student_rows(conn, student_id, STUDENT_TABLES)
            erased += conn.execute(
                "DELETE FROM outbox WHERE key = %s AND tenant = %s AND topic = ANY(%s)",
                (student_id, tenant, list(topics)),
            ).rowcount
            # Their exports' operations (named in each one's metadata and response).
            erased += conn.execute(
                "DELETE FROM operations WHERE position(%s::bytea in metadata) > 0",
                (export_name(student_id, "").encode(),),
            ).rowcount
        return erased

    def operation(self, tenant: str, name: str) -> OperationRecord | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT name, created_by, done, cancel_requested, metadata, response, error_code, "
                "  error_message FROM operations WHERE name = %s",
                (name,),
            ).fetchone()
        return _operation_record(row) if row else None

    def operations(
        self, tenant: str, created_by: str | None, offset: int, limit: int
    ) -> list[OperationRecord]:
        with self.db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT name, created_by, done, cancel_requested, metadata, response, error_code, "
                "  error_message FROM operations WHERE (%b::text IS NULL OR created_by = %s) "
                "ORDER BY created_at DESC, name LIMIT %s OFFSET %s",
                (created_by, created_by, limit, offset),
            ).fetchall()
        return [_operation_record(r) for r in rows]

    def request_cancel(self, tenant: str, name: str) -> bool:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "UPDATE operations SET cancel_requested = true, updated_at = now() "
                "WHERE name = %s RETURNING name",
                (name,),
            ).fetchone()
        return row is not None
