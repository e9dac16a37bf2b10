"""Alerts: what they are, how an episode's evidence merges into one, and their life cycle.

Pure, typed Python: no transport, no storage.

- An alert is about one student, in the cohort the student was in when it was made.
- Detected alerts (struggle, falling behind) carry an episode key. While an alert with
  that key is not resolved, a continuing episode adds its evidence to it (and may raise
  its severity) instead of opening another: one alert per episode for the teacher.
- States: OPEN -> ACKNOWLEDGED -> RESOLVED; an OPEN alert may also be resolved at once
  (resolving implies it was seen). Anything else is an illegal transition.
- Every change raises the version; the etag (AIP-154) is derived from it, so a caller
  holding a stale etag is refused instead of overwriting a change it has not seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntEnum

MAX_EVIDENCE = 200  # per alert; the oldest give way (the first item, the trigger, stays)


class Kind(IntEnum):
    """Values match learnflow.notify.v1.Alert.Kind."""

    REPEATED_ERROR = 1
    WHEEL_SPINNING = 2
    INTERVENTION = 3
    FALLING_BEHIND = 4


class Severity(IntEnum):
    """Values match learnflow.notify.v1.Alert.Severity."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3


class State(IntEnum):
    """Values match learnflow.notify.v1.Alert.State."""

    OPEN = 1
    ACKNOWLEDGED = 2
    RESOLVED = 3


class EvidenceType(IntEnum):
    """Values match learnflow.notify.v1.Evidence.Type."""

    DIAGNOSIS = 1
    EXERCISE_ATTEMPTS = 2
    MASTERY_CHANGE = 3
    STRUGGLE = 4
    NOTE = 5


@dataclass(frozen=True, slots=True)
class Evidence:
    type: EvidenceType
    summary: str
    resource: str = ""
    value: float = 0.0
    previous_value: float = 0.0
    occur_time: datetime | None = None
    event_source: str = ""
    event_id: str = ""

    @property
    def identity(self) -> tuple[object, ...]:
        """Two items with one identity are the same evidence: a diagnosis is itself
        whichever detection names it; anything else is its event's."""
        if self.type is EvidenceType.DIAGNOSIS and self.resource:
            return (self.type, self.resource)
        return (self.type, self.resource, self.event_source, self.event_id, self.summary)


@dataclass(frozen=True, slots=True)
class Signal:
    """Something detected about a student that a teacher should see: opens an alert, or
    adds to the open one with the same episode key."""

    student_id: str
    cohort: str  # from the event; the roster's cohort wins when it knows the student
    kind: Kind
    severity: Severity
    episode_key: str
    episode_id: str
    title: str
    evidence: tuple[Evidence, ...]
    occur_time: datetime


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    cohort: str
    student_id: str
    kind: Kind
    severity: Severity
    title: str
    detail: str
    creator: str
    created_at: datetime
    updated_at: datetime
    state: State = State.OPEN
    episode_key: str = ""  # empty for hand-made alerts
    episode_id: str = ""
    evidence: tuple[Evidence, ...] = ()
    version: int = 1
    acknowledged_by: str = ""
    acknowledged_at: datetime | None = None
    resolved_by: str = ""
    resolved_at: datetime | None = None
    resolution_note: str = ""

    @property
    def etag(self) -> str:
        return etag_of(self.alert_id, self.version)


def etag_of(alert_id: str, version: int) -> str:
    """Opaque, changes with every version, never equal across alerts."""
    return hashlib.sha256(f"{alert_id}\0{version}".encode()).hexdigest()[:20]


class StaleEtagError(Exception):
    """The caller's etag is not the alert's current one (AIP-154: ABORTED)."""


class IllegalTransitionError(Exception):
    """The alert's state does not allow the change (FAILED_PRECONDITION)."""


# -- made from signals --------------------------------------------------------------


def open_alert(signal: Signal, *, alert_id: str, cohort: str, creator: str) -> Alert:
    return Alert(
        alert_id=alert_id,
        cohort=cohort,
        student_id=signal.student_id,
        kind=signal.kind,
        severity=signal.severity,
        title=signal.title,
        detail="",
        creator=creator,
        created_at=signal.occur_time,
        updated_at=signal.occur_time,
        episode_key=signal.episode_key,
        episode_id=signal.episode_id,
        evidence=_bounded(_unique(signal.evidence, ())),
    )


