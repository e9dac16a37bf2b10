"""Configuration from the environment, and AIP-158 page tokens."""

from __future__ import annotations

import base64
import json

import pytest

from services.kit.config import ConfigError, load_settings
from services.kit.errors import InvalidArgument
from services.kit.pagination import Page, next_page_token, parse_page


def test_addresses_default_to_the_catalogue_and_follow_service_addr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MASTERY_ADDR", raising=False)
    settings = load_settings()
    assert settings.address_of("mastery") == "localhost:50057"
    monkeypatch.setenv("MASTERY_ADDR", "mastery.learnflow.svc:50057")
    assert settings.address_of("mastery") == "mastery.learnflow.svc:50057"
    with pytest.raises(KeyError):
        settings.address_of("billing")


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://cache")
    monkeypatch.setenv("SHUTDOWN_GRACE_SECONDS", "-3")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    for variable in ("REDIS_URL", "SHUTDOWN_GRACE_SECONDS", "LOG_LEVEL"):
        assert variable in message


def test_page_tokens_walk_a_collection_once() -> None:
    seen, token = [], ""
    while True:
        page = parse_page(4, token, default=50, maximum=100, query="topic=3")
        seen += list(range(page.offset, min(page.offset + page.size, 10)))
        token = next_page_token(page, total=10, query="topic=3")
        if not token:
            break
    assert seen == list(range(10))


def test_page_size_defaults_and_caps() -> None:
    assert parse_page(0, "", default=20, maximum=100).size == 20
    assert parse_page(1000, "", default=20, maximum=100).size == 100


def test_a_token_is_only_valid_for_its_own_query() -> None:
    token = next_page_token(parse_page(2, "", default=2, maximum=2, query="a"), 10, query="a")
    with pytest.raises(InvalidArgument) as caught:
        parse_page(2, token, default=2, maximum=2, query="b")
    assert [v.field for v in caught.value.violations] == ["page_token"]


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _token('{"o":1e400,"q":"%s"}'),  # a float that int() overflows on
        _token('{"o":9223372036854775808,"q":"%s"}'),  # 2^63: past Postgres' bigint
        _token('{"o":-1,"q":"%s"}'),
        _token('{"o":true,"q":"%s"}'),
        _token('{"o":"5","q":"%s"}'),
        _token('{"o":5,"q":"%s","x":1}'),
        _token("[" * 5000 + "]" * 5000),  # nesting deep enough for a RecursionError
        _token("[5]"),
        "not base64 at all!",
        "\x00",
        "é",
    ],
)
def test_a_crafted_page_token_is_a_named_bad_field(token: str) -> None:
    fingerprint = next_page_token(Page(0, 1), 10, query="q").encode()
    query_fp = json.loads(base64.urlsafe_b64decode(fingerprint + b"=="))["q"]
    with pytest.raises(InvalidArgument) as caught:
        parse_page(1, token.replace("%s", query_fp), default=2, maximum=2, query="q")
    assert [v.field for v in caught.value.violations] == ["page_token"]
