"""MasteryService and google.longrunning.Operations: decode, call the engine, encode.

GetMastery answers from the read cache (Redis, 1 h, dropped on every update) when it
can, after the caller is authorised through the roster like every student resource.
"""

from __future__ import annotations

import contextlib
import time
from datetime import date, datetime

import grpc
from google.api import httpbody_pb2
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.rpc import status_pb2
from google.type import date_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from services.kit.auth import Principal, Role
from services.kit.cache import Cache
from services.kit.consent import Consent, Purpose
from services.kit.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Validator,
)
from services.kit.interceptors import current_principal
from services.kit.names import check_name, check_update_mask, parse_name
from services.kit.pagination import (
    next_page_token,
    parse_page,
    parse_position,
    position_token,
)
from services.kit.roster import Roster
from services.mastery import convert
from services.mastery.domain.events import MAX_TOPIC, InvalidEventError
from services.mastery.domain.events import zone as time_zone_info
from services.mastery.domain.history import MAX_RANGE_DAYS, Granularity
from services.mastery.domain.records import COHORT_ORDERS, EvidenceQuery
from services.mastery.engine import MASTERY_CACHE_TTL_SECONDS, MasteryEngine, mastery_cache_key
from services.mastery.erasure import Erasures
from services.mastery.erasure import owner as erasure_owner
from services.mastery.export import ARCHIVE_CONTENT_TYPE, Exports
from services.mastery.recalculation import Recalculations

MAX_BAND = 4
# What UpdateStudent may change.
PROFILE_FIELDS = ("time_zone", "display_name")
MAX_DISPLAY_NAME = 100


def _date(value: date_pb2.Date, field: str, checks: Validator) -> date | None:
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        checks.add(field, "must be a valid calendar date")
        return None


