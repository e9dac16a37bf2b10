"""Domain errors and their mapping to google.rpc.Status.

Domain code raises these plain exceptions; it never imports grpc. The error
interceptor turns them into a status with an ErrorInfo (UPPER_SNAKE reason, domain
learnflow.dev) and, for invalid arguments, a BadRequest naming every bad field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "learnflow.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: its path (e.g. ``page_size`` or ``submission.code``)."""

    field: str
    description: str


class LearnFlowError(Exception):
    """Base of every error a servicer may let escape; carries its status code."""

    code: int = code_pb2.INTERNAL
    reason: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code, message=self.message, details=self.details())


class InvalidArgument(LearnFlowError):
    """One or more request fields are invalid; each is named."""

    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_FIELDS"

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = list(violations)
        if not self.violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}")

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [*super().details(), packed]


class Unauthenticated(LearnFlowError):
    code = code_pb2.UNAUTHENTICATED
    reason = "TOKEN_INVALID"


class TokenMissing(Unauthenticated):
    reason = "TOKEN_MISSING"


class PermissionDenied(LearnFlowError):
    code = code_pb2.PERMISSION_DENIED
    reason = "ACCESS_DENIED"


class NotFound(LearnFlowError):
    code = code_pb2.NOT_FOUND
    reason = "RESOURCE_NOT_FOUND"


class AlreadyExists(LearnFlowError):
    code = code_pb2.ALREADY_EXISTS
    reason = "RESOURCE_ALREADY_EXISTS"


class FailedPrecondition(LearnFlowError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(LearnFlowError):
    """A concurrent change won: e.g. a stale etag (AIP-154). Read again, then retry."""

    code = code_pb2.ABORTED
    reason = "ETAG_MISMATCH"


class ResourceExhausted(LearnFlowError):
    """Over a limit. With `retry_after` (seconds) the status carries a RetryInfo and the
    interceptor adds `retry-after` metadata, which Envoy passes on as the HTTP header."""

    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        found = super().details()
        if self.retry_after is None:
            return found
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(self.retry_after, 0.0) * 1e9))
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return [*found, packed]

    def retry_after_header(self) -> str | None:
        """Whole seconds, at least 1 (RFC 9110 `Retry-After` takes an integer)."""
        if self.retry_after is None:
            return None
        return str(max(1, math.ceil(self.retry_after)))


class TooManyRequests(ResourceExhausted):
    """One caller is over their own fair share (as opposed to the whole service being busy)."""

    reason = "RATE_LIMITED"


class Unavailable(LearnFlowError):
    code = code_pb2.UNAVAILABLE
    reason = "DEPENDENCY_UNAVAILABLE"


class DeadlineExceeded(LearnFlowError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class NotImplementedYet(LearnFlowError):
    code = code_pb2.UNIMPLEMENTED
    reason = "NOT_IMPLEMENTED"


class Internal(LearnFlowError):
    code = code_pb2.INTERNAL
    reason = "INTERNAL_ERROR"


class Validator:
    """Collects field violations so a request reports every bad field at once."""

    def __init__(self) -> None:
        self._violations: list[FieldViolation] = []

    def check(self, ok: bool, field_path: str, description: str) -> None:
        if not ok:
            self._violations.append(FieldViolation(field_path, description))

    def add(self, field_path: str, description: str) -> None:
        self._violations.append(FieldViolation(field_path, description))

    def time(self, stamp: timestamp_pb2.Timestamp | None, field_path: str) -> datetime | None:
        """An optional Timestamp field as an aware datetime (None: unset); one out of
        range is a violation."""
        if stamp is None:
            return None
        try:
            if not 0 <= stamp.nanos < 1_000_000_000:
                raise ValueError(stamp.nanos)
            return stamp.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            self.add(field_path, "must be a valid timestamp (years 1 to 9999)")
            return None

    @property
    def ok(self) -> bool:
        return not self._violations

    def raise_if_invalid(self) -> None:
        if self._violations:
            raise InvalidArgument(self._violations)


def grpc_code(status: status_pb2.Status) -> grpc.StatusCode:
    """The grpc.StatusCode enum member for a google.rpc code number."""
    for member in grpc.StatusCode:
        if member.value[0] == status.code:
            return member
    return grpc.StatusCode.UNKNOWN
