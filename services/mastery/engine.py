"""The mastery engine's use cases, free of transport: ingest a batch of progress
events, read a student's mastery, list a cohort, query history. The consumer, the
servicer and batch jobs all go through here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime

from services.kit.auth import Principal
from services.kit.cache import Cache
from services.kit.errors import NotFound
from services.kit.export import Records
from services.mastery.domain.events import ProgressEvent
from services.mastery.domain.history import Granularity, HistoryPoint, Summary, aggregate, summarise
from services.mastery.domain.records import (
    Change,
    CohortRow,
    EvidenceQuery,
    EvidenceRow,
    MasteryView,
    OperationRecord,
    Profile,
    Student,
)
from services.mastery.store import MasteryStore, OutboxMessage, WheelSpinEncoder

log = logging.getLogger("learnflow.mastery")

MASTERY_CACHE_TTL_SECONDS = 3600.0

Clock = Callable[[], datetime]
Encoder = Callable[[Sequence[Change]], Iterable[OutboxMessage]]
Sender = Callable[[Sequence[OutboxMessage]], None]


def mastery_cache_key(tenant: str, student_id: str) -> str:
    return f"mastery:v1:{tenant}:{student_id}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class MasteryEngine:
    def __init__(
        self,
        store: MasteryStore,
        cache: Cache,
        encode: Encoder,
        send: Sender,
        *,
        clock: Clock = utc_now,
        encode_wheel_spins: WheelSpinEncoder | None = None,
        announce: Callable[[], object] | None = None,
    ) -> None:
        """`announce` is called after every commit that wrote to the outbox: a relay's
        wake-up (the service's), or by default a drain on the committing thread."""
        self._store = store
        self.cache = cache
        self._encode = encode
        self._encode_wheel_spins = encode_wheel_spins
        self._send = send
        self._clock = clock
        self._announce = announce or self.drain_outbox

    # -- writes ---------------------------------------------------------------------

    def ingest(self, events: Sequence[ProgressEvent]) -> list[Change]:
        """Apply a batch (one transaction), then forget cached mastery and announce changes.

        Duplicates change nothing. If the process dies after the commit, the outbox still
        holds the announcements and the next drain sends them."""
        changes = self._store.apply_batch(
            events, self._clock(), self._encode, self._encode_wheel_spins
        )
        self.forget({(e.tenant, e.student_id) for e in events})
        self._announce()
        return changes

    def forget(self, students: Iterable[tuple[str, str]]) -> None:
        """Drop the cached mastery of these (tenant, student id)s."""
        keys = [mastery_cache_key(tenant, sid) for tenant, sid in students]
        try:
            self.cache.delete(*keys)
        except Exception:
            log.warning("cache invalidation failed", exc_info=True)

    def drain_outbox(self) -> int:
        sent = 0
        while True:
            count = self._store.drain_outbox(self._send)
            sent += count
            if count == 0:
                return sent

    def recalculate(self, tenant: str, student_ids: Sequence[str]) -> int:
        """Rebuild these students' mastery from their evidence (one transaction), forget
        their cached mastery and announce what changed; returns how many changed."""
        changed = self._store.recalculate(tenant, student_ids, self._clock(), self._encode)
        self.forget((tenant, sid) for sid in student_ids)
        self._announce()
        return changed

    def rebuild_history(self, limit: int = 200) -> int:
        """Rebuild the history of up to `limit` students a late event queued; returns
        how many (0: none waiting)."""
        return self._store.rebuild_pending_history(self._clock(), limit)

    # -- operations (google.longrunning) ------------------------------------------------

    def student_ids(self, tenant: str, cohort: str | None) -> list[str]:
        return self._store.student_ids(tenant, cohort)

    def create_operation(self, tenant: str, name: str, created_by: str, metadata: bytes) -> None:
        self._store.create_operation(tenant, name, created_by, metadata)

    def update_operation(
        self,
        tenant: str,
        name: str,
        *,
        metadata: bytes,
        done: bool = False,
        response: bytes | None = None,
        error: tuple[int, str] | None = None,
    ) -> bool:
        """Records progress; True when a cancellation was requested meanwhile."""
        return self._store.update_operation(
            tenant, name, metadata=metadata, done=done, response=response, error=error
        )

    def start_announced_operation(
        self, tenant: str, name: str, created_by: str, metadata: bytes, message: OutboxMessage
    ) -> None:
        """Record an operation other services carry out (an erasure, an export) and
        queue the announcement that starts it (one transaction)."""
        self._store.start_announced_operation(tenant, name, created_by, metadata, message)
        self._announce()

    def change_operation(
        self,
        tenant: str,
        name: str,
        change: Callable[[bytes, bytes | None], tuple[bytes, bytes | None, bool] | None],
    ) -> bool:
        return self._store.change_operation(tenant, name, change)

    def export_student(self, tenant: str, student_id: str) -> Records:
        """Everything held of a student here (an export)."""
        return self._store.export_student(tenant, student_id)

    def erase_student(self, tenant: str, student_id: str, topics: Sequence[str]) -> int:
        """Delete everything held of a student here (rows, unsent announcements on
        `topics`, the cached mastery); how many rows and entries."""
        erased = self._store.erase_student(tenant, student_id, topics)
        self.forget([(tenant, student_id)])
        return erased

    def operation(self, tenant: str, name: str) -> OperationRecord | None:
        return self._store.operation(tenant, name)

    def operations(
        self, tenant: str, created_by: str | None, offset: int, limit: int
    ) -> list[OperationRecord]:
        return self._store.operations(tenant, created_by, offset, limit)

    def request_cancel(self, tenant: str, name: str) -> bool:
        return self._store.request_cancel(tenant, name)

    # -- reads ------------------------------------------------------------------------

    def profile(self, tenant: str, student_id: str) -> tuple[Student, Profile] | None:
        return self._store.profile(tenant, student_id)

    def update_profile(
        self,
        tenant: str,
        student_id: str,
        *,
        cohort: str,
        time_zone: str | None,
        display_name: str | None,
        precondition: Callable[[str, str], bool] | None = None,
    ) -> tuple[Student, Profile] | None:
        """Change a student's profile; None when `precondition` refuses (a stale etag).
        A new time zone moves their days: their mastery is recomputed in it (consistency
        and streaks count its days) and their history rebuilt."""
        changed = self._store.update_profile(
            tenant,
            student_id,
            cohort=cohort,
            time_zone=time_zone,
            display_name=display_name,
            precondition=precondition,
        )
        if changed is None:
            return None
        student, profile, moved = changed
        if moved:
            self.recalculate(tenant, [student_id])
        return student, profile

    def evidence(self, tenant: str, student_id: str, query: EvidenceQuery) -> list[EvidenceRow]:
        """A page of a student's evidence, newest first (none for a student without)."""
        return self._store.evidence(tenant, student_id, query)

    def student(self, tenant: str, student_id: str) -> Student:
        """The student of `tenant`, once they have any evidence (callers authorise
        first, through the roster, so nobody learns which ids exist)."""
        student = self._store.student(tenant, student_id)
        if student is None:
            raise NotFound(
                f"students/{student_id} has no mastery yet", metadata={"student": student_id}
            )
        return student

    def mastery(self, tenant: str, student: Student) -> MasteryView:
        return self._store.mastery_view(tenant, student, self._clock())

    def cohort(
        self,
        principal: Principal,
        cohort: str,
        *,
        order_by: str,
        band: int,
        offset: int,
        limit: int,
    ) -> tuple[list[CohortRow], int]:
        principal.require_cohort(cohort)
        return self._store.cohort_page(
            principal.tenant, cohort, order_by=order_by, band=band, offset=offset, limit=limit
        )

    def history(
        self,
        tenant: str,
        student: Student,
        *,
        topic: int,
        start: date,
        end: date,
        granularity: Granularity,
    ) -> tuple[list[HistoryPoint], Summary]:
        snapshots, before = self._store.daily_history(tenant, student.student_id, topic, start, end)
        points = aggregate(snapshots, start, end, granularity, before)
        return points, summarise(points)
