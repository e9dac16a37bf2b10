"""Postgres: a psycopg 3 pool per service schema, and migrations with yoyo.

Each service owns one schema and its migrations (plain SQL files in
`services/<service>/migrations/`). Without DATABASE_URL the run command starts an
embedded Postgres 16 from the pgserver wheel.

Tenants are kept apart by the database itself (docs/adr/0006): every table that holds a
tenant's data has a `tenant` column that defaults to the transaction's `learnflow.tenant`
setting, and a row-level security policy (forced on the owner too) that shows and
accepts only rows of that tenant. `Database.scoped(tenant)` opens such a transaction; a
query outside one sees no tenant's rows and can write none.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from yoyo import get_backend, read_migrations

log = logging.getLogger("learnflow.db")

_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# The setting the row-level security policies compare each row's tenant with.
TENANT_SETTING = "learnflow.tenant"


def delete_student_rows(
    conn: psycopg.Connection[Any], student_id: str, tables: Sequence[str]
) -> int:
    """Delete a student's rows (column `student_id`) from each of `tables` in `conn`'s
    transaction (scoped to their tenant); how many."""
    return sum(
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE student_id = %s").format(sql.Identifier(table)),
            (student_id,),
        ).rowcount
        for table in tables
    )


def scope(conn: psycopg.Connection[Any], tenant: str) -> None:
    """Scope the rest of `conn`'s current transaction to `tenant` (its rows only)."""
    if not tenant:
        raise ValueError("a tenant is required")
    conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))


_embedded_lock = threading.Lock()
_embedded_uri: str | None = None


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (once per process) an embedded Postgres in `data_dir`; stops at exit."""
    global _embedded_uri  # noqa: PLW0603 - one embedded server per process
    with _embedded_lock:
        if _embedded_uri is None:
            import pgserver

            data_dir.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(data_dir, cleanup_mode="stop")
            _embedded_uri = _application_url(str(server.get_uri()))
            log.info("embedded postgres started", extra={"data_dir": str(data_dir)})
        return _embedded_uri


APP_ROLE = "learnflow"


def _application_url(admin_url: str) -> str:
    """The embedded server's URL for the services: role and database `learnflow`
    (created once), not the superuser pgserver connects as, which would bypass the
    row-level security that keeps tenants apart."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
        exists = conn.execute("SELECT FROM pg_database WHERE datname = %s", (APP_ROLE,))
        if exists.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_ROLE), sql.Identifier(APP_ROLE)
                )
            )
    parts = urlsplit(admin_url)
    return urlunsplit(
        parts._replace(netloc=f"{APP_ROLE}:@{parts.hostname or ''}", path=f"/{APP_ROLE}")
    )


def _refuse_bypassing_roles(conn: psycopg.Connection[Any]) -> None:
    """Tenants are kept apart by row-level security, which superusers and BYPASSRLS
    roles skip: the services will not run as one."""
    row = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is not None and row[0]:
        raise RuntimeError(
            f"the database role {conn.info.user!r} is a superuser or bypasses row-level "
            "security, so tenants would not be kept apart: connect as a role without "
            "SUPERUSER and BYPASSRLS (infra/up.sh creates one)"
        )


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


class Database:
    """A connection pool whose connections see one schema on their search_path."""

    def __init__(self, url: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        self.url = url
        self.schema = schema
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"options": f"-c search_path={schema}", "autocommit": False},
            name=f"pg-{schema}",
            open=False,
        )

    def open(self, timeout: float = 30.0) -> None:
        self.pool.open(wait=True, timeout=timeout)
        with self.pool.connection() as conn:
            _refuse_bypassing_roles(conn)

    def migrate(self, migrations_dir: Path) -> int:
        """Create the schema if needed and apply pending migrations; returns how many."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
        parts = urlsplit(self.url)
        yoyo_url = urlunsplit(parts._replace(scheme="postgresql+psycopg"))
        backend = get_backend(_with_query(yoyo_url, schema=self.schema))
        migrations = read_migrations(str(migrations_dir))
        try:
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
        finally:
            backend.connection.close()  # else it stays open until garbage collection
        if pending:
            log.info("migrations applied", extra={"schema": self.schema, "count": len(pending)})
        return len(pending)

    @contextmanager
    def scoped(self, tenant: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction that sees and writes `tenant`'s rows only."""
        with self.pool.connection() as conn, conn.transaction():
            scope(conn, tenant)
            yield conn

    def erase_student_rows(self, tenant: str, student_id: str, tables: Sequence[str]) -> int:
        """Delete a student's rows (column `student_id`) from each of `tables`, in one
        transaction; how many (an erasure, services/kit/erasure.py)."""
        with self.scoped(tenant) as conn:
            return delete_student_rows(conn, student_id, tables)

    def purge_rows(
        self, tenant: str, before: datetime, tables: Mapping[str, str]
    ) -> dict[str, int]:
        """Delete `tenant`'s rows older than `before` from each table (table -> the
        column saying when the row was made), in one transaction; how many per table
        (the retention job, services/retention.py)."""
        with self.scoped(tenant) as conn:
            return {
                table: conn.execute(
                    sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                        sql.Identifier(table), sql.Identifier(column)
                    ),
                    (before,),
                ).rowcount
                for table, column in tables.items()
            }

    def student_rows(
        self, tenant: str, student_id: str, tables: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """A student's rows (column `student_id`) of each of `tables`, as column -> value
        mappings, in one transaction (an export, services/kit/export.py)."""
        found: dict[str, list[dict[str, Any]]] = {}
        with self.scoped(tenant) as conn, conn.cursor(row_factory=dict_row) as cur:
            for table in tables:
                cur.execute(
                    sql.SQL("SELECT * FROM {} WHERE student_id = %s").format(sql.Identifier(table)),
                    (student_id,),
                )
                found[table] = cur.fetchall()
        return found

    def check(self) -> None:
        """Health check: raises unless a connection answers."""
        with self.pool.connection(timeout=2.0) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self.pool.close()
