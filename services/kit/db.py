"""Postgres: a psycopg 3 pool per service schema, and migrations with yoyo.

Each service owns one schema and its migrations (plain SQL files in
`services/<service>/migrations/`). Without DATABASE_URL the run command starts an
embedded Postgres 16 from the pgserver wheel.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool
from yoyo import get_backend, read_migrations

log = logging.getLogger("learnflow.db")

_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
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
            _embedded_uri = str(server.get_uri())
            log.info("embedded postgres started", extra={"data_dir": str(data_dir)})
        return _embedded_uri


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

    def check(self) -> None:
        """Health check: raises unless a connection answers."""
        with self.pool.connection(timeout=2.0) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self.pool.close()
