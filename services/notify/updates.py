"""The update log (table `notify.updates`) and each replica's listener on it.

Every deliverable update is a row, written by whoever makes it: the alert changes in
the same transaction as the alert (any replica, consumer or teacher), students'
answers and mastery changes by the updates consumer, idempotently by (ce_source,
ce_id). `seq` is the cursor a client resumes from, on any replica.

Writers take one transaction-level advisory lock just before inserting, so rows
become visible in seq order: a reader that has seen seq N has seen every committed
row below it. Each insert also sends `NOTIFY notify_updates`.

Each replica runs one `UpdateLog` listener thread: it LISTENs, reads the rows past the
last seq it saw (on a notification, and at least every second in case one was missed)
and hands them to the local `Hub`. It also purges rows older than the retention window
on a timer; `updates_horizon.purged_through` records how far, so a cursor from before
it is refused rather than silently missing updates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import Cursor

from services.kit.db import Database
from services.notify.hub import Audience, Entry, Hub

log = logging.getLogger("learnflow.notify.updates")

CHANNEL = "notify_updates"
# pg_advisory_xact_lock key for writers of the log ("notify.updates" in a bigint).
WRITE_LOCK = 0x6E6F74696679_7570
LISTEN_PAGE = 1000
POLL_SECONDS = 1.0
PURGE_EVERY_SECONDS = 600.0

Decode = Callable[[int, bytes, datetime], object]
"""(seq, payload, created_at) -> the wire message a subscriber is sent."""


@dataclass(frozen=True, slots=True)
class UpdateRow:
    """One update to write: its audience, its serialized payload, and the event it
    came from (None for changes made by hand)."""

    student_id: str | None
    cohort: str | None
    payload: bytes
    ce_source: str | None = None
    ce_id: str | None = None


def write_updates(cur: Cursor[Any], rows: Sequence[UpdateRow]) -> int:
    """Insert rows (in the caller's transaction, as its last statement: the lock is held
    until commit) and notify the listeners. A row for an event already written is
    skipped. Returns how many were written."""
    if not rows:
        return 0
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
    written = 0
    for row in rows:
        done = cur.execute(
            "INSERT INTO updates (student_id, cohort, payload, ce_source, ce_id) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq",
            (row.student_id, row.cohort, row.payload, row.ce_source, row.ce_id),
        ).fetchone()
        written += done is not None
    if written:
        cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return written


class CursorExpiredError(Exception):
    pass


class UpdateLog:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        decode: Decode,
        *,
        retention: timedelta = timedelta(hours=24),
        poll_seconds: float = POLL_SECONDS,
        purge_every_seconds: float = PURGE_EVERY_SECONDS,
    ) -> None:
        self._db = db
        self._hub = hub
        self._decode = decode
        self.retention = retention
        self._poll = poll_seconds
        self._purge_every = purge_every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: int | None = None
        self._next_purge = 0.0

    # -- writing and reading (any thread) ------------------------------------------

    def append(self, rows: Sequence[UpdateRow]) -> int:
        if not rows:
            return 0
        with self._db.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return write_updates(cur, rows)

    def head(self) -> int:
        """The newest seq committed (or purged)."""
        with self._db.pool.connection() as conn:
            row = conn.execute(
                "SELECT greatest((SELECT coalesce(max(seq), 0) FROM updates), "
                "(SELECT purged_through FROM updates_horizon))"
            ).fetchone()
        return int(row[0]) if row else 0

    def check_cursor(self, seq: int) -> None:
        """CursorExpiredError when rows after `seq` may have been purged; ValueError when
        no update has that seq yet."""
        with self._db.pool.connection() as conn:
            row = conn.execute(
                "SELECT purged_through, (SELECT coalesce(max(seq), 0) FROM updates) "
                "FROM updates_horizon"
            ).fetchone()
        purged, newest = (int(row[0]), int(row[1])) if row else (0, 0)
        if seq < purged:
            raise CursorExpiredError(f"updates after cursor {seq} are no longer kept")
        if seq > max(purged, newest):
            raise ValueError(f"no update has cursor {seq}")

    def replay(self, audience: Audience, after: int, limit: int) -> list[Entry]:
        params: list[Any]
        if audience.student_id is not None:
            where, params = "student_id = %s", [audience.student_id]
        elif audience.cohorts is None:
            where, params = "cohort IS NOT NULL", []
        elif not audience.cohorts:
            return []
        else:
            where, params = "cohort = ANY(%s)", [sorted(audience.cohorts)]
        with self._db.pool.connection() as conn:
            rows = conn.execute(
                "SELECT seq, student_id, cohort, payload, created_at FROM updates "  # noqa: S608 - fixed fragments
                f"WHERE seq > %s AND {where} ORDER BY seq LIMIT %s",
                [after, *params, limit],
            ).fetchall()
        return [self._entry(r) for r in rows]

    def _entry(self, row: Sequence[Any]) -> Entry:
        seq, student_id, cohort, payload, created_at = row
        return Entry(
            int(seq), student_id, cohort, self._decode(int(seq), bytes(payload), created_at)
        )

    def purge(self) -> int:
        """Delete rows older than the retention window; returns how many."""
        with self._db.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "WITH gone AS (DELETE FROM updates WHERE created_at < now() - %s "
                "RETURNING seq) SELECT count(*), coalesce(max(seq), 0) FROM gone",
                (self.retention,),
            ).fetchone()
            count, through = (int(row[0]), int(row[1])) if row else (0, 0)
            if through:
                conn.execute(
                    "UPDATE updates_horizon SET purged_through = greatest(purged_through, %s)",
                    (through,),
                )
        return count

    # -- the listener ---------------------------------------------------------------

    def start(self) -> None:
        self._last = self.head()  # before any stream can subscribe and wait on us
        self._hub.start_at(self._last)
        self._thread = threading.Thread(target=self._run, name="notify-updates", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check(self) -> None:
        """Health: the listener thread is running."""
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            raise RuntimeError("the update listener is not running")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._db.url, autocommit=True, options=f"-c search_path={self._db.schema}"
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        self._drain(conn)
                        self._maybe_purge()
                        for _ in conn.notifies(timeout=self._poll, stop_after=1):
                            pass
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("update listener failed; reconnecting")
                self._stop.wait(1.0)

    def _drain(self, conn: psycopg.Connection[Any]) -> None:
        while True:
            rows = conn.execute(
                "SELECT seq, student_id, cohort, payload, created_at FROM updates "
                "WHERE seq > %s ORDER BY seq LIMIT %s",
                (self._last or 0, LISTEN_PAGE),
            ).fetchall()
            if not rows:
                return
            entries = [self._entry(r) for r in rows]
            self._hub.publish(entries)
            self._last = entries[-1].seq
            if len(rows) < LISTEN_PAGE:
                return

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + self._purge_every
        try:
            purged = self.purge()
        except psycopg.Error:
            log.warning("update log not purged", exc_info=True)
            return
        if purged:
            log.info("update log purged", extra={"rows": purged})
