"""Putting an explanation together: the level, the curated draft, and the checks every
explanation passes before it is returned, whoever wrote it (proven examples cut to the
level's shape, pitfalls only above beginner, a diagram only if the Mermaid parser
accepts it)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from services.concepts.domain.content import (
    MAX_DIAGRAM_CHARS,
    SHAPES,
    CommonQuestion,
    Diagram,
    Example,
    Level,
    Library,
    Topic,
)
from services.concepts.domain.proof import ExampleProver, ProvenExample, Rejected

log = logging.getLogger("learnflow.concepts")


class Origin(IntEnum):
    """Values match learnflow.concepts.v1.Explanation.Origin."""

    CURATED = 1
    MODEL = 2


@dataclass(frozen=True, slots=True)
class DiagramCheck:
    """What the Mermaid validator said. `unavailable`: it could not be asked (then the
    diagram is dropped too: nothing is shown unvalidated)."""

    valid: bool
    reason: str = ""
    unavailable: bool = False


ValidateDiagram = Callable[[str], DiagramCheck]


@dataclass(frozen=True, slots=True)
class Draft:
    """An explanation before its checks: examples not yet run, diagram not yet parsed."""

    title: str
    body: str
    examples: tuple[Example, ...]
    pitfalls: tuple[str, ...]
    diagram: Diagram | None


@dataclass(frozen=True, slots=True)
class Explanation:
    topic: Topic
    level: Level
    title: str
    body: str
    examples: tuple[ProvenExample, ...]
    pitfalls: tuple[str, ...]
    diagram: Diagram | None
    origin: Origin
    question_id: str = ""  # the common question answered, if one was


def choose_level(requested: Level | None, from_mastery: Callable[[], Level | None]) -> Level:
    """An explicit level wins; else the student's mastery of the topic; else beginner
    (no mastery yet, or the mastery engine could not say)."""
    if requested is not None:
        return requested
    return from_mastery() or Level.BEGINNER


def curated_draft(
    library: Library, topic: Topic, level: Level, question: CommonQuestion | None
) -> Draft:
    """The curated text for the topic at the level, or the focused answer to the
    common question asked (with the level's pitfalls when it has none of its own)."""
    content = library.topics[topic]
    item = content.levels[level]
    diagram = content.diagram_near(level)
    if question is None:
        return Draft(item.title, item.body, item.examples, item.pitfalls, diagram)
    return Draft(
        question.title,
        question.body,
        question.examples,
        question.pitfalls or item.pitfalls,
        question.diagram or diagram,
    )


def prove_for_level(
    prover: ExampleProver, examples: Sequence[Example], level: Level
) -> tuple[list[ProvenExample], list[Rejected]]:
    """The examples that run, at most as many as the level shows."""
    return prover.prove(examples, limit=SHAPES[level].max_examples)


def pitfalls_for_level(pitfalls: Sequence[str], level: Level) -> tuple[str, ...]:
    return tuple(pitfalls[: SHAPES[level].max_pitfalls])


def diagram_problem(text: str) -> str | None:
    """Why a diagram is refused before it is even parsed. Init directives and click
    handlers change how the browser renders and behaves, which is not content."""
    if len(text) > MAX_DIAGRAM_CHARS:
        return f"longer than {MAX_DIAGRAM_CHARS} characters"
    if "%%{" in text:
        return "contains an init directive"
    if any(line.strip().startswith("click ") for line in text.splitlines()):
        return "contains a click handler"
    return None


def checked_diagram(
    validate: ValidateDiagram, diagram: Diagram | None, where: str
) -> Diagram | None:
    """The diagram if the Mermaid parser accepts it; None (logged) otherwise."""
    if diagram is None:
        return None
    problem = diagram_problem(diagram.mermaid)
    if problem is None:
        check = validate(diagram.mermaid)
        if check.valid:
            return diagram
        problem = f"validator unavailable: {check.reason}" if check.unavailable else check.reason
    log.warning("diagram dropped (%s): %s", where, problem)
    return None


def finish(
    draft: Draft,
    *,
    topic: Topic,
    level: Level,
    origin: Origin,
    prover: ExampleProver,
    validate: ValidateDiagram,
    include_diagram: bool,
    question_id: str = "",
) -> Explanation:
    """The draft with its checks applied: examples run, diagram parsed."""
    examples, _ = prove_for_level(prover, draft.examples, level)
    diagram = (
        checked_diagram(validate, draft.diagram, f"{topic.slug}/{level.label}")
        if include_diagram
        else None
    )
    return Explanation(
        topic=topic,
        level=level,
        title=draft.title,
        body=draft.body,
        examples=tuple(examples),
        pitfalls=pitfalls_for_level(draft.pitfalls, level),
        diagram=diagram,
        origin=origin,
        question_id=question_id,
    )
