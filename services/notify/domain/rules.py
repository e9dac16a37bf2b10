"""Which events make alerts, and what the alert says (pure).

- struggle.detected: always (debug's repeated error, mastery's wheel-spinning).
- mastery.updated: falling behind, when a student's overall or a topic's band moves
  from yellow or higher into red with at least MIN_EVIDENCE pieces of evidence behind
  the new score. A first band of red never alerts (every beginner starts there), nor
  does a red that rests on too little evidence to mean anything.

Episode keys decide what is "the same episode": the same error type, the same
exercise, the same topic's fall. While that alert is not resolved, more of the same
adds evidence to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kit.topics import Band, Topic, percent
from services.notify.domain.model import Evidence, EvidenceType, Kind, Severity, Signal

MIN_EVIDENCE = 5
OVERALL = 0
HIGH_REPEATS = 8  # a repeated error this often in its window is urgent


@dataclass(frozen=True, slots=True)
class Struggle:
    """A struggle.detected event, as plain values."""

    source: str
    event_id: str
    student_id: str
    cohort: str
    kind: Kind  # REPEATED_ERROR or WHEEL_SPINNING
    topic: int
    error_type: str
    exercise_id: str
    occurrence_count: int
    episode_id: str
    detect_time: datetime
    window_start: datetime | None = None
    evidence_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BandChange:
    """One score that moved: overall (topic 0) or a topic."""

    topic: int
    previous_band: int
    band: int
    previous_score: float
    score: float
    evidence_count: int


@dataclass(frozen=True, slots=True)
class MasteryChange:
    """A mastery.updated event, as plain values."""

    source: str
    event_id: str
    student_id: str
    cohort: str
    changes: tuple[BandChange, ...]
    update_time: datetime


def topic_label(topic: int) -> str:
    if topic == OVERALL:
        return "overall"
    try:
        return Topic(topic).label
    except ValueError:
        return f"topic {topic}"


def band_label(band: int) -> str:
    try:
        return Band(band).label
    except ValueError:
        return "?"


def struggle_signal(event: Struggle) -> Signal:
    where = f" ({topic_label(event.topic)})" if event.topic else ""
    if event.kind is Kind.WHEEL_SPINNING:
        title = (
            f"{event.student_id} has attempted exercise {event.exercise_id} "
            f"{event.occurrence_count} times without passing{where}"
        )
        key = f"wheel-spinning:{event.student_id}:{event.exercise_id}"
        severity = Severity.HIGH
        trigger = Evidence(
            EvidenceType.EXERCISE_ATTEMPTS,
            summary=f"{event.occurrence_count} attempts at {event.exercise_id} without a pass",
            resource=f"exercises/{event.exercise_id}" if event.exercise_id else "",
            value=event.occurrence_count,
            occur_time=event.detect_time,
            event_source=event.source,
            event_id=event.event_id,
        )
    else:
        error = event.error_type or "the same error"
        title = (
            f"{event.student_id} hit {error} {event.occurrence_count} times in 10 minutes{where}"
        )
        key = f"repeated-error:{event.student_id}:{event.error_type}"
        severity = Severity.HIGH if event.occurrence_count >= HIGH_REPEATS else Severity.MEDIUM
        trigger = Evidence(
            EvidenceType.STRUGGLE,
            summary=f"{error} {event.occurrence_count} times in 10 minutes",
            value=event.occurrence_count,
            occur_time=event.detect_time,
            event_source=event.source,
            event_id=event.event_id,
        )
    behind = tuple(
        Evidence(
            EvidenceType.DIAGNOSIS,
            summary=f"{event.error_type} diagnosed" if event.error_type else "diagnosis",
            resource=resource,
            value=1.0,
            event_source=event.source,
            event_id=event.event_id,
        )
        for resource in event.evidence_ids
    )
    return Signal(
        student_id=event.student_id,
        cohort=event.cohort,
        kind=event.kind,
        severity=severity,
        episode_key=key,
        episode_id=event.episode_id,
        title=title,
        evidence=(trigger, *behind),
        occur_time=event.detect_time,
    )


def drops_into_red(change: BandChange) -> bool:
    """Yellow or higher before, red now, with enough evidence behind the red."""
    return (
        change.previous_band >= Band.YELLOW
        and change.band == Band.RED
        and change.evidence_count >= MIN_EVIDENCE
    )


def falling_behind(event: MasteryChange) -> list[Signal]:
    signals = []
    for change in event.changes:
        if not drops_into_red(change):
            continue
        label = topic_label(change.topic)
        what = "overall mastery" if change.topic == OVERALL else f"mastery of {label}"
        before = band_label(change.previous_band)
        summary = (
            f"{what} {before} to red: {percent(change.previous_score)} % to "
            f"{percent(change.score)} %, {change.evidence_count} pieces of evidence"
        )
        signals.append(
            Signal(
                student_id=event.student_id,
                cohort=event.cohort,
                kind=Kind.FALLING_BEHIND,
                severity=Severity.HIGH if change.topic == OVERALL else Severity.MEDIUM,
                episode_key=f"falling-behind:{event.student_id}:{change.topic}",
                episode_id="",
                title=f"{event.student_id}'s {what} fell from {before} to red "
                f"({percent(change.score)} %)",
                evidence=(
                    Evidence(
                        EvidenceType.MASTERY_CHANGE,
                        summary=summary,
                        resource=f"students/{event.student_id}/mastery",
                        value=change.score,
                        previous_value=change.previous_score,
                        occur_time=event.update_time,
                        event_source=event.source,
                        event_id=event.event_id,
                    ),
                ),
                occur_time=event.update_time,
            )
        )
    return signals
