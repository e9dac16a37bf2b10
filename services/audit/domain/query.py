"""ListAuditEvents: its filters and its pages.

Pages are by position, not offset: the trail grows at the top (newest first) while a
client pages through it, so an offset would show some events twice. A page token holds
the position of the last event of the previous page (its time in microseconds and its
id) and a fingerprint of the filters; the next page starts right after that position.

A token is what a client sends back, so it is parsed as untrusted input, as in
services/kit/pagination.py: short, one flat JSON object with exactly an integer time
within bounds, an id of the stored shape and the fingerprint. Anything else is a
violation on `page_token`. A crafted valid token only moves where the caller's own
tenant's listing starts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.audit.domain.records import EVENT_ID

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TOKEN_LENGTH = 200
MAX_ID_LENGTH = 256
STUDENT_PREFIX = "students/"
# `/package.Service/Method` (the leading slash may be left out in a filter).
METHOD = re.compile(r"/[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[^/\s\x00-\x1f\x7f]+")
# A token's subject may be any text (an identity provider's URL, an e-mail address).
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z

Violation = tuple[str, str]  # (field, description), as google.rpc.BadRequest has them


@dataclass(frozen=True, slots=True)
class Filters:
    """What ListAuditEvents narrows to; None: any."""

    student: str | None = None  # a student id
    actor: str | None = None  # a subject
    method: str | None = None  # `/package.Service/Method`
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive

    def fingerprint(self) -> str:
        """Identifies the filters: a page token made for others is refused."""
        parts = (
            self.student or "",
            self.actor or "",
            self.method or "",
            "" if self.start is None else str(micros(self.start)),
            "" if self.end is None else str(micros(self.end)),
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: its last event's time and id (the order is time, then id,
    both descending)."""

    event_time: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class Query:
    filters: Filters
    size: int
    after: Position | None = None


def micros(when: datetime) -> int:
    """Microseconds since the epoch (what Postgres keeps of a timestamptz)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and _ID.fullmatch(value) is not None


def check_query(
    *,
    student: str,
    actor: str,
    method: str,
    start: datetime | None,
    end: datetime | None,
    page_size: int,
    page_token: str,
) -> tuple[Query | None, list[Violation]]:
    """The query a request asks for, or the violations of every bad field."""
    bad: list[Violation] = []
    student_id: str | None = None
    if student:
        student_id = student.removeprefix(STUDENT_PREFIX)
        if student_id == "-" or not _id(student_id):
            bad.append(("student", "must be students/{student} (or a student id)"))
    if actor and (len(actor) > MAX_ID_LENGTH or not _SUBJECT.fullmatch(actor)):
        bad.append(("actor", "must be a user id (a token's subject)"))
    full_method: str | None = None
    if method:
        full_method = method if method.startswith("/") else f"/{method}"
        if len(full_method) > MAX_ID_LENGTH or not METHOD.fullmatch(full_method):
            bad.append(("method", "must be a gRPC method: /package.Service/Method"))
    if start is not None and end is not None and start >= end:
        bad.append(("end_time", "must be after start_time"))
    if page_size < 0:
        bad.append(("page_size", "must not be negative"))
    filters = Filters(
        student=student_id, actor=actor or None, method=full_method, start=start, end=end
    )
    after: Position | None = None
    if page_token:
        after = parse_token(page_token, filters)
        if after is None:
            bad.append(("page_token", "is not a token from a previous response to this query"))
    if bad:
        return None, bad
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return Query(filters=filters, size=size, after=after), []


def page_token(position: Position, filters: Filters) -> str:
    raw = json.dumps(
        {"t": micros(position.event_time), "i": position.event_id, "q": filters.fingerprint()},
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_token(token: str, filters: Filters) -> Position | None:
    """The position a token holds, or None when it is not one this query made."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        return None
    if not isinstance(decoded, dict) or set(decoded) != {"t", "i", "q"}:
        return None
    at, event_id, fingerprint = decoded["t"], decoded["i"], decoded["q"]
    valid = (
        type(at) is int  # bool is not a time
        and 0 <= at <= _MAX_MICROS
        and isinstance(event_id, str)
        and EVENT_ID.fullmatch(event_id) is not None
        and fingerprint == filters.fingerprint()
    )
    return Position(from_micros(at), event_id) if valid else None


def next_page(rows: list[Position], size: int, filters: Filters) -> str:
    """The next page's token, given the positions of up to `size + 1` rows fetched
    (one more than the page, to know whether another page follows)."""
    if len(rows) <= size:
        return ""
    return page_token(rows[size - 1], filters)
