"""The `audit` schema: the trail, append-only, one tenant's rows per transaction scope
(migrations/0001_audit_events.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from services.audit.domain.query import Query
from services.audit.domain.records import AuditRecord, by_tenant
from services.kit.db import Database, scope
from services.kit.export import Records, table_records

_COLUMNS = (
    "event_id",
    "event_time",
    "actor_subject",
    "actor_role",
    "actor_tenant",
    "method",
    "resources",
    "students",
    "request_id",
    "trace_id",
    "peer",
    "code",
)
# `tenant` is left out: it defaults to the transaction's scope (row-level security
# refuses any other).
_INSERT_EVENT = sql.SQL(
    "INSERT INTO audit_events ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    values=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
)
_INSERT_STUDENT = sql.SQL(
    "INSERT INTO audit_event_students (student_id, event_time, event_id) "
    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
)
_SELECTED = sql.SQL(", ").join(sql.Identifier("e", c) for c in _COLUMNS)


class AuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Store `records` (any tenants) in one transaction, each tenant's in its own
        scope; records stored before (a redelivery) are left as they are."""
        if not records:
            return
        with self._db.pool.connection() as conn, conn.transaction():
            for tenant, group in by_tenant(records).items():
                scope(conn, tenant)
                with conn.cursor() as cur:
                    cur.executemany(_INSERT_EVENT, [_row(r) for r in group])
                    students = [
                        (student, r.event_time, r.event_id) for r in group for student in r.students
                    ]
                    if students:
                        cur.executemany(_INSERT_STUDENT, students)

    def pseudonymise(self, tenant: str, student_id: str, pseudonym: str) -> int:
        """Name `pseudonym` instead of the student throughout the tenant's trail (the
        one change the append-only trail allows); how many rows changed."""
        with self._db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT pseudonymise_student(%s, %s)", (student_id, pseudonym)
            ).fetchone()
        return int(row[0]) if row else 0

    def export_student(self, tenant: str, student_id: str) -> Records:
        """Every call that touched a student's data or that they made (an export),
        oldest first."""
        with self._db.scoped(tenant) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT * FROM audit_events WHERE actor_subject = %s OR event_id IN "
                "  (SELECT event_id FROM audit_event_students WHERE student_id = %s) "
                "ORDER BY event_time, event_id",
                (student_id, student_id),
            )
            return table_records({"audit_events": cur.fetchall()})

    def list(self, tenant: str, query: Query) -> list[AuditRecord]:
        """Up to `query.size + 1` of `tenant`'s events matching the query, newest first
        (one more than a page: whether another page follows)."""
        filters = query.filters
        params: list[Any] = []
        if filters.student is not None:
            # By student: that student's index, newest first, joined to the events.
            source = sql.SQL(
                "audit_event_students s JOIN audit_events e "
                "ON e.tenant = s.tenant AND e.event_id = s.event_id"
            )
            ordered = sql.Identifier("s")
            conditions: list[sql.Composable] = [
                sql.SQL("s.tenant = %s"),
                sql.SQL("s.student_id = %s"),
            ]
            params += [tenant, filters.student]
        else:
            source = sql.SQL("audit_events e")
            ordered = sql.Identifier("e")
            conditions = [sql.SQL("e.tenant = %s")]
            params.append(tenant)
        time = sql.SQL("{}.event_time").format(ordered)
        position = sql.SQL("({t}.event_time, {t}.event_id)").format(t=ordered)
        if filters.actor is not None:
            conditions.append(sql.SQL("e.actor_subject = %s"))
            params.append(filters.actor)
        if filters.method is not None:
            conditions.append(sql.SQL("e.method = %s"))
            params.append(filters.method)
        if filters.start is not None:
            conditions.append(sql.SQL("{} >= %s").format(time))
            params.append(filters.start)
        if filters.end is not None:
            conditions.append(sql.SQL("{} < %s").format(time))
            params.append(filters.end)
        if query.after is not None:
            conditions.append(sql.SQL("{} < (%s, %s)").format(position))
            params += [query.after.event_time, query.after.event_id]
        statement = sql.SQL(
            "SELECT {columns} FROM {source} WHERE {conditions} "
            "ORDER BY {t}.event_time DESC, {t}.event_id DESC LIMIT %s"
        ).format(
            columns=_SELECTED,
            source=source,
            conditions=sql.SQL(" AND ").join(conditions),
            t=ordered,
        )
        params.append(query.size + 1)
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(statement, params).fetchall()
        return [_record(tenant, row) for row in rows]


def _row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.event_id,
        record.event_time,
        record.actor_subject,
        record.actor_role,
        record.actor_tenant,
        record.method,
        list(record.resources),
        list(record.students),
        record.request_id,
        record.trace_id,
        record.peer,
        record.code,
    )


def _record(tenant: str, row: tuple[Any, ...]) -> AuditRecord:
    (
        event_id,
        event_time,
        actor_subject,
        actor_role,
        actor_tenant,
        method,
        resources,
        students,
        request_id,
        trace_id,
        peer,
        code,
    ) = row
    return AuditRecord(
        event_id=event_id,
        event_time=event_time,
        tenant=tenant,
        actor_subject=actor_subject,
        actor_role=actor_role,
        actor_tenant=actor_tenant,
        method=method,
        resources=tuple(resources),
        students=tuple(students),
        request_id=request_id,
        trace_id=trace_id,
        peer=peer,
        code=code,
    )
