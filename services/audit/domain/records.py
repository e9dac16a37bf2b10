"""An audit record as the audit service stores it, and what makes a consumed one
storable. Records are append-only: once stored nothing changes them (the table's
trigger refuses UPDATE and DELETE; pseudonymising a student, issue 14, will be one
dedicated database function, not an update from here)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

# The recorder makes 32 hex digits (uuid4); anything of this shape is accepted.
EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
EVENT_NAME_PREFIX = "auditEvents/"
MAX_TEXT = 256  # subjects, roles, methods, request ids, peers
MAX_NAME = 512  # resource names
MAX_ITEMS = 32  # resources, students per record


class UnstorableRecordError(ValueError):
    """A consumed record that can never be stored (it goes to the dead-letter queue)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    event_id: str
    event_time: datetime
    tenant: str  # the tenant the call acted in: whose trail it is
    actor_subject: str
    actor_role: str
    actor_tenant: str  # the actor's own tenant (an operator's differs from `tenant`)
    method: str
    resources: tuple[str, ...]
    students: tuple[str, ...]
    request_id: str
    trace_id: str
    peer: str
    code: str

    @property
    def name(self) -> str:
        return EVENT_NAME_PREFIX + self.event_id


def pseudonymised(record: AuditRecord, student_id: str, pseudonym: str) -> AuditRecord:
    """`record` naming `pseudonym` wherever it named the erased student (the same rule
    as the store's `pseudonymise_student`, for records that arrive after the erasure)."""
    named = f"students/{student_id}"

    def rename(resource: str) -> str:
        if resource == named or resource.startswith(named + "/"):
            return f"students/{pseudonym}{resource[len(named) :]}"
        return resource

    acted = record.actor_subject == student_id and record.actor_role == "student"
    return replace(
        record,
        resources=tuple(rename(r) for r in record.resources),
        students=tuple(pseudonym if s == student_id else s for s in record.students),
        actor_subject=pseudonym if acted else record.actor_subject,
    )


def named_students(record: AuditRecord) -> set[str]:
    """Every student a record may name: those it touched, and its actor if a student."""
    names = set(record.students)
    if record.actor_role == "student":
        names.add(record.actor_subject)
    return names


def event_id_of(name: str) -> str:
    """The id of `auditEvents/{id}`; UnstorableRecordError when it is not one."""
    if not name.startswith(EVENT_NAME_PREFIX):
        raise UnstorableRecordError(f"{name[:80]!r} is not an audit event name")
    event_id = name[len(EVENT_NAME_PREFIX) :]
    if not EVENT_ID.fullmatch(event_id):
        raise UnstorableRecordError(f"{name[:80]!r} has no usable event id")
    return event_id


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """Text Postgres can hold (no NUL), at most `limit` characters."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text[:limit]


def storable(record: AuditRecord) -> AuditRecord:
    """`record` as it will be stored (text cleaned and bounded); UnstorableRecordError
    when it lacks what every record has: a tenant, an actor, a method, an outcome."""
    missing = [
        what
        for what, value in (
            ("tenant", record.tenant),
            ("actor subject", record.actor_subject),
            ("method", record.method),
            ("code", record.code),
        )
        if not value
    ]
    if missing:
        raise UnstorableRecordError(f"audit record {record.event_id}: no {', '.join(missing)}")
    if not EVENT_ID.fullmatch(record.event_id):
        raise UnstorableRecordError(f"audit record id {record.event_id[:80]!r} is not usable")
    return replace(
        record,
        actor_subject=clean(record.actor_subject),
        actor_role=clean(record.actor_role),
        actor_tenant=clean(record.actor_tenant),
        method=clean(record.method),
        resources=_unique(clean(r, MAX_NAME) for r in record.resources if r),
        students=_unique(clean(s) for s in record.students if s),
        request_id=clean(record.request_id),
        trace_id=clean(record.trace_id, 32),
        peer=clean(record.peer),
        code=clean(record.code, 64),
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))[:MAX_ITEMS]


def by_tenant(records: Iterable[AuditRecord]) -> dict[str, list[AuditRecord]]:
    """Records grouped by the tenant whose trail they join (each group is written in
    that tenant's scope), in the order they came."""
    groups: dict[str, list[AuditRecord]] = defaultdict(list)
    for record in records:
        groups[record.tenant].append(record)
    return dict(groups)
