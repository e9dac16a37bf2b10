"""What the updates consumer writes for each event: whose stream, which cohort's, and in
which tenant's log; events without a tenant are poison."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.notify.v1 import notify_pb2

from services.kit.bus import Envelope, PoisonEventError, Record
from services.notify.consumer import apply_updates, to_update
from services.notify.updates import UpdateRow

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
RED, YELLOW = common_pb2.MASTERY_BAND_RED, common_pb2.MASTERY_BAND_YELLOW


def envelope(
    message: object, topic: str, *, at: datetime | None = None, event_id: str = "e1"
) -> Envelope:
    headers = {"ce_id": event_id, "ce_source": "//learnflow.dev/test", "ce_type": "t"}
    headers["ce_time"] = (at or datetime.now(UTC)).isoformat()
    return Envelope(Record(topic, 0, 0, "alice", b"", headers), message)  # type: ignore[arg-type]


def student(cohort: str = "c-token", tenant: str = "school-a") -> events_pb2.StudentRef:
    return events_pb2.StudentRef(student_id="alice", cohort=cohort, tenant=tenant)


def roster(
    cohort: str | None,
) -> tuple[list[tuple[str, str]], Callable[[str, str], str | None]]:
    """A roster that knows everyone in `cohort`, and the (tenant, student) it was asked."""
    asked: list[tuple[str, str]] = []

    def cohort_of(tenant: str, student_id: str) -> str | None:
        asked.append((tenant, student_id))
        return cohort

    return asked, cohort_of


def test_an_answer_is_for_the_students_own_stream_only() -> None:
    answer = events_pb2.LearningResponse(
        student=student(), agent="review", text="Nice.", final=True
    )
    placed = to_update(
        envelope(answer, "learning.responses"), lambda _t, _s: "c1", newer_than=LONG_AGO
    )
    assert placed is not None
    tenant, row = placed
    assert tenant == "school-a"
    assert (row.student_id, row.cohort) == ("alice", None)
    assert (row.ce_source, row.ce_id) == ("//learnflow.dev/test", "e1")
    assert notify_pb2.Update.FromString(row.payload).learning_response.text == "Nice."


def test_mastery_reaches_teachers_only_when_a_band_changes() -> None:
    same = events_pb2.MasteryUpdated(student=student(), previous_band=RED, band=RED, score=0.3)
    placed = to_update(envelope(same, "mastery.updated"), lambda _t, _s: "c1", newer_than=LONG_AGO)
    assert placed is not None and (placed[1].student_id, placed[1].cohort) == ("alice", None)

    topic_moved = events_pb2.MasteryUpdated(
        student=student(tenant="school-b"),
        previous_band=RED,
        band=RED,
        topics=[events_pb2.MasteryUpdated.TopicChange(previous_band=RED, band=YELLOW)],
    )
    asked, cohort_of = roster("c1")
    placed = to_update(envelope(topic_moved, "mastery.updated"), cohort_of, newer_than=LONG_AGO)
    assert placed is not None
    assert placed[0] == "school-b" and (placed[1].student_id, placed[1].cohort) == ("alice", "c1")
    assert asked == [("school-b", "alice")]  # the roster of the event's tenant
    placed = to_update(
        envelope(topic_moved, "mastery.updated"), lambda _t, _s: None, newer_than=LONG_AGO
    )
    assert placed is not None and placed[1].cohort == "c-token"  # else the event's


def test_events_older_than_the_log_and_poison() -> None:
    answer = events_pb2.LearningResponse(student=student(), text="old")
    old = envelope(answer, "learning.responses", at=datetime.now(UTC) - timedelta(days=2))
    newer_than = datetime.now(UTC) - timedelta(days=1)
    assert to_update(old, lambda _t, _s: "c1", newer_than=newer_than) is None
    nobody = events_pb2.LearningResponse(text="whose?", student=student())
    nobody.student.student_id = ""
    with pytest.raises(PoisonEventError):
        to_update(envelope(nobody, "learning.responses"), lambda _t, _s: "c1", newer_than=LONG_AGO)
    with pytest.raises(PoisonEventError):
        to_update(
            envelope(events_pb2.StudentErased(), "learning.responses"),
            lambda _t, _s: None,
            newer_than=LONG_AGO,
        )


@pytest.mark.parametrize("tenant", ["", "School A", "a/b", "x" * 80])
def test_an_event_without_a_usable_tenant_is_poison(tenant: str) -> None:
    for message, topic in (
        (
            events_pb2.LearningResponse(student=student(tenant=tenant), text="hi"),
            "learning.responses",
        ),
        (
            events_pb2.MasteryUpdated(
                student=student(tenant=tenant), previous_band=RED, band=YELLOW
            ),
            "mastery.updated",
        ),
    ):
        with pytest.raises(PoisonEventError, match="no tenant"):
            to_update(envelope(message, topic), lambda _t, _s: "c1", newer_than=LONG_AGO)


class Log:
    """The update log's writing side, in memory."""

    def __init__(self) -> None:
        self.retention = timedelta(hours=24)
        self.appended: list[tuple[str, list[str | None]]] = []

    def append(self, tenant: str, rows: Sequence[UpdateRow]) -> int:
        self.appended.append((tenant, [row.ce_id for row in rows]))
        return len(rows)


def test_a_batch_of_several_tenants_is_written_to_each_tenants_log() -> None:
    def answer(tenant: str, event_id: str) -> Envelope:
        message = events_pb2.LearningResponse(student=student(tenant=tenant), text=event_id)
        return envelope(message, "learning.responses", event_id=event_id)

    log = Log()
    batch = [answer("school-a", "a1"), answer("school-b", "b1"), answer("school-a", "a2")]
    apply_updates(log, lambda _t, _s: None, batch)
    assert log.appended == [("school-a", ["a1", "a2"]), ("school-b", ["b1"])]


def test_a_batch_holding_an_event_without_tenant_writes_nothing() -> None:
    """The loop then retries event by event and dead-letters the one without."""
    log = Log()
    good = envelope(events_pb2.LearningResponse(student=student(), text="ok"), "learning.responses")
    bad = envelope(
        events_pb2.LearningResponse(student=student(tenant=""), text="whose school?"),
        "learning.responses",
        event_id="e2",
    )
    with pytest.raises(PoisonEventError, match="no tenant"):
        apply_updates(log, lambda _t, _s: None, [good, bad])
    assert log.appended == []
