"""What triage knows about a student before it answers: mastery (overall score, band,
the level to pitch answers at) and recent errors, fetched from the services that own
them with deadlines, cached for five minutes, dropped when their mastery changes.

A context is a tenant's student's: it is cached under the tenant and the student id (the
same id in two schools is two students), and fetched with the caller's token, so the
services that own it answer in the tenant the call acts in, which is the tenant of its
key. Invalidations come from events, each naming its student's tenant."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2
from learnflow.triage.v1 import triage_pb2

from services.kit.bus import (
    MASTERY_UPDATED,
    STRUGGLE_DETECTED,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    event_tenant,
)
from services.kit.cache import Cache
from services.kit.errors import PermissionDenied, Unavailable
from services.kit.export import Records, table_records
from services.kit.peers import BAND_TO_LEVEL
from services.kit.topics import Level

log = logging.getLogger("learnflow.triage.context")

CONTEXT_TTL_SECONDS = 300.0  # triage context 5 min


class MasteryUnavailableError(Exception):
    """The mastery engine could not answer (not: the student has no mastery yet)."""


# The student's mastery; None when they have none yet. Raises PermissionDenied when the
# caller may not see it and MasteryUnavailableError when the engine is away.
MasteryLookup = Callable[[str], mastery_pb2.Mastery | None]
RecentErrorsLookup = Callable[[str], Sequence[triage_pb2.RecentError]]


def cache_key(tenant: str, student_id: str) -> str:
    """The context's cache key. A tenant id has no ":" (auth.TENANT_ID), so the tenant and
    the student id cannot run together."""
    if not tenant:
        raise ValueError("a tenant is required")
    return f"triage:context:v2:{tenant}:{student_id}"


def no_recent_errors(student_id: str) -> Sequence[triage_pb2.RecentError]:
    del student_id
    return ()


class StudentContexts:
    def __init__(
        self,
        cache: Cache,
        mastery: MasteryLookup,
        recent_errors: RecentErrorsLookup = no_recent_errors,
    ) -> None:
        self._cache = cache
        self._mastery = mastery
        self._recent_errors = recent_errors

    def get(self, tenant: str, student_id: str) -> triage_pb2.StudentContext:
        """The context of `tenant`'s student, fetched (on a miss) with the current call's
        token: `tenant` must be the tenant that call acts in."""
        key = cache_key(tenant, student_id)
        cached = self._cache.get(key)
        if cached is not None:
            try:
                return triage_pb2.StudentContext.FromString(cached)
            except DecodeError:
                log.warning("unreadable cached context; refetching", extra={"key": key})
        context, complete = self._fetch(student_id)
        if complete:  # a context made while the engine was away is not kept
            self._cache.set(key, context.SerializeToString(), CONTEXT_TTL_SECONDS)
        return context

    def export_student(self, tenant: str, student_id: str) -> Records:
        """The student's context as cached now, if it is (an export)."""
        cached = self._cache.get(cache_key(tenant, student_id))
        if cached is None:
            return {"cached_contexts": []}
        return table_records(
            {"cached_contexts": [{"context": cached}]},
            messages={"cached_contexts.context": triage_pb2.StudentContext.FromString},
        )

    def confirm_readable(self, student_id: str) -> None:
        """Raises PermissionDenied unless the mastery engine shows the caller this
        student's mastery (it knows their class; triage does not)."""
        try:
            if self._mastery(student_id) is None:
                raise PermissionDenied(
                    f"students/{student_id} has no mastery record to confirm their class",
                    metadata={"student": student_id},
                )
        except MasteryUnavailableError as exc:
            raise Unavailable(f"cannot confirm access to students/{student_id}: {exc}") from None

    def invalidate(self, students: Sequence[tuple[str, str]]) -> None:
        """Drop the cached contexts of these (tenant, student id) pairs."""
        if students:
            self._cache.delete(*(cache_key(tenant, s) for tenant, s in students))

    def _fetch(self, student_id: str) -> tuple[triage_pb2.StudentContext, bool]:
        context = triage_pb2.StudentContext(name=f"students/{student_id}/context")
        complete = True
        try:
            mastery = self._mastery(student_id)
        except MasteryUnavailableError as exc:
            log.warning("mastery unavailable; assuming beginner", extra={"error": str(exc)})
            mastery, complete = None, False
        if mastery is None:
            # No evidence yet (or the engine is away): teach as to a beginner.
            context.level = common_pb2.LEVEL_BEGINNER
        else:
            context.mastery_score = mastery.score
            context.band = mastery.band
            level = BAND_TO_LEVEL.get(int(mastery.band), Level.BEGINNER)
            context.level = int(level)  # type: ignore[assignment]
        context.recent_errors.extend(self._recent_errors(student_id))
        context.fetch_time.FromDatetime(datetime.now(UTC))
        return context, complete


def invalidation_consumer(
    bus: Bus, contexts: StudentContexts, *, group_id: str, stall_seconds: float
) -> ConsumerLoop:
    """Drops a student's cached context when their mastery changes (mastery.updated) or
    they start struggling (struggle.detected: their recent errors changed). The context
    dropped is that of the student of the event's tenant; an event naming no tenant is
    dead-lettered (it cannot say whose context it is)."""

    def handle(batch: Sequence[Envelope]) -> None:
        students = []
        for envelope in batch:
            message = envelope.message
            if not isinstance(message, events_pb2.MasteryUpdated | events_pb2.StruggleDetected):
                raise PoisonEventError(
                    f"{envelope.record.event_type} does not belong on {envelope.record.topic}"
                )
            tenant = event_tenant(envelope.record, message.student.tenant)
            students.append((tenant, message.student.student_id))
        contexts.invalidate(sorted(set(students)))

    return ConsumerLoop(
        bus,
        group_id=group_id,
        topics=[MASTERY_UPDATED, STRUGGLE_DETECTED],
        handler=handle,
        stall_seconds=stall_seconds,
    )
