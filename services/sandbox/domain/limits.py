"""Run limits: safe defaults, server-side maxima, and resolution of a caller's request.

A request may lower or raise each limit, but never above the server's maximum: the caller
is untrusted (it relays a student's submission), the maxima are configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True, slots=True)
class Limits:
    wall_seconds: float = 5.0
    cpu_seconds: float = 5.0
    memory_bytes: int = 256 * MIB  # address space per process (RLIMIT_AS)
    max_processes: int = 16  # tasks (processes and threads) per sandbox
    max_output_bytes: int = 64 * KIB  # per stream: stdout and stderr each
    max_file_bytes: int = 1 * MIB  # largest file the program may write (RLIMIT_FSIZE)
    scratch_bytes: int = 8 * MIB  # the whole writable scratch directory


MAXIMA = Limits(
    wall_seconds=20.0,
    cpu_seconds=20.0,
    memory_bytes=1 * GIB,
    max_processes=64,
    max_output_bytes=1 * MIB,
    max_file_bytes=16 * MIB,
    scratch_bytes=64 * MIB,
)

# Proto field name (learnflow.sandbox.v1.Limits) -> dataclass field. Requests are keyed by
# proto names so error messages name what the caller actually sent.
PROTO_FIELDS: dict[str, str] = {
    "wall_time": "wall_seconds",
    "cpu_time": "cpu_seconds",
    "memory_bytes": "memory_bytes",
    "max_processes": "max_processes",
    "max_output_bytes": "max_output_bytes",
    "max_file_bytes": "max_file_bytes",
    "scratch_bytes": "scratch_bytes",
}
_PROTO_NAME = {attr: proto for proto, attr in PROTO_FIELDS.items()}
_INTEGER_FIELDS = frozenset(
    f.name for f in fields(Limits) if f.name not in ("wall_seconds", "cpu_seconds")
)


class InvalidLimitsError(ValueError):
    """One or more requested limits are out of range; `violations` lists (proto field, why)."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{name}: {why}" for name, why in violations))


def resolve(
    requested: Mapping[str, float | int | None],
    maxima: Limits = MAXIMA,
    defaults: Limits = Limits(),  # frozen, so a shared default is safe
) -> Limits:
    """The limits for one run: each requested value, or the default where it is 0 or None.

    Keys are proto field names (dataclass names are accepted too). Negative, non-finite,
    fractional (for integer fields) or above-maximum values raise InvalidLimitsError, which
    lists every bad field, not just the first.
    """
    violations: list[tuple[str, str]] = []
    chosen: dict[str, float | int] = {}
    for key, value in requested.items():
        attr = PROTO_FIELDS.get(key, key if key in _PROTO_NAME else "")
        if not attr:
            violations.append((key, "unknown limit"))
            continue
        name = _PROTO_NAME[attr]
        if value is None or value == 0:
            continue
        if isinstance(value, bool) or not math.isfinite(value):
            violations.append((name, f"must be a finite number, got {value!r}"))
            continue
        maximum = getattr(maxima, attr)
        if value < 0:
            violations.append((name, f"must not be negative (0 means the default), got {value}"))
        elif attr in _INTEGER_FIELDS and value != int(value):
            violations.append((name, f"must be a whole number, got {value}"))
        elif value > maximum:
            violations.append((name, f"{value} is above the server maximum {maximum}"))
        else:
            chosen[attr] = int(value) if attr in _INTEGER_FIELDS else float(value)
    if violations:
        raise InvalidLimitsError(violations)
    # A server configured with maxima below the built-in defaults lowers the defaults too.
    base = {f.name: min(getattr(defaults, f.name), getattr(maxima, f.name)) for f in fields(Limits)}
    return replace(Limits(), **{**base, **chosen})
