"""Curated explanations shipped with the code, one YAML file per topic.

`services/concepts/content/<topic-slug>.yaml` holds, for its topic, the detection
keywords, an explanation per level and the "common questions" (a classic confusion with
trigger words and a focused answer). Loading checks everything that can be checked
without running anything: structure, the shape each level promises (beginner: exactly
one small example and no pitfalls; intermediate: a couple of examples and pitfalls;
advanced: more examples and more pitfalls), body length, plain words for beginners,
example syntax. Example output is never stored: an `output` key is refused, because
what an example prints is only ever what it printed when it ran (`proof.py`).
Diagrams are checked by the real Mermaid parser in tests and before being returned.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.kit.topics import Level as Level  # noqa: PLC0414 - re-exported on purpose
from services.kit.topics import Topic as Topic  # noqa: PLC0414 - re-exported on purpose

CONTENT_DIR = Path(__file__).resolve().parent.parent / "content"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

BODY_WORDS = (80, 250)  # inclusive, per level explanation
ANSWER_WORDS = (40, 250)  # a common question's focused answer
MAX_TITLE_CHARS = 80
MAX_DIAGRAM_CHARS = 4000
BEGINNER_MAX_LINES = 12  # "one small example"
MAX_EXAMPLE_LINES = 30
# Words a beginner explanation does without: said in plain words instead.
JARGON = frozenset(
    {
        "iterable",
        "iterator",
        "mutable",
        "immutable",
        "mutability",
        "immutability",
        "namespace",
        "instantiate",
        "instantiation",
        "polymorphism",
        "idempotent",
        "lexical",
        "closure",
        "dunder",
        "protocol",
        "heap",
        "semantics",
        "invariant",
        "arity",
        "predicate",
        "coerce",
        "coercion",
        "lazy",
        "lazily",
        "stack frame",
    }
)
MERMAID_KINDS = (
    "flowchart",
    "graph",
    "sequenceDiagram",
    "classDiagram",
    "stateDiagram",
    "stateDiagram-v2",
    "mindmap",
    "erDiagram",
)


@dataclass(frozen=True, slots=True)
class Shape:
    """What an explanation at a level contains."""

    min_examples: int
    max_examples: int
    min_pitfalls: int
    max_pitfalls: int


SHAPES: dict[Level, Shape] = {
    Level.BEGINNER: Shape(min_examples=1, max_examples=1, min_pitfalls=0, max_pitfalls=0),
    Level.INTERMEDIATE: Shape(min_examples=2, max_examples=3, min_pitfalls=2, max_pitfalls=5),
    Level.ADVANCED: Shape(min_examples=2, max_examples=4, min_pitfalls=3, max_pitfalls=6),
}


@dataclass(frozen=True, slots=True)
class Example:
    """Code to show; what it prints comes from running it."""

    code: str
    caption: str


@dataclass(frozen=True, slots=True)
class Diagram:
    mermaid: str
    caption: str


@dataclass(frozen=True, slots=True)
class LevelContent:
    level: Level
    title: str
    body: str
    examples: tuple[Example, ...]
    pitfalls: tuple[str, ...]
    diagram: Diagram | None


@dataclass(frozen=True, slots=True)
class CommonQuestion:
    """A classic confusion: trigger word sets and a focused answer."""

    question_id: str
    topic: Topic
    title: str
    triggers: tuple[str, ...]  # each a set of words that must all appear in a question
    body: str
    examples: tuple[Example, ...]
    pitfalls: tuple[str, ...]
    diagram: Diagram | None


@dataclass(frozen=True, slots=True)
class TopicContent:
    topic: Topic
    keywords: tuple[str, ...]  # each a set of words that must all appear in a question
    levels: Mapping[Level, LevelContent]
    questions: tuple[CommonQuestion, ...]

    def diagram_near(self, level: Level) -> Diagram | None:
        """The level's diagram, else the one from the nearest level that has one."""
        for candidate in sorted(Level, key=lambda other: (abs(other - level), other)):
            diagram = self.levels[candidate].diagram
            if diagram is not None:
                return diagram
        return None


@dataclass(frozen=True, slots=True)
class Library:
    topics: Mapping[Topic, TopicContent]

    def level(self, topic: Topic, level: Level) -> LevelContent:
        return self.topics[topic].levels[level]

    def questions(self) -> tuple[CommonQuestion, ...]:
        return tuple(q for content in self.topics.values() for q in content.questions)

    def question(self, question_id: str) -> CommonQuestion | None:
        return next((q for q in self.questions() if q.question_id == question_id), None)

    def examples(self) -> tuple[Example, ...]:
        """Every curated example (levels and common questions)."""
        found: list[Example] = []
        for content in self.topics.values():
            for item in content.levels.values():
                found.extend(item.examples)
            for question in content.questions:
                found.extend(question.examples)
        return tuple(found)

    def diagrams(self) -> tuple[tuple[str, Diagram], ...]:
        """Every curated diagram with where it is (for validation)."""
        found: list[tuple[str, Diagram]] = []
        for topic, content in self.topics.items():
            for level, item in content.levels.items():
                if item.diagram is not None:
                    found.append((f"{topic.slug}/{level.label}", item.diagram))
            for question in content.questions:
                if question.diagram is not None:
                    found.append((f"{topic.slug}/{question.question_id}", question.diagram))
        return tuple(found)


