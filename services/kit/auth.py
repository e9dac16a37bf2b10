"""Identity: JWTs verified against a JWKS, and the access rules.

Every service verifies the token itself (defence in depth: internal callers reach
services without Envoy) and authorises on the decoded request message, never on a URL.
The keys come from the identity provider's JWKS URL (JWKS_URL: cached, refreshed when
due or when a token names a key not seen yet) or, in development, from a JWKS file
(JWKS_PATH, written by services/kit/devtokens.py).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import jwt

from services.kit.errors import PermissionDenied, TokenMissing, Unauthenticated

if TYPE_CHECKING:
    from services.kit.config import Settings

log = logging.getLogger("learnflow.auth")

ALGORITHMS = ("ES256", "RS256")


class Role(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"
    ADMIN = "admin"
    # The platform's own staff: acts in any tenant it names (TENANT_METADATA), audited.
    OPERATOR = "operator"


# A tenant (a school or organisation) id: the `tenant` claim of every token. Lowercase
# letters, digits and dashes, so it is safe in Redis keys, logs and Postgres settings.
TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The metadata (HTTP header through Envoy) in which an operator names the tenant a call
# acts in; anyone else may send only their own tenant there.
TENANT_METADATA = "x-learnflow-tenant"
# The tenant of development tokens (`make token` without tenant=).
DEV_TENANT = "dev"

# Roles that see every student and cohort of the tenant they act in.
_TENANT_WIDE = frozenset({Role.ADMIN, Role.OPERATOR})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of their token. `tenant` is the tenant the
    call acts in: the token's own (`home_tenant`), or for an operator the one it named."""

    subject: str
    role: Role
    cohorts: tuple[str, ...] = ()
    tenant: str = DEV_TENANT
    home_tenant: str = ""  # "" when built by hand: the same as `tenant`

    def __post_init__(self) -> None:
        if not self.home_tenant:
            object.__setattr__(self, "home_tenant", self.tenant)

    @property
    def user_key(self) -> str:
        """Who the caller is across tenants ("<home tenant>/<subject>"): the key of their
        per-user limits and counters (the same `sub` in two schools is two users)."""
        return f"{self.home_tenant}/{self.subject}"

    def acting_in(self, tenant: str | None) -> Principal:
        """This principal acting in `tenant` (from TENANT_METADATA; None or "": its own).
        Only an operator may act in another tenant than its token's."""
        if not tenant or tenant == self.tenant:
            return self
        if self.role is not Role.OPERATOR:
            raise PermissionDenied(
                f"{self.role.value} {self.subject!r} of tenant {self.tenant!r} may not act "
                f"in tenant {tenant!r}",
                metadata={"tenant": tenant},
            )
        if not TENANT_ID.fullmatch(tenant):
            raise PermissionDenied(f"{tenant!r} is not a tenant id", metadata={"tenant": tenant})
        return Principal(self.subject, self.role, self.cohorts, tenant, self.home_tenant)

    def can_access_student(self, student_id: str, student_cohort: str | None) -> bool:
        """Within the tenant: student: self only; teacher: students of their cohorts;
        admin and operator: everyone. (Another tenant's students are not found at all:
        every store is scoped by `tenant`.)"""
        if self.role in _TENANT_WIDE:
            return True
        if self.role is Role.STUDENT:
            return student_id == self.subject
        return student_cohort is not None and student_cohort in self.cohorts

    def can_access_cohort(self, cohort: str) -> bool:
        """Teacher: own cohorts; admin and operator: all of the tenant; students: none
        (cohort views are staff-only)."""
        if self.role in _TENANT_WIDE:
            return True
        return self.role is Role.TEACHER and cohort in self.cohorts

    def require_student(self, student_id: str, student_cohort: str | None = None) -> None:
        if not self.can_access_student(student_id, student_cohort):
            raise PermissionDenied(
                f"{self.role.value} {self.subject!r} may not access student {student_id!r}",
                metadata={"student": student_id},
            )

    def require_acting_as(self, student_id: str) -> None:
        """Acting in a student's name (work that counts towards their mastery, asking
        for help): that student, or an admin or operator. Teachers read their cohorts'
        work; they do not make it."""
        if self.role in _TENANT_WIDE or self.subject == student_id:
            return
        raise PermissionDenied(
            f"{self.role.value} {self.subject!r} may not act as student {student_id!r}",
            metadata={"student": student_id},
        )

    @property
    def own_cohort(self) -> str:
        """The class a student's activity counts towards (their token's first cohort)."""
        return self.cohorts[0] if self.role is Role.STUDENT and self.cohorts else ""

    def require_cohort(self, cohort: str) -> None:
        if not self.can_access_cohort(cohort):
            raise PermissionDenied(
                f"{self.role.value} {self.subject!r} may not access cohort {cohort!r}",
                metadata={"cohort": cohort},
            )

    @property
    def tenant_wide(self) -> bool:
        """Whether the caller sees every student and cohort of the tenant it acts in."""
        return self.role in _TENANT_WIDE

    def require_role(self, *roles: Role) -> None:
        """An operator may do whatever an admin may (in the tenant it acts in)."""
        if self.role is Role.OPERATOR and Role.ADMIN in roles:
            return
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PermissionDenied(f"this action needs the role {allowed}")


