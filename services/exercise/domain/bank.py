"""The curated banks shipped with the code: exercises and quiz questions.

Content lives in YAML under `services/exercise/bank/` (one file per topic, so a content
author edits one place per topic); this module turns it into frozen, validated models.
Loading checks everything that can be checked without running code (structure, counts,
syntax, entry points, literal expected values, imports); `tests/exercise/test_bank.py`
checks the rest by running it (reference solutions pass, starter code fails, snippets
print what the bank says).
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

import yaml

from services.kit.pyast import parse_module
from services.kit.topics import Level as Level  # noqa: PLC0414 - re-exported on purpose
from services.kit.topics import Topic as Topic  # noqa: PLC0414 - re-exported on purpose

T = TypeVar("T")

BANK_DIR = Path(__file__).resolve().parent.parent / "bank"

VISIBLE_TESTS = (2, 4)  # inclusive bounds per exercise
HIDDEN_TESTS = (2, 5)
HINTS = (2, 3)
CHOICES = (2, 6)
# libyaml's loader when it is built in (several times faster); both are the safe loader.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Names the grading harness provides to test calls (see grading.test_program).
RESERVED_NAMES = frozenset({"raises"})


class QuestionKind(IntEnum):
    """Values match learnflow.exercise.v1.Question.Kind."""

    MULTIPLE_CHOICE = 1
    PREDICT_OUTPUT = 2


@dataclass(frozen=True, slots=True)
class ExerciseTest:
    """One test: `call` is evaluated after the student's code; its repr must equal `expected`."""

    test_id: str
    description: str
    call: str
    expected: str
    hidden: bool


@dataclass(frozen=True, slots=True)
class Exercise:
    exercise_id: str
    title: str
    topic: Topic
    difficulty: Level
    statement: str  # Markdown, for the student
    starter_code: str
    entry_points: tuple[str, ...]  # top-level names the tests call
    visible_tests: tuple[ExerciseTest, ...]
    hidden_tests: tuple[ExerciseTest, ...]
    hints: tuple[str, ...]  # most general first
    reference_solution: str
    allowed_imports: tuple[str, ...]  # top-level modules; empty means none
    # Error types (e.g. "KeyError") the starter code runs into: what a student who keeps
    # hitting that error practises here (GenerateExercise's focus_error_type).
    practises: tuple[str, ...] = ()

    @property
    def tests(self) -> tuple[ExerciseTest, ...]:
        """Every test, visible first: the order grading runs and reports them in."""
        return self.visible_tests + self.hidden_tests


@dataclass(frozen=True, slots=True)
class QuizQuestion:
    question_id: str
    topic: Topic
    level: Level
    kind: QuestionKind
    prompt: str  # Markdown
    code: str  # shown with the question; always set for predict-the-output
    choices: tuple[str, ...]  # multiple choice only
    answer_index: int  # multiple choice only; -1 otherwise
    expected_output: str  # predict-the-output only: what `code` really prints
    explanation: str

    @property
    def correct_answer(self) -> str:
        """The answer as shown after grading: the choice's text, or the real output."""
        if self.kind is QuestionKind.MULTIPLE_CHOICE:
            return self.choices[self.answer_index]
        return self.expected_output


@dataclass(frozen=True, slots=True)
class Bank:
    exercises: tuple[Exercise, ...]
    questions: tuple[QuizQuestion, ...]
    _exercises_by_id: dict[str, Exercise] = field(init=False, repr=False, compare=False)
    _questions_by_id: dict[str, QuizQuestion] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: the indexes are set once, here.
        object.__setattr__(self, "_exercises_by_id", {e.exercise_id: e for e in self.exercises})
        object.__setattr__(self, "_questions_by_id", {q.question_id: q for q in self.questions})

    def exercise(self, exercise_id: str) -> Exercise | None:
        return self._exercises_by_id.get(exercise_id)

    def list_exercises(
        self, topic: Topic | None = None, difficulty: Level | None = None
    ) -> tuple[Exercise, ...]:
        """Exercises in a stable order (by id), optionally filtered."""
        return tuple(
            e
            for e in self.exercises
            if (topic is None or e.topic == topic)
            and (difficulty is None or e.difficulty == difficulty)
        )

    def question(self, question_id: str) -> QuizQuestion | None:
        return self._questions_by_id.get(question_id)

    def questions_for(self, topic: Topic) -> tuple[QuizQuestion, ...]:
        return tuple(q for q in self.questions if q.topic == topic)


