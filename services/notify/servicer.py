"""NotifyService: validate (each bad field named), authorise on the decoded message, call
the engine, encode. It is served by the kit's asyncio server (docs/adr/0003): the unary
methods are plain functions the server runs on its worker threads; StreamUpdates is a
coroutine that walks the replica's hub (services/notify/hub.py).

Every call acts in `principal.tenant` (the token's tenant, or the one an operator
named): the engine is asked in it, and a stream's audience and cursor belong to it.
Cohort names mean something only there: a teacher of "c1" reads their own school's
"c1", and another school's alert is NOT_FOUND (it does not exist in the caller's
tenant), never PERMISSION_DENIED (which would say it exists)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.auth import Principal, Role
from services.kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Validator,
)
from services.kit.interceptors import current_principal
from services.kit.names import check_name
from services.kit.pagination import next_page_token, parse_page
from services.kit.roster import Roster
from services.notify.convert import encode_alert, heartbeat
from services.notify.domain.model import AlertFilter, Intervention, Kind, Order, Severity, State
from services.notify.engine import NotifyEngine
from services.notify.hub import Audience, Beat, Hub, StreamOverflowError, follow
from services.notify.updates import CursorExpiredError, UpdateLog

ALL_COHORTS = "-"
MAX_TITLE_CHARS = 200
MAX_DETAIL_CHARS = 4000
MAX_NOTE_CHARS = 2000
MAX_ETAG_CHARS = 64
ORDERS = {"": Order.NEWEST, "create_time desc": Order.NEWEST, "severity desc": Order.MOST_SEVERE}
ALERT = notify_pb2.Alert
MAX_CURSOR_DIGITS = 18


class CursorExpired(FailedPrecondition):
    reason = "CURSOR_EXPIRED"


class StreamOverflow(ResourceExhausted):
    reason = "STREAM_OVERFLOW"


@dataclass(frozen=True, slots=True)
class Streams:
    """What StreamUpdates needs: the replica's hub, the update log, the heartbeat."""

    hub: Hub
    log: UpdateLog
    heartbeat_seconds: float = 15.0


def _staff() -> Principal:
    """Alerts are for teachers and admins (and operators, as admins of the tenant they
    act in); a student may not list or read them."""
    principal = current_principal()
    principal.require_role(Role.TEACHER, Role.ADMIN)
    return principal


