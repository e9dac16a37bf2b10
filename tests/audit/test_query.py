"""ListAuditEvents filters and pages (services/audit/domain/query.py): every bad field
named at once, and page tokens that hold a position, parsed as untrusted input."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.audit.domain.query import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Filters,
    Position,
    Query,
    check_query,
    micros,
    next_page,
    page_token,
    parse_token,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT_ID = "0123456789abcdef0123456789abcdef"


def query(**fields: object) -> tuple[Query | None, list[tuple[str, str]]]:
    given: dict[str, object] = {
        "student": "",
        "actor": "",
        "method": "",
        "start": None,
        "end": None,
        "page_size": 0,
        "page_token": "",
        **fields,
    }
    return check_query(**given)  # type: ignore[arg-type]


def test_no_filters_is_the_first_page_of_everything() -> None:
    found, bad = check_query(
        student="", actor="", method="", start=None, end=None, page_size=0, page_token=""
    )
    assert bad == []
    assert found is not None
    assert found.filters == Filters()
    assert (found.size, found.after) == (DEFAULT_PAGE_SIZE, None)


def test_page_size_is_capped() -> None:
    found, _ = check_query(
        student="", actor="", method="", start=None, end=None, page_size=10_000, page_token=""
    )
    assert found is not None and found.size == MAX_PAGE_SIZE


@pytest.mark.parametrize("student", ["students/alice", "alice"])
def test_a_student_by_name_or_id(student: str) -> None:
    found, bad = check_query(
        student=student, actor="", method="", start=None, end=None, page_size=0, page_token=""
    )
    assert bad == [] and found is not None
    assert found.filters.student == "alice"


@pytest.mark.parametrize(
    "method",
    [
        "/learnflow.mastery.v1.MasteryService/GetMastery",
        "learnflow.mastery.v1.MasteryService/GetMastery",
    ],
)
def test_a_method_with_or_without_its_slash(method: str) -> None:
    found, bad = check_query(
        student="", actor="t1", method=method, start=T0, end=None, page_size=5, page_token=""
    )
    assert bad == [] and found is not None
    assert found.filters == Filters(
        actor="t1", method="/learnflow.mastery.v1.MasteryService/GetMastery", start=T0
    )


def test_every_bad_field_is_named_at_once() -> None:
    found, bad = check_query(
        student="students/-",
        actor="t\x071",
        method="GetMastery",
        start=T0,
        end=T0 - timedelta(seconds=1),
        page_size=-1,
        page_token="garbage",
    )
    assert found is None
    assert [field for field, _ in bad] == [
        "student",
        "actor",
        "method",
        "end_time",
        "page_size",
        "page_token",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("student", "students/a/b"),
        ("student", "students/"),
        ("student", "x" * 300),
        ("actor", "a\tb"),
        ("actor", "x" * 300),
        ("actor", "a\x00b"),
        ("method", "/a/b/c"),
        ("method", "/1pkg.S/M"),
    ],
)
def test_bad_filters(field: str, value: str) -> None:
    found, bad = query(**{field: value})
    assert found is None
    assert [f for f, _ in bad] == [field]


def test_an_actor_may_be_any_subject() -> None:
    found, bad = query(actor="https://idp.example/users/7")
    assert bad == [] and found is not None
    assert found.filters.actor == "https://idp.example/users/7"


def test_equal_start_and_end_is_an_empty_range_refused() -> None:
    _, bad = query(start=T0, end=T0)
    assert [f for f, _ in bad] == ["end_time"]


def test_a_token_resumes_after_the_last_event_of_the_page() -> None:
    filters = Filters(actor="t1")
    position = Position(T0 + timedelta(microseconds=7), EVENT_ID)
    token = page_token(position, filters)
    assert parse_token(token, filters) == position
    found, bad = query(actor="t1", page_token=token)
    assert bad == [] and found is not None
    assert found.after == position


def test_a_token_for_other_filters_is_refused() -> None:
    token = page_token(Position(T0, EVENT_ID), Filters(actor="t1"))
    assert parse_token(token, Filters(actor="t2")) is None
    assert parse_token(token, Filters(actor="t1", student="alice")) is None
    _, bad = query(actor="t2", page_token=token)
    assert [f for f, _ in bad] == ["page_token"]


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "payload",
    [
        {"t": True, "i": EVENT_ID, "q": Filters().fingerprint()},
        {"t": 1.5, "i": EVENT_ID, "q": Filters().fingerprint()},
        {"t": -1, "i": EVENT_ID, "q": Filters().fingerprint()},
        {"t": 10**30, "i": EVENT_ID, "q": Filters().fingerprint()},
        {"t": 1, "i": "../../etc", "q": Filters().fingerprint()},
        {"t": 1, "i": 7, "q": Filters().fingerprint()},
        {"t": 1, "i": EVENT_ID, "q": Filters().fingerprint(), "x": 1},
        {"t": {"nested": 1}, "i": EVENT_ID, "q": Filters().fingerprint()},
        [1, 2, 3],
    ],
)
def test_crafted_tokens_are_refused(payload: object) -> None:
    assert parse_token(_token(payload), Filters()) is None


def test_overlong_and_undecodable_tokens_are_refused() -> None:
    assert parse_token("A" * 500, Filters()) is None
    assert parse_token("%%%", Filters()) is None
    assert parse_token(_token("1" * 10), Filters()) is None


def test_next_page_only_when_more_rows_came_back_than_the_page_holds() -> None:
    rows = [Position(T0 - timedelta(seconds=i), f"{i:032x}") for i in range(4)]
    assert next_page(rows[:3], 3, Filters()) == ""
    token = next_page(rows, 3, Filters())
    assert parse_token(token, Filters()) == rows[2]


def test_times_are_kept_to_the_microsecond() -> None:
    assert micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