# --------------------------------------------------------------------------------------
# Keys: where the public keys that tokens are verified against come from
# --------------------------------------------------------------------------------------

JWKS_FETCH_TIMEOUT_SECONDS = 3.0
"""How long one fetch of a JWKS URL may take (connect, and each read); Envoy uses it too."""
FIRST_FETCH_RETRY_SECONDS = 1.0
"""With no keys ever fetched, a failed fetch is tried again after this long (or after
`refresh_min_seconds` if that is shorter); with keys, after `refresh_min_seconds`."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The verification keys at one moment, by `kid`. `version` grows whenever the keys
    change (not when the same set is read again): a verifier then forgets the tokens it
    verified with the old ones."""

    keys: Mapping[str, jwt.PyJWK]
    version: int


class KeySource(Protocol):
    """Where a TokenVerifier gets its keys: the identity provider's JWKS URL
    (UrlKeySource) or a JWKS file (FileKeySource: development, mounted keys)."""

    @property
    def where(self) -> str:
        """The URL or path, for messages."""
        ...

    def current(self) -> KeySet:
        """The keys to verify with now; called on every call, so cheap. Raises
        Unauthenticated when there are none to verify with."""
        ...

    def refresh_for(self, kid: str) -> KeySet:
        """The keys after a token named `kid`, which `current()` lacked: looked up again
        when the source allows it now, else the keys at hand (the caller then refuses)."""
        ...


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The keys of a JWKS document by `kid` (keys without one cannot be chosen and are
    left out). ValueError when it is not a JWKS or holds no usable key."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS (no 'keys' list)")
    try:
        jwks = jwt.PyJWKSet.from_dict(document)
    except jwt.PyJWTError as exc:
        raise ValueError(str(exc)) from None
    keys = {key.key_id: key for key in jwks.keys if key.key_id and key.public_key_use != "enc"}
    if not keys:
        raise ValueError("the JWKS holds no signing key with a 'kid'")
    return keys


class _Versions:
    """Successive JWKS documents as KeySets: a new version only when the keys differ."""

    def __init__(self) -> None:
        self.keys: KeySet | None = None
        self._fingerprint = ""

    def install(self, document: Any) -> tuple[KeySet, bool]:
        """The KeySet of `document`, and whether it changed; ValueError when unusable."""
        parsed = parse_jwks(document)
        fingerprint = json.dumps(document["keys"], sort_keys=True)
        if self.keys is not None and fingerprint == self._fingerprint:
            return self.keys, False
        version = self.keys.version + 1 if self.keys is not None else 1
        self.keys = KeySet(MappingProxyType(parsed), version)
        self._fingerprint = fingerprint
        return self.keys, True


class FileKeySource:
    """A JWKS file: looked at about once a second (at once for an unknown `kid`: a stat
    is cheap), re-read when its modification time changes."""

    RELOAD_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._versions = _Versions()
        self._mtime: int | None = None
        self._next_stat = 0.0

    @property
    def where(self) -> str:
        return str(self.path)

    def current(self) -> KeySet:
        keys = self._versions.keys
        if keys is not None and time.monotonic() < self._next_stat:
            return keys  # the file is looked at about once a second, not per call
        return self._reload()

    def refresh_for(self, kid: str) -> KeySet:
        return self._reload()

    def _reload(self) -> KeySet:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            raise Unauthenticated(f"no JWKS at {self.path}; cannot verify tokens") from None
        with self._lock:
            self._next_stat = time.monotonic() + self.RELOAD_SECONDS
            keys = self._versions.keys
            if keys is not None and mtime == self._mtime:
                return keys
            try:
                keys, _ = self._versions.install(json.loads(self.path.read_text()))
            except (OSError, ValueError) as exc:
                # Half-written, or not a JWKS: the last good keys stay until it is fixed
                # (its next change is read again).
                if keys is None:
                    raise Unauthenticated(
                        f"the JWKS at {self.path} is not usable: {exc}; cannot verify tokens"
                    ) from None
                log.warning(
                    "JWKS file not usable; verifying with the last good keys",
                    extra={"path": str(self.path), "error": str(exc)},
                )
                return keys
            self._mtime = mtime
            return keys


