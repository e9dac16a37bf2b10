"""The notify service's Postgres store (schema `notify`): saves and loads alerts.

Every method works in one tenant (its first argument), in a transaction scoped to it
(`Database.scoped`): row-level security shows and accepts that tenant's alerts,
evidence and updates only, and new rows take its tenant.

Changes happen in a unit of work (`AlertStore.transaction(tenant)`): the consumer
claims an event's (ce_source, ce_id) and saves the alert it made or extended in one
transaction; a teacher's change locks the alert row, so two concurrent changes
serialise and the second sees the first (and its new etag). The live updates a change
makes (`announce`) are written to the tenant's update log at the end of the same
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from learnflow.notify.v1 import notify_pb2
from psycopg import Cursor, sql
from psycopg.rows import dict_row

from services.kit.db import Database, delete_student_rows
from services.kit.erasure import refuse_erased_in
from services.kit.export import Records, table_records
from services.notify.domain.model import (
    Alert,
    AlertFilter,
    Evidence,
    EvidenceType,
    Kind,
    Order,
    Severity,
    State,
)
from services.notify.updates import UpdateRow, write_updates

ALERT_COLUMNS = sql.SQL(
    "alert_id, cohort, student_id, kind, severity, state, title, detail, creator, "
    "episode_key, episode_id, version, created_at, updated_at, acknowledged_by, "
    "acknowledged_at, resolved_by, resolved_at, resolution_note"
)
EVIDENCE_COLUMNS = sql.SQL(
    "type, summary, resource, value, previous_value, occur_time, event_source, event_id"
)
ORDERS = {
    Order.NEWEST: sql.SQL("created_at DESC, alert_id DESC"),
    Order.MOST_SEVERE: sql.SQL("severity DESC, created_at DESC, alert_id DESC"),
}


def _alert(row: Sequence[Any], evidence: Sequence[Evidence]) -> Alert:
    (
        alert_id,
        cohort,
        student_id,
        kind,
        severity,
        state,
        title,
        detail,
        creator,
        episode_key,
        episode_id,
        version,
        created_at,
        updated_at,
        acknowledged_by,
        acknowledged_at,
        resolved_by,
        resolved_at,
        resolution_note,
    ) = row
    return Alert(
        alert_id=alert_id,
        cohort=cohort,
        student_id=student_id,
        kind=Kind(kind),
        severity=Severity(severity),
        title=title,
        detail=detail,
        creator=creator,
        created_at=created_at,
        updated_at=updated_at,
        state=State(state),
        episode_key=episode_key,
        episode_id=episode_id,
        evidence=tuple(evidence),
        version=version,
        acknowledged_by=acknowledged_by,
        acknowledged_at=acknowledged_at,
        resolved_by=resolved_by,
        resolved_at=resolved_at,
        resolution_note=resolution_note,
    )


def _evidence_of(cur: Cursor[Any], ids: Sequence[str]) -> dict[str, list[Evidence]]:
    found: dict[str, list[Evidence]] = {i: [] for i in ids}
    if not ids:
        return found
    for alert_id, kind, summary, resource, value, previous, at, source, event_id in cur.execute(
        sql.SQL(
            "SELECT alert_id, {} FROM alert_evidence WHERE alert_id = ANY(%s) "
            "ORDER BY alert_id, seq"
        ).format(EVIDENCE_COLUMNS),
        (list(ids),),
    ):
        found[alert_id].append(
            Evidence(
                type=EvidenceType(kind),
                summary=summary,
                resource=resource,
                value=value,
                previous_value=previous,
                occur_time=at,
                event_source=source,
                event_id=event_id,
            )
        )
    return found


def _one(cur: Cursor[Any], where: sql.SQL, params: Sequence[Any]) -> Alert | None:
    row = cur.execute(
        sql.SQL("SELECT {} FROM alerts WHERE {}").format(ALERT_COLUMNS, where), params
    ).fetchone()
    if row is None:
        return None
    return _alert(row, _evidence_of(cur, [row[0]])[row[0]])


class AlertTransaction:
    """One unit of work in one tenant; rows it reads with `lock_*` stay locked until it
    ends."""

    def __init__(self, cur: Cursor[Any]) -> None:
        self._cur = cur
        self.updates: list[UpdateRow] = []

    def announce(self, update: UpdateRow) -> None:
        """A live update to write with this transaction (at its end)."""
        self.updates.append(update)

    def claim(self, source: str, event_id: str) -> bool:
        """False when the event was applied before (a redelivery). The inbox is not
        per tenant (migrations/0003_tenants.sql): an event id names one event."""
        row = self._cur.execute(
            "INSERT INTO processed_events (source, event_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            (source, event_id),
        ).fetchone()
        return row is not None

    def lock_open_episode(self, episode_key: str) -> Alert | None:
        return _one(
            self._cur,
            sql.SQL("episode_key = %s AND state <> %s FOR UPDATE"),
            (episode_key, int(State.RESOLVED)),
        )

    def lock(self, cohort: str, alert_id: str) -> Alert | None:
        return _one(
            self._cur, sql.SQL("cohort = %s AND alert_id = %s FOR UPDATE"), (cohort, alert_id)
        )

    def insert(self, alert: Alert) -> None:
        self._cur.execute(
            sql.SQL("INSERT INTO alerts ({}) VALUES ({})").format(
                ALERT_COLUMNS, sql.SQL(", ").join([sql.Placeholder()] * 19)
            ),
            _row(alert),
        )
        self._write_evidence(alert)

    def update(self, alert: Alert) -> None:
        """Save a changed alert (its version already raised by the domain)."""
        self._cur.execute(
            "UPDATE alerts SET severity = %s, state = %s, title = %s, detail = %s, "
            "  version = %s, updated_at = %s, acknowledged_by = %s, acknowledged_at = %s, "
            "  resolved_by = %s, resolved_at = %s, resolution_note = %s "
            "WHERE alert_id = %s",
            (
                int(alert.severity),
                int(alert.state),
                alert.title,
                alert.detail,
                alert.version,
                alert.updated_at,
                alert.acknowledged_by,
                alert.acknowledged_at,
                alert.resolved_by,
                alert.resolved_at,
                alert.resolution_note,
                alert.alert_id,
            ),
        )
        self._cur.execute("DELETE FROM alert_evidence WHERE alert_id = %s", (alert.alert_id,))
        self._write_evidence(alert)

    def _write_evidence(self, alert: Alert) -> None:
        if not alert.evidence:
            return
        self._cur.executemany(
            sql.SQL(
                "INSERT INTO alert_evidence (alert_id, seq, {}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(EVIDENCE_COLUMNS),
            [
                (
                    alert.alert_id,
                    seq,
                    int(e.type),
                    e.summary,
                    e.resource,
                    e.value,
                    e.previous_value,
                    e.occur_time,
                    e.event_source,
                    e.event_id,
                )
                for seq, e in enumerate(alert.evidence)
            ],
        )


def _row(alert: Alert) -> tuple[Any, ...]:
    return (
        alert.alert_id,
        alert.cohort,
        alert.student_id,
        int(alert.kind),
        int(alert.severity),
        int(alert.state),
        alert.title,
        alert.detail,
        alert.creator,
        alert.episode_key,
        alert.episode_id,
        alert.version,
        alert.created_at,
        alert.updated_at,
        alert.acknowledged_by,
        alert.acknowledged_at,
        alert.resolved_by,
        alert.resolved_at,
        alert.resolution_note,
    )


class AlertStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def erase_student(
        self, tenant: str, student_id: str, names_student: Callable[[bytes], bool]
    ) -> int:
        """Delete a student's alerts (their evidence goes with them) and every update
        about them: their own stream's, and their cohort's that name them
        (`names_student` reads an update's payload); how many rows."""
        with self._db.scoped(tenant) as conn:
            # Waits for the batches in flight; later ones find the tombstone.
            conn.execute("LOCK TABLE alerts, updates IN SHARE ROW EXCLUSIVE MODE")
            erased = delete_student_rows(conn, student_id, ("alerts",))
            erased += conn.execute(
                "DELETE FROM updates WHERE student_id = %s", (student_id,)
            ).rowcount
            candidates = conn.execute(
                "SELECT seq, payload FROM updates WHERE position(%s::bytea in payload) > 0",
                (student_id.encode(),),
            ).fetchall()
            doomed = [seq for seq, payload in candidates if names_student(bytes(payload))]
            if doomed:
                erased += conn.execute(
                    "DELETE FROM updates WHERE seq = ANY(%s)", (doomed,)
                ).rowcount
        return erased

    def purge(self, tenant: str, before: datetime) -> Mapping[str, int]:
        """Delete the tenant's alerts resolved before `before`, with their evidence (the
        retention job); open ones stay whatever their age."""
        with self._db.scoped(tenant) as conn:
            purged = conn.execute(
                "DELETE FROM alerts WHERE state = %s AND resolved_at < %s",
                (int(State.RESOLVED), before),
            ).rowcount
        return {"alerts": purged}

    def export_student(
        self, tenant: str, student_id: str, names_student: Callable[[bytes], bool]
    ) -> Records:
        """A student's alerts with their evidence, and every update about them: their
        own stream's and their cohort's that name them (an export)."""
        with self._db.scoped(tenant) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT * FROM alerts WHERE student_id = %s ORDER BY created_at", (student_id,)
            )
            alerts = cur.fetchall()
            cur.execute(
                "SELECT * FROM alert_evidence WHERE alert_id = ANY(%s) ORDER BY alert_id, seq",
                ([a["alert_id"] for a in alerts],),
            )
            evidence = cur.fetchall()
            cur.execute(
                "SELECT seq, student_id, cohort, payload, created_at FROM updates "
                "WHERE student_id = %s OR position(%s::bytea in payload) > 0 ORDER BY seq",
                (student_id, student_id.encode()),
            )
            updates = [
                u
                for u in cur.fetchall()
                if u["student_id"] == student_id or names_student(bytes(u["payload"]))
            ]
        return table_records(
            {"alerts": alerts, "alert_evidence": evidence, "updates": updates},
            messages={"updates.payload": notify_pb2.Update.FromString},
        )

    @contextmanager
    def transaction(self, tenant: str, students: Iterable[str] = ()) -> Iterator[AlertTransaction]:
        """A unit of work in `tenant`, about `students` (events' students: refused, as
        PoisonEventError, when any was erased; ADR 0009)."""
        with self._db.scoped(tenant) as conn, conn.cursor() as cur:
            if students:
                # A lock the student's erasure conflicts with, then its tombstone.
                cur.execute("LOCK TABLE alerts IN ROW EXCLUSIVE MODE")
                refuse_erased_in(cur, tenant, students)
            tx = AlertTransaction(cur)
            yield tx
            # Last, so the tenant's log stays locked only until the commit.
            write_updates(cur, tx.updates)

    def get(self, tenant: str, cohort: str, alert_id: str) -> Alert | None:
        with self._db.scoped(tenant) as conn, conn.cursor() as cur:
            return _one(cur, sql.SQL("cohort = %s AND alert_id = %s"), (cohort, alert_id))

    def list(
        self, tenant: str, query: AlertFilter, offset: int, limit: int
    ) -> tuple[list[Alert], int]:
        """A page of `tenant`'s alerts matching `query`, in its order, and how many match
        in all."""
        where: list[sql.Composable] = [sql.SQL("TRUE")]
        params: list[Any] = []
        if query.cohorts is not None:
            where.append(sql.SQL("cohort = ANY(%s)"))
            params.append(list(query.cohorts))
        if query.state is not None:
            where.append(sql.SQL("state = %s"))
            params.append(int(query.state))
        if query.kind is not None:
            where.append(sql.SQL("kind = %s"))
            params.append(int(query.kind))
        if query.student_id:
            where.append(sql.SQL("student_id = %s"))
            params.append(query.student_id)
        condition = sql.SQL(" AND ").join(where)
        with self._db.scoped(tenant) as conn, conn.cursor() as cur:
            total = cur.execute(
                sql.SQL("SELECT count(*) FROM alerts WHERE {}").format(condition), params
            ).fetchone()
            rows = cur.execute(
                sql.SQL("SELECT {} FROM alerts WHERE {} ORDER BY {} LIMIT %s OFFSET %s").format(
                    ALERT_COLUMNS, condition, ORDERS[query.order]
                ),
                [*params, limit, offset],
            ).fetchall()
            evidence = _evidence_of(cur, [r[0] for r in rows])
        return [_alert(r, evidence[r[0]]) for r in rows], int(total[0]) if total else 0
