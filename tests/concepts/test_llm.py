"""The model path, through the real openai client against the scripted server: the
model's text is used (origin MODEL) only with examples that really ran; whenever the
model gives nothing usable the curated explanation answers (origin CURATED)."""

from __future__ import annotations

from typing import Any

import pytest

from services.concepts.domain.content import Level, Library, Topic
from services.concepts.domain.explain import Origin
from services.concepts.domain.proof import ExampleProver
from services.concepts.engine import ConceptsEngine
from services.concepts.mermaid_validator import MermaidValidator
from services.concepts.writer import ModelWriter
from services.kit.config import Settings
from services.kit.llm import LLM
from tests.conftest import every_student_consents
from tests.support.openai_server import (
    ScriptedOpenAI,
    json_reply,
    malformed_reply,
    status_reply,
)

QUESTION = "how do I add up a list of numbers?"


def _answer(examples: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "title": "Adding up numbers",
        "body": "Use `sum()` on a list of numbers; it starts from 0 and adds each item.",
        "examples": examples,
        "pitfalls": ["`sum()` of strings raises TypeError; use `''.join()`."],
        "mermaid": "flowchart LR\n  L[list] --> S[sum] --> T[total]",
        "diagram_caption": "sum walks the list",
    }
    answer.update(extra)
    return answer


GOOD = {"code": "print(sum([1, 2, 3]))", "caption": "sum of a list"}
RAISES = {"code": "print(sum(['a', 'b']))", "caption": "raises TypeError"}
LOOPS = {"code": "total = 0\nfor n in [4, 5]:\n    total += n\nprint(total)", "caption": "loop"}


@pytest.fixture
def engine(
    library: Library,
    shared_prover: ExampleProver,
    validator: MermaidValidator,
    llm: LLM,
) -> ConceptsEngine:
    return ConceptsEngine(
        library, shared_prover, validator, lambda s, t: Level.INTERMEDIATE, ModelWriter(llm)
    )


def _ask(engine: ConceptsEngine, level: Level | None = None, diagram: bool = True) -> Any:
    return engine.explain(
        "ana",
        topic=Topic.COLLECTIONS,
        question=QUESTION,
        level=level,
        include_diagram=diagram,
    )


def test_a_good_model_answer_is_used_with_executed_examples(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(json_reply(_answer([GOOD, LOOPS])))
    answer = _ask(engine)
    assert answer.origin is Origin.MODEL and answer.title == "Adding up numbers"
    assert [(e.caption, e.output) for e in answer.examples] == [
        ("sum of a list", "6\n"),
        ("loop", "9\n"),
    ]
    assert answer.pitfalls == ("`sum()` of strings raises TypeError; use `''.join()`.",)
    assert answer.diagram is not None and answer.diagram.caption == "sum walks the list"
    (request,) = openai_server.requests
    system, user = (m["content"] for m in request["messages"])
    assert 'Rules for the level "intermediate"' in system
    assert "Two or three examples" in system and "no jargon" not in system
    assert QUESTION in user and "Collections" in user
    assert request["response_format"]["type"] == "json_schema"


def test_an_example_that_raises_is_dropped(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(json_reply(_answer([RAISES, GOOD])))
    answer = _ask(engine)
    assert answer.origin is Origin.MODEL
    assert [e.caption for e in answer.examples] == ["sum of a list"]
    assert len(openai_server.requests) == 1  # one example survived: no second request


def test_when_no_example_runs_the_model_is_asked_once_more(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(
        json_reply(_answer([RAISES])),
        json_reply(_answer([LOOPS], title="Adding up, take two")),
    )
    answer = _ask(engine)
    assert answer.origin is Origin.MODEL and answer.title == "Adding up, take two"
    assert [e.output for e in answer.examples] == ["9\n"]
    second_user = openai_server.requests[1]["messages"][1]["content"]
    assert "examples all failed" in second_user
    assert '"raises TypeError"' in second_user and "TypeError" in second_user


def test_examples_failing_twice_fall_back_to_curated_examples(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI, library: Library
) -> None:
    openai_server.enqueue(json_reply(_answer([RAISES])), json_reply(_answer([], title="Again")))
    answer = _ask(engine)
    assert answer.origin is Origin.MODEL and answer.title == "Again"
    curated = library.level(Topic.COLLECTIONS, Level.INTERMEDIATE)
    assert [e.code for e in answer.examples] == [e.code for e in curated.examples]
    assert all(e.output for e in answer.examples)


def test_the_second_attempt_failing_keeps_the_first_text_with_curated_examples(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(json_reply(_answer([RAISES])), status_reply(500))
    answer = _ask(engine)
    assert answer.origin is Origin.MODEL and answer.title == "Adding up numbers"
    assert answer.examples and all(e.output for e in answer.examples)


@pytest.mark.parametrize(
    "reply",
    [
        malformed_reply(),
        status_reply(500),
        json_reply({"title": "no body, no examples"}),
        json_reply({"text": "not the schema"}),
    ],
    ids=["malformed", "http-500", "missing-body", "wrong-schema"],
)
def test_an_unusable_model_answer_falls_back_to_curated(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI, library: Library, reply: Any
) -> None:
    openai_server.enqueue(reply)
    answer = _ask(engine)
    assert answer.origin is Origin.CURATED
    curated = library.level(Topic.COLLECTIONS, Level.INTERMEDIATE)
    assert answer.title == curated.title and len(answer.examples) == len(curated.examples)
    assert len(openai_server.requests) == 1


def test_an_invalid_model_diagram_is_replaced_by_the_curated_one(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    openai_server.enqueue(json_reply(_answer([GOOD], mermaid="graph TD; A-->")))
    with caplog.at_level("WARNING", logger="learnflow.concepts"):
        answer = _ask(engine)
    assert answer.origin is Origin.MODEL
    assert answer.diagram is not None and "A-->" not in answer.diagram.mermaid
    assert any(
        r.getMessage().startswith("diagram dropped (model collections/intermediate)")
        for r in caplog.records
    )


def test_a_beginner_gets_one_example_and_no_pitfalls(
    engine: ConceptsEngine, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(json_reply(_answer([RAISES, GOOD, LOOPS])))
    answer = _ask(engine, level=Level.BEGINNER, diagram=False)
    assert answer.origin is Origin.MODEL
    assert [e.caption for e in answer.examples] == ["sum of a list"]
    assert answer.pitfalls == () and answer.diagram is None
    system = openai_server.requests[0]["messages"][0]["content"]
    assert "Exactly ONE small example" in system and "no jargon" in system
    assert "No diagram" in openai_server.requests[0]["messages"][1]["content"]


def test_without_a_key_the_model_is_never_called(
    library: Library,
    shared_prover: ExampleProver,
    validator: MermaidValidator,
    settings: Settings,
    openai_server: ScriptedOpenAI,
) -> None:
    offline = LLM(settings, model_use=every_student_consents)
    assert not offline.enabled
    engine = ConceptsEngine(
        library, shared_prover, validator, lambda s, t: None, ModelWriter(offline)
    )
    answer = _ask(engine)
    assert answer.origin is Origin.CURATED and openai_server.requests == []
