"""The store writes each tenant's records in that tenant's scope (one transaction per
batch) and reads in the caller's: row-level security does the rest
(migrations/0001_audit_events.sql). A Database stand-in records what ran where."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from psycopg import sql

from services.audit.domain.query import Filters, Position, Query
from services.audit.domain.records import AuditRecord
from services.audit.store import AuditStore
from services.kit.db import TENANT_SETTING, Database

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
BASE = AuditRecord(
    event_id="a1",
    event_time=T0,
    tenant="school-a",
    actor_subject="t1",
    actor_role="teacher",
    actor_tenant="school-a",
    method="/learnflow.mastery.v1.MasteryService/GetMastery",
    resources=("students/alice/mastery",),
    students=("alice",),
    request_id="r",
    trace_id="",
    peer="192.0.2.1",
    code="OK",
)


def text(statement: object) -> str:
    return statement.as_string(None) if isinstance(statement, sql.Composable) else str(statement)


class _Result:
    def fetchall(self) -> list[tuple[Any, ...]]:
        return []


class _Cursor:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def executemany(self, statement: object, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            self._conn.log.append((self._conn.tenant, text(statement), row))


class _Connection:
    def __init__(self, log: list[tuple[str | None, str, Any]], tenant: str | None = None) -> None:
        self.log = log
        self.tenant = tenant
        self.transactions = 0

    def execute(self, statement: object, params: Any = None) -> _Result:
        if text(statement).startswith("SELECT set_config"):
            assert params[0] == TENANT_SETTING
            self.tenant = params[1]
        else:
            self.log.append((self.tenant, text(statement), params))
        return _Result()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.transactions += 1
        yield

    def cursor(self) -> _Cursor:
        return _Cursor(self)


class _Pool:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db

    @contextmanager
    def connection(self) -> Iterator[_Connection]:
        conn = _Connection(self._db.log)
        self._db.connections.append(conn)
        yield conn


class FakeDatabase:
    def __init__(self) -> None:
        self.log: list[tuple[str | None, str, Any]] = []
        self.connections: list[_Connection] = []
        self.pool = _Pool(self)

    @contextmanager
    def scoped(self, tenant: str) -> Iterator[_Connection]:
        yield _Connection(self.log, tenant)


def test_a_batch_is_one_transaction_each_tenant_in_its_scope() -> None:
    db = FakeDatabase()
    store = AuditStore(cast(Database, db))
    a2 = replace(BASE, event_id="a2", students=("alice", "bob"))
    b1 = replace(BASE, event_id="b1", tenant="school-b", students=())
    store.append([BASE, b1, a2])
    (conn,) = db.connections
    assert conn.transactions == 1
    events = [(tenant, row[0]) for tenant, statement, row in db.log if "audit_events" in statement]
    assert sorted(events) == [("school-a", "a1"), ("school-a", "a2"), ("school-b", "b1")]
    students = [
        (tenant, row[0], row[2])
        for tenant, statement, row in db.log
        if "audit_event_students" in statement
    ]
    assert students == [
        ("school-a", "alice", "a1"),
        ("school-a", "alice", "a2"),
        ("school-a", "bob", "a2"),
    ]
    # Never written with a tenant of its own: the column defaults to the scope.
    assert all("ON CONFLICT DO NOTHING" in statement for _, statement, _ in db.log)
    assert all('"tenant"' not in statement for _, statement, _ in db.log)


def test_nothing_to_store_opens_nothing() -> None:
    db = FakeDatabase()
    AuditStore(cast(Database, db)).append([])
    assert db.connections == []


def test_a_listing_runs_in_the_callers_tenant() -> None:
    db = FakeDatabase()
    store = AuditStore(cast(Database, db))
    after = Position(T0, "a9")
    store.list("school-a", Query(Filters(student="alice", actor="t1"), size=50, after=after))
    store.list("school-b", Query(Filters(method="/x.S/M"), size=10))
    (first, second) = db.log
    assert first[0] == "school-a"
    assert "audit_event_students" in first[1]
    assert first[2] == ["school-a", "alice", "t1", T0, "a9", 51]
    assert second[0] == "school-b"
    assert "audit_event_students" not in second[1]
    assert second[2] == ["school-b", "/x.S/M", 11]
