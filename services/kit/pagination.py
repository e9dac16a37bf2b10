"""AIP-158 pagination: page_size defaults and maxima, opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from services.kit.errors import Validator


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
        try:
            decoded = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"=="))
            offset = int(decoded["o"])
            if offset < 0 or decoded["q"] != _fingerprint(query):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            checks.add("page_token", "is not a token from a previous response to this query")
    checks.raise_if_invalid()
    size = default if page_size == 0 else min(page_size, maximum)
    return Page(offset=offset, size=size)


def next_page_token(page: Page, total: int, query: str = "") -> str:
    end = page.offset + page.size
    if end >= total:
        return ""
    raw = json.dumps({"o": end, "q": _fingerprint(query)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
