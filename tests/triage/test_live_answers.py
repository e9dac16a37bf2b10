"""An Ask's answer as it goes to the student's other screens (learning.responses):
each chunk as it is streamed, in order, one final; an agent failing midway still ends
the live answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from learnflow.events.v1 import events_pb2

from services.kit.bus import LEARNING_RESPONSES, InProcessBus, Publisher
from services.kit.responses import LearningResponses
from services.triage.answers import Answer, live


def published(bus: InProcessBus) -> list[events_pb2.LearningResponse]:
    return [
        events_pb2.LearningResponse.FromString(r.value) for r in bus.records(LEARNING_RESPONSES)
    ]


def test_every_chunk_is_published_as_it_is_streamed() -> None:
    bus = InProcessBus()
    responses = LearningResponses(Publisher(bus, "//test"), "triage")
    answer = Answer("concepts", iter(["## Loops\n\n", "A loop repeats.\n"]))
    streamed = list(live(answer, responses, student_id="amy", request_id="r1", tenant="school-a"))
    events = published(bus)
    assert [(c.sequence, c.text, c.final) for c in streamed] == [
        (e.sequence, e.text, e.final) for e in events
    ]
    assert [e.final for e in events] == [False, False, True]
    assert {(e.agent, e.request_id, e.student.student_id, e.student.tenant) for e in events} == {
        ("concepts", "r1", "amy", "school-a")
    }


def test_an_agent_failing_midway_still_ends_the_live_answer() -> None:
    def pieces() -> Iterator[str]:
        yield "first\n\n"
        raise RuntimeError("agent down")

    bus = InProcessBus()
    responses = LearningResponses(Publisher(bus, "//test"), "triage")
    chunks = live(
        Answer("review", pieces()), responses, student_id="amy", request_id="r2", tenant="dev"
    )
    with pytest.raises(RuntimeError):
        list(chunks)
    assert [(e.sequence, e.final) for e in published(bus)] == [(0, False), (1, True)]


def test_a_caller_leaving_ends_the_live_answer_once() -> None:
    bus = InProcessBus()
    responses = LearningResponses(Publisher(bus, "//test"), "triage")
    chunks = live(
        Answer("concepts", iter(["a\n\n", "b\n"])),
        responses,
        student_id="amy",
        request_id="r3",
        tenant="school-b",
    )
    next(chunks)
    chunks.close()  # outside any call: the tenant is the one given, not the call's
    events = published(bus)
    assert [(e.sequence, e.final) for e in events] == [(0, False), (1, True)]
    assert {e.student.tenant for e in events} == {"school-b"}