class MasteryServicer(mastery_pb2_grpc.MasteryServiceServicer):
    def __init__(
        self,
        engine: MasteryEngine,
        cache: Cache,
        *,
        recalculations: Recalculations,
        erasures: Erasures,
        exports: Exports,
        consent: Consent,
        roster: Roster,
    ) -> None:
        self._engine = engine
        self._cache = cache
        self._recalculations = recalculations
        self._erasures = erasures
        self._exports = exports
        self._consent = consent
        self._roster = roster

    def GetMastery(
        self, request: mastery_pb2.GetMasteryRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.Mastery:
        (student_id,) = parse_name(request.name, "students/*/mastery", "name")
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        tenant = principal.tenant
        cached = self._cached(tenant, student_id)
        if cached is not None:
            return cached
        student = self._engine.student(tenant, student_id)
        message = convert.mastery(self._engine.mastery(tenant, student))
        with contextlib.suppress(Exception):  # a cache outage only costs speed
            self._cache.set(
                mastery_cache_key(tenant, student_id),
                message.SerializeToString(),
                MASTERY_CACHE_TTL_SECONDS,
            )
        return message

    def _cached(self, tenant: str, student_id: str) -> mastery_pb2.Mastery | None:
        try:
            raw = self._cache.get(mastery_cache_key(tenant, student_id))
        except Exception:  # a cache outage only costs speed
            return None
        return mastery_pb2.Mastery.FromString(raw) if raw is not None else None

    def ListCohortMasteries(
        self, request: mastery_pb2.ListCohortMasteriesRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.ListCohortMasteriesResponse:
        checks = Validator()
        (cohort,) = check_name(checks, request.cohort, "cohorts/*", "cohort")
        order_by = " ".join(request.order_by.lower().split()) or "name"
        order_by = order_by.replace(" asc", "")
        checks.check(
            order_by in COHORT_ORDERS,
            "order_by",
            f"must be one of {', '.join(sorted(COHORT_ORDERS))}",
        )
        checks.check(0 <= request.band <= MAX_BAND, "band", "is not a mastery band")
        checks.check(request.page_size >= 0, "page_size", "must not be negative")
        checks.raise_if_invalid()
        query = f"{cohort}|{order_by}|{request.band}"
        page = parse_page(
            request.page_size, request.page_token, default=50, maximum=500, query=query
        )
        rows, total = self._engine.cohort(
            current_principal(),
            cohort,
            order_by=order_by,
            band=request.band,
            offset=page.offset,
            limit=page.size,
        )
        return mastery_pb2.ListCohortMasteriesResponse(
            masteries=[convert.cohort_row(r) for r in rows],
            next_page_token=next_page_token(page, total, query),
            total_size=total,
        )

    def QueryMasteryHistory(
        self, request: mastery_pb2.QueryMasteryHistoryRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.QueryMasteryHistoryResponse:
        checks = Validator()
        (student_id,) = check_name(checks, request.name, "students/*/mastery", "name")
        start = _date(request.start_date, "start_date", checks)
        end = _date(request.end_date, "end_date", checks)
        if start and end:
            checks.check(end >= start, "end_date", "must not be before start_date")
            checks.check(
                (end - start).days < MAX_RANGE_DAYS,
                "end_date",
                f"the range may span at most {MAX_RANGE_DAYS} days",
            )
        checks.check(
            request.granularity in (1, 2, 3), "granularity", "must be DAILY, WEEKLY or MONTHLY"
        )
        checks.check(0 <= request.topic <= MAX_TOPIC, "topic", "is not a curriculum topic")
        checks.raise_if_invalid()
        assert start is not None and end is not None
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        student = self._engine.student(principal.tenant, student_id)
        points, summary = self._engine.history(
            principal.tenant,
            student,
            topic=int(request.topic),
            start=start,
            end=end,
            granularity=Granularity(request.granularity),
        )
        return convert.history(points, summary)

    def RecalculateMastery(
        self, request: mastery_pb2.RecalculateMasteryRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        principal = current_principal()
        scope = request.WhichOneof("scope")
        checks = Validator()
        checks.check(scope is not None, "scope", "set exactly one of cohort or all_students")
        if scope == "all_students":
            checks.check(request.all_students, "all_students", "must be true when set")
        checks.raise_if_invalid()
        cohort: str | None = None
        if scope == "cohort":
            (cohort,) = parse_name(request.cohort, "cohorts/*", "cohort")
            principal.require_cohort(cohort)
        else:
            principal.require_role(Role.ADMIN)
        name = self._recalculations.start(principal.tenant, cohort, principal.subject)
        return _operation(self._engine, name, principal)

    def EraseStudentData(
        self, request: mastery_pb2.EraseStudentDataRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        (student_id,) = parse_name(request.name, "students/*", "name")
        principal = current_principal()
        principal.require_acting_as(student_id)
        if request.validate_only:
            preview = self._erasures.preview(principal.tenant, student_id)
            return operations_pb2.Operation(done=True, metadata=any_pb2.Any.FromString(preview))
        name = self._erasures.start(principal.tenant, student_id, principal.subject)
        return _operation(self._engine, name, principal)

    def ListEvidence(
        self, request: mastery_pb2.ListEvidenceRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.ListEvidenceResponse:
        checks = Validator()
        (student_id,) = check_name(checks, request.parent, "students/*", "parent")
        checks.check(0 <= request.topic <= MAX_TOPIC, "topic", "is not a curriculum topic")
        checks.check(
            request.component in mastery_pb2.Component.values(), "component", "is not a component"
        )
        start = checks.time(
            request.start_time if request.HasField("start_time") else None, "start_time"
        )
        end = checks.time(request.end_time if request.HasField("end_time") else None, "end_time")
        checks.check(
            start is None or end is None or start < end, "end_time", "must be after start_time"
        )
        checks.raise_if_invalid()
        # A token is for this list only: the same student and filters.
        filters = f"{student_id}|{request.topic}|{request.component}|{start}|{end}"
        size, position = parse_position(
            request.page_size,
            request.page_token,
            default=50,
            maximum=500,
            query=filters,
            parts=3,
        )
        after = None
        if position is not None:
            after = _evidence_position(position)
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        rows = self._engine.evidence(
            principal.tenant,
            student_id,
            EvidenceQuery(
                limit=size + 1,
                topic=request.topic or None,
                component=request.component or None,
                start=start,
                end=end,
                after=after,
            ),
        )
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = position_token(
                (last.occur_time.isoformat(), last.source, last.event_id), filters
            )
        return mastery_pb2.ListEvidenceResponse(
            evidence=[convert.evidence(r) for r in rows[:size]], next_page_token=token
        )

    def GetStudent(
        self, request: mastery_pb2.GetStudentRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.Student:
        (student_id,) = parse_name(request.name, "students/*", "name")
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        cohort = self._roster.cohort_of(principal.tenant, student_id)
        record = self._engine.profile(principal.tenant, student_id)
        if record is None and cohort is None:
            raise NotFound(f"students/{student_id} does not exist", metadata={"name": request.name})
        return convert.student(student_id, cohort or "", record)

    def UpdateStudent(
        self, request: mastery_pb2.UpdateStudentRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.Student:
        checks = Validator()
        given = request.student
        (student_id,) = check_name(checks, given.name, "students/*", "student.name")
        paths = check_update_mask(checks, request.update_mask.paths, PROFILE_FIELDS)
        if "time_zone" in paths:
            checks.check(
                _known_time_zone(given.time_zone),
                "student.time_zone",
                "must be an IANA time zone such as Europe/Paris",
            )
        if "display_name" in paths:
            checks.check(
                len(given.display_name) <= MAX_DISPLAY_NAME and given.display_name.isprintable(),
                "student.display_name",
                f"must be at most {MAX_DISPLAY_NAME} printable characters",
            )
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        etag = given.etag
        cohort = self._roster.cohort_of(principal.tenant, student_id) or ""
        updated = self._engine.update_profile(
            principal.tenant,
            student_id,
            cohort=cohort,
            time_zone=given.time_zone if "time_zone" in paths else None,
            display_name=given.display_name if "display_name" in paths else None,
            precondition=(lambda zone, name: convert.profile_etag(zone, name) == etag)
            if etag
            else None,
        )
        if updated is None:
            raise Aborted(
                f"students/{student_id} changed since etag {etag!r}: read it again",
                metadata={"name": given.name},
            )
        return convert.student(student_id, cohort, updated)

    def ExportStudentData(
        self, request: mastery_pb2.ExportStudentDataRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        checks = Validator()
        (student_id,) = check_name(checks, request.name, "students/*", "name")
        if request.guardian:
            check_name(checks, request.guardian, "guardians/*", "guardian")
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        if request.guardian:
            # Only the school knows a student's guardians: its admin acts for them.
            principal.require_role(Role.ADMIN)
        name = self._exports.start(
            principal.tenant, student_id, principal.subject, request.guardian
        )
        return _operation(self._engine, name, principal)

    def GetConsent(
        self, request: mastery_pb2.GetConsentRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.Consent:
        (student_id,) = parse_name(request.name, "students/*/consent", "name")
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        return self._consent_of(principal.tenant, student_id)

    def UpdateConsent(
        self, request: mastery_pb2.UpdateConsentRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.Consent:
        checks = Validator()
        (student_id,) = check_name(
            checks, request.consent.name, "students/*/consent", "consent.name"
        )
        fields = check_update_mask(checks, request.update_mask.paths, list(convert.CONSENT_FIELDS))
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        choices = _consent_choices(request.consent, fields)
        self._consent.record(principal.tenant, student_id, choices, principal.subject)
        return self._consent_of(principal.tenant, student_id)

    def GetConsentDefaults(
        self, request: mastery_pb2.GetConsentDefaultsRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.ConsentDefaults:
        (tenant,) = parse_name(request.name, "tenants/*/consentDefaults", "name")
        principal = _tenant_admin(tenant)
        return convert.consent_defaults(principal.tenant, self._consent.defaults(principal.tenant))

    def UpdateConsentDefaults(
        self, request: mastery_pb2.UpdateConsentDefaultsRequest, context: grpc.ServicerContext
    ) -> mastery_pb2.ConsentDefaults:
        checks = Validator()
        given = request.consent_defaults
        (tenant,) = check_name(
            checks, given.name, "tenants/*/consentDefaults", "consent_defaults.name"
        )
        fields = check_update_mask(checks, request.update_mask.paths, list(convert.CONSENT_FIELDS))
        checks.raise_if_invalid()
        principal = _tenant_admin(tenant)
        choices = _consent_choices(given, fields)
        self._consent.set_defaults(principal.tenant, choices, principal.subject)
        return convert.consent_defaults(principal.tenant, self._consent.defaults(principal.tenant))

    def _consent_of(self, tenant: str, student_id: str) -> mastery_pb2.Consent:
        return convert.consent(
            student_id,
            self._consent.decisions(tenant, student_id),
            self._consent.history(tenant, student_id),
        )

    def DownloadStudentDataExport(
        self,
        request: mastery_pb2.DownloadStudentDataExportRequest,
        context: grpc.ServicerContext,
    ) -> httpbody_pb2.HttpBody:
        student_id, _ = parse_name(request.name, "students/*/exports/*", "name")
        principal = current_principal()
        principal.require_acting_as(student_id)
        archive = self._exports.archive(principal.tenant, student_id, request.name)
        return httpbody_pb2.HttpBody(content_type=ARCHIVE_CONTENT_TYPE, data=archive)


def _known_time_zone(name: str) -> bool:
    if not name:
        return False
    try:
        time_zone_info(name)
    except InvalidEventError:
        return False
    return True


def _evidence_position(position: tuple[str, ...]) -> tuple[datetime, str, str]:
    """A page token's position (occur time, source, event id), checked: a token is the
    client's to send back, and may have been made up."""
    moment = None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(position[0])
    if moment is None or moment.tzinfo is None:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token from a previous response")]
        )
    return moment, position[1], position[2]


def _consent_choices(
    given: mastery_pb2.Consent | mastery_pb2.ConsentDefaults, fields: set[str]
) -> dict[Purpose, bool]:
    """The choices an update makes: purpose -> granted, for the fields its mask names."""
    return {convert.CONSENT_FIELDS[f]: getattr(given, f).granted for f in sorted(fields)}


def _tenant_admin(tenant: str) -> Principal:
    """The caller, when an admin of `tenant` (`-`: the tenant the call acts in), or an
    operator acting in it."""
    principal = current_principal()
    principal.require_role(Role.ADMIN)
    if tenant not in ("-", principal.tenant):
        raise PermissionDenied(
            f"tenants/{tenant} is not the tenant this call acts in", metadata={"tenant": tenant}
        )
    return principal


def _operation(
    engine: MasteryEngine, name: str, principal: Principal, exports: Exports | None = None
) -> operations_pb2.Operation:
    if exports is not None:
        exports.refresh(principal.tenant, name)
    record = engine.operation(principal.tenant, name)
    if record is None:
        raise NotFound(f"{name} does not exist", metadata={"name": name})
    if not principal.tenant_wide and record.created_by not in (
        principal.subject,
        erasure_owner(principal.tenant, principal.subject),
    ):
        raise PermissionDenied(f"{name} belongs to another user")
    operation = operations_pb2.Operation(
        name=name, done=record.done, metadata=any_pb2.Any.FromString(record.metadata)
    )
    if record.error_code is not None:
        operation.error.CopyFrom(
            status_pb2.Status(code=record.error_code, message=record.error_message or "")
        )
    elif record.done and record.response is not None:
        operation.response.CopyFrom(any_pb2.Any.FromString(record.response))
    return operation


class OperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """google.longrunning.Operations for the recalculations, erasures and exports this
    server coordinates."""

    def __init__(self, engine: MasteryEngine, exports: Exports) -> None:
        self._engine = engine
        self._exports = exports

    def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        parse_name(request.name, "operations/*", "name")
        return _operation(self._engine, request.name, current_principal(), self._exports)

    def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        principal = current_principal()
        mine = None if principal.tenant_wide else principal.subject
        page = parse_page(request.page_size, request.page_token, default=50, maximum=200)
        records = self._engine.operations(principal.tenant, mine, page.offset, page.size + 1)
        operations = [
            _operation(self._engine, r.name, principal, self._exports) for r in records[: page.size]
        ]
        more = len(records) > page.size
        return operations_pb2.ListOperationsResponse(
            operations=operations,
            next_page_token=next_page_token(page, page.offset + page.size + 1) if more else "",
        )

    def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        parse_name(request.name, "operations/*", "name")
        principal = current_principal()
        _operation(self._engine, request.name, principal, self._exports)  # exists, and is theirs
        self._engine.request_cancel(principal.tenant, request.name)
        return empty_pb2.Empty()

    def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        parse_name(request.name, "operations/*", "name")
        principal = current_principal()
        limit = (
            request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 30.0
        )
        remaining = context.time_remaining()
        if remaining is not None:
            limit = min(limit, max(0.0, remaining - 0.05))
        deadline = time.monotonic() + limit
        while True:
            operation = _operation(self._engine, request.name, principal, self._exports)
            if operation.done or time.monotonic() >= deadline:
                return operation
            time.sleep(0.1)