class _Flight:
    """One fetch in progress: whoever needs its result waits on `done`."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class UrlKeySource:
    """The identity provider's JWKS URL, fetched with httpx and cached.

    - Cached for `cache_seconds`, or for less when the response's `Cache-Control:
      max-age` (or `no-cache`) says so, though never less than `refresh_min_seconds`.
      Once due, the last keys keep serving while one background fetch replaces them.
    - An unknown `kid` fetches at once, single-flight and at most once per
      `refresh_min_seconds`: callers arriving while a fetch runs wait for that one;
      callers after it, while that fetch is recent, are answered from the keys at hand
      (UNAUTHENTICATED when their kid is not among them). A flood of tokens naming
      made-up kids costs the identity provider one request per `refresh_min_seconds`.
    - A failed fetch (the IdP down or slow, an error status, not a JWKS) keeps the last
      good keys, logs a warning and is tried again after `refresh_min_seconds`. With no
      keys ever fetched every call is UNAUTHENTICATED, saying why.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        refresh_min_seconds: float = 30.0,
        timeout_seconds: float = JWKS_FETCH_TIMEOUT_SECONDS,
        client: httpx.Client | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a JWKS URL must be http(s)://: {url!r}")
        self.url = url
        self._cache_seconds = cache_seconds
        self._refresh_min = refresh_min_seconds
        self._timeout = timeout_seconds
        self._client = client or httpx.Client(
            timeout=timeout_seconds,
            follow_redirects=False,
            headers={"accept": "application/jwk-set+json, application/json"},
        )
        self._lock = threading.Lock()
        self._versions = _Versions()
        self._recheck_at = 0.0  # monotonic: when the next scheduled fetch is due
        self._last_kid_fetch = -math.inf  # monotonic: the last fetch an unknown kid started
        self._flight: _Flight | None = None
        self._error = "not fetched yet"

    @property
    def where(self) -> str:
        return self.url

    def current(self) -> KeySet:
        keys = self._versions.keys
        now = time.monotonic()
        if keys is not None and now < self._recheck_at:
            return keys
        with self._lock:
            flight, lead = self._flight, False
            if flight is None and now >= self._recheck_at:
                flight = self._flight = _Flight()
                lead = True
        if keys is not None:
            # Due: the last keys serve while one fetch replaces them in the background.
            if lead and flight is not None:
                threading.Thread(
                    target=self._fly, args=(flight,), name="jwks-refresh", daemon=True
                ).start()
            return keys
        if flight is not None:
            self._run_or_wait(flight, lead)
        return self._keys_or_refuse()

    def refresh_for(self, kid: str) -> KeySet:
        now = time.monotonic()
        with self._lock:
            keys = self._versions.keys
            if keys is not None and kid in keys.keys:
                return keys  # another caller's fetch brought it in meanwhile
            flight, lead = self._flight, False
            if flight is None:
                if now - self._last_kid_fetch < self._refresh_min:
                    return self._keys_or_refuse()  # fetched for an unknown kid recently
                self._last_kid_fetch = now
                flight = self._flight = _Flight()
                lead = True
        self._run_or_wait(flight, lead)
        return self._keys_or_refuse()

    def _run_or_wait(self, flight: _Flight, lead: bool) -> None:
        if lead:
            self._fly(flight)
        else:
            flight.done.wait(2 * self._timeout + 1.0)

    def _keys_or_refuse(self) -> KeySet:
        keys = self._versions.keys
        if keys is None:
            raise Unauthenticated(
                f"no keys from the identity provider yet (JWKS_URL {self.url}): "
                f"{self._error}; cannot verify tokens"
            )
        return keys

    def _fly(self, flight: _Flight) -> None:
        started = time.monotonic()
        try:
            document, max_age = self._fetch()
            with self._lock:
                keys, changed = self._versions.install(document)
                self._recheck_at = started + self._cache_for(max_age)
                self._error = ""
            if changed:
                log.info(
                    "keys from the identity provider loaded",
                    extra={"url": self.url, "kids": sorted(keys.keys), "version": keys.version},
                )
        except Exception as exc:  # whatever went wrong, the last good keys stay
            error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                have_keys = self._versions.keys is not None
                backoff = (
                    self._refresh_min
                    if have_keys
                    else min(self._refresh_min, FIRST_FETCH_RETRY_SECONDS)
                )
                self._recheck_at = time.monotonic() + backoff
                self._error = error
            log.warning(
                "JWKS fetch failed; verifying with the last good keys"
                if have_keys
                else "JWKS fetch failed; no keys to verify tokens with yet",
                extra={"url": self.url, "error": error, "retry_in_seconds": backoff},
            )
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()

    def _fetch(self) -> tuple[Any, float | None]:
        response = self._client.get(self.url)
        if response.status_code != httpx.codes.OK:
            raise ValueError(f"HTTP {response.status_code} from the JWKS URL")
        return response.json(), cache_max_age(response.headers.get("cache-control"))

    def _cache_for(self, max_age: float | None) -> float:
        if max_age is None:
            return self._cache_seconds
        # Shorter when the IdP says so, but `max-age=0` must not make every call fetch.
        return min(self._cache_seconds, max(max_age, self._refresh_min))

    def close(self) -> None:
        self._client.close()


def cache_max_age(header: str | None) -> float | None:
    """Seconds a `Cache-Control` header lets a response be reused (`max-age`; 0 for
    `no-cache` / `no-store`), None when it does not say."""
    if not header:
        return None
    ages: list[float] = []
    for directive in header.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            ages.append(0.0)
        elif name == "max-age":
            try:
                ages.append(max(0.0, float(int(value.strip().strip('"')))))
            except ValueError:
                continue
    return min(ages) if ages else None


def key_source(settings: Settings) -> KeySource:
    """JWKS_URL when set (the identity provider), else the JWKS file at JWKS_PATH."""
    if settings.jwks_url:
        return UrlKeySource(
            settings.jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            refresh_min_seconds=settings.jwks_refresh_min_seconds,
        )
    return FileKeySource(Path(settings.jwks_path))


class TokenVerifier:
    """Verifies bearer tokens against the keys of a KeySource: the identity provider's
    JWKS URL, or a JWKS file (a Path given here is one).

    A signature check costs far more than a trivial RPC, and a client sends the same
    token on every call: verified tokens are cached (by the exact token string) until
    their `exp`, and the cache is dropped whenever the keys change.
    """

    CACHE_SIZE = 10_000
    RELOAD_SECONDS = FileKeySource.RELOAD_SECONDS

    def __init__(self, keys: Path | KeySource, issuer: str, audience: str) -> None:
        self._source: KeySource = FileKeySource(keys) if isinstance(keys, Path) else keys
        self._issuer = issuer
        self._audience = audience
        self._lock = threading.Lock()
        self._version = 0  # of the keys the cached verifications were made with
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """JWKS_URL (or the JWKS file), JWT_ISSUER, JWT_AUDIENCE."""
        return cls(key_source(settings), settings.jwt_issuer, settings.jwt_audience)

    @property
    def source(self) -> KeySource:
        return self._source

    def _seen(self, keys: KeySet) -> KeySet:
        """`keys`, after forgetting verifications made with older keys."""
        if keys.version > self._version:
            with self._lock:
                if keys.version > self._version:
                    self._verified.clear()
                    self._version = keys.version
        return keys

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise TokenMissing("missing bearer token (metadata 'authorization: Bearer <jwt>')")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <jwt>'")
        keys = self._seen(self._source.current())
        with self._lock:
            cached = self._verified.get(token)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        principal, expires, keys = self._verify_signature(token, keys)
        with self._lock:
            if keys.version == self._version:  # not verified with keys replaced meanwhile
                self._verified[token] = (expires, principal)
                if len(self._verified) > self.CACHE_SIZE:
                    self._verified.popitem(last=False)
        return principal

    def _signing_key(self, kid: str, keys: KeySet) -> tuple[jwt.PyJWK, KeySet]:
        key = keys.keys.get(kid)
        if key is None and kid:
            keys = self._seen(self._source.refresh_for(kid))  # rotated in since?
            key = keys.keys.get(kid)
        if key is None:
            named = f"key {kid[:64]!r}" if kid else "key (the token names no 'kid')"
            raise Unauthenticated(f"token signed by an unknown {named}")
        return key, keys

    def _verify_signature(self, token: str, keys: KeySet) -> tuple[Principal, float, KeySet]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from None
        key, keys = self._signing_key(str(header.get("kid") or ""), keys)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=list(ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.InvalidAudienceError as exc:
            # A genuine token meant for another audience: who the caller is is known,
            # they may not use it here (Envoy's jwt_authn answers 403 alike).
            raise PermissionDenied(
                f"token not meant for this audience: {exc}", metadata={"reason": "audience"}
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        return principal_from_claims(claims), float(claims["exp"]), keys


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(claims.get("role", ""))
    except ValueError:
        raise Unauthenticated(
            f"token role {claims.get('role')!r} is not one of {list(Role)}"
        ) from None
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        # Every stored row belongs to a tenant: a token that names none acts in none.
        raise Unauthenticated(
            "token claim 'tenant' is missing or not a tenant id (lowercase letters, digits, "
            f"dashes): {tenant!r}"
        )
    cohorts = claims.get("cohorts", [])
    if isinstance(cohorts, str):
        cohorts = [cohorts]
    if not isinstance(cohorts, Sequence) or not all(isinstance(c, str) for c in cohorts):
        raise Unauthenticated("token claim 'cohorts' must be a list of strings")
    return Principal(
        subject=str(claims["sub"]),
        role=role,
        cohorts=tuple(cohorts),
        tenant=tenant,
        home_tenant=tenant,
    )
