"""Triage on the running mesh: requests are classified and routed to the agent that
answers, the answer streams back over gRPC and as SSE through Envoy, student context
comes from the mastery engine and is dropped when mastery changes, and the model (the
scripted OpenAI-compatible server) is used when configured and survived when it fails."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from learnflow.common.v1 import common_pb2
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from tests.conftest import MintToken, bearer, free_port, wait_for
from tests.integration.test_mastery import Events, exercise
from tests.support.openai_server import (
    ScriptedOpenAI,
    json_reply,
    stall,
    status_reply,
    stream_reply,
)
from tests.support.rich_errors import rich_error

pytestmark = pytest.mark.integration

LOOP_QUESTION = "why does my for loop print the last item twice?"
TRACEBACK = """Traceback (most recent call last):
  File "main.py", line 3, in <module>
    print(totals["bob"])
          ~~~~~~^^^^^^^
KeyError: 'bob'
"""


def publish(settings: Settings, message: Message, student: str) -> None:
    """Graded work straight onto progress.events, as the exercise service would send it."""
    assert settings.kafka_bootstrap_servers
    events = Events(settings.kafka_bootstrap_servers)
    events.send(message, key=student)
    events.flush()


@pytest.fixture(scope="module")
def triage(mesh: dict[str, int]) -> Iterator[triage_pb2_grpc.TriageServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh['triage']}")
    yield triage_pb2_grpc.TriageServiceStub(channel)
    channel.close()


def ask(
    stub: triage_pb2_grpc.TriageServiceStub, token: str, **fields: Any
) -> tuple[triage_pb2.Classification, list[triage_pb2.AnswerChunk]]:
    replies = list(stub.Ask(triage_pb2.AskRequest(**fields), metadata=bearer(token), timeout=60))
    assert replies[0].WhichOneof("payload") == "classification"
    chunks = [r.chunk for r in replies[1:]]
    assert all(r.WhichOneof("payload") == "chunk" for r in replies[1:])
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].final and not any(c.final for c in chunks[:-1])
    return replies[0].classification, chunks


def text_of(chunks: list[triage_pb2.AnswerChunk]) -> str:
    return "".join(c.text for c in chunks)


def test_loop_question_gets_a_beginner_concept_answer(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    classification, chunks = ask(
        triage, mint_token(student), student=f"students/{student}", question=LOOP_QUESTION
    )
    assert classification.intent == triage_pb2.INTENT_CONCEPT
    assert classification.topic == common_pb2.TOPIC_CONTROL_FLOW
    assert classification.reason
    assert len(chunks) > 2  # streamed in pieces, not one blob
    assert {c.agent for c in chunks} == {"concepts"}
    answer = text_of(chunks).lower()
    # The specific cause, with an example whose output was really produced.
    assert "after the loop" in answer
    assert "```python" in answer and "output:" in answer


def test_traceback_routes_to_debugging(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    classification, chunks = ask(
        triage,
        mint_token(student),
        student=f"students/{student}",
        question="what does this mean??",
        code='totals = {"amy": 3}\n\nprint(totals["bob"])\n',
        traceback=TRACEBACK,
    )
    assert classification.intent == triage_pb2.INTENT_DEBUG
    assert classification.confidence >= 0.9
    assert "KeyError" in classification.reason
    assert text_of(chunks).strip()


def test_review_request_is_reviewed(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    code = "import os\ndef Add(a,b):\n    return a+b\n"
    classification, chunks = ask(
        triage,
        mint_token(student),
        student=f"students/{student}",
        question="can you review my code please",
        code=code,
    )
    assert classification.intent == triage_pb2.INTENT_REVIEW
    answer = text_of(chunks)
    assert {c.agent for c in chunks} == {"review"}
    assert "/100" in answer
    assert "F401" in answer  # the unused import, found by the real linter


def test_exercise_request_serves_an_exercise(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    classification, chunks = ask(
        triage,
        mint_token(student),
        student=f"students/{student}",
        question="give me an exercise on dictionaries",
    )
    assert classification.intent == triage_pb2.INTENT_EXERCISE
    assert classification.topic == common_pb2.TOPIC_COLLECTIONS
    answer = text_of(chunks)
    assert "exercises/" in answer and "```python" in answer


def test_progress_without_evidence_and_with_it(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken, settings: Settings
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    token = mint_token(student)
    question = "how am I doing so far?"
    classification, chunks = ask(triage, token, student=f"students/{student}", question=question)
    assert classification.intent == triage_pb2.INTENT_PROGRESS
    assert "no mastery" in text_of(chunks).lower()

    publish(settings, exercise(student, 0.8), student)

    def progress() -> str | None:
        _, chunks = ask(triage, token, student=f"students/{student}", question=question)
        text = text_of(chunks)
        return text if "%" in text else None

    text = wait_for(progress, what="mastery to reach the progress answer")
    assert "Functions" in text


def test_caller_chosen_intent_wins(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    classification, chunks = ask(
        triage,
        mint_token(student),
        student=f"students/{student}",
        question="for loops",
        intent=triage_pb2.INTENT_EXERCISE,
    )
    assert classification.intent == triage_pb2.INTENT_EXERCISE
    assert classification.confidence == 1.0
    assert {c.agent for c in chunks} == {"exercise"}


def test_classify_request(triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken) -> None:
    reply = triage.ClassifyRequest(
        triage_pb2.ClassifyRequestRequest(student="students/amy", question="what is a generator?"),
        metadata=bearer(mint_token("amy")),
        timeout=10,
    )
    assert reply.intent == triage_pb2.INTENT_CONCEPT
    assert reply.topic == common_pb2.TOPIC_ITERATORS_AND_GENERATORS
    assert 0 < reply.confidence <= 1


def test_bad_input_names_each_field(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(
            triage.Ask(
                triage_pb2.AskRequest(
                    student="students/amy",
                    question="",
                    code="x" * (64 * 1024 + 1),
                    traceback="t" * (16 * 1024 + 1),
                    intent=42,  # type: ignore[arg-type]
                ),
                metadata=bearer(mint_token("amy")),
                timeout=10,
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, fields = rich_error(caught.value)
    assert fields == ["code", "intent", "question", "traceback"]


def test_students_ask_only_for_themselves(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    for token in (mint_token("bob"), mint_token("t1", "teacher", ("c1",))):
        with pytest.raises(grpc.RpcError) as caught:
            list(
                triage.Ask(
                    triage_pb2.AskRequest(student="students/amy", question="what is a list"),
                    metadata=bearer(token),
                    timeout=10,
                )
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        triage.GetStudentContext(
            triage_pb2.GetStudentContextRequest(name="students/amy/context"),
            metadata=bearer(mint_token("bob")),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_context_is_cached_and_dropped_when_mastery_changes(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken, settings: Settings
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    token = bearer(mint_token(student, "student", ("c9",)))
    name = f"students/{student}/context"
    first = triage.GetStudentContext(
        triage_pb2.GetStudentContextRequest(name=name), metadata=token, timeout=10
    )
    assert (first.mastery_score, first.level) == (0.0, common_pb2.LEVEL_BEGINNER)
    again = triage.GetStudentContext(
        triage_pb2.GetStudentContextRequest(name=name), metadata=token, timeout=10
    )
    assert again.fetch_time == first.fetch_time  # served from the cache

    publish(settings, exercise(student, 1.0, cohort="c9"), student)

    def refreshed() -> triage_pb2.StudentContext | None:
        context = triage.GetStudentContext(
            triage_pb2.GetStudentContextRequest(name=name), metadata=token, timeout=10
        )
        return context if context.mastery_score > 0 else None

    # Well inside the 5-minute TTL: only mastery.updated can have dropped the entry.
    context = wait_for(refreshed, timeout=30, what="mastery.updated to drop the context")
    assert context.band != common_pb2.MASTERY_BAND_UNSPECIFIED
    assert context.fetch_time != first.fetch_time

    teacher = bearer(mint_token("t9", "teacher", ("c9",)))
    seen = triage.GetStudentContext(
        triage_pb2.GetStudentContextRequest(name=name), metadata=teacher, timeout=10
    )
    assert seen.mastery_score == context.mastery_score
    stranger = bearer(mint_token("t8", "teacher", ("c8",)))
    with pytest.raises(grpc.RpcError) as caught:
        triage.GetStudentContext(
            triage_pb2.GetStudentContextRequest(name=name), metadata=stranger, timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


# -- through Envoy ---------------------------------------------------------------------


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            events.append(json.loads(line.removeprefix("data:").strip()))
    return events


def test_ask_streams_as_server_sent_events_through_envoy(
    gateway_url: str, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    with (
        httpx.Client(base_url=gateway_url, timeout=60) as client,
        client.stream(
            "POST",
            f"/v1/students/{student}:ask",
            headers={"authorization": f"Bearer {mint_token(student)}"},
            json={"question": LOOP_QUESTION},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[0]["classification"]["intent"] == "INTENT_CONCEPT"
    chunks = [e["chunk"] for e in events[1:]]
    assert len(chunks) > 2
    assert chunks[-1]["final"] is True
    assert "after the loop" in "".join(c.get("text", "") for c in chunks).lower()


def test_ask_through_envoy_refuses_bad_input_as_json(
    gateway_url: str, mint_token: MintToken
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/students/amy:ask",
        headers={"authorization": f"Bearer {mint_token('amy')}"},
        json={"question": ""},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    body = response.json()
    violations = [
        v
        for d in body["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["fieldViolations"]
    ]
    assert {v["field"] for v in violations} == {"question"}


# -- with a model ----------------------------------------------------------------------


@pytest.fixture
def triage_with_model(
    llm_settings: Settings,
    mesh: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
    model_use_granted: None,
) -> Iterator[triage_pb2_grpc.TriageServiceStub]:
    """A second triage server configured with the scripted model, routing to the mesh."""
    spec = next(s for s in SERVICES if s.name == "triage")
    assert all(os.environ.get(s.address_env) for s in SERVICES)
    runtime = Runtime(llm_settings, run_dir=tmp_path_factory.mktemp("triage-llm"))
    port = free_port()
    server = LearnFlowServer(spec, builder("triage")(runtime), llm_settings, port=port)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield triage_pb2_grpc.TriageServiceStub(channel)
    channel.close()
    server.stop(grace=1.0)
    runtime.close()


def test_unclear_request_is_classified_by_the_model(
    triage_with_model: triage_pb2_grpc.TriageServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    openai_server.enqueue(
        json_reply(
            {
                "intent": "exercise",
                "confidence": 0.8,
                "reason": "they want something to practise",
                "topic": "recursion",
            }
        )
    )
    reply = triage_with_model.ClassifyRequest(
        triage_pb2.ClassifyRequestRequest(student="students/amy", question="hmm. bored"),
        metadata=bearer(mint_token("amy")),
        timeout=10,
    )
    assert (reply.intent, reply.topic) == (
        triage_pb2.INTENT_EXERCISE,
        common_pb2.TOPIC_RECURSION,
    )
    assert len(openai_server.requests) == 1
    assert "hmm. bored" in openai_server.requests[0]["messages"][1]["content"]

    # Structural evidence never needs the model.
    triage_with_model.ClassifyRequest(
        triage_pb2.ClassifyRequestRequest(
            student="students/amy", question="help", traceback=TRACEBACK
        ),
        metadata=bearer(mint_token("amy")),
        timeout=10,
    )
    assert len(openai_server.requests) == 1


def test_model_failure_falls_back_to_the_offline_classifier(
    triage_with_model: triage_pb2_grpc.TriageServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    openai_server.enqueue(status_reply(500))
    reply = triage_with_model.ClassifyRequest(
        triage_pb2.ClassifyRequestRequest(student="students/amy", question="hmm. bored"),
        metadata=bearer(mint_token("amy")),
        timeout=10,
    )
    assert reply.intent != triage_pb2.INTENT_UNSPECIFIED
    assert len(openai_server.requests) == 1


def test_progress_answer_streams_from_the_model(
    triage: triage_pb2_grpc.TriageServiceStub,
    triage_with_model: triage_pb2_grpc.TriageServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
    settings: Settings,
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    publish(settings, exercise(student, 0.9), student)
    token = mint_token(student)
    wait_for(  # on the offline triage, so the scripted model is not called meanwhile
        lambda: (
            ask(triage, token, student=f"students/{student}", question="how am I doing?")[1][
                0
            ].text.startswith("## Your progress")
            or None
        ),
        what="mastery for the student",
    )
    openai_server.enqueue(stream_reply(["Great ", "work on ", "functions!"]))
    _, chunks = ask(
        triage_with_model, token, student=f"students/{student}", question="how am I doing?"
    )
    assert [c.text for c in chunks[:-1]] == ["Great ", "work on ", "functions!"]
    prompt = openai_server.requests[0]["messages"][1]["content"]
    assert "Functions" in prompt and "%" in prompt  # the facts came from the engine

    openai_server.enqueue(status_reply(503))
    _, chunks = ask(
        triage_with_model, token, student=f"students/{student}", question="how am I doing?"
    )
    assert text_of(chunks).startswith("## Your progress")  # the offline answer


def test_slow_model_leaves_time_to_answer_offline(
    triage_with_model: triage_pb2_grpc.TriageServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    # The model would take 5 s; the caller gives the whole call 2.5 s. The model call
    # is cut to what is left minus a reserve, and the offline answer still arrives.
    openai_server.enqueue(stall(5.0))
    reply = triage_with_model.ClassifyRequest(
        triage_pb2.ClassifyRequestRequest(student="students/amy", question="hmm. bored"),
        metadata=bearer(mint_token("amy")),
        timeout=2.5,
    )
    assert reply.intent != triage_pb2.INTENT_UNSPECIFIED  # (past 2.5 s: DEADLINE_EXCEEDED)
    assert len(openai_server.requests) == 1


def test_question_without_a_recognisable_topic_gets_a_clarifying_answer(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    student = f"s-{uuid.uuid4().hex[:8]}"
    classification, chunks = ask(
        triage, mint_token(student), student=f"students/{student}", question="hmm"
    )
    assert classification.topic == common_pb2.TOPIC_UNSPECIFIED
    answer = text_of(chunks)
    assert "which part of Python" in answer and "recursion" in answer


def test_code_an_agent_will_not_take_gets_an_answer_not_an_error(
    triage: triage_pb2_grpc.TriageServiceStub, mint_token: MintToken
) -> None:
    """Triage takes 64 KiB of code; the review agent reads at most 2,000 lines. Routing
    longer code to it made Ask fail with INTERNAL ("a dependency failed"); the student
    now reads why. Found by test_robustness.py."""
    student = f"s-{uuid.uuid4().hex[:8]}"
    classification, chunks = ask(
        triage,
        mint_token(student),
        student=f"students/{student}",
        question="can you review my code please",
        code="x = 1\n" * 2001,
        intent=triage_pb2.INTENT_REVIEW,
    )
    assert classification.intent == triage_pb2.INTENT_REVIEW
    assert {c.agent for c in chunks} == {"review"}
    assert "2,000 lines" in text_of(chunks)
