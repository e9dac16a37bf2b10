"""The concepts agent's use case: explain a topic (or answer a question about one) at
the student's level, with examples that really ran and a diagram Mermaid accepts.

With the model enabled the text is the model's (origin MODEL); whenever the model gives
nothing usable the curated content answers (origin CURATED). Either way the same checks
apply before anything is returned (`domain/explain.py`). Transport-free: the sandbox,
the Mermaid validator, the mastery lookup, the model and the publisher of answers
(learning.responses, so the student's other screens show the explanation) are passed
in."""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.concepts.domain.content import Level, Library, Topic
from services.concepts.domain.explain import (
    Draft,
    Explanation,
    Origin,
    ValidateDiagram,
    checked_diagram,
    choose_level,
    curated_draft,
    finish,
    pitfalls_for_level,
    prove_for_level,
)
from services.concepts.domain.matching import resolve
from services.concepts.domain.proof import ExampleProver, Rejected
from services.concepts.writer import ModelWriter
from services.kit.auth import Principal, Role
from services.kit.curriculum import BY_TOPIC
from services.kit.errors import FieldViolation, InvalidArgument
from services.kit.llm import LLMUnavailable
from services.kit.responses import LearningResponses

log = logging.getLogger("learnflow.concepts")

MasteryLevel = Callable[[str, Topic], Level | None]
"""The level a student is at on a topic (from the mastery engine), or None if unknown."""
StudentCohort = Callable[[str, str], str | None]
"""The cohort a student of a tenant belongs to, `cohort_of(tenant, student_id)` (from the
mastery engine), or None if unknown there."""


def authorise(principal: Principal, student_id: str, cohort_of: StudentCohort) -> None:
    """Student: themselves only, refused before any lookup; admin and operator: anyone of
    the tenant the call acts in; teacher: a student of one of their cohorts in that
    tenant (an unknown cohort is refused: a same-named cohort of another school is not
    theirs)."""
    if principal.role is Role.TEACHER:
        principal.require_student(student_id, cohort_of(principal.tenant, student_id))
    else:
        principal.require_student(student_id)


class ConceptsEngine:
    def __init__(
        self,
        library: Library,
        prover: ExampleProver,
        validate_diagram: ValidateDiagram,
        mastery_level: MasteryLevel,
        writer: ModelWriter | None = None,
        *,
        responses: LearningResponses | None = None,
    ) -> None:
        self.library = library
        self._prover = prover
        self._validate = validate_diagram
        self._mastery_level = mastery_level
        self._writer = writer
        self._responses = responses

    def explain(
        self,
        student_id: str,
        *,
        topic: Topic | None,
        question: str,
        level: Level | None,
        include_diagram: bool,
    ) -> Explanation:
        explanation = self._explain(
            student_id, topic=topic, question=question, level=level, include_diagram=include_diagram
        )
        if self._responses is not None:  # the student's other screens show it too
            self._responses.answer(student_id, explanation_markdown(explanation))
        return explanation

    def _explain(
        self,
        student_id: str,
        *,
        topic: Topic | None,
        question: str,
        level: Level | None,
        include_diagram: bool,
    ) -> Explanation:
        match = resolve(self.library, topic, question)
        if match is None:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "topic",
                        "is required: the question does not name a Python topic LearnFlow teaches",
                    )
                ]
            )
        chosen = choose_level(level, lambda: self._mastery_level(student_id, match.topic))
        curated = curated_draft(self.library, match.topic, chosen, match.question)
        question_id = match.question.question_id if match.question else ""
        if self._writer is not None and self._writer.enabled:
            try:
                return self._from_model(
                    topic=match.topic,
                    level=chosen,
                    question=question,
                    include_diagram=include_diagram,
                    curated=curated,
                    question_id=question_id,
                )
            except LLMUnavailable as exc:
                log.info("model unavailable (%s): curated explanation instead", exc.reason)
        return finish(
            curated,
            topic=match.topic,
            level=chosen,
            origin=Origin.CURATED,
            prover=self._prover,
            validate=self._validate,
            include_diagram=include_diagram,
            question_id=question_id,
        )

    def _from_model(
        self,
        *,
        topic: Topic,
        level: Level,
        question: str,
        include_diagram: bool,
        curated: Draft,
        question_id: str,
    ) -> Explanation:
        assert self._writer is not None
        entry = BY_TOPIC[int(topic)]  # type: ignore[index]

        def write(failed: list[Rejected]) -> Draft:
            assert self._writer is not None
            return self._writer.write(
                topic=topic,
                topic_name=entry.display_name,
                topic_description=entry.description,
                level=level,
                question=question,
                include_diagram=include_diagram,
                reference=curated,
                failed=failed,
            )

        draft = write([])  # LLMUnavailable here: the caller answers from curated content
        examples, rejected = prove_for_level(self._prover, draft.examples, level)
        if not examples:
            log.warning(
                "none of the model's %d examples ran; asking once more", len(draft.examples)
            )
            try:
                draft = write(rejected or [Rejected("(none)", "", "no examples were given")])
                examples, _ = prove_for_level(self._prover, draft.examples, level)
            except LLMUnavailable as exc:
                log.info("model unavailable on the second attempt (%s)", exc.reason)
        if not examples:
            log.warning("the model's examples failed twice: showing the curated examples")
            examples, _ = prove_for_level(self._prover, curated.examples, level)
        diagram = None
        if include_diagram:
            diagram = checked_diagram(
                self._validate, draft.diagram, f"model {topic.slug}/{level.label}"
            ) or checked_diagram(self._validate, curated.diagram, f"{topic.slug}/{level.label}")
        return Explanation(
            topic=topic,
            level=level,
            title=draft.title,
            body=draft.body,
            examples=tuple(examples),
            pitfalls=pitfalls_for_level(draft.pitfalls or curated.pitfalls, level),
            diagram=diagram,
            origin=Origin.MODEL,
            question_id=question_id,
        )


def explanation_markdown(explanation: Explanation) -> str:
    """The explanation for a live screen: title, text and its first example."""
    parts = [f"## {explanation.title}", explanation.body.strip()]
    if explanation.examples:
        example = explanation.examples[0]
        parts.append(f"```python\n{example.code.rstrip()}\n```")
    return "\n\n".join(p for p in parts if p)
