"""What the updates consumer writes for each event: whose stream, which cohort's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.notify.v1 import notify_pb2

from services.kit.bus import Envelope, PoisonEventError, Record
from services.notify.consumer import to_update

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
RED, YELLOW = common_pb2.MASTERY_BAND_RED, common_pb2.MASTERY_BAND_YELLOW


def envelope(message: object, topic: str, *, at: datetime | None = None) -> Envelope:
    headers = {"ce_id": "e1", "ce_source": "//learnflow.dev/test", "ce_type": "t"}
    headers["ce_time"] = (at or datetime.now(UTC)).isoformat()
    return Envelope(Record(topic, 0, 0, "alice", b"", headers), message)  # type: ignore[arg-type]


def student(cohort: str = "c-token") -> events_pb2.StudentRef:
    return events_pb2.StudentRef(student_id="alice", cohort=cohort)


def test_an_answer_is_for_the_students_own_stream_only() -> None:
    answer = events_pb2.LearningResponse(
        student=student(), agent="review", text="Nice.", final=True
    )
    row = to_update(envelope(answer, "learning.responses"), lambda _: "c1", newer_than=LONG_AGO)
    assert row is not None
    assert (row.student_id, row.cohort) == ("alice", None)
    assert (row.ce_source, row.ce_id) == ("//learnflow.dev/test", "e1")
    assert notify_pb2.Update.FromString(row.payload).learning_response.text == "Nice."


def test_mastery_reaches_teachers_only_when_a_band_changes() -> None:
    same = events_pb2.MasteryUpdated(student=student(), previous_band=RED, band=RED, score=0.3)
    row = to_update(envelope(same, "mastery.updated"), lambda _: "c1", newer_than=LONG_AGO)
    assert row is not None and (row.student_id, row.cohort) == ("alice", None)

    topic_moved = events_pb2.MasteryUpdated(
        student=student(),
        previous_band=RED,
        band=RED,
        topics=[events_pb2.MasteryUpdated.TopicChange(previous_band=RED, band=YELLOW)],
    )
    row = to_update(envelope(topic_moved, "mastery.updated"), lambda _: "c1", newer_than=LONG_AGO)
    assert row is not None and (row.student_id, row.cohort) == ("alice", "c1")  # the roster's
    row = to_update(envelope(topic_moved, "mastery.updated"), lambda _: None, newer_than=LONG_AGO)
    assert row is not None and row.cohort == "c-token"  # else the event's


def test_events_older_than_the_log_and_poison() -> None:
    answer = events_pb2.LearningResponse(student=student(), text="old")
    old = envelope(answer, "learning.responses", at=datetime.now(UTC) - timedelta(days=2))
    assert to_update(old, lambda _: "c1", newer_than=datetime.now(UTC) - timedelta(days=1)) is None
    nobody = events_pb2.LearningResponse(text="whose?")
    with pytest.raises(PoisonEventError):
        to_update(envelope(nobody, "learning.responses"), lambda _: "c1", newer_than=LONG_AGO)
    with pytest.raises(PoisonEventError):
        to_update(
            envelope(events_pb2.StudentErased(), "learning.responses"),
            lambda _: None,
            newer_than=LONG_AGO,
        )