def _check_etag(checks: Validator, etag: str) -> None:
    checks.check(len(etag) <= MAX_ETAG_CHARS, "etag", "is not an etag of this service")


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, engine: NotifyEngine, roster: Roster, streams: Streams) -> None:
        self._engine = engine
        self._roster = roster
        self._streams = streams

    async def StreamUpdates(
        self, request: notify_pb2.StreamUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notify_pb2.Update]:
        # A coroutine on the server's event loop (docs/adr/0003); the checks read the
        # database, so they run on a worker thread.
        audience, after = await asyncio.to_thread(self._subscription, request)
        walk = follow(
            self._streams.hub,
            audience,
            after,
            self._streams.log.replay,
            heartbeat=self._streams.heartbeat_seconds,
        )
        try:
            async for item in walk:  # a cancelled call cancels the walk, which unsubscribes
                if isinstance(item, Beat):
                    yield heartbeat(item.position, datetime.now(UTC))
                else:
                    yield item.payload  # type: ignore[misc]
        except StreamOverflowError as exc:
            raise StreamOverflow(
                str(exc),
                metadata={"cursor": str(exc.position), "limit": str(exc.capacity)},
                retry_after=1.0,
            ) from None
        finally:
            await walk.aclose()

    def _subscription(
        self, request: notify_pb2.StreamUpdatesRequest
    ) -> tuple[Audience, int | None]:
        """Whom the stream is for and where it resumes (None: from now), checked."""
        checks = Validator()
        students = request.subscriber.startswith("students/")
        pattern = "students/*" if students else "cohorts/*"
        (subscriber,) = check_name(checks, request.subscriber, pattern, "subscriber")
        cursor = request.cursor
        fits = cursor.isascii() and cursor.isdigit() and len(cursor) <= MAX_CURSOR_DIGITS
        checks.check(not cursor or fits, "cursor", "is not a cursor of this service")
        checks.raise_if_invalid()

        principal = current_principal()
        tenant = principal.tenant
        if students:
            # A student's own stream: that student, or an admin (teachers follow their
            # cohorts' streams).
            principal.require_acting_as(subscriber)
            audience = Audience.student(tenant, subscriber)
        else:
            principal.require_role(Role.TEACHER, Role.ADMIN)
            if subscriber == ALL_COHORTS:
                cohorts = None if principal.tenant_wide else frozenset(principal.cohorts)
            else:
                principal.require_cohort(subscriber)
                cohorts = frozenset({subscriber})
            audience = Audience.of_cohorts(tenant, cohorts)
        if not cursor:
            return audience, None
        after = int(cursor)  # a position in the tenant's own log
        try:
            self._streams.log.check_cursor(tenant, after)
        except CursorExpiredError as exc:
            raise CursorExpired(
                f"{exc}: reload, then stream without a cursor", metadata={"cursor": cursor}
            ) from None
        except ValueError as exc:
            raise InvalidArgument([FieldViolation("cursor", str(exc))]) from None
        return audience, after

    def ListAlerts(
        self, request: notify_pb2.ListAlertsRequest, context: grpc.ServicerContext
    ) -> notify_pb2.ListAlertsResponse:
        checks = Validator()
        (cohort,) = check_name(checks, request.parent, "cohorts/*", "parent")
        checks.check(
            request.state == 0 or request.state in State._value2member_map_,
            "state",
            "is not an alert state",
        )
        checks.check(
            request.kind == 0 or request.kind in Kind._value2member_map_,
            "kind",
            "is not an alert kind",
        )
        student_id = ""
        if request.student:
            (student_id,) = check_name(checks, request.student, "students/*", "student")
        order_by = " ".join(request.order_by.lower().split())
        checks.check(
            order_by in ORDERS, "order_by", "must be `create_time desc` or `severity desc`"
        )
        query = f"{request.parent}|{request.state}|{request.kind}|{request.student}|{order_by}"
        try:
            page = parse_page(
                request.page_size, request.page_token, default=50, maximum=500, query=query
            )
        except InvalidArgument as exc:
            for violation in exc.violations:
                checks.add(violation.field, violation.description)
        checks.raise_if_invalid()

        principal = _staff()
        cohorts: tuple[str, ...] | None
        if cohort == ALL_COHORTS:
            cohorts = None if principal.tenant_wide else principal.cohorts
        else:
            principal.require_cohort(cohort)
            cohorts = (cohort,)
        alerts, total = self._engine.list(
            principal.tenant,
            AlertFilter(
                cohorts=cohorts,
                state=State(request.state) if request.state else None,
                kind=Kind(request.kind) if request.kind else None,
                student_id=student_id,
                order=ORDERS[order_by],
            ),
            page.offset,
            page.size,
        )
        return notify_pb2.ListAlertsResponse(
            alerts=[encode_alert(a) for a in alerts],
            next_page_token=next_page_token(page, total, query),
        )

    def GetAlert(
        self, request: notify_pb2.GetAlertRequest, context: grpc.ServicerContext
    ) -> notify_pb2.Alert:
        checks = Validator()
        cohort, alert_id = check_name(checks, request.name, "cohorts/*/alerts/*", "name")
        checks.raise_if_invalid()
        principal = _staff()
        principal.require_cohort(cohort)  # before any lookup: nothing leaks
        return encode_alert(self._engine.get(principal.tenant, cohort, alert_id))

    def CreateAlert(
        self, request: notify_pb2.CreateAlertRequest, context: grpc.ServicerContext
    ) -> notify_pb2.Alert:
        checks = Validator()
        (cohort,) = check_name(checks, request.parent, "cohorts/*", "parent")
        checks.check(cohort != ALL_COHORTS, "parent", "must name one cohort, not `cohorts/-`")
        given = request.alert
        checks.check(request.HasField("alert"), "alert", "is required")
        student_id = ""
        if given.student:
            (student_id,) = check_name(checks, given.student, "students/*", "alert.student")
        else:
            checks.add("alert.student", "is required")
        checks.check(
            given.kind == ALERT.KIND_INTERVENTION,
            "alert.kind",
            "must be KIND_INTERVENTION (other kinds are detected, not made by hand)",
        )
        title = given.title.strip()
        checks.check(bool(title), "alert.title", "is required")
        checks.check(
            len(title) <= MAX_TITLE_CHARS and "\n" not in title,
            "alert.title",
            f"must be one line of at most {MAX_TITLE_CHARS} characters",
        )
        checks.check(
            len(given.detail) <= MAX_DETAIL_CHARS,
            "alert.detail",
            f"must be at most {MAX_DETAIL_CHARS} characters",
        )
        checks.check(
            given.severity == 0 or given.severity in Severity._value2member_map_,
            "alert.severity",
            "is not a severity",
        )
        checks.raise_if_invalid()

        principal = _staff()
        principal.require_cohort(cohort)
        # A teacher flags students of their cohorts; the alert goes to the student's
        # cohort now (the roster's word), which must be the one named.
        now_in = self._roster.require_readable(principal, student_id)
        if now_in and now_in != cohort:
            raise InvalidArgument(
                [FieldViolation("parent", f"students/{student_id} is not in cohorts/{cohort}")]
            )
        alert = self._engine.create(
            principal.tenant,
            Intervention(
                student_id=student_id,
                cohort=cohort,
                title=title,
                detail=given.detail,
                severity=Severity(given.severity) if given.severity else Severity.MEDIUM,
                created_by=principal.subject,
            ),
        )
        return encode_alert(alert)

    def AcknowledgeAlert(
        self, request: notify_pb2.AcknowledgeAlertRequest, context: grpc.ServicerContext
    ) -> notify_pb2.Alert:
        checks = Validator()
        cohort, alert_id = check_name(checks, request.name, "cohorts/*/alerts/*", "name")
        _check_etag(checks, request.etag)
        checks.raise_if_invalid()
        principal = _staff()
        principal.require_cohort(cohort)
        return encode_alert(
            self._engine.acknowledge(
                principal.tenant, cohort, alert_id, by=principal.subject, etag=request.etag
            )
        )

    def ResolveAlert(
        self, request: notify_pb2.ResolveAlertRequest, context: grpc.ServicerContext
    ) -> notify_pb2.Alert:
        checks = Validator()
        cohort, alert_id = check_name(checks, request.name, "cohorts/*/alerts/*", "name")
        _check_etag(checks, request.etag)
        checks.check(
            len(request.resolution_note) <= MAX_NOTE_CHARS,
            "resolution_note",
            f"must be at most {MAX_NOTE_CHARS} characters",
        )
        checks.raise_if_invalid()
        principal = _staff()
        principal.require_cohort(cohort)
        return encode_alert(
            self._engine.resolve(
                principal.tenant,
                cohort,
                alert_id,
                by=principal.subject,
                note=request.resolution_note.strip(),
                etag=request.etag,
            )
        )