def merge(alert: Alert, signal: Signal, now: datetime) -> tuple[Alert, tuple[Evidence, ...]]:
    """The open alert with a continuing episode's signal added, and the evidence that
    is new. Severity only rises; the title follows the latest signal. A signal that
    brings nothing new (no new evidence) changes nothing."""
    if alert.state is State.RESOLVED or alert.episode_key != signal.episode_key:
        raise ValueError("only an unresolved alert of the same episode takes more evidence")
    added = _unique(signal.evidence, alert.evidence)
    if not added:
        return alert, ()
    return (
        replace(
            alert,
            severity=max(alert.severity, signal.severity),
            title=signal.title,
            evidence=_bounded((*alert.evidence, *added)),
            updated_at=max(now, alert.updated_at),
            version=alert.version + 1,
        ),
        added,
    )


def _unique(items: Sequence[Evidence], existing: Sequence[Evidence]) -> tuple[Evidence, ...]:
    seen = {e.identity for e in existing}
    fresh = []
    for item in items:
        if item.identity not in seen:
            seen.add(item.identity)
            fresh.append(item)
    return tuple(fresh)


def _bounded(items: tuple[Evidence, ...]) -> tuple[Evidence, ...]:
    if len(items) <= MAX_EVIDENCE:
        return items
    return (items[0], *items[len(items) - MAX_EVIDENCE + 1 :])


# -- made by hand ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Intervention:
    """A teacher flags a student by hand."""

    student_id: str
    cohort: str
    title: str
    detail: str = ""
    severity: Severity = Severity.MEDIUM
    created_by: str = ""
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)


def flag(intervention: Intervention, *, alert_id: str, now: datetime) -> Alert:
    note = (
        Evidence(
            EvidenceType.NOTE,
            summary=intervention.detail.splitlines()[0][:200]
            if intervention.detail.strip()
            else intervention.title,
            occur_time=now,
        ),
    )
    return Alert(
        alert_id=alert_id,
        cohort=intervention.cohort,
        student_id=intervention.student_id,
        kind=Kind.INTERVENTION,
        severity=intervention.severity,
        title=intervention.title,
        detail=intervention.detail,
        creator=intervention.created_by,
        created_at=now,
        updated_at=now,
        evidence=(*note, *intervention.evidence),
    )


# -- the life cycle -------------------------------------------------------------------


def _check_etag(alert: Alert, etag: str) -> None:
    if etag and etag != alert.etag:
        raise StaleEtagError(
            f"the alert changed since etag {etag!r} was read (it is now {alert.etag!r})"
        )


def acknowledge(alert: Alert, *, by: str, now: datetime, etag: str = "") -> Alert:
    _check_etag(alert, etag)
    if alert.state is not State.OPEN:
        raise IllegalTransitionError(
            f"only an open alert can be acknowledged; this one is {alert.state.name.lower()}"
        )
    return replace(
        alert,
        state=State.ACKNOWLEDGED,
        acknowledged_by=by,
        acknowledged_at=now,
        updated_at=now,
        version=alert.version + 1,
    )


def resolve(alert: Alert, *, by: str, now: datetime, note: str = "", etag: str = "") -> Alert:
    _check_etag(alert, etag)
    if alert.state is State.RESOLVED:
        raise IllegalTransitionError("the alert is already resolved")
    return replace(
        alert,
        state=State.RESOLVED,
        resolved_by=by,
        resolved_at=now,
        resolution_note=note,
        updated_at=now,
        version=alert.version + 1,
    )


# -- listing --------------------------------------------------------------------------


class Order(IntEnum):
    NEWEST = 1  # create_time desc
    MOST_SEVERE = 2  # severity desc, then newest


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """What ListAlerts asks for. `cohorts` None: every cohort (an admin's `cohorts/-`)."""

    cohorts: tuple[str, ...] | None
    state: State | None = None
    kind: Kind | None = None
    student_id: str = ""
    order: Order = Order.NEWEST
