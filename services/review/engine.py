"""The review use case: the offline review, plus the model's suggestions and prose when
a model is configured.

The model only ever adds: suggestions that survive `model_suggestion`'s checks (their
`before` is in the code, their `after` parses in place) and a paragraph under the
summary's headline. Findings, metrics and the score are the offline review's, so a
review scores the same with or without the model, and when the model is down.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, Field

from services.kit.curriculum import BY_TOPIC
from services.kit.errors import Unavailable
from services.kit.llm import LLM, LLMUnavailable, PromptTemplates
from services.review.domain.linter import LinterError, RuffLinter
from services.review.domain.model import Finding, Review, Suggestion
from services.review.domain.review import normalise, review_code
from services.review.domain.suggestions import model_suggestion
from services.review.domain.summary import headline

log = logging.getLogger("learnflow.review")

PROMPTS = Path(__file__).parent / "prompts"
AGENT = "review"
MAX_MODEL_SUGGESTIONS = 5
MAX_PROSE_CHARS = 1500
MAX_PROMPT_FINDINGS = 40  # the most severe; a 2,000-line file can have thousands


class ModelSuggestion(BaseModel):
    title: str
    before: str
    after: str
    rationale: str
    line: int = 1


class ModelReview(BaseModel):
    """What the model is asked for (review.system.j2 describes each field)."""

    summary: str = ""
    suggestions: list[ModelSuggestion] = Field(default_factory=list)


class ReviewEngine:
    def __init__(
        self,
        linter: RuffLinter,
        llm: LLM | None = None,
        templates: PromptTemplates | None = None,
    ) -> None:
        self._linter = linter
        self._llm = llm
        self._templates = templates or PromptTemplates(PROMPTS)

    def review(self, code: str, topic: int = 0) -> Review:
        code = normalise(code)
        try:
            offline = review_code(code, self._linter)
        except LinterError as exc:
            log.error("linter failed", extra={"error": str(exc)})
            raise Unavailable(f"the linter is unavailable: {exc}") from None
        if self._llm is None or not self._llm.enabled:
            return offline
        try:
            reply = self._llm.structured(
                self._templates.render(
                    "review",
                    code=code,
                    topic=topic_name(topic),
                    findings=prompt_findings(offline),
                    more_findings=max(0, len(offline.findings) - MAX_PROMPT_FINDINGS),
                    metrics=offline.metrics,
                    max_suggestions=MAX_MODEL_SUGGESTIONS,
                ),
                ModelReview,
                agent=AGENT,
            )
        except LLMUnavailable:
            return offline  # the kit logged why; the offline review stands on its own
        return with_model(code, offline, reply)


def prompt_findings(review: Review) -> list[Finding]:
    ranked = sorted(review.findings, key=lambda f: (-f.severity, f.span.line))
    return sorted(ranked[:MAX_PROMPT_FINDINGS], key=lambda f: f.span.line)


def topic_name(topic: int) -> str:
    entry = next((e for t, e in BY_TOPIC.items() if int(t) == topic), None)
    return entry.display_name if entry else ""


def with_model(code: str, offline: Review, reply: ModelReview) -> Review:
    """The offline review plus what holds up of the model's reply."""
    seen = {(s.before, s.after) for s in offline.suggestions}
    added: list[Suggestion] = []
    for item in reply.suggestions[:MAX_MODEL_SUGGESTIONS]:
        suggestion = model_suggestion(
            code,
            title=item.title,
            before=item.before,
            after=item.after,
            rationale=item.rationale,
            line=item.line,
        )
        if suggestion is None or (suggestion.before, suggestion.after) in seen:
            continue
        seen.add((suggestion.before, suggestion.after))
        added.append(suggestion)
    considered = min(len(reply.suggestions), MAX_MODEL_SUGGESTIONS)
    if considered > len(added):
        log.info(
            "model suggestions dropped",
            extra={"dropped": considered - len(added), "kept": len(added)},
        )
    summary = offline.summary
    prose = reply.summary.strip()[:MAX_PROSE_CHARS]
    if prose and offline.parses:
        # The headline (score, size, counts) stays ours; the model adds the words.
        summary = headline(offline.quality_score, offline.metrics, offline.findings)
        summary += "\n\n" + prose
    elif prose:
        summary += "\n\n" + prose
    return replace(offline, suggestions=offline.suggestions + tuple(added), summary=summary)
