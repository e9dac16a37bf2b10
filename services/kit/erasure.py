"""Erasing a student everywhere (GDPR Art. 17; docs/adr/0009).

The mastery service starts an erasure (EraseStudentData): it buries the student (a
tombstone in the kit-owned schema `erasure`, naming only their pseudonym) and
publishes `StudentErased` on `student.erasure`. Every service that holds student data
consumes that topic with `erasure_consumer`: it erases its own rows (the service's
`erase`), sweeps the student's keys from the cache, and confirms on
`student.erasure.confirmed`. The erasure's operation is done once every service in
`ERASING_SERVICES` has confirmed. Both steps are idempotent: a redelivered erasure
erases nothing more and confirms again.

A student's late events (ones that arrive after the tombstone) are dead-lettered by
the consumers that would otherwise store them (`erased_in`, inside their transaction);
records kept by law (the audit trail) name the student's `pseudonym` instead of their
id.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    DEFAULT_STALL_SECONDS,
    STUDENT_ERASURE,
    STUDENT_ERASURE_CONFIRMED,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    cloudevent_headers,
    event_tenant,
)
from services.kit.cache import Cache
from services.kit.db import Database

log = logging.getLogger("learnflow.erasure")

# Every service that holds student data, each of which must confirm an erasure.
ERASING_SERVICES = ("mastery", "debug", "exercise", "review", "notify", "triage", "audit")
PSEUDONYM_PREFIX = "erased-"

# What a service erases of one student (tenant, student id): rows and entries erased.
Erase = Callable[[str, str], int]


def pseudonym(tenant: str, student_id: str) -> str:
    """The name that replaces an erased student's id where a record must stay: the same
    in every service, and not the id (a digest of tenant and id)."""
    digest = hashlib.sha256(f"{tenant}/{student_id}".encode()).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


def erasure_health_name(service: str) -> str:
    """The health name of a service's erasure consumer: NOT_SERVING while it stalls."""
    return f"learnflow.{service}.erasure"


def now() -> datetime:
    return datetime.now(UTC)


class Tombstones:
    """Which students were erased (by pseudonym), in the kit-owned schema `erasure`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def bury(self, tenant: str, student_id: str, erasure: str) -> None:
        with self._db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO erased_students (pseudonym, erasure) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (pseudonym(tenant, student_id), erasure),
            )

    def erased(self, tenant: str, student_ids: Iterable[str]) -> set[str]:
        """Which of these students of `tenant` were erased."""
        by_pseudonym = {pseudonym(tenant, s): s for s in set(student_ids)}
        if not by_pseudonym:
            return set()
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT pseudonym FROM erased_students WHERE pseudonym = ANY(%s)",
                (list(by_pseudonym),),
            ).fetchall()
        return {by_pseudonym[r[0]] for r in rows}


def erased_in(cur: psycopg.Cursor[Any], tenant: str, student_ids: Iterable[str]) -> list[str]:
    """The pseudonyms of these students of `tenant` that were erased, asked inside the
    caller's transaction (scoped to `tenant`). A consumer asks once its transaction
    holds a lock the student's erasure takes a conflicting one of (ADR 0009): then its
    batch either commits before the erasure deletes, or sees the tombstone, written
    before the erasure began."""
    names = sorted({pseudonym(tenant, s) for s in student_ids})
    if not names:
        return []
    rows = cur.execute(
        "SELECT pseudonym FROM erasure.erased_students WHERE pseudonym = ANY(%s)", (names,)
    ).fetchall()
    return sorted(r[0] for r in rows)


def refuse_erased_in(cur: psycopg.Cursor[Any], tenant: str, student_ids: Iterable[str]) -> None:
    """`erased_in`, raising PoisonEventError when any was erased: the consumer loop then
    retries the batch one event at a time and dead-letters just the erased students'."""
    erased = erased_in(cur, tenant, student_ids)
    if erased:
        raise PoisonEventError(
            f"student {erased[0]} of tenant {tenant} was erased: their late events are not stored"
        )


def confirmation(
    erasure: str, tenant: str, service: str, count: int, when: datetime
) -> events_pb2.StudentErasureConfirmed:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return events_pb2.StudentErasureConfirmed(
        erasure=erasure,
        tenant=tenant,
        service=service,
        erased_record_count=count,
        erase_time=stamp,
    )


def erasure_consumer(
    bus: Bus,
    cache: Cache | None,
    *,
    service: str,
    erase: Erase,
    transient: tuple[type[BaseException], ...] = (),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """The consumer of `student.erasure` for `service` (its own group): erases with
    `erase`, sweeps the student's cache entries, and confirms each erasure once erased."""
    source = f"//learnflow.dev/{service}"

    def erase_one(envelope: Envelope) -> None:
        record, message = envelope.record, envelope.message
        if not isinstance(message, events_pb2.StudentErased):
            raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")
        tenant = event_tenant(record, message.tenant)
        if not message.student_id or not message.erasure:
            raise PoisonEventError(f"erasure {record.event_id}: no student_id or erasure")
        count = erase(tenant, message.student_id)
        if cache is not None:
            count += cache.erase_student(tenant, message.student_id)
        confirmed = confirmation(message.erasure, tenant, service, count, now())
        bus.deliver(
            STUDENT_ERASURE_CONFIRMED,
            message.erasure,
            confirmed.SerializeToString(),
            cloudevent_headers(confirmed, source=source, subject=message.erasure),
        )
        log.info(
            "student erased",
            extra={"erasure": message.erasure, "tenant": tenant, "count": count},
        )

    def handle(batch: Sequence[Envelope]) -> None:
        for envelope in batch:
            erase_one(envelope)

    return ConsumerLoop(
        bus,
        group_id=f"{service}-erasure",
        topics=[STUDENT_ERASURE],
        handler=handle,
        transient=(*transient, TimeoutError),
        batch_size=50,
        stall_seconds=stall_seconds,
    )
