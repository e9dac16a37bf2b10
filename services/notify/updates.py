"""The update log (table `notify.updates`) and each replica's listener on it.

Every deliverable update is a row of one tenant, written by whoever makes it: the
alert changes in the same transaction as the alert (any replica, consumer or teacher),
students' answers and mastery changes by the updates consumer, idempotently by
(tenant, ce_source, ce_id). `seq` is the cursor a client resumes from, on any replica;
each tenant's log counts its own (a cursor means nothing in another tenant).

Writers take their tenant's row of `updates_horizon` (its `last_seq`) with a row lock
held until they commit, so a tenant's rows become visible in seq order: a reader that
has seen seq N of a tenant has seen every committed row of it below N. Each insert
also sends `NOTIFY notify_updates`.

Each replica runs one `UpdateLog` listener thread: it LISTENs, and (on a
notification, and at least every second in case one was missed) reads from
`updates_horizon` which tenants' logs have grown, then each such tenant's rows past
the last seq it saw, in a transaction scoped to that tenant, and hands them to the
local `Hub`. It also purges rows older than the retention window on a timer;
`updates_horizon.purged_through` records how far per tenant, so a cursor from before it
is refused rather than silently missing updates.
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

from services.kit.db import Database, scope
from services.kit.erasure import refuse_erased_in
from services.notify.hub import Audience, Entry, Hub

log = logging.getLogger("learnflow.notify.updates")

CHANNEL = "notify_updates"
LISTEN_PAGE = 1000
POLL_SECONDS = 1.0
PURGE_EVERY_SECONDS = 600.0

ENTRY_COLUMNS = "tenant, seq, student_id, cohort, payload, created_at"

Decode = Callable[[int, bytes, datetime], object]
"""(seq, payload, created_at) -> the wire message a subscriber is sent."""


@dataclass(frozen=True, slots=True)
class UpdateRow:
    """One update to write: its audience (within the tenant it is written in), its
    serialized payload, and the event it came from (None for changes made by hand)."""

    student_id: str | None
    cohort: str | None
    payload: bytes
    ce_source: str | None = None
    ce_id: str | None = None


def write_updates(cur: Cursor[Any], rows: Sequence[UpdateRow]) -> int:
    """Insert rows into the log of the tenant the caller's transaction is scoped to (as
    its last statements: the tenant's log stays locked until commit) and notify the
    listeners. A row for an event already written is skipped. Returns how many were
    written."""
    if not rows:
        return 0
    # The tenant's counter, locked until commit (made on the tenant's first update).
    row = cur.execute(
        "INSERT INTO updates_horizon (tenant) VALUES (current_setting('learnflow.tenant')) "
        "ON CONFLICT (tenant) DO UPDATE SET tenant = EXCLUDED.tenant RETURNING last_seq"
    ).fetchone()
    last = int(row[0]) if row else 0
    written = 0
    for update in rows:
        done = cur.execute(
            "INSERT INTO updates (seq, student_id, cohort, payload, ce_source, ce_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant, ce_source, ce_id) WHERE ce_id IS NOT NULL DO NOTHING "
            "RETURNING seq",
            (
                last + 1,
                update.student_id,
                update.cohort,
                update.payload,
                update.ce_source,
                update.ce_id,
            ),
        ).fetchone()
        if done is not None:
            last += 1
            written += 1
    if written:
        cur.execute(
            "UPDATE updates_horizon SET last_seq = %s "
            "WHERE tenant = current_setting('learnflow.tenant')",
            (last,),
        )
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
        # The last seq of each tenant's log the listener handed to the hub.
        self._last: dict[str, int] = {}
        self._next_purge = 0.0

    # -- writing and reading (any thread) ------------------------------------------

    def append(self, tenant: str, rows: Sequence[UpdateRow]) -> int:
        """Write rows to `tenant`'s log in one transaction; returns how many were new."""
        if not rows:
            return 0
        with self._db.scoped(tenant) as conn, conn.cursor() as cur:
            # A lock an erasure conflicts with, then the tombstones (ADR 0009).
            cur.execute("LOCK TABLE updates IN ROW EXCLUSIVE MODE")
            refuse_erased_in(cur, tenant, {r.student_id for r in rows if r.student_id})
            return write_updates(cur, rows)

    def head(self, tenant: str) -> int:
        """The newest seq of `tenant`'s log committed (or purged); 0 for none yet."""
        return max(self._horizon(tenant))

    def heads(self) -> dict[str, int]:
        """Every tenant's head (for the listener: a system job across tenants)."""
        with self._db.pool.connection() as conn:
            rows = conn.execute(
                "SELECT tenant, greatest(last_seq, purged_through) FROM updates_horizon"
            ).fetchall()
        return {str(tenant): int(head) for tenant, head in rows}

    def _horizon(self, tenant: str) -> tuple[int, int]:
        """(purged through, last seq) of `tenant`'s log."""
        with self._db.pool.connection() as conn:
            row = conn.execute(
                "SELECT purged_through, last_seq FROM updates_horizon WHERE tenant = %s",
                (tenant,),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def check_cursor(self, tenant: str, seq: int) -> None:
        """CursorExpiredError when rows of `tenant`'s log after `seq` may have been
        purged; ValueError when no update of it has that seq yet."""
        purged, newest = self._horizon(tenant)
        if seq < purged:
            raise CursorExpiredError(f"updates after cursor {seq} are no longer kept")
        if seq > max(purged, newest):
            raise ValueError(f"no update has cursor {seq}")

    def replay(self, audience: Audience, after: int, limit: int) -> list[Entry]:
        """The audience's entries of its tenant's log after `after`, at most `limit`."""
        params: list[Any]
        if audience.student_id is not None:
            where, params = "student_id = %s", [audience.student_id]
        elif audience.cohorts is None:
            where, params = "cohort IS NOT NULL", []
        elif not audience.cohorts:
            return []
        else:
            where, params = "cohort = ANY(%s)", [sorted(audience.cohorts)]
        with self._db.scoped(audience.tenant) as conn:
            rows = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM updates "  # noqa: S608 - fixed fragments
                f"WHERE seq > %s AND {where} ORDER BY seq LIMIT %s",
                [after, *params, limit],
            ).fetchall()
        return [self._entry(r) for r in rows]

    def _entry(self, row: Sequence[Any]) -> Entry:
        tenant, seq, student_id, cohort, payload, created_at = row
        return Entry(
            str(tenant),
            int(seq),
            student_id,
            cohort,
            self._decode(int(seq), bytes(payload), created_at),
        )

    def purge(self) -> int:
        """Delete rows older than the retention window from every tenant's log; returns
        how many."""
        total = 0
        for tenant in self.heads():
            with self._db.scoped(tenant) as conn:
                # The tenant's counter first, as writers take it: purge and writers
                # never wait for each other in opposite orders.
                conn.execute(
                    "SELECT 1 FROM updates_horizon WHERE tenant = %s FOR UPDATE", (tenant,)
                )
                row = conn.execute(
                    "WITH gone AS (DELETE FROM updates WHERE created_at < now() - %s "
                    "RETURNING seq) SELECT count(*), coalesce(max(seq), 0) FROM gone",
                    (self.retention,),
                ).fetchone()
                count, through = (int(row[0]), int(row[1])) if row else (0, 0)
                if through:
                    conn.execute(
                        "UPDATE updates_horizon "
                        "SET purged_through = greatest(purged_through, %s) WHERE tenant = %s",
                        (through, tenant),
                    )
            total += count
        return total

    # -- the listener ---------------------------------------------------------------

    def start(self) -> None:
        self._last = self.heads()  # before any stream can subscribe and wait on us
        for tenant, head in self._last.items():
            self._hub.start_at(tenant, head)
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
        """Hand the hub every tenant's rows committed since it last looked."""
        grown = conn.execute("SELECT tenant, last_seq FROM updates_horizon").fetchall()
        for tenant, last_seq in grown:
            if int(last_seq) > self._last.get(tenant, 0):
                self._drain_tenant(conn, str(tenant), int(last_seq))

    def _drain_tenant(self, conn: psycopg.Connection[Any], tenant: str, head: int) -> None:
        while (last := self._last.get(tenant, 0)) < head:
            with conn.transaction():
                scope(conn, tenant)
                rows = conn.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM updates "  # noqa: S608 - fixed fragments
                    "WHERE seq > %s ORDER BY seq LIMIT %s",
                    (last, LISTEN_PAGE),
                ).fetchall()
            if not rows:
                # Purged before this replica read them: nothing left to hand on.
                self._last[tenant] = head
                self._hub.start_at(tenant, head)
                return
            entries = [self._entry(r) for r in rows]
            self._hub.publish(entries)
            self._last[tenant] = entries[-1].seq
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
