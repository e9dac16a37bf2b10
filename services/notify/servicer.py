"""NotifyService: validate (each bad field named), authorise on the decoded message, call
the engine, encode. StreamUpdates is not overridden: it answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.auth import Principal, Role
from services.kit.errors import FieldViolation, InvalidArgument, Validator
from services.kit.interceptors import current_principal
from services.kit.names import check_name
from services.kit.pagination import next_page_token, parse_page
from services.kit.roster import Roster
from services.notify.convert import encode_alert
from services.notify.domain.model import AlertFilter, Intervention, Kind, Order, Severity, State
from services.notify.engine import NotifyEngine

ALL_COHORTS = "-"
MAX_TITLE_CHARS = 200
MAX_DETAIL_CHARS = 4000
MAX_NOTE_CHARS = 2000
MAX_ETAG_CHARS = 64
ORDERS = {"": Order.NEWEST, "create_time desc": Order.NEWEST, "severity desc": Order.MOST_SEVERE}
ALERT = notify_pb2.Alert


def _staff() -> Principal:
    """Alerts are for teachers and admins; a student may not list or read them."""
    principal = current_principal()
    principal.require_role(Role.TEACHER, Role.ADMIN)
    return principal


def _check_etag(checks: Validator, etag: str) -> None:
    checks.check(len(etag) <= MAX_ETAG_CHARS, "etag", "is not an etag of this service")


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, engine: NotifyEngine, roster: Roster) -> None:
        self._engine = engine
        self._roster = roster

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
            cohorts = None if principal.role is Role.ADMIN else principal.cohorts
        else:
            principal.require_cohort(cohort)
            cohorts = (cohort,)
        alerts, total = self._engine.list(
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
        _staff().require_cohort(cohort)  # before any lookup: nothing leaks
        return encode_alert(self._engine.get(cohort, alert_id))

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
            Intervention(
                student_id=student_id,
                cohort=cohort,
                title=title,
                detail=given.detail,
                severity=Severity(given.severity) if given.severity else Severity.MEDIUM,
                created_by=principal.subject,
            )
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
            self._engine.acknowledge(cohort, alert_id, by=principal.subject, etag=request.etag)
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
                cohort,
                alert_id,
                by=principal.subject,
                note=request.resolution_note.strip(),
                etag=request.etag,
            )
        )
