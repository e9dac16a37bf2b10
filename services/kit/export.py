"""Exporting a student's data from every service (GDPR Art. 15 and 20; docs/adr/0010).

The mastery service starts an export (ExportStudentData) and publishes
`StudentExportRequested` on `student.export`. Every service that holds student data
(the same ones that erase: `ERASING_SERVICES`) consumes that topic with
`export_consumer`: it gathers what it holds of the student (its `gather`) and writes
it as its part into the kit-owned schema `exports`. The export's operation is done
once every service has a part there; the mastery service then zips the parts, with a
manifest, for download. Writing a part again (a redelivery) replaces it.

A part holds the student's data until it expires (`EXPORT_TTL`): an erasure deletes the
student's parts, the retention job deletes expired ones.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    DEFAULT_STALL_SECONDS,
    STUDENT_EXPORT,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    event_tenant,
)
from services.kit.db import Database

log = logging.getLogger("learnflow.export")

# How long a finished export can be downloaded.
EXPORT_TTL = timedelta(days=7)
EXPORTS_COLLECTION = "exports"

# One service's records of a student: record kind (a table, a cache) -> records, each a
# JSON-ready mapping.
Records = dict[str, list[dict[str, Any]]]
# What a service gathers of one student (tenant, student id).
Gather = Callable[[str, str], Records]


def export_health_name(service: str) -> str:
    """The health name of a service's export consumer: NOT_SERVING while it stalls."""
    return f"learnflow.{service}.export"


def export_name(student_id: str, export_id: str) -> str:
    return f"students/{student_id}/{EXPORTS_COLLECTION}/{export_id}"


def jsonable(value: Any, decode: Callable[[bytes], Message] | None = None) -> Any:
    """A stored value as JSON: times as RFC 3339, protobuf bytes as their JSON mapping
    (with `decode`), other bytes as base64."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        if decode is not None:
            return MessageToDict(decode(raw), preserving_proto_field_name=True)
        return base64.b64encode(raw).decode()
    if isinstance(value, Decimal):
        return float(value)
    return value


def table_records(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    messages: Mapping[str, Callable[[bytes], Message]] | None = None,
    withheld: Iterable[str] = (),
) -> Records:
    """Rows (table -> column mappings) as export records. `messages` decodes protobuf
    columns (keys `table.column`); `withheld` columns (`table.column`) are left out:
    what is not the student's own data (hidden tests, answer keys)."""
    decoders = messages or {}
    hidden = set(withheld)
    return {
        table: [
            {
                column: jsonable(value, decoders.get(f"{table}.{column}"))
                for column, value in row.items()
                if f"{table}.{column}" not in hidden and column != "tenant"
            }
            for row in table_rows
        ]
        for table, table_rows in rows.items()
    }


@dataclass(frozen=True, slots=True)
class Part:
    service: str
    records: Records
    collected_at: datetime
    expires_at: datetime


class ExportParts:
    """Each service's part of each export, in the kit-owned schema `exports`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(
        self,
        tenant: str,
        export: str,
        *,
        service: str,
        student_id: str,
        records: Records,
        expires_at: datetime,
    ) -> None:
        with self._db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO export_parts (export, service, student_id, content, expires_at) "
                "VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT (tenant, export, service) DO "
                "UPDATE SET content = EXCLUDED.content, collected_at = now()",
                (export, service, student_id, json.dumps(records), expires_at),
            )

    def collected(self, tenant: str, export: str) -> dict[str, datetime]:
        """The services that delivered their part of `export`, and when."""
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT service, collected_at FROM export_parts WHERE export = %s",
                (export,),
            ).fetchall()
        return dict(rows)

    def parts(self, tenant: str, export: str, student_id: str) -> list[Part]:
        """The unexpired parts of a student's export, in the order they came."""
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT service, content, collected_at, expires_at FROM export_parts "
                "WHERE export = %s AND student_id = %s AND expires_at > now() "
                "ORDER BY collected_at, service",
                (export, student_id),
            ).fetchall()
        return [Part(*row) for row in rows]

    def erase_student(self, tenant: str, student_id: str) -> int:
        return self._db.erase_student_rows(tenant, student_id, ("export_parts",))

    def purge_expired(self, tenant: str) -> int:
        """Delete the tenant's expired parts (the retention job); how many."""
        with self._db.scoped(tenant) as conn:
            return conn.execute("DELETE FROM export_parts WHERE expires_at <= now()").rowcount


def export_consumer(
    bus: Bus,
    parts: ExportParts,
    *,
    service: str,
    gather: Gather,
    transient: tuple[type[BaseException], ...] = (),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """The consumer of `student.export` for `service` (its own group): gathers what the
    service holds of the student and writes it as the service's part of the export."""

    def export_one(envelope: Envelope) -> None:
        record, message = envelope.record, envelope.message
        if not isinstance(message, events_pb2.StudentExportRequested):
            raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")
        tenant = event_tenant(record, message.tenant)
        prefix = f"students/{message.student_id}/{EXPORTS_COLLECTION}/"
        if not message.student_id or not message.export.startswith(prefix):
            raise PoisonEventError(f"export {record.event_id}: no student_id or export")
        records = gather(tenant, message.student_id)
        expires = message.request_time.ToDatetime(tzinfo=UTC) + EXPORT_TTL
        parts.put(
            tenant,
            message.export,
            service=service,
            student_id=message.student_id,
            records=records,
            expires_at=expires,
        )
        log.info(
            "export part written",
            extra={
                "export": message.export,
                "tenant": tenant,
                "count": sum(len(r) for r in records.values()),
            },
        )

    def handle(batch: Sequence[Envelope]) -> None:
        for envelope in batch:
            export_one(envelope)

    return ConsumerLoop(
        bus,
        group_id=f"{service}-export",
        topics=[STUDENT_EXPORT],
        handler=handle,
        transient=(*transient, TimeoutError),
        batch_size=20,
        stall_seconds=stall_seconds,
    )
