"""The student roster the services share: which cohort a student is in now.

A resource's cohort is its student's current cohort here, never the cohort in the
token of whoever made the resource: a review an admin made for bob is visible to bob's
teacher, and a student who changes class takes their history along. Every Get and
List of a student's resources authorises through `require_readable`, so both answer
alike for the same caller.

The roster learns a student's cohort from the student's own verified token (the
identity provider's word on their class), recorded the first time each process sees
that (student, cohort) pair and whenever it changes. Reads are cached briefly.

Students and cohorts live inside a tenant: the same id in two schools is two students,
and a caller looks only in the tenant their call acts in.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar

from services.kit.auth import Principal, Role
from services.kit.db import Database

V = TypeVar("V")


class RosterStore(Protocol):
    def cohort_of(self, tenant: str, student_id: str) -> str | None: ...

    def enrol(self, tenant: str, student_id: str, cohort: str) -> None: ...

    def forget(self, tenant: str, student_id: str) -> int: ...

    def tenants(self) -> list[str]: ...


class PostgresRosterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def cohort_of(self, tenant: str, student_id: str) -> str | None:
        with self._db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT cohort FROM students WHERE student_id = %s", (student_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def enrol(self, tenant: str, student_id: str, cohort: str) -> None:
        with self._db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO tenants (tenant) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,)
            )
            conn.execute(
                "INSERT INTO students (student_id, cohort) VALUES (%s, %s) "
                "ON CONFLICT (tenant, student_id) DO UPDATE SET cohort = EXCLUDED.cohort, "
                "updated_at = now() WHERE students.cohort IS DISTINCT FROM EXCLUDED.cohort",
                (student_id, cohort),
            )

    def forget(self, tenant: str, student_id: str) -> int:
        with self._db.scoped(tenant) as conn:
            return conn.execute(
                "DELETE FROM students WHERE student_id = %s", (student_id,)
            ).rowcount

    def tenants(self) -> list[str]:
        with self._db.pool.connection() as conn:
            return [r[0] for r in conn.execute("SELECT tenant FROM tenants ORDER BY tenant")]


class Roster:
    CACHE_SECONDS = 5.0
    CACHE_SIZE = 50_000

    def __init__(
        self, store: RosterStore, erased: Callable[[str, str], bool] | None = None
    ) -> None:
        self._store = store
        # Whether a (tenant, student) was erased: never enrolled again from a token.
        self._erased = erased
        self._lock = threading.Lock()
        # Keyed by (tenant, student id).
        self._cohorts: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self._recorded: OrderedDict[tuple[str, str], str] = OrderedDict()

    def cohort_of(self, tenant: str, student_id: str) -> str | None:
        """The student's cohort now ("" for none), or None for a student never seen in
        this tenant."""
        now = time.monotonic()
        key = (tenant, student_id)
        with self._lock:
            cached = self._cohorts.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        cohort = self._store.cohort_of(tenant, student_id)
        self._remember(self._cohorts, key, (now + self.CACHE_SECONDS, cohort))
        return cohort

    def observe(self, principal: Principal) -> None:
        """Record a student's cohort from their own token when it is new or changed."""
        if principal.role is not Role.STUDENT:
            return
        cohort = principal.own_cohort
        key = (principal.tenant, principal.subject)
        with self._lock:
            if self._recorded.get(key) == cohort:
                return
        if self._erased is not None and self._erased(principal.tenant, principal.subject):
            self._remember(self._recorded, key, cohort)  # asked once per process
            return
        self._store.enrol(principal.tenant, principal.subject, cohort)
        self._remember(self._recorded, key, cohort)
        self._remember(self._cohorts, key, (time.monotonic() + self.CACHE_SECONDS, cohort))

    def forget(self, tenant: str, student_id: str) -> int:
        """Drop an erased student from the roster (and this process's memory of them)."""
        key = (tenant, student_id)
        with self._lock:
            self._cohorts.pop(key, None)
            self._recorded.pop(key, None)
        return self._store.forget(tenant, student_id)

    def tenants(self) -> list[str]:
        """Every tenant a student was enrolled in (jobs that run per tenant)."""
        return self._store.tenants()

    def require_readable(self, principal: Principal, student_id: str) -> str:
        """Student: self; teacher: a student in one of their cohorts now; admin and
        operator: anyone of the tenant. Returns the student's current cohort ("" when
        unknown)."""
        if principal.role is Role.STUDENT:
            principal.require_student(student_id)  # no lookup: nothing to probe
            return principal.own_cohort
        cohort = self.cohort_of(principal.tenant, student_id)
        principal.require_student(student_id, cohort or None)
        return cohort or ""

    def cohort_for_work(self, principal: Principal, student_id: str) -> str:
        """The cohort new work by or for `student_id` counts towards."""
        if principal.role is Role.STUDENT and principal.subject == student_id:
            return principal.own_cohort
        return self.cohort_of(principal.tenant, student_id) or ""

    def _remember(
        self, cache: OrderedDict[tuple[str, str], V], key: tuple[str, str], value: V
    ) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > self.CACHE_SIZE:
                cache.popitem(last=False)
