"""AIP-158 pagination: page_size defaults and maxima, opaque page tokens.

A token is what a client sends back, so it is parsed as untrusted input: short, one
flat JSON object of exactly an integer offset within bounds (or, for lists that grow
while they are paged, the position of the last item: a few short strings) and the
query fingerprint.
Anything else (a float like 1e400, 2^63, nesting, other types) is INVALID_ARGUMENT on
`page_token`, never a crash or a database error. A crafted valid token can only ask
for a page the caller may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from services.kit.errors import Validator

MAX_TOKEN_LENGTH = 128
MAX_OFFSET = 1_000_000_000  # far beyond any list here, far below Postgres' bigint


@dataclass(frozen=True, slots=True)
class Page:
    offset: int
    size: int


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def parse_page(
    page_size: int, page_token: str, *, default: int, maximum: int, query: str = ""
) -> Page:
    """Validate a request's page fields. `query` identifies the filters: a token made for
    one query is rejected for another (AIP-158: other fields must match)."""
    checks = Validator()
    checks.check(page_size >= 0, "page_size", "must not be negative")
    offset = 0
    if page_token:
        decoded = _offset_of(page_token, query)
        if decoded is None:
            checks.add("page_token", "is not a token from a previous response to this query")
        else:
            offset = decoded
    checks.raise_if_invalid()
    size = default if page_size == 0 else min(page_size, maximum)
    return Page(offset=offset, size=size)


def _offset_of(page_token: str, query: str) -> int | None:
    if len(page_token) > MAX_TOKEN_LENGTH:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"=="))
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        return None
    if not isinstance(decoded, dict) or set(decoded) != {"o", "q"}:
        return None
    offset = decoded["o"]
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:  # bool is not an offset
        return None
    return offset if decoded["q"] == _fingerprint(query) else None


def next_page_token(page: Page, total: int, query: str = "") -> str:
    end = page.offset + page.size
    if end >= total:
        return ""
    raw = json.dumps({"o": end, "q": _fingerprint(query)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_POSITION_TOKEN_LENGTH = 512
MAX_POSITION_PART = 300


def parse_position(
    page_size: int,
    page_token: str,
    *,
    default: int,
    maximum: int,
    query: str = "",
    parts: int,
) -> tuple[int, tuple[str, ...] | None]:
    """Validate the page fields of a list paged by position (keyset): the page size, and
    the position after which the page starts (None: the first page), of `parts`
    strings. A list that grows while it is paged (newest first) neither repeats nor
    skips an item, as offsets would."""
    checks = Validator()
    checks.check(page_size >= 0, "page_size", "must not be negative")
    position = None
    if page_token:
        position = _position_of(page_token, query, parts)
        if position is None:
            checks.add("page_token", "is not a token from a previous response to this query")
    checks.raise_if_invalid()
    return (default if page_size == 0 else min(page_size, maximum)), position


def _position_of(page_token: str, query: str, parts: int) -> tuple[str, ...] | None:
    if len(page_token) > MAX_POSITION_TOKEN_LENGTH:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"=="))
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        return None
    if not isinstance(decoded, dict) or set(decoded) != {"p", "q"}:
        return None
    position = decoded["p"]
    if (
        not isinstance(position, list)
        or len(position) != parts
        or not all(type(p) is str and len(p) <= MAX_POSITION_PART for p in position)
    ):
        return None
    return tuple(position) if decoded["q"] == _fingerprint(query) else None


def position_token(position: tuple[str, ...], query: str = "") -> str:
    """The token of the page after the item at `position`."""
    raw = json.dumps({"p": list(position), "q": _fingerprint(query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
