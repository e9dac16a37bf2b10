"""The learning.responses rule (services.kit.responses) with plain values: what one
event carries, text cut to a summary, and a bus that cannot take it never failing the
answer."""

from __future__ import annotations

import logging

import pytest
from learnflow.events.v1 import events_pb2

from services.kit.bus import LEARNING_RESPONSES, InProcessBus, Publisher, decode
from services.kit.responses import MAX_TEXT_CHARS, LearningResponses


def test_a_whole_answer_is_one_final_event_keyed_by_the_student() -> None:
    bus = InProcessBus()
    LearningResponses(Publisher(bus, "//test"), "review").answer(
        "amy", "## Code review: 90/100", resource="students/amy/codeReviews/r1", cohort="c1"
    )
    (record,) = bus.records(LEARNING_RESPONSES)
    assert record.key == "amy" and record.headers["ce_subject"] == "amy"
    event = decode(record).message
    assert isinstance(event, events_pb2.LearningResponse)
    assert (event.student.student_id, event.student.cohort, event.agent) == ("amy", "c1", "review")
    assert (event.sequence, event.final, event.resource) == (0, True, "students/amy/codeReviews/r1")
    assert event.text == "## Code review: 90/100" and event.occur_time.seconds > 0
    assert event.request_id == ""  # outside a call there is none


def test_long_text_is_cut_to_a_summary() -> None:
    bus = InProcessBus()
    LearningResponses(Publisher(bus, "//test"), "concepts").answer("amy", "x" * 20_000)
    event = decode(bus.records(LEARNING_RESPONSES)[0]).message
    assert isinstance(event, events_pb2.LearningResponse)
    assert len(event.text) == MAX_TEXT_CHARS and event.text.endswith("…")


class DownBus(InProcessBus):
    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str]
    ) -> None:
        raise RuntimeError("broker away")


def test_a_bus_that_cannot_take_it_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    responses = LearningResponses(Publisher(DownBus(), "//test"), "triage")
    with caplog.at_level(logging.WARNING, "learnflow.responses"):
        responses.answer("amy", "an answer")
        sent = responses.chunk(
            "amy", text="a piece", request_id="r1", sequence=3, final=False, agent="concepts"
        )
    assert sent is False
    assert [r.getMessage() for r in caplog.records] == ["learning response not published"] * 2
