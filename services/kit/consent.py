"""Consent to analytics and to model use, per student (issue 14; docs/adr/0011).

Each choice a student makes (or a tenant admin makes for them) is recorded, never
overwritten: who, when, what, by whom. What applies to a student is their latest
choice per purpose, else their school's default, else the platform's
(`PLATFORM_DEFAULTS`: analytics yes, model use no).

The model client asks `model_use_allowed` before every call: the students a call is
about (the ones its request names, by the audit trail's rule, and the caller if a
student) must all consent to model use, or the agent answers with its offline engine
and no text of theirs reaches a model. A call about no student has no one's consent
and is answered offline too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from psycopg.rows import dict_row

from services.kit.audit import touched
from services.kit.auth import Role
from services.kit.db import Database
from services.kit.export import Records, table_records
from services.kit.interceptors import CallContext


class Purpose(StrEnum):
    ANALYTICS = "analytics"
    MODEL_USE = "model_use"


class Source(StrEnum):
    STUDENT = "student"
    TENANT = "tenant"
    PLATFORM = "platform"


PLATFORM_DEFAULTS: Mapping[Purpose, bool] = {Purpose.ANALYTICS: True, Purpose.MODEL_USE: False}

# Whether the model may be used for a call (None: outside any call).
ModelUse = Callable[[CallContext | None], bool]


@dataclass(frozen=True, slots=True)
class Decision:
    """One purpose's consent as it applies."""

    granted: bool
    source: Source
    recorded_by: str = ""
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    purpose: Purpose
    granted: bool
    recorded_by: str
    recorded_at: datetime


def _platform() -> dict[Purpose, Decision]:
    return {p: Decision(granted, Source.PLATFORM) for p, granted in PLATFORM_DEFAULTS.items()}


class Consent:
    """The consent records and defaults (kit-owned schema `consent`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self, tenant: str, student_id: str, choices: Mapping[Purpose, bool], recorded_by: str
    ) -> None:
        """Record a student's choices (one record per purpose, in one transaction)."""
        with self._db.scoped(tenant) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO consent_records (student_id, purpose, granted, recorded_by) "
                "VALUES (%s, %s, %s, %s)",
                [(student_id, p.value, g, recorded_by) for p, g in choices.items()],
            )

    def set_defaults(self, tenant: str, choices: Mapping[Purpose, bool], recorded_by: str) -> None:
        with self._db.scoped(tenant) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tenant_defaults (purpose, granted, recorded_by) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant, purpose) DO UPDATE SET granted = EXCLUDED.granted, "
                "recorded_by = EXCLUDED.recorded_by, recorded_at = clock_timestamp()",
                [(p.value, g, recorded_by) for p, g in choices.items()],
            )

    def defaults(self, tenant: str) -> dict[Purpose, Decision]:
        """What applies in `tenant` to a student who made no choice."""
        decisions = _platform()
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT purpose, granted, recorded_by, recorded_at FROM tenant_defaults"
            ).fetchall()
        for purpose, granted, by, at in rows:
            decisions[Purpose(purpose)] = Decision(granted, Source.TENANT, by, at)
        return decisions

    def decisions(self, tenant: str, student_id: str) -> dict[Purpose, Decision]:
        """What applies to a student now, per purpose."""
        return self._applying(tenant, [student_id])[student_id]

    def history(self, tenant: str, student_id: str) -> list[ConsentRecord]:
        """Every choice recorded for a student, newest first."""
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT purpose, granted, recorded_by, recorded_at FROM consent_records "
                "WHERE student_id = %s ORDER BY id DESC",
                (student_id,),
            ).fetchall()
        return [ConsentRecord(Purpose(p), g, by, at) for p, g, by, at in rows]

    def allows(self, tenant: str, student_ids: Iterable[str], purpose: Purpose) -> bool:
        """Whether every one of these students consents to `purpose` (none: False)."""
        wanted = sorted(set(student_ids))
        if not wanted:
            return False
        applying = self._applying(tenant, wanted)
        return all(applying[s][purpose].granted for s in wanted)

    def erase_student(self, tenant: str, student_id: str) -> int:
        return self._db.erase_student_rows(tenant, student_id, ("consent_records",))

    def export_student(self, tenant: str, student_id: str) -> Records:
        with self._db.scoped(tenant) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT purpose, granted, recorded_by, recorded_at FROM consent_records "
                "WHERE student_id = %s ORDER BY id",
                (student_id,),
            )
            return table_records({"consent_records": cur.fetchall()})

    def _applying(self, tenant: str, student_ids: list[str]) -> dict[str, dict[Purpose, Decision]]:
        defaults = self.defaults(tenant)
        applying = {s: dict(defaults) for s in student_ids}
        with self._db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (student_id, purpose) student_id, purpose, granted, "
                "  recorded_by, recorded_at FROM consent_records WHERE student_id = ANY(%s) "
                "ORDER BY student_id, purpose, id DESC",
                (student_ids,),
            ).fetchall()
        for student_id, purpose, granted, by, at in rows:
            applying[student_id][Purpose(purpose)] = Decision(granted, Source.STUDENT, by, at)
        return applying


def students_of_call(call: CallContext) -> set[str]:
    """Whom a call is about: the students its request names (the audit trail's rule),
    and its caller when a student."""
    students = set(touched(call.request).students)
    if call.principal is not None and call.principal.role is Role.STUDENT:
        students.add(call.principal.subject)
    return students


def model_use_allowed(consent: Callable[[], Consent]) -> ModelUse:
    """The model client's check: every student the call is about consents to model use
    (`consent` gives the records when first needed: a process without a model key never
    opens them)."""

    def allowed(call: CallContext | None) -> bool:
        if call is None or call.principal is None:
            return False
        students = students_of_call(call)
        return consent().allows(call.principal.tenant, students, Purpose.MODEL_USE)

    return allowed
