"""The database kit on the real Postgres from the test command: yoyo migrations per
schema, the pool's per-schema search_path, and the health check."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from services.kit.db import Database

pytestmark = pytest.mark.integration

MIGRATION = """
CREATE TABLE things (
    id bigint PRIMARY KEY,
    name text NOT NULL
);
"""


def database_url() -> str:
    return os.environ["DATABASE_URL"]


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_things.sql").write_text(MIGRATION)
    return directory


@pytest.fixture
def make_db() -> Iterator[Callable[[], Database]]:
    """Databases on fresh, uniquely named schemas; the schemas are dropped afterwards."""
    made: list[Database] = []

    def make() -> Database:
        db = Database(database_url(), schema=f"test_{uuid.uuid4().hex[:16]}", max_size=2)
        made.append(db)
        return db

    yield make
    with psycopg.connect(database_url(), autocommit=True) as conn:
        for db in made:
            db.close()
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(db.schema))
            )


def tables_in(schema: str) -> set[str]:
    with psycopg.connect(database_url()) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    return {name for (name,) in rows}


def test_migrate_applies_once_and_a_pooled_write_is_a_real_row(
    make_db: Callable[[], Database], migrations: Path
) -> None:
    db = make_db()

    assert db.migrate(migrations) == 1
    assert db.migrate(migrations) == 0  # idempotent: nothing pending the second time
    # The table and yoyo's own bookkeeping live in the service's schema.
    tables = tables_in(db.schema)
    assert "things" in tables
    assert any(name.startswith("_yoyo") for name in tables), tables

    db.open(timeout=10)
    with db.pool.connection() as conn:
        conn.execute("INSERT INTO things (id, name) VALUES (%s, %s)", (1, "first"))

    # A separate, plain connection with no search_path trickery sees the committed row.
    with psycopg.connect(database_url()) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, name FROM {}.things").format(sql.Identifier(db.schema))
        ).fetchall()
    assert rows == [(1, "first")]


def test_each_pool_sees_only_its_own_schema(
    make_db: Callable[[], Database], migrations: Path
) -> None:
    first, second = make_db(), make_db()
    # Same migration ids in two schemas: each schema keeps its own migration history.
    assert first.migrate(migrations) == 1
    assert second.migrate(migrations) == 1

    first.open(timeout=10)
    second.open(timeout=10)
    with first.pool.connection() as conn:
        conn.execute("INSERT INTO things (id, name) VALUES (1, 'in first')")
    with second.pool.connection() as conn:
        conn.execute("INSERT INTO things (id, name) VALUES (2, 'in second')")

    with first.pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() == (first.schema,)
        assert conn.execute("SELECT id, name FROM things").fetchall() == [(1, "in first")]
    with second.pool.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone() == (second.schema,)
        assert conn.execute("SELECT id, name FROM things").fetchall() == [(2, "in second")]


def test_a_failed_transaction_leaves_no_row(
    make_db: Callable[[], Database], migrations: Path
) -> None:
    db = make_db()
    db.migrate(migrations)
    db.open(timeout=10)

    with pytest.raises(psycopg.errors.UniqueViolation), db.pool.connection() as conn:
        conn.execute("INSERT INTO things (id, name) VALUES (1, 'a')")
        conn.execute("INSERT INTO things (id, name) VALUES (1, 'duplicate')")

    with db.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (0,)


def test_check_answers_when_postgres_does(make_db: Callable[[], Database]) -> None:
    db = make_db()
    db.open(timeout=10)
    db.check()


def test_check_raises_when_postgres_is_unreachable() -> None:
    db = Database("postgresql://learnflow@127.0.0.1:1/learnflow?connect_timeout=1", "nowhere")
    db.pool.open(wait=False)
    try:
        with pytest.raises(Exception, match=r"(?i)timeout|couldn't get a connection"):
            db.check()
    finally:
        db.close()


def test_schema_names_are_validated() -> None:
    with pytest.raises(ValueError, match="bad schema name"):
        Database(database_url(), schema='x"; DROP SCHEMA public; --')


TENANT_MIGRATION = """
CREATE TABLE notes (
    tenant text NOT NULL DEFAULT current_setting('learnflow.tenant') CHECK (tenant <> ''),
    id bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (tenant, id)
);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON notes USING (tenant = current_setting('learnflow.tenant', true));
"""


def test_a_scoped_transaction_sees_and_writes_its_tenant_only(
    make_db: Callable[[], Database], tmp_path: Path
) -> None:
    directory = tmp_path / "tenant-migrations"
    directory.mkdir()
    (directory / "0001_notes.sql").write_text(TENANT_MIGRATION)
    db = make_db()
    db.migrate(directory)
    db.open()
    for tenant in ("school-a", "school-b"):
        with db.scoped(tenant) as conn:
            conn.execute("INSERT INTO notes (id, body) VALUES (1, %s)", (f"of {tenant}",))
    with db.scoped("school-a") as conn:
        assert conn.execute("SELECT tenant, body FROM notes").fetchall() == [
            ("school-a", "of school-a")
        ]
        # Another tenant's rows can be neither changed nor written from here.
        assert conn.execute("UPDATE notes SET body = 'x' WHERE tenant = 'school-b'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO notes (tenant, id, body) VALUES ('school-b', 2, 'forged')")
    with db.pool.connection() as conn:  # outside any tenant: nothing at all
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO notes (id, body) VALUES (3, 'nobody')")


def test_the_services_refuse_a_role_that_bypasses_row_level_security(tmp_path: Path) -> None:
    """pgserver's own connection is a superuser's: refused. The URL the run command uses
    (an embedded server's application role) is not."""
    import pgserver

    from services.kit.db import _application_url

    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        admin = Database(str(server.get_uri()), schema="guard", max_size=1)
        with pytest.raises(RuntimeError, match="row-level security"):
            admin.open()
        admin.close()
        app = Database(_application_url(str(server.get_uri())), schema="guard", max_size=1)
        app.open()
        with app.pool.connection() as conn:
            assert conn.info.user == "learnflow"
        app.close()
    finally:
        server.cleanup()
