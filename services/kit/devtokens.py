"""Development identity: a local signing key, its JWKS, and minted tokens.

Envoy (`jwt_authn`) and every service verify tokens against the JWKS at
`Settings.jwks_path`; this module creates the ES256 key pair behind it once and mints
tokens with the LearnFlow claims (`sub`, `role`, `tenant`, `cohorts`, `iss`, `aud`, `iat`,
`exp`).
Production uses the organisation's identity provider instead.

    ensure_keys()                                  # -> Path of the JWKS, creating keys once
    mint_token("s1", "student", cohorts=["c1"])   # -> compact JWS

Tests that need deliberately bad tokens use `bad_token(kind, ...)`, or `build_claims`
plus `encode_claims(claims, ...)` with its keyword overrides (another key, another
algorithm, an unsigned `alg: none` token).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.kit.auth import DEV_TENANT, TENANT_ID
from services.kit.config import RUN_DIR, Settings

Role = Literal["student", "teacher", "admin", "operator"]
ROLES: Final[tuple[str, ...]] = get_args(Role)

ALGORITHM: Final = "ES256"
PRIVATE_KEY_FILE: Final = "jwt-signing-key.pem"
DEFAULT_TTL_SECONDS: Final = 12 * 60 * 60
MAX_TTL_SECONDS: Final = 30 * 24 * 60 * 60

BadTokenKind = Literal[
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "foreign_key",
    "alg_none",
    "no_exp",
    "no_tenant",
]
BAD_TOKEN_KINDS: Final[tuple[str, ...]] = get_args(BadTokenKind)


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings()


def _key_dir(key_dir: Path | None) -> Path:
    return Path(key_dir) if key_dir is not None else RUN_DIR


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _write_private_key_once(path: Path) -> None:
    """Create a new key at `path` unless one exists; safe when several processes race."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        # link() never replaces: the first process to get here wins, the others read its key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_private_key(key_dir: Path | None = None) -> ec.EllipticCurvePrivateKey:
    """The signing key under `key_dir` (default `.run/`), created (mode 0600) if missing."""
    directory = _key_dir(key_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / PRIVATE_KEY_FILE
    if not path.exists():
        _write_private_key_once(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} does not hold a P-256 EC private key (needed for {ALGORITHM})")
    return key


def generate_foreign_key() -> ec.EllipticCurvePrivateKey:
    """A throwaway P-256 key that no JWKS knows: tokens signed with it must be refused."""
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public half as a JWK, with `kid` = its RFC 7638 thumbprint."""
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    x = _b64url(numbers.x.to_bytes(size, "big"))
    y = _b64url(numbers.y.to_bytes(size, "big"))
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode("ascii")).digest())
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jwks-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # public keys: Envoy and the services may run as other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_keys(key_dir: Path | None = None, settings: Settings | None = None) -> Path:
    """Create the key pair once and (re)write the JWKS; returns the JWKS path.

    The private key stays in `key_dir` (default `.run/`); the JWKS goes to
    `settings.jwks_path` (JWKS_PATH, default `.run/jwks.json`).
    """
    jwks_path = Path(_settings(settings).jwks_path)
    jwks = {"keys": [public_jwk(load_private_key(key_dir))]}
    _write_if_changed(jwks_path, json.dumps(jwks, indent=2) + "\n")
    return jwks_path


def _validate_identity(sub: str, role: str, cohorts: Sequence[str], tenant: str) -> list[str]:
    if not isinstance(sub, str) or not sub.strip() or sub != sub.strip():
        raise ValueError(f"sub must be a non-empty string without surrounding spaces, got {sub!r}")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise ValueError(f"tenant must be lowercase letters, digits and dashes; got {tenant!r}")
    if isinstance(cohorts, str):
        raise ValueError(f"cohorts must be a sequence of strings, not one string: {cohorts!r}")
    result: list[str] = []
    for cohort in cohorts:
        if not isinstance(cohort, str) or not cohort.strip() or "," in cohort:
            raise ValueError(f"each cohort must be a non-empty string without commas: {cohort!r}")
        result.append(cohort.strip())
    return result


def build_claims(
    sub: str,
    role: str,
    cohorts: Sequence[str] = (),
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    *,
    tenant: str = DEV_TENANT,
    settings: Settings | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The claims of a LearnFlow token, validated (a bad role or ttl raises ValueError)."""
    cohort_list = _validate_identity(sub, role, cohorts, tenant)
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise ValueError(f"ttl_seconds must be an int, got {ttl_seconds!r}")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be in 1..{MAX_TTL_SECONDS}, got {ttl_seconds}")
    conf = _settings(settings)
    issued = int(time.time()) if now is None else now
    return {
        "iss": conf.jwt_issuer,
        "sub": sub,
        "aud": conf.jwt_audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "role": role,
        "tenant": tenant,
        "cohorts": cohort_list,
    }


def encode_claims(
    claims: Mapping[str, Any],
    *,
    key_dir: Path | None = None,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    kid: str | None = None,
    unsigned: bool = False,
) -> str:
    """Sign `claims` as-is (no validation: tests use this for bad tokens).

    Default: ES256 with the dev key under `key_dir`, `kid` of that key. Overrides:
    `signing_key` signs with another key (its own kid unless `kid` is given);
    `unsigned=True` produces an `alg: none` token with an empty signature.
    """
    key = signing_key if signing_key is not None else load_private_key(key_dir)
    key_id = kid if kid is not None else public_jwk(key)["kid"]
    if unsigned:
        header = {"alg": "none", "typ": "JWT", "kid": key_id}
        parts = (json.dumps(header).encode(), json.dumps(dict(claims)).encode())
        return ".".join(_b64url(part) for part in parts) + "."
    return jwt.encode(dict(claims), key, algorithm=ALGORITHM, headers={"kid": key_id})


def mint_token(
    sub: str,
    role: str,
    cohorts: Sequence[str] = (),
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    *,
    tenant: str = DEV_TENANT,
    key_dir: Path | None = None,
    settings: Settings | None = None,
) -> str:
    """A valid token for `sub` with `role` and `cohorts` in `tenant`; creates keys and
    JWKS if missing."""
    claims = build_claims(sub, role, cohorts, ttl_seconds, tenant=tenant, settings=settings)
    ensure_keys(key_dir, settings)
    return encode_claims(claims, key_dir=key_dir)


def bad_token(
    kind: BadTokenKind,
    sub: str = "s1",
    role: str = "student",
    cohorts: Sequence[str] = (),
    *,
    tenant: str = DEV_TENANT,
    key_dir: Path | None = None,
    settings: Settings | None = None,
) -> str:
    """A token that verification must refuse, for tests.

    expired, not_yet_valid, wrong_audience, wrong_issuer, no_exp, no_tenant: signed with
    the dev key;
    foreign_key: valid claims signed by a key the JWKS does not hold (same kid);
    alg_none: valid claims, `alg: none`, no signature.
    """
    if kind not in BAD_TOKEN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(BAD_TOKEN_KINDS)}; got {kind!r}")
    now = int(time.time())
    claims = build_claims(sub, role, cohorts, tenant=tenant, settings=settings, now=now)
    if kind == "expired":
        claims.update(iat=now - 7200, exp=now - 3600)
    elif kind == "not_yet_valid":
        claims.update(nbf=now + 3600)
    elif kind == "wrong_audience":
        claims["aud"] = "not-learnflow"
    elif kind == "wrong_issuer":
        claims["iss"] = "https://evil.example"
    elif kind == "no_exp":
        del claims["exp"]
    elif kind == "no_tenant":
        del claims["tenant"]
    elif kind == "foreign_key":
        own_kid = public_jwk(load_private_key(key_dir))["kid"]
        return encode_claims(claims, signing_key=generate_foreign_key(), kid=own_kid)
    elif kind == "alg_none":
        return encode_claims(claims, key_dir=key_dir, unsigned=True)
    return encode_claims(claims, key_dir=key_dir)
