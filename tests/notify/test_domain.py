"""The notify domain with plain values: the band-drop rule, episode merging, the
state machine and etags."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.kit.topics import Band
from services.notify.domain.model import (
    MAX_EVIDENCE,
    Alert,
    EvidenceType,
    IllegalTransitionError,
    Intervention,
    Kind,
    Severity,
    StaleEtagError,
    State,
    acknowledge,
    flag,
    merge,
    open_alert,
    resolve,
)
from services.notify.domain.rules import (
    BandChange,
    MasteryChange,
    Struggle,
    drops_into_red,
    falling_behind,
    struggle_signal,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BAND_NONE, BAND_RED, BAND_YELLOW, GREEN, BLUE = (
    Band.NONE,
    Band.RED,
    Band.YELLOW,
    Band.GREEN,
    Band.BLUE,
)


def change(previous: int, band: int, evidence: int = 5, topic: int = 0) -> BandChange:
    return BandChange(topic, previous, band, 0.5, 0.3, evidence)


@pytest.mark.parametrize(
    ("previous", "band", "evidence", "alerts"),
    [
        (BAND_YELLOW, BAND_RED, 5, True),
        (GREEN, BAND_RED, 9, True),
        (BLUE, BAND_RED, 5, True),
        (BAND_NONE, BAND_RED, 50, False),  # a first band of red: every beginner starts there
        (BAND_YELLOW, BAND_RED, 4, False),  # too little evidence to mean anything
        (BAND_RED, BAND_RED, 20, False),  # already red
        (GREEN, BAND_YELLOW, 20, False),  # down, but not into red
        (BAND_RED, BAND_YELLOW, 20, False),  # up
    ],
)
def test_band_drop_rule(previous: int, band: int, evidence: int, alerts: bool) -> None:
    assert drops_into_red(change(previous, band, evidence)) is alerts


def mastery_event(*changes: BandChange, event_id: str = "m1") -> MasteryChange:
    return MasteryChange("//learnflow.dev/mastery", event_id, "amy", "c1", changes, T0)


def test_falling_behind_overall_and_topic_are_separate_episodes() -> None:
    signals = falling_behind(
        mastery_event(
            change(BAND_YELLOW, BAND_RED, 6),
            change(GREEN, BAND_RED, 5, topic=3),
            change(BAND_NONE, BAND_RED, 5, topic=4),
        )
    )
    assert [s.episode_key for s in signals] == [
        "falling-behind:amy:0",
        "falling-behind:amy:3",
    ]
    overall, functions = signals
    assert overall.kind is Kind.FALLING_BEHIND and overall.severity is Severity.HIGH
    assert "overall mastery fell from yellow to red (30 %)" in overall.title
    assert "functions" in functions.title and functions.severity is Severity.MEDIUM
    (evidence,) = overall.evidence
    assert evidence.type is EvidenceType.MASTERY_CHANGE
    assert (evidence.value, evidence.previous_value) == (0.3, 0.5)
    assert evidence.occur_time == T0 and evidence.event_id == "m1"


def struggle(event_id: str = "s1", count: int = 4, ids: tuple[str, ...] = ()) -> Struggle:
    return Struggle(
        source="//learnflow.dev/debug",
        event_id=event_id,
        student_id="amy",
        cohort="c1",
        kind=Kind.REPEATED_ERROR,
        topic=5,
        error_type="IndexError",
        exercise_id="",
        occurrence_count=count,
        episode_id=f"ep-{event_id}",
        detect_time=T0,
        evidence_ids=ids or tuple(f"students/amy/diagnoses/d{i}" for i in range(count)),
    )


def test_a_repeated_error_signal_says_what_and_carries_its_diagnoses() -> None:
    signal = struggle_signal(struggle())
    assert signal.title == "amy hit IndexError 4 times in 10 minutes (collections)"
    assert signal.episode_key == "repeated-error:amy:IndexError"
    assert signal.severity is Severity.MEDIUM
    assert [e.type for e in signal.evidence] == [EvidenceType.STRUGGLE] + [
        EvidenceType.DIAGNOSIS
    ] * 4
    assert signal.evidence[0].value == 4 and signal.evidence[0].occur_time == T0


def new_alert() -> Alert:
    return open_alert(struggle_signal(struggle()), alert_id="a1", cohort="c1", creator="debug")


def test_a_continuing_episode_adds_its_evidence_to_the_open_alert() -> None:
    alert = new_alert()
    later = struggle_signal(
        struggle(
            "s2",
            count=9,
            ids=("students/amy/diagnoses/d3", "students/amy/diagnoses/d9"),  # d3 known
        )
    )
    merged, added = merge(alert, later, T0 + timedelta(minutes=5))
    assert [e.resource for e in added] == ["", "students/amy/diagnoses/d9"]
    assert len(merged.evidence) == len(alert.evidence) + 2
    assert merged.severity is Severity.HIGH  # 9 repeats: urgent now; severity only rises
    assert merged.title.startswith("amy hit IndexError 9 times")
    assert merged.version == alert.version + 1 and merged.etag != alert.etag
    assert merged.alert_id == alert.alert_id and merged.state is State.OPEN
    # The same signal again brings nothing new and changes nothing.
    again, none = merge(merged, later, T0 + timedelta(minutes=6))
    assert none == () and again is merged


def test_a_resolved_alert_takes_no_more_evidence() -> None:
    done = resolve(new_alert(), by="t", now=T0)
    with pytest.raises(ValueError):
        merge(done, struggle_signal(struggle("s2")), T0)


def test_evidence_is_bounded_keeping_the_trigger() -> None:
    alert = new_alert()
    for n in range(MAX_EVIDENCE):
        alert, _ = merge(alert, struggle_signal(struggle(f"s{n + 2}", ids=(f"x/{n}",))), T0)
    assert len(alert.evidence) == MAX_EVIDENCE
    assert alert.evidence[0].event_id == "s1"


def test_open_acknowledged_resolved() -> None:
    alert = new_alert()
    assert alert.state is State.OPEN
    seen = acknowledge(alert, by="teacher-1", now=T0, etag=alert.etag)
    assert (seen.state, seen.acknowledged_by, seen.acknowledged_at) == (
        State.ACKNOWLEDGED,
        "teacher-1",
        T0,
    )
    done = resolve(seen, by="teacher-2", now=T0, note="talked it through", etag=seen.etag)
    assert (done.state, done.resolved_by, done.resolution_note) == (
        State.RESOLVED,
        "teacher-2",
        "talked it through",
    )
    assert len({alert.etag, seen.etag, done.etag}) == 3


def test_an_open_alert_may_be_resolved_at_once() -> None:
    assert resolve(new_alert(), by="t", now=T0).state is State.RESOLVED


@pytest.mark.parametrize(
    "illegal",
    [
        lambda a: acknowledge(acknowledge(a, by="t", now=T0), by="t", now=T0),
        lambda a: acknowledge(resolve(a, by="t", now=T0), by="t", now=T0),
        lambda a: resolve(resolve(a, by="t", now=T0), by="t", now=T0),
    ],
)
def test_illegal_transitions(illegal: object) -> None:
    with pytest.raises(IllegalTransitionError):
        illegal(new_alert())  # type: ignore[operator]


def test_a_stale_etag_is_refused_before_the_state_is_looked_at() -> None:
    alert = new_alert()
    seen = acknowledge(alert, by="t1", now=T0, etag=alert.etag)
    with pytest.raises(StaleEtagError):
        acknowledge(seen, by="t2", now=T0, etag=alert.etag)  # the other teacher's old read
    with pytest.raises(StaleEtagError):
        resolve(seen, by="t2", now=T0, etag=alert.etag)
    assert resolve(seen, by="t2", now=T0, etag="").state is State.RESOLVED  # no etag: last wins


def test_etags_differ_between_alerts_of_one_version() -> None:
    assert new_alert().etag != replace(new_alert(), alert_id="a2").etag


def test_a_teacher_flags_a_student_by_hand() -> None:
    alert = flag(
        Intervention(
            "amy", "c1", "Missed three classes", "Parents informed.\nMore.", Severity.HIGH, "t1"
        ),
        alert_id="a9",
        now=T0,
    )
    assert (alert.kind, alert.severity, alert.creator, alert.state) == (
        Kind.INTERVENTION,
        Severity.HIGH,
        "t1",
        State.OPEN,
    )
    assert alert.evidence[0].type is EvidenceType.NOTE
    assert alert.evidence[0].summary == "Parents informed."
