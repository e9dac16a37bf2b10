"""Identity: JWTs verified against a JWKS, and the access rules.

Every service verifies the token itself (defence in depth: internal callers reach
services without Envoy) and authorises on the decoded request message, never on a URL.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

from services.kit.errors import PermissionDenied, TokenMissing, Unauthenticated

ALGORITHMS = ("ES256", "RS256")


class Role(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of their token."""

    subject: str
    role: Role
    cohorts: tuple[str, ...] = ()

    def can_access_student(self, student_id: str, student_cohort: str | None) -> bool:
        """Student: self only; teacher: students of their cohorts; admin: everyone."""
        if self.role is Role.ADMIN:
            return True
        if self.role is Role.STUDENT:
            return student_id == self.subject
        return student_cohort is not None and student_cohort in self.cohorts

    def can_access_cohort(self, cohort: str) -> bool:
        """Teacher: own cohorts; admin: all; students: none (cohort views are staff-only)."""
        if self.role is Role.ADMIN:
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
        for help): that student, or an admin. Teachers read their cohorts' work; they do
        not make it."""
        if self.role is Role.ADMIN or self.subject == student_id:
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

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PermissionDenied(f"this action needs the role {allowed}")


class TokenVerifier:
    """Verifies bearer tokens against a JWKS file; reloads it when the file changes.

    A signature check costs far more than a trivial RPC, and a client sends the same
    token on every call: verified tokens are cached (by the exact token string) until
    their `exp`, and the cache is dropped whenever the JWKS changes.
    """

    CACHE_SIZE = 10_000
    RELOAD_SECONDS = 1.0

    def __init__(self, jwks_path: Path, issuer: str, audience: str) -> None:
        self._jwks_path = jwks_path
        self._issuer = issuer
        self._audience = audience
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._keys: dict[str, Any] = {}
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._next_stat = 0.0

    def _load_keys(self) -> dict[str, Any]:
        now = time.monotonic()
        if now < self._next_stat and self._keys:
            return self._keys  # the file is looked at about once a second, not per call
        try:
            mtime = self._jwks_path.stat().st_mtime
        except FileNotFoundError:
            raise Unauthenticated(f"no JWKS at {self._jwks_path}; cannot verify tokens") from None
        self._next_stat = now + self.RELOAD_SECONDS
        with self._lock:
            if mtime != self._mtime:
                jwks = jwt.PyJWKSet.from_dict(json.loads(self._jwks_path.read_text()))
                self._keys = {key.key_id: key for key in jwks.keys if key.key_id}
                self._mtime = mtime
                self._verified.clear()
            return self._keys

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise TokenMissing("missing bearer token (metadata 'authorization: Bearer <jwt>')")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <jwt>'")
        keys = self._load_keys()  # also drops cached verifications when the JWKS changed
        with self._lock:
            cached = self._verified.get(token)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        principal, expires = self._verify_signature(token, keys)
        with self._lock:
            self._verified[token] = (expires, principal)
            if len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)
        return principal

    def _verify_signature(self, token: str, keys: dict[str, Any]) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from None
        key = keys.get(str(header.get("kid", "")))
        if key is None:
            raise Unauthenticated("token signed by an unknown key")
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
        return principal_from_claims(claims), float(claims["exp"])


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(claims.get("role", ""))
    except ValueError:
        raise Unauthenticated(
            f"token role {claims.get('role')!r} is not one of {list(Role)}"
        ) from None
    cohorts = claims.get("cohorts", [])
    if isinstance(cohorts, str):
        cohorts = [cohorts]
    if not isinstance(cohorts, Sequence) or not all(isinstance(c, str) for c in cohorts):
        raise Unauthenticated("token claim 'cohorts' must be a list of strings")
    return Principal(subject=str(claims["sub"]), role=role, cohorts=tuple(cohorts))
