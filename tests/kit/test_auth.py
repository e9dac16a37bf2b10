"""Identity: token verification (and its cache) and the access rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.kit import devtokens
from services.kit.auth import Principal, Role, TokenVerifier
from services.kit.config import Settings
from services.kit.errors import PermissionDenied, TokenMissing, Unauthenticated


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def local_settings(key_dir: Path) -> Settings:
    return Settings(jwks_path=key_dir / "jwks.json")


@pytest.fixture
def verifier(key_dir: Path, local_settings: Settings) -> TokenVerifier:
    devtokens.ensure_keys(key_dir=key_dir, settings=local_settings)
    return TokenVerifier(
        local_settings.jwks_path, local_settings.jwt_issuer, local_settings.jwt_audience
    )


def test_valid_token_gives_the_principal(
    verifier: TokenVerifier, key_dir: Path, local_settings: Settings
) -> None:
    token = devtokens.mint_token(
        "tess", "teacher", ["c1", "c2"], key_dir=key_dir, settings=local_settings
    )
    assert verifier.verify(f"Bearer {token}") == Principal("tess", Role.TEACHER, ("c1", "c2"))


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer not.a.jwt"])
def test_missing_or_malformed_authorization(verifier: TokenVerifier, header: str | None) -> None:
    expected = TokenMissing if not header else Unauthenticated
    with pytest.raises(expected):
        verifier.verify(header)


def test_cached_token_is_refused_once_expired(
    verifier: TokenVerifier, key_dir: Path, local_settings: Settings
) -> None:
    claims = devtokens.build_claims("alice", "student", settings=local_settings)
    claims["exp"] = int(time.time()) + 1
    token = devtokens.encode_claims(claims, key_dir=key_dir)
    assert verifier.verify(f"Bearer {token}").subject == "alice"  # now cached
    deadline = time.time() + 5
    while time.time() <= claims["exp"] and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(Unauthenticated):
        verifier.verify(f"Bearer {token}")


def test_rotating_the_jwks_drops_cached_verifications(
    verifier: TokenVerifier,
    key_dir: Path,
    local_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    token = devtokens.mint_token("alice", "student", key_dir=key_dir, settings=local_settings)
    assert verifier.verify(f"Bearer {token}").subject == "alice"
    # The identity provider rotates to a new key: old tokens must stop working.
    other = tmp_path_factory.mktemp("rotated")
    rotated = devtokens.ensure_keys(key_dir=other, settings=Settings(jwks_path=other / "jwks.json"))
    time.sleep(0.01)  # a distinct mtime
    local_settings.jwks_path.write_text(rotated.read_text())
    # The JWKS is re-read within RELOAD_SECONDS; from then on the old token is refused.
    deadline = time.monotonic() + TokenVerifier.RELOAD_SECONDS + 2
    refused = False
    while not refused and time.monotonic() < deadline:
        try:
            verifier.verify(f"Bearer {token}")
            time.sleep(0.05)
        except Unauthenticated:
            refused = True
    assert refused, "a token of a rotated-out key was still accepted"


STUDENT = Principal("alice", Role.STUDENT, ("c1",))
TEACHER = Principal("tess", Role.TEACHER, ("c1",))
ADMIN = Principal("root", Role.ADMIN)


@pytest.mark.parametrize(
    "principal,student,cohort,allowed",
    [
        (STUDENT, "alice", "c1", True),
        (STUDENT, "bob", "c1", False),  # same class, still not theirs
        (TEACHER, "bob", "c1", True),
        (TEACHER, "carol", "c2", False),
        (TEACHER, "dave", None, False),  # cohort unknown: no access
        (ADMIN, "anyone", None, True),
    ],
)
def test_student_access_rules(
    principal: Principal, student: str, cohort: str | None, allowed: bool
) -> None:
    assert principal.can_access_student(student, cohort) is allowed
    if allowed:
        principal.require_student(student, cohort)
    else:
        with pytest.raises(PermissionDenied):
            principal.require_student(student, cohort)


def test_cohort_rules() -> None:
    assert TEACHER.can_access_cohort("c1") and not TEACHER.can_access_cohort("c2")
    assert ADMIN.can_access_cohort("c2")
    assert not STUDENT.can_access_cohort("c1")


def test_a_token_for_another_audience_is_permission_denied(
    verifier: TokenVerifier, key_dir: Path, local_settings: Settings
) -> None:
    # Envoy answers 403 for a wrong audience; the services agree (not UNAUTHENTICATED).
    claims = devtokens.build_claims("alice", "student", settings=local_settings)
    claims["aud"] = "another-app"
    token = devtokens.encode_claims(claims, key_dir=key_dir)
    with pytest.raises(PermissionDenied) as caught:
        verifier.verify(f"Bearer {token}")
    assert "audience" in caught.value.message


def test_the_token_names_the_tenant_the_call_acts_in(
    verifier: TokenVerifier, key_dir: Path, local_settings: Settings
) -> None:
    token = devtokens.mint_token(
        "tess", "teacher", ["c1"], tenant="school-a", key_dir=key_dir, settings=local_settings
    )
    principal = verifier.verify(f"Bearer {token}")
    assert (principal.tenant, principal.home_tenant) == ("school-a", "school-a")
    assert principal.user_key == "school-a/tess"


@pytest.mark.parametrize("tenant", [None, "", "School A", "a/b", 7])
def test_a_token_without_a_tenant_is_refused(
    verifier: TokenVerifier, key_dir: Path, local_settings: Settings, tenant: object
) -> None:
    claims = devtokens.build_claims("alice", "student", settings=local_settings)
    if tenant is None:
        del claims["tenant"]
    else:
        claims["tenant"] = tenant
    token = devtokens.encode_claims(claims, key_dir=key_dir)
    with pytest.raises(Unauthenticated, match="tenant"):
        verifier.verify(f"Bearer {token}")


def test_only_an_operator_acts_in_another_tenant() -> None:
    operator = Principal("ops", Role.OPERATOR, tenant="platform")
    acting = operator.acting_in("school-b")
    assert (acting.tenant, acting.home_tenant, acting.user_key) == (
        "school-b",
        "platform",
        "platform/ops",
    )
    assert acting.can_access_student("anyone", None) and acting.can_access_cohort("c1")
    acting.require_role(Role.ADMIN)  # an operator may do what an admin of the tenant may
    assert operator.acting_in(None) is operator and operator.acting_in("") is operator
    with pytest.raises(PermissionDenied):
        operator.acting_in("Not A Tenant")
    admin = Principal("root", Role.ADMIN, tenant="school-a")
    assert admin.acting_in("school-a") is admin  # its own tenant, named: fine
    for someone in (admin, TEACHER, STUDENT):
        with pytest.raises(PermissionDenied):
            someone.acting_in("school-b")
