"""The model path: an explanation written by the LLM from the prompt templates in
`prompts/`, returned as a domain `Draft`. Nothing it writes is trusted: the engine runs
its examples and parses its diagram exactly as it does for curated content."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.concepts.domain.content import Diagram, Example, Level, Topic
from services.concepts.domain.explain import Draft
from services.concepts.domain.proof import Rejected
from services.kit.llm import LLM, PromptTemplates

PROMPTS = Path(__file__).resolve().parent / "prompts"
AGENT = "concepts"


class GeneratedExample(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field(min_length=1, max_length=3000)
    caption: str = Field(default="", max_length=300)


class GeneratedExplanation(BaseModel):
    """What the model must return (its JSON schema is sent with the request)."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=6000)
    examples: list[GeneratedExample] = Field(default_factory=list, max_length=6)
    pitfalls: list[str] = Field(default_factory=list, max_length=8)
    mermaid: str | None = Field(default=None, max_length=4000)
    diagram_caption: str | None = Field(default=None, max_length=300)


class ModelWriter:
    """Writes drafts with the model; raises `LLMUnavailable` whenever it cannot."""

    def __init__(self, llm: LLM, templates: PromptTemplates | None = None) -> None:
        self._llm = llm
        self._templates = templates or PromptTemplates(PROMPTS)

    @property
    def enabled(self) -> bool:
        return self._llm.enabled

    def write(
        self,
        *,
        topic: Topic,
        topic_name: str,
        topic_description: str,
        level: Level,
        question: str,
        include_diagram: bool,
        reference: Draft | None = None,
        failed: Sequence[Rejected] = (),
    ) -> Draft:
        prompt = self._templates.render(
            "explain",
            topic=topic.slug,
            topic_name=topic_name,
            topic_description=topic_description,
            level=level.label,
            question=question.strip(),
            include_diagram=include_diagram,
            reference=f"{reference.title}\n{reference.body}" if reference else "",
            failed=list(failed),
        )
        answer = self._llm.structured(prompt, GeneratedExplanation, agent=AGENT)
        diagram = None
        if include_diagram and answer.mermaid and answer.mermaid.strip():
            diagram = Diagram(
                mermaid=answer.mermaid.strip() + "\n",
                caption=(answer.diagram_caption or "").strip(),
            )
        return Draft(
            title=answer.title.strip(),
            body=answer.body.strip() + "\n",
            examples=tuple(
                Example(code=e.code.rstrip() + "\n", caption=e.caption.strip())
                for e in answer.examples
            ),
            pitfalls=tuple(p.strip() for p in answer.pitfalls if p.strip()),
            diagram=diagram,
        )
