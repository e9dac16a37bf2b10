"""Keys from the identity provider: TokenVerifier over a JWKS URL (UrlKeySource).

A real HTTP server on loopback plays the IdP (tests/support/jwks_server.py): it serves
the keys a test names and counts the requests it gets, so the tests count fetches
where they happen.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from services.kit import devtokens
from services.kit.auth import (
    FileKeySource,
    Principal,
    TokenVerifier,
    UrlKeySource,
    cache_max_age,
)
from services.kit.config import Settings
from services.kit.errors import Unauthenticated
from tests.support.jwks_server import JwksServer, jwks_server

STORM = 200


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with jwks_server() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(jwks_path=tmp_path / "jwks.json")


@pytest.fixture
def key_a() -> ec.EllipticCurvePrivateKey:
    return devtokens.generate_foreign_key()


@pytest.fixture
def key_b() -> ec.EllipticCurvePrivateKey:
    return devtokens.generate_foreign_key()


Sign = Callable[..., str]


@pytest.fixture
def sign(settings: Settings) -> Sign:
    """A bearer header for a fresh token (own subject: never served from the cache)
    signed by `key`, naming `kid` (default: the key's own)."""

    def make(key: ec.EllipticCurvePrivateKey, kid: str | None = None, sub: str = "") -> str:
        claims = devtokens.build_claims(
            sub or f"u-{uuid.uuid4().hex[:8]}", "student", settings=settings
        )
        return "Bearer " + devtokens.encode_claims(claims, signing_key=key, kid=kid)

    return make


Make = Callable[..., TokenVerifier]


@pytest.fixture
def make_verifier(idp: JwksServer, settings: Settings) -> Iterator[Make]:
    sources: list[UrlKeySource] = []

    def make(cache_seconds: float = 300.0, refresh_min_seconds: float = 60.0) -> TokenVerifier:
        source = UrlKeySource(
            idp.url,
            cache_seconds=cache_seconds,
            refresh_min_seconds=refresh_min_seconds,
            timeout_seconds=2.0,
        )
        sources.append(source)
        return TokenVerifier(source, settings.jwt_issuer, settings.jwt_audience)

    yield make
    for source in sources:
        source.close()


def accepted(verifier: TokenVerifier, header: str) -> bool:
    try:
        verifier.verify(header)
    except Unauthenticated:
        return False
    return True


def eventually(probe: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `probe()` held (polled every 20 ms); fails after `timeout`."""
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def storm(verifier: TokenVerifier, header: str, callers: int = STORM) -> list[bool]:
    """`callers` threads verify `header` at the same moment; who was accepted."""
    barrier = threading.Barrier(callers)

    def one(_: int) -> bool:
        barrier.wait()
        return accepted(verifier, header)

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(one, range(callers)))


# --- settings ----------------------------------------------------------------------------


def test_settings_a_jwks_url_wins_over_the_file(tmp_path: Path, idp: JwksServer) -> None:
    defaults = Settings(jwks_path=tmp_path / "jwks.json")
    assert defaults.jwks_url is None
    assert (defaults.jwks_cache_seconds, defaults.jwks_refresh_min_seconds) == (300, 30)
    assert isinstance(TokenVerifier.from_settings(defaults).source, FileKeySource)
    remote = Settings(jwks_path=tmp_path / "jwks.json", jwks_url=idp.url, jwks_cache_seconds=60)
    source = TokenVerifier.from_settings(remote).source
    assert isinstance(source, UrlKeySource)
    assert source.where == idp.url
    assert Settings(jwks_url="  ").jwks_url is None  # JWKS_URL= (empty): the file


@pytest.mark.parametrize(
    "change",
    [
        {"jwks_url": "ftp://idp.example/jwks"},
        {"jwks_url": "idp.example/jwks"},
        {"jwks_cache_seconds": 0},
        {"jwks_refresh_min_seconds": 0},
    ],
)
def test_settings_refuse_bad_jwks_values(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**change)  # type: ignore[arg-type]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWKS_URL", "https://idp.example/.well-known/jwks.json")
    monkeypatch.setenv("JWKS_CACHE_SECONDS", "120")
    monkeypatch.setenv("JWKS_REFRESH_MIN_SECONDS", "10")
    conf = Settings()
    assert conf.jwks_url == "https://idp.example/.well-known/jwks.json"
    assert (conf.jwks_cache_seconds, conf.jwks_refresh_min_seconds) == (120, 10)


# --- fetching and caching ----------------------------------------------------------------


def test_keys_are_fetched_once_and_cached(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a)
    verifier = make_verifier()
    principal = verifier.verify(sign(key_a, sub="alice"))
    assert principal.subject == "alice" and isinstance(principal, Principal)
    for _ in range(50):
        verifier.verify(sign(key_a))
    assert idp.count() == 1


def test_a_rotated_key_is_picked_up_at_once_through_its_unknown_kid(
    idp: JwksServer,
    make_verifier: Make,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(cache_seconds=300)  # the cache alone would wait 5 minutes
    verifier.verify(sign(key_a))
    idp.serve(key_a, key_b)  # the IdP rotates key B in and signs with it
    assert verifier.verify(sign(key_b, sub="bob")).subject == "bob"
    assert idp.count() == 2
    # Tokens of the key B now verify without any further fetch.
    for _ in range(20):
        verifier.verify(sign(key_b))
    assert idp.count() == 2


def test_a_rotated_key_is_picked_up_once_the_cache_expires(
    idp: JwksServer,
    make_verifier: Make,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(cache_seconds=0.5, refresh_min_seconds=60)
    verifier.verify(sign(key_a))
    # A made-up kid uses up the unknown-kid fetch for the next 60 s...
    assert not accepted(verifier, sign(devtokens.generate_foreign_key()))
    assert idp.count() == 2
    # ...so key B, rotated in now, is refused at first, without another fetch...
    idp.serve(key_a, key_b)
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(sign(key_b))
    assert idp.count() == 2
    # ...and accepted once the cached keys expire (no restart, no new verifier).
    waited = eventually(lambda: accepted(verifier, sign(key_b)))
    assert waited < 2.0
    assert idp.count() == 3


def test_due_keys_keep_serving_while_one_background_fetch_replaces_them(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(cache_seconds=0.2)
    verifier.verify(sign(key_a))
    time.sleep(0.3)
    idp.delay = 0.5  # a slow IdP: nobody waits for it while there are keys
    started = time.monotonic()
    results = storm(verifier, sign(key_a), callers=50)
    assert all(results)
    assert time.monotonic() - started < 0.45
    eventually(lambda: idp.count() == 2)
    time.sleep(0.6)
    assert idp.count() == 2  # one refresh for 50 callers


# --- unknown kids: one fetch, not a storm ------------------------------------------------


def test_concurrent_unknown_kid_calls_share_one_fetch(
    idp: JwksServer,
    make_verifier: Make,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(refresh_min_seconds=60)
    verifier.verify(sign(key_a))
    assert idp.count() == 1
    idp.serve(key_a, key_b)
    idp.delay = 0.2  # the fetch takes a while: the callers overlap it
    results = storm(verifier, sign(key_b))
    assert results == [True] * STORM  # everyone waited for the one fetch and got key B
    assert idp.count() == 2  # exactly one fetch for 200 callers


def test_a_storm_of_made_up_kids_costs_the_idp_one_fetch(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(refresh_min_seconds=60)
    verifier.verify(sign(key_a))
    idp.delay = 0.1
    forged = sign(devtokens.generate_foreign_key())
    assert storm(verifier, forged) == [False] * STORM
    assert idp.count() == 2
    # More waves while that fetch is recent: refused at once, no fetch at all.
    for _ in range(3):
        started = time.monotonic()
        assert storm(verifier, sign(devtokens.generate_foreign_key())) == [False] * STORM
        assert time.monotonic() - started < 2.0  # none waited for the (slow) IdP
    assert idp.count() == 2
    # Genuine tokens are unaffected throughout.
    assert accepted(verifier, sign(key_a))


def test_unknown_kid_fetches_are_spaced_by_refresh_min_seconds(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(refresh_min_seconds=0.5)
    verifier.verify(sign(key_a))
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < 1.6:
        assert not accepted(verifier, sign(devtokens.generate_foreign_key()))
        calls += 1
    # Hundreds of calls, one fetch per 0.5 s at most (the first one at once).
    assert calls > 100
    assert 2 <= idp.count() - 1 <= 4


# --- the IdP down, or never reached ------------------------------------------------------


@pytest.mark.parametrize("outage", ["503", "refused"])
def test_idp_down_keeps_verifying_with_the_last_good_keys(
    idp: JwksServer,
    make_verifier: Make,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(cache_seconds=0.2, refresh_min_seconds=0.3)
    verifier.verify(sign(key_a))
    if outage == "503":
        idp.fail(503)
    else:
        idp.stop()
    caplog.set_level(logging.WARNING, logger="learnflow.auth")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # well past the cache time, several retries
        assert verifier.verify(sign(key_a)) is not None
        time.sleep(0.01)
    warnings = [r for r in caplog.records if "last good keys" in r.getMessage()]
    assert warnings, caplog.text
    assert all(r.levelno == logging.WARNING for r in warnings)
    if outage == "503":
        assert "HTTP 503" in warnings[0].__dict__["error"]
        assert idp.count() <= 1 + 6  # retried every 0.3 s, not per call
    # A key rotated in while the IdP is down cannot be known: refused, clearly.
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(sign(key_b))
    # Back up: the next fetch brings key B.
    if outage == "refused":
        idp.start()
    idp.serve(key_a, key_b)
    eventually(lambda: accepted(verifier, sign(key_b)))


def test_no_keys_ever_fetched_is_unauthenticated_saying_why(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.fail(503)
    verifier = make_verifier(refresh_min_seconds=60)
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(sign(key_a))
    message = caught.value.message
    assert "no keys from the identity provider yet" in message
    assert idp.url in message and "HTTP 503" in message
    # Retried about once a second, not on every call.
    for _ in range(50):
        assert not accepted(verifier, sign(key_a))
    assert idp.count() == 1
    idp.serve(key_a)
    waited = eventually(lambda: accepted(verifier, sign(key_a)))
    assert 0.5 < waited < 2.0
    assert idp.count() == 2


def test_unreachable_idp_is_unauthenticated_not_an_error(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    verifier = make_verifier()
    idp.stop()  # nothing listens on its port
    with pytest.raises(Unauthenticated, match="no keys from the identity provider yet"):
        verifier.verify(sign(key_a))


def test_a_document_that_is_not_a_jwks_keeps_the_last_keys(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(cache_seconds=0.2, refresh_min_seconds=0.2)
    verifier.verify(sign(key_a))
    idp.serve()  # {"keys": []}: an IdP mid-deployment
    time.sleep(0.3)
    for _ in range(20):
        verifier.verify(sign(key_a))
        time.sleep(0.02)
    assert idp.count() >= 2  # it did look again, and kept the keys


# --- Cache-Control -----------------------------------------------------------------------


def _fetches_over(seconds: float, verifier: TokenVerifier, header: str, idp: JwksServer) -> int:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        verifier.verify(header)
        time.sleep(0.01)
    time.sleep(0.1)  # a background fetch just started is counted too
    return idp.count()


def test_a_shorter_max_age_from_the_idp_is_honoured(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a, cache_control="public, max-age=1")
    verifier = make_verifier(cache_seconds=300, refresh_min_seconds=0.1)
    fetches = _fetches_over(2.5, verifier, sign(key_a), idp)
    assert 3 <= fetches <= 4  # at 0 s, ~1 s, ~2 s; 300 s would have meant one


def test_a_longer_max_age_does_not_extend_the_configured_cache(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a, cache_control="max-age=86400")
    verifier = make_verifier(cache_seconds=0.5, refresh_min_seconds=0.1)
    assert 3 <= _fetches_over(1.3, verifier, sign(key_a), idp) <= 4


def test_no_cache_is_floored_at_refresh_min_seconds(
    idp: JwksServer, make_verifier: Make, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    idp.serve(key_a, cache_control="no-cache")
    verifier = make_verifier(cache_seconds=300, refresh_min_seconds=0.5)
    # Every call would fetch if no-cache were taken literally.
    assert 3 <= _fetches_over(1.3, verifier, sign(key_a), idp) <= 4


@pytest.mark.parametrize(
    ("header", "age"),
    [
        (None, None),
        ("", None),
        ("public", None),
        ("max-age=600", 600),
        ("public, max-age=15, must-revalidate", 15),
        ('max-age="30"', 30),
        ("max-age=oops", None),
        ("no-cache", 0),
        ("no-store, max-age=60", 0),
        ("max-age=-5", 0),
    ],
)
def test_cache_max_age(header: str | None, age: float | None) -> None:
    assert cache_max_age(header) == age


# --- removed keys --------------------------------------------------------------------------


def test_a_token_of_a_removed_key_is_refused_after_refresh(
    idp: JwksServer,
    make_verifier: Make,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
) -> None:
    idp.serve(key_a, key_b)
    verifier = make_verifier(cache_seconds=0.3, refresh_min_seconds=60)
    old = sign(key_a, sub="alice")
    assert verifier.verify(old).subject == "alice"  # and now a cached verification
    idp.serve(key_b)  # key A withdrawn (say, compromised)
    assert accepted(verifier, old)  # until the keys are fetched again
    waited = eventually(lambda: not accepted(verifier, old))
    assert waited < 2.0
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(old)
    assert accepted(verifier, sign(key_b))


def test_a_key_change_drops_cached_verifications_at_once(
    idp: JwksServer,
    make_verifier: Make,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
) -> None:
    idp.serve(key_a)
    verifier = make_verifier(cache_seconds=300, refresh_min_seconds=60)
    old = sign(key_a)
    verifier.verify(old)
    idp.serve(key_b)  # rotated: A out, B in at the same time
    verifier.verify(sign(key_b))  # its unknown kid fetches the new set...
    with pytest.raises(Unauthenticated):
        verifier.verify(old)  # ...which drops A's cached verification
    assert idp.count() == 2


# --- the file source (development) -----------------------------------------------------------


def test_the_file_source_reads_a_rotated_key_at_once_for_an_unknown_kid(
    tmp_path: Path,
    settings: Settings,
    sign: Sign,
    key_a: ec.EllipticCurvePrivateKey,
    key_b: ec.EllipticCurvePrivateKey,
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [devtokens.public_jwk(key_a)]}))
    verifier = TokenVerifier(path, settings.jwt_issuer, settings.jwt_audience)
    verifier.verify(sign(key_a))
    time.sleep(0.01)
    path.write_text(json.dumps({"keys": [devtokens.public_jwk(k) for k in (key_a, key_b)]}))
    assert accepted(verifier, sign(key_b))  # not a second later: now


def test_a_broken_jwks_file_keeps_the_last_keys(
    tmp_path: Path, settings: Settings, sign: Sign, key_a: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [devtokens.public_jwk(key_a)]}))
    verifier = TokenVerifier(path, settings.jwt_issuer, settings.jwt_audience)
    verifier.verify(sign(key_a))
    time.sleep(0.01)
    path.write_text('{"keys": [')  # half-written
    assert not accepted(verifier, sign(key_a, kid="unknown"))
    assert accepted(verifier, sign(key_a))
    fresh = tmp_path / "fresh.json"
    fresh.write_text("not json")
    with pytest.raises(Unauthenticated, match="not usable"):
        TokenVerifier(fresh, settings.jwt_issuer, settings.jwt_audience).verify(sign(key_a))