class BankError(ValueError):
    """The bank's content is invalid; the message lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid bank content:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


def load_bank(root: Path = BANK_DIR) -> Bank:
    """Loads and validates `root/exercises/*.yaml` and `root/quizzes/*.yaml`."""
    problems: list[str] = []
    exercises = _load_files(root / "exercises", "exercises", _parse_exercise, problems)
    questions = _load_files(root / "quizzes", "questions", _parse_question, problems)
    for kind, ids in (
        ("exercise", [e.exercise_id for e in exercises]),
        ("question", [q.question_id for q in questions]),
    ):
        problems.extend(f"duplicate {kind} id {i!r}" for i in sorted(_duplicates(ids)))
    if problems:
        raise BankError(problems)
    return Bank(
        exercises=tuple(sorted(exercises, key=lambda e: e.exercise_id)),
        questions=tuple(sorted(questions, key=lambda q: q.question_id)),
    )


@functools.cache
def default_bank() -> Bank:
    """The bank shipped with the code, loaded once per process."""
    return load_bank()


def parse_expression(text: str) -> ast.expr:
    """`text` as one Python expression (what `ast.parse(text, mode="eval")` accepts),
    parsed under the process-wide lock (services.kit.pyast: concurrent parses can fail
    in CPython 3.11). Raises SyntaxError (or ValueError for null bytes) otherwise."""
    body = parse_module(text).body
    if len(body) != 1 or not isinstance(body[0], ast.Expr):
        raise SyntaxError("not a single expression")
    return body[0].value


def literal(text: str) -> object:
    """`ast.literal_eval(text)`, parsing under the lock. Raises ValueError (and the
    errors literal_eval raises) for anything that is not a Python literal."""
    try:
        node = parse_expression(text.lstrip(" \t"))  # as literal_eval does
    except SyntaxError as exc:
        raise ValueError(f"not a Python literal: {exc.msg}") from None
    return ast.literal_eval(node)


def imported_modules(source: str) -> set[str]:
    """Top-level modules `source` imports (`import a.b` -> "a"); relative imports excluded.

    Raises SyntaxError for code that does not parse.
    """
    modules: set[str] = set()
    for node in ast.walk(parse_module(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    modules.discard("__future__")  # a compiler directive, not a dependency
    return modules


def defined_names(source: str) -> set[str]:
    """Names bound at the top level of `source` (functions, classes, assignments)."""
    names: set[str] = set()
    for node in parse_module(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


# --- parsing and validation -------------------------------------------------------------


def _duplicates(ids: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    dupes: set[str] = set()
    for i in ids:
        (dupes if i in seen else seen).add(i)
    return dupes


class _Problems:
    """Collects problems under a location prefix so one load reports all of them."""

    def __init__(self, sink: list[str], where: str) -> None:
        self.sink = sink
        self.where = where

    def add(self, message: str) -> None:
        self.sink.append(f"{self.where}: {message}")

    def at(self, where: str) -> _Problems:
        return _Problems(self.sink, f"{self.where}: {where}")


def _load_files(
    directory: Path,
    key: str,
    parse: Callable[[Mapping[str, object], Topic, _Problems], T | None],
    sink: list[str],
) -> list[T]:
    items: list[T] = []
    files = sorted(directory.glob("*.yaml"))
    if not files:
        sink.append(f"{directory}: no *.yaml files")
    for path in files:
        problems = _Problems(sink, path.name)
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - it is a safe loader
        except yaml.YAMLError as exc:
            problems.add(f"not valid YAML: {exc}")
            continue
        if not isinstance(data, dict) or set(data) != {"topic", key}:
            problems.add(f"expected a mapping with exactly the keys 'topic' and {key!r}")
            continue
        try:
            topic = Topic.from_slug(str(data["topic"]))
        except KeyError:
            problems.add(f"unknown topic {data['topic']!r}")
            continue
        if path.stem != topic.slug:
            problems.add(f"file name should be {topic.slug}.yaml")
        entries = data[key]
        if not isinstance(entries, list):
            problems.add(f"{key!r} must be a list")
            continue
        for index, raw in enumerate(entries):
            if not isinstance(raw, dict):
                problems.at(f"#{index}").add("must be a mapping")
                continue
            entry_problems = problems.at(str(raw.get("id", f"#{index}")))
            before = len(sink)
            item = parse(raw, topic, entry_problems)
            if item is not None and len(sink) == before:
                items.append(item)
    return items


_EXERCISE_KEYS = {
    "id",
    "title",
    "difficulty",
    "statement",
    "starter_code",
    "entry_points",
    "visible_tests",
    "hidden_tests",
    "hints",
    "reference_solution",
    "allowed_imports",
    "practises",
}
_QUESTION_KEYS = {
    "id",
    "level",
    "kind",
    "prompt",
    "code",
    "choices",
    "answer_index",
    "expected_output",
    "explanation",
}
_TEST_KEYS = {"id", "description", "call", "expected"}


def _parse_exercise(raw: Mapping[str, object], topic: Topic, p: _Problems) -> Exercise | None:
    _check_keys(
        raw,
        required=_EXERCISE_KEYS - {"allowed_imports", "practises"},
        allowed=_EXERCISE_KEYS,
        p=p,
    )
    exercise_id = _text(raw, "id", p)
    if exercise_id and not re.fullmatch(rf"{re.escape(topic.slug)}-\d{{3}}", exercise_id):
        p.add(f"id must look like {topic.slug}-001")
    difficulty = _level(raw, "difficulty", p)
    entry_points = _strings(raw, "entry_points", p, at_least=1)
    for name in entry_points:
        if not name.isidentifier() or keyword.iskeyword(name):
            p.add(f"entry point {name!r} is not an identifier")
        elif name in RESERVED_NAMES:
            p.add(f"entry point {name!r} is reserved for the test harness")
    allowed_imports = (
        _strings(raw, "allowed_imports", p, at_least=0) if "allowed_imports" in raw else ()
    )
    for module in allowed_imports:
        if not module.isidentifier():
            p.add(f"allowed import {module!r} is not a top-level module name")
    practises = _strings(raw, "practises", p, at_least=1) if "practises" in raw else ()
    for error in practises:
        if not error.isidentifier():
            p.add(f"practises {error!r} is not an exception class name")
    starter = _code(raw, "starter_code", entry_points, allowed_imports, p)
    reference = _code(raw, "reference_solution", entry_points, allowed_imports, p)
    if starter and starter == reference:
        p.add("starter_code is the reference solution")
    visible = _tests(raw, "visible_tests", VISIBLE_TESTS, hidden=False, p=p)
    hidden = _tests(raw, "hidden_tests", HIDDEN_TESTS, hidden=True, p=p)
    for dupe in sorted(_duplicates(t.test_id for t in visible + hidden)):
        p.add(f"duplicate test id {dupe!r}")
    hints = _strings(raw, "hints", p, at_least=HINTS[0], at_most=HINTS[1])
    if difficulty is None:
        return None
    return Exercise(
        exercise_id=exercise_id,
        title=_text(raw, "title", p),
        topic=topic,
        difficulty=difficulty,
        statement=_text(raw, "statement", p),
        starter_code=starter,
        entry_points=entry_points,
        visible_tests=visible,
        hidden_tests=hidden,
        hints=hints,
        reference_solution=reference,
        allowed_imports=allowed_imports,
        practises=practises,
    )


def _parse_question(raw: Mapping[str, object], topic: Topic, p: _Problems) -> QuizQuestion | None:
    _check_keys(
        raw, required={"id", "level", "kind", "prompt", "explanation"}, allowed=_QUESTION_KEYS, p=p
    )
    question_id = _text(raw, "id", p)
    if question_id and not re.fullmatch(rf"{re.escape(topic.slug)}-q\d{{2}}", question_id):
        p.add(f"id must look like {topic.slug}-q01")
    level = _level(raw, "level", p)
    kind_name = raw.get("kind")
    kinds = {
        "multiple_choice": QuestionKind.MULTIPLE_CHOICE,
        "predict_output": QuestionKind.PREDICT_OUTPUT,
    }
    kind = kinds.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        p.add(f"kind must be one of {sorted(kinds)}")
        return None
    code = _text(raw, "code", p, required=kind is QuestionKind.PREDICT_OUTPUT)
    if code:
        try:
            parse_module(code)
        except SyntaxError as exc:
            p.add(f"code: syntax error on line {exc.lineno}: {exc.msg}")
    choices: tuple[str, ...] = ()
    answer_index = -1
    expected_output = ""
    if kind is QuestionKind.MULTIPLE_CHOICE:
        choices = _strings(raw, "choices", p, at_least=CHOICES[0], at_most=CHOICES[1])
        if len(set(choices)) != len(choices):
            p.add("choices must differ")
        index = raw.get("answer_index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
            p.add(f"answer_index must be an index into the {len(choices)} choices")
        else:
            answer_index = index
        if "expected_output" in raw:
            p.add("expected_output is for predict_output questions")
    else:
        expected_output = _text(raw, "expected_output", p)
        if "choices" in raw or "answer_index" in raw:
            p.add("choices and answer_index are for multiple_choice questions")
    if level is None:
        return None
    return QuizQuestion(
        question_id=question_id,
        topic=topic,
        level=level,
        kind=kind,
        prompt=_text(raw, "prompt", p),
        code=code,
        choices=choices,
        answer_index=answer_index,
        expected_output=expected_output,
        explanation=_text(raw, "explanation", p),
    )


def _check_keys(
    raw: Mapping[str, object], *, required: set[str], allowed: set[str], p: _Problems
) -> None:
    for key in sorted(required - set(raw)):
        p.add(f"missing {key!r}")
    for key in sorted(set(raw) - allowed):
        p.add(f"unknown key {key!r}")


def _text(raw: Mapping[str, object], key: str, p: _Problems, *, required: bool = True) -> str:
    # Strings only, never coerced: YAML turns `1.10` into 1.1 and `yes` into True.
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        p.add(f"{key!r} must be a non-empty string")
        return ""
    return value


def _strings(
    raw: Mapping[str, object], key: str, p: _Problems, *, at_least: int, at_most: int | None = None
) -> tuple[str, ...]:
    value = raw.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        p.add(f"{key!r} must be a list of non-empty strings")
        return ()
    if len(value) < at_least or (at_most is not None and len(value) > at_most):
        p.add(f"{key!r} must have {at_least}..{at_most if at_most is not None else ''} items")
    return tuple(value)


def _level(raw: Mapping[str, object], key: str, p: _Problems) -> Level | None:
    value = raw.get(key)
    if isinstance(value, str) and value.upper() in Level.__members__:
        return Level[value.upper()]
    p.add(f"{key!r} must be one of beginner, intermediate, advanced")
    return None


def _code(
    raw: Mapping[str, object],
    key: str,
    entry_points: Sequence[str],
    allowed_imports: Sequence[str],
    p: _Problems,
) -> str:
    source = _text(raw, key, p)
    if not source:
        return ""
    try:
        defined = defined_names(source)
        imports = imported_modules(source)
    except SyntaxError as exc:
        p.add(f"{key}: syntax error on line {exc.lineno}: {exc.msg}")
        return source
    for name in entry_points:
        if name not in defined:
            p.add(f"{key} does not define entry point {name!r}")
    for module in sorted(imports - set(allowed_imports)):
        p.add(f"{key} imports {module!r}, which allowed_imports does not list")
    return source


def _tests(
    raw: Mapping[str, object], key: str, bounds: tuple[int, int], *, hidden: bool, p: _Problems
) -> tuple[ExerciseTest, ...]:
    value = raw.get(key)
    if not isinstance(value, list):
        p.add(f"{key!r} must be a list")
        return ()
    if not bounds[0] <= len(value) <= bounds[1]:
        p.add(f"{key!r} must have {bounds[0]}..{bounds[1]} tests")
    tests: list[ExerciseTest] = []
    for index, item in enumerate(value):
        tp = p.at(f"{key}[{index}]")
        if not isinstance(item, dict):
            tp.add("must be a mapping")
            continue
        _check_keys(item, required=_TEST_KEYS, allowed=_TEST_KEYS, p=tp)
        call = _text(item, "call", tp)
        expected = _text(item, "expected", tp)
        try:
            parse_expression(call)
        except SyntaxError as exc:
            tp.add(f"call is not a Python expression: {exc.msg}")
        try:
            literal(expected)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            tp.add(f"expected {expected!r} is not a Python literal")
        tests.append(
            ExerciseTest(
                test_id=_text(item, "id", tp),
                description=_text(item, "description", tp),
                call=call,
                expected=expected,
                hidden=hidden,
            )
        )
    return tuple(tests)
