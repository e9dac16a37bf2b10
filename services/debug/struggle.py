"""Struggle detection (the seed's rule): the same error type more than 3 times
in 10 minutes. One episode per burst: the first occurrence past the threshold starts
it (and is announced); later ones while it lasts extend it silently; ten quiet minutes
end it, and the next burst is a new episode.

Windows and episodes are per tenant, student and error type: the same student id in two
schools is two students, whose errors never add up."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.kit.windows import Windows

REPEATS_ALLOWED = 3  # "more than 3 times"
WINDOW_SECONDS = 600.0  # "in 10 minutes"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one occurrence means: how many of its type lie in the window, whether the
    student is struggling now, and the episode it started (None if none started)."""

    count: int
    struggling: bool
    new_episode: str | None


class StruggleDetector:
    def __init__(
        self,
        windows: Windows,
        *,
        repeats_allowed: int = REPEATS_ALLOWED,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        self._windows = windows
        self._repeats_allowed = repeats_allowed
        self._window_seconds = window_seconds

    def observe(
        self, tenant: str, student_id: str, error_type: str, occurrence: str, at: float
    ) -> Observation:
        if not tenant:
            raise ValueError("a tenant is required")
        # A tenant id has no ":" (auth.TENANT_ID), so the key's parts cannot run together.
        subject = f"{tenant}:{student_id}:{error_type}"
        count = self._windows.record(
            f"debug:struggle:window:{subject}", occurrence, at, self._window_seconds
        )
        if count <= self._repeats_allowed:
            return Observation(count, struggling=False, new_episode=None)
        started = self._windows.start_episode(
            f"debug:struggle:episode:{subject}", self._window_seconds
        )
        return Observation(
            count, struggling=True, new_episode=uuid.uuid4().hex if started else None
        )
