"""AIP-122 resource names: parse `students/alice/mastery` against `students/*/mastery`;
AIP-134 update masks."""

from __future__ import annotations

from collections.abc import Sequence

from services.kit.errors import FieldViolation, InvalidArgument, Validator

MAX_ID_LENGTH = 256


def parse_name(value: str, pattern: str, field: str) -> list[str]:
    """The `*` segments of `value` matched against `pattern`, or INVALID_ARGUMENT naming
    `field`. An id is any non-empty text without '/' (user ids come from an identity
    provider and may hold '@' or '|'), at most 256 characters."""
    parts, template = value.split("/"), pattern.split("/")
    ids: list[str] = []
    ok = len(parts) == len(template)
    if ok:
        for part, expected in zip(parts, template, strict=True):
            if expected == "*":
                if not part or len(part) > MAX_ID_LENGTH:
                    ok = False
                    break
                ids.append(part)
            elif part != expected:
                ok = False
                break
    if not ok:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidArgument([FieldViolation(field, f"must look like {pattern!r}, got {shown!r}")])
    return ids


def check_name(checks: Validator, value: str, pattern: str, field: str) -> list[str]:
    """Like parse_name, but a bad name is added to `checks` (so a request reports every
    bad field at once); returns empty ids then."""
    try:
        return parse_name(value, pattern, field)
    except InvalidArgument as exc:
        for violation in exc.violations:
            checks.add(violation.field, violation.description)
        return [""] * pattern.count("*")


def check_update_mask(checks: Validator, paths: Sequence[str], allowed: Sequence[str]) -> set[str]:
    """The fields an update names (`*`: all of `allowed`); an empty mask or a field not
    in `allowed` is added to `checks` as a violation of `update_mask`."""
    if list(paths) == ["*"]:
        return set(allowed)
    named = ", ".join(allowed)
    unknown = sorted(set(paths) - set(allowed))
    checks.check(bool(paths), "update_mask", f"name the fields to change: {named}")
    checks.check(not unknown, "update_mask", f"unknown fields {unknown}: only {named}")
    return set(paths) & set(allowed)