class ContentError(ValueError):
    """The curated content is wrong; every problem is listed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("curated content is invalid:\n  " + "\n  ".join(self.problems))


def word_count(text: str) -> int:
    return len(text.split())


def jargon_in(text: str) -> list[str]:
    lowered = text.lower()
    return sorted(
        word for word in JARGON if re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", lowered)
    )


def load_library(root: Path = CONTENT_DIR) -> Library:
    problems: list[str] = []
    topics: dict[Topic, TopicContent] = {}
    for path in sorted(root.glob("*.yaml")):
        parsed = _load_file(path, problems)
        if parsed is not None:
            topics[parsed.topic] = parsed
    missing = [t.slug for t in Topic if t not in topics]
    if missing:
        problems.append(f"{root}: no content for {', '.join(missing)}")
    ids = [q.question_id for content in topics.values() for q in content.questions]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"question ids used twice: {', '.join(duplicates)}")
    if problems:
        raise ContentError(problems)
    ordered = {topic: topics[topic] for topic in Topic}
    return Library(ordered)


@functools.cache
def default_library() -> Library:
    return load_library()


class _Where:
    """Collects problems prefixed with where they are."""

    def __init__(self, sink: list[str], where: str) -> None:
        self._sink = sink
        self.where = where

    def add(self, message: str) -> None:
        self._sink.append(f"{self.where}: {message}")

    def at(self, where: str) -> _Where:
        return _Where(self._sink, f"{self.where}.{where}")


def _load_file(path: Path, problems: list[str]) -> TopicContent | None:
    where = _Where(problems, path.name)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - safe loader
    except yaml.YAMLError as exc:
        where.add(f"not valid YAML: {exc}")
        return None
    if not isinstance(raw, dict):
        where.add("must be a mapping")
        return None
    _no_unknown_keys(raw, {"topic", "keywords", "levels", "questions"}, where)
    try:
        topic = Topic.from_slug(str(raw.get("topic", "")))
    except KeyError:
        where.add(f"topic {raw.get('topic')!r} is not a curriculum topic")
        return None
    if path.stem != topic.slug:
        where.add(f"file name must be {topic.slug}.yaml")
    keywords = _strings(raw.get("keywords"), where.at("keywords"), minimum=3)
    levels_raw = raw.get("levels")
    levels: dict[Level, LevelContent] = {}
    if not isinstance(levels_raw, dict) or set(levels_raw) != {lv.label for lv in Level}:
        where.add("levels must be exactly beginner, intermediate and advanced")
    else:
        for level in Level:
            parsed = _parse_level(levels_raw[level.label], level, where.at(level.label))
            if parsed is not None:
                levels[level] = parsed
    questions: list[CommonQuestion] = []
    for index, item in enumerate(_list(raw.get("questions", []), where.at("questions"))):
        question = _parse_question(item, topic, where.at(f"questions[{index}]"))
        if question is not None:
            questions.append(question)
    if len(levels) != len(Level):
        return None
    return TopicContent(topic, tuple(keywords), levels, tuple(questions))


def _parse_level(raw: object, level: Level, where: _Where) -> LevelContent | None:
    if not isinstance(raw, dict):
        where.add("must be a mapping")
        return None
    _no_unknown_keys(raw, {"title", "body", "examples", "pitfalls", "diagram"}, where)
    title = _title(raw.get("title"), where)
    body = _body(raw.get("body"), BODY_WORDS, where)
    if level is Level.BEGINNER:
        for word in jargon_in(body):
            where.add(f"beginner body uses jargon {word!r}: say it in plain words")
    examples = _examples(raw.get("examples"), where.at("examples"), level)
    shape = SHAPES[level]
    if not shape.min_examples <= len(examples) <= shape.max_examples:
        where.add(
            f"{level.label} needs {shape.min_examples}-{shape.max_examples} examples, "
            f"has {len(examples)}"
        )
    pitfalls = _strings(raw.get("pitfalls", []), where.at("pitfalls"), minimum=0)
    if not shape.min_pitfalls <= len(pitfalls) <= shape.max_pitfalls:
        where.add(
            f"{level.label} needs {shape.min_pitfalls}-{shape.max_pitfalls} pitfalls, "
            f"has {len(pitfalls)}"
        )
    diagram = _diagram(raw.get("diagram"), where.at("diagram"))
    return LevelContent(level, title, body, examples, tuple(pitfalls), diagram)


def _parse_question(raw: object, topic: Topic, where: _Where) -> CommonQuestion | None:
    if not isinstance(raw, dict):
        where.add("must be a mapping")
        return None
    _no_unknown_keys(
        raw, {"id", "title", "triggers", "body", "examples", "pitfalls", "diagram"}, where
    )
    question_id = str(raw.get("id", ""))
    if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", question_id):
        where.add(f"id {question_id!r} must be a lowercase slug")
    triggers = _strings(raw.get("triggers"), where.at("triggers"), minimum=2)
    examples = _examples(raw.get("examples"), where.at("examples"), None)
    if not 1 <= len(examples) <= 2:
        where.add(f"a common question needs 1-2 examples, has {len(examples)}")
    return CommonQuestion(
        question_id=question_id,
        topic=topic,
        title=_title(raw.get("title"), where),
        triggers=tuple(triggers),
        body=_body(raw.get("body"), ANSWER_WORDS, where),
        examples=examples,
        pitfalls=tuple(_strings(raw.get("pitfalls", []), where.at("pitfalls"), minimum=0)),
        diagram=_diagram(raw.get("diagram"), where.at("diagram")),
    )


def _examples(raw: object, where: _Where, level: Level | None) -> tuple[Example, ...]:
    found: list[Example] = []
    for index, item in enumerate(_list(raw, where)):
        at = where.at(str(index))
        if not isinstance(item, dict):
            at.add("must be a mapping with code and caption")
            continue
        if "output" in item:
            at.add("stores an output: outputs come only from running the code")
        _no_unknown_keys(item, {"code", "caption", "output"}, at)  # output: said above
        code, caption = item.get("code"), item.get("caption")
        if not isinstance(code, str) or not code.strip():
            at.add("code is required")
            continue
        if not isinstance(caption, str) or not caption.strip():
            at.add("caption is required")
            caption = ""
        try:
            compile(code, "<example>", "exec")
        except SyntaxError as exc:
            at.add(f"code does not compile: {exc.msg} (line {exc.lineno})")
        lines = len(code.strip().splitlines())
        limit = BEGINNER_MAX_LINES if level is Level.BEGINNER else MAX_EXAMPLE_LINES
        if lines > limit:
            at.add(f"code has {lines} lines; at most {limit} here")
        found.append(Example(code=code.rstrip() + "\n", caption=caption.strip()))
    return tuple(found)


def _diagram(raw: object, where: _Where) -> Diagram | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        where.add("must be a mapping with mermaid and caption")
        return None
    _no_unknown_keys(raw, {"mermaid", "caption"}, where)
    text, caption = raw.get("mermaid"), raw.get("caption")
    if not isinstance(text, str) or not text.strip():
        where.add("mermaid is required")
        return None
    if len(text) > MAX_DIAGRAM_CHARS:
        where.add(f"mermaid is longer than {MAX_DIAGRAM_CHARS} characters")
    first = text.strip().split(None, 1)[0]
    if first not in MERMAID_KINDS:
        where.add(f"mermaid starts with {first!r}, not a diagram kind")
    if not isinstance(caption, str) or not caption.strip():
        where.add("caption is required")
        caption = ""
    return Diagram(mermaid=text.strip() + "\n", caption=caption.strip())


def _title(raw: object, where: _Where) -> str:
    if not isinstance(raw, str) or not raw.strip():
        where.add("title is required")
        return ""
    if len(raw) > MAX_TITLE_CHARS:
        where.add(f"title is longer than {MAX_TITLE_CHARS} characters")
    return raw.strip()


def _body(raw: object, words: tuple[int, int], where: _Where) -> str:
    if not isinstance(raw, str) or not raw.strip():
        where.add("body is required")
        return ""
    count = word_count(raw)
    if not words[0] <= count <= words[1]:
        where.add(f"body has {count} words; needs {words[0]}-{words[1]}")
    return raw.strip() + "\n"


def _strings(raw: object, where: _Where, *, minimum: int) -> list[str]:
    items = _list(raw, where)
    found = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if len(found) != len(items):
        where.add("must be a list of non-empty strings")
    if len(found) < minimum:
        where.add(f"needs at least {minimum}")
    return found


def _list(raw: object, where: _Where) -> list[object]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        where.add("must be a list")
        return []
    return list(raw)


def _no_unknown_keys(raw: Mapping[object, object], allowed: set[str], where: _Where) -> None:
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        where.add(f"unknown keys {', '.join(unknown)}")
