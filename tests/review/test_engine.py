"""The model pass, through the real openai client against the scripted server: what
holds up of the model's suggestions is added, the score never moves, and any failure
leaves the offline review."""

from __future__ import annotations

from typing import Any

import pytest

from services.kit.config import Settings
from services.kit.errors import Unavailable
from services.kit.llm import LLM
from services.review.domain.linter import RuffLinter
from services.review.domain.model import Origin
from services.review.domain.review import review_code
from services.review.domain.suggestions import apply
from services.review.engine import ReviewEngine
from tests.conftest import every_student_consents
from tests.review.samples import BAD
from tests.support.openai_server import (
    ScriptedOpenAI,
    json_reply,
    malformed_reply,
    status_reply,
    text_reply,
)

GOOD = {
    "title": "Name the function in snake_case",
    "before": "def Average(values):",
    "after": "def average(values):",
    "rationale": "PEP 8 names functions in lowercase with underscores.",
    "line": 5,
}
NOT_IN_CODE = {
    "title": "Use sum()",
    "before": "for value in values:\n    total += value",
    "after": "total = sum(values)",
    "rationale": "Built-ins are clearer.",
    "line": 7,
}
DOES_NOT_PARSE = {
    "title": "Simplify",
    "before": "    unused = 42",
    "after": "    unused = = 42",
    "rationale": "Broken on purpose.",
    "line": 13,
}


def reply(*suggestions: dict[str, Any], summary: str = "Nice start.") -> dict[str, Any]:
    return {"summary": summary, "suggestions": list(suggestions)}


@pytest.fixture
def offline(linter: RuffLinter) -> Any:
    return review_code(BAD, linter)


def test_a_valid_model_suggestion_is_kept_and_bad_ones_are_dropped(
    linter: RuffLinter, llm: LLM, openai_server: ScriptedOpenAI, offline: Any
) -> None:
    openai_server.enqueue(
        json_reply(reply(NOT_IN_CODE, GOOD, DOES_NOT_PARSE, summary="Clear structure."))
    )
    review = ReviewEngine(linter, llm).review(BAD, topic=3)

    model = [s for s in review.suggestions if s.origin == Origin.MODEL]
    assert len(model) == 1
    (kept,) = model
    assert (kept.title, kept.before, kept.after) == (
        GOOD["title"],
        "def Average(values):",
        "def average(values):",
    )
    assert (kept.span.line, kept.span.end_line) == (5, 5)
    assert "def average(values):" in apply(BAD, kept)
    # The linter's suggestions are all still there, first.
    assert review.suggestions[: len(offline.suggestions)] == offline.suggestions
    # The model's words are in the summary; the score, findings and metrics are not its.
    assert "Clear structure." in review.summary
    assert f"Quality {offline.quality_score}/100" in review.summary
    assert review.quality_score == offline.quality_score
    assert review.findings == offline.findings and review.metrics == offline.metrics

    (request,) = openai_server.requests
    prompt = "\n".join(m["content"] for m in request["messages"])
    assert "def Average(values):" in prompt and "F821" in prompt and "Functions" in prompt
    assert request["response_format"]["type"] == "json_schema"


def test_a_model_that_claims_a_score_does_not_change_it(
    linter: RuffLinter, llm: LLM, openai_server: ScriptedOpenAI, offline: Any
) -> None:
    openai_server.enqueue(json_reply(reply(summary="Quality 100/100, perfect code!")))
    review = ReviewEngine(linter, llm).review(BAD)
    assert review.quality_score == offline.quality_score
    assert review.summary.startswith(f"**Quality {offline.quality_score}/100**")


@pytest.mark.parametrize(
    "failure",
    [status_reply(500), malformed_reply(), text_reply("not json at all")],
    ids=["server-500", "malformed-body", "not-the-schema"],
)
def test_when_the_model_fails_the_offline_review_stands(
    linter: RuffLinter, llm: LLM, openai_server: ScriptedOpenAI, offline: Any, failure: Any
) -> None:
    openai_server.enqueue(failure)
    review = ReviewEngine(linter, llm).review(BAD)
    assert len(openai_server.requests) == 1  # the model was asked
    assert review == offline  # same score, findings, suggestions and summary


def test_without_a_key_the_model_is_not_called(
    linter: RuffLinter, settings: Settings, openai_server: ScriptedOpenAI, offline: Any
) -> None:
    review = ReviewEngine(linter, LLM(settings, model_use=every_student_consents)).review(BAD)
    assert openai_server.requests == []
    assert review == offline


def test_a_broken_linter_is_unavailable_not_a_crash() -> None:
    with pytest.raises(Unavailable):
        ReviewEngine(RuffLinter(binary="/nonexistent/ruff")).review("x = 1\n")


def test_the_prompt_lists_the_most_severe_findings_only(
    linter: RuffLinter, llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    code = "".join(f"x{i}=[{i},{i}]\n" for i in range(60)) + "print(missing)\n"
    openai_server.enqueue(json_reply(reply()))
    review = ReviewEngine(linter, llm).review(code)
    assert len(review.findings) == 121  # E225 and E231 on each line, and F821
    prompt = openai_server.requests[0]["messages"][1]["content"]
    listed = [line for line in prompt.splitlines() if line.startswith("- line ")]
    assert len(listed) == 40
    assert "- line 61: F821" in prompt  # the error is kept, layout notes are cut
    assert "and 81 less severe findings not listed" in prompt
