"""Checking what a model wrote before a student sees it: exercises and quiz questions.

A generated exercise is served only when it is as trustworthy as a bank exercise:
1. it has the bank's shape within size limits (tests with calls that are Python
   expressions and expected values that are Python literals, entry points its code
   defines, imports from a fixed list);
2. its reference solution passes EVERY test (visible and hidden) and its starter code
   fails at least one, judged by running them in the sandbox exactly as submissions are
   judged (grading.test_program + grading.outcome).
Anything else raises `Rejected` with a reason (a metric label) and a detail written to
be fed back to the model when it tries again.

A predict-the-output question's answer is never the model's: the snippet runs (twice,
so output that changes from run to run is caught) and what it really prints is the
answer. A multiple-choice question needs distinct options and exactly one correct one.

Pure: the sandbox is passed in as `grading.Execute`.
"""

from __future__ import annotations

import ast
import keyword
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from services.exercise.domain.bank import (
    RESERVED_NAMES,
    Exercise,
    ExerciseTest,
    Level,
    QuestionKind,
    QuizQuestion,
    Topic,
    defined_names,
    imported_modules,
    literal,
    parse_expression,
)
from services.exercise.domain.grading import (
    Execute,
    Execution,
    TestOutcome,
    TestResult,
    outcome,
    test_program,
)
from services.exercise.domain.quizzes import normalise_output

GENERATED_PREFIX = "gen-"  # ids of generated exercises; bank ids are "<topic>-NNN"

# Shape and size limits of a generated exercise (the bank's own are a little tighter).
VISIBLE_TESTS = (1, 4)
HIDDEN_TESTS = (1, 6)
HINTS = (1, 4)
ENTRY_POINTS = (1, 3)
MAX_TITLE = 120
MAX_STATEMENT = 4000
MAX_CODE = 6000
MAX_CALL = 300
MAX_EXPECTED = 1000
MAX_DESCRIPTION = 200
MAX_HINT = 500
# A reference run slower than this is rejected: bank tests take ~30 ms each, and a slow
# test makes every later submission slow (and a proof long).
SLOW_TEST_SECONDS = 1.5
# Modules a generated exercise may import: the standard library a course uses. The
# sandbox is the security boundary; this keeps exercises to what the course teaches.
EXERCISE_IMPORTS = frozenset(
    {
        "abc",
        "bisect",
        "collections",
        "csv",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "io",
        "itertools",
        "json",
        "math",
        "operator",
        "os",
        "pathlib",
        "re",
        "statistics",
        "string",
        "tempfile",
        "textwrap",
        "typing",
    }
)

# Quiz questions.
CHOICES = (2, 6)
MAX_PROMPT = 1000
MAX_CHOICE = 200
MAX_EXPLANATION = 1000
MAX_SNIPPET = 1500
MAX_SNIPPET_LINES = 30
MAX_OUTPUT = 500  # characters a student is asked to predict
MAX_OUTPUT_LINES = 12
# Snippet imports: only modules whose output does not change from run to run.
SNIPPET_IMPORTS = frozenset(
    {
        "bisect",
        "collections",
        "copy",
        "dataclasses",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "json",
        "math",
        "operator",
        "re",
        "statistics",
        "string",
        "textwrap",
        "typing",
    }
)
RAN_EXPLANATION = "This is what the code printed when it was run."


class Reason(StrEnum):
    """Why a draft was rejected (metric label values)."""

    SCHEMA = "schema"  # the model's JSON did not match the schema (set by the caller)
    LIMITS = "limits"  # counts or sizes out of bounds
    ENTRY_POINTS = "entry_points"  # not identifiers, or not defined by the code
    TESTS = "tests"  # a call is not an expression, an expected value is not a literal...
    CODE = "code"  # syntax errors, imports outside the list, starter == reference
    REFERENCE_FAILS = "reference_fails"  # the reference solution failed a test
    STARTER_PASSES = "starter_passes"  # the starter code already passes every test
    CHOICES = "choices"  # multiple choice: options repeat, or not exactly one correct
    SNIPPET_FAILS = "snippet_fails"  # predict-the-output code errors, hangs or varies
    DUPLICATE = "duplicate"  # the same quiz question twice


class Rejected(Exception):  # noqa: N818 - a verdict, caught by the generator
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- which topic practises which error --------------------------------------------------

# A student who keeps hitting an error practises the topic where it comes from.
ERROR_TOPICS: Mapping[str, Topic] = {
    "KeyError": Topic.COLLECTIONS,
    "IndexError": Topic.COLLECTIONS,
    "RecursionError": Topic.RECURSION,
    "TypeError": Topic.VARIABLES_AND_TYPES,
    "ValueError": Topic.VARIABLES_AND_TYPES,
    "ZeroDivisionError": Topic.VARIABLES_AND_TYPES,
    "OverflowError": Topic.VARIABLES_AND_TYPES,
    "AttributeError": Topic.CLASSES_AND_OBJECTS,
    "NameError": Topic.FUNCTIONS,
    "UnboundLocalError": Topic.FUNCTIONS,
    "FileNotFoundError": Topic.FILES,
    "IsADirectoryError": Topic.FILES,
    "PermissionError": Topic.FILES,
    "JSONDecodeError": Topic.FILES,
    "ImportError": Topic.MODULES,
    "ModuleNotFoundError": Topic.MODULES,
    "StopIteration": Topic.ITERATORS_AND_GENERATORS,
    "AssertionError": Topic.TESTING,
    "UnicodeDecodeError": Topic.STRINGS,
    "UnicodeEncodeError": Topic.STRINGS,
    "SyntaxError": Topic.CONTROL_FLOW,  # blocks, colons and indentation
    "IndentationError": Topic.CONTROL_FLOW,
    "TabError": Topic.CONTROL_FLOW,
}
_ERROR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_ERROR_NAME = 100


def error_name(text: str) -> str | None:
    """The exception class name in `text` ("json.decoder.JSONDecodeError" ->
    "JSONDecodeError"), or None if it is not a (dotted) name."""
    text = text.strip()
    if len(text) > MAX_ERROR_NAME or not _ERROR_NAME.fullmatch(text):
        return None
    return text.rsplit(".", 1)[-1]


def topic_for_error(name: str) -> Topic:
    """The topic that practises avoiding `name`; errors we do not know (a student's own
    exception classes, say) belong to errors and exceptions."""
    return ERROR_TOPICS.get(name, Topic.ERRORS_AND_EXCEPTIONS)


# --- exercises --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestDraft:
    __test__ = False  # not a pytest test class
    call: str
    expected: str
    description: str


@dataclass(frozen=True, slots=True)
class ExerciseDraft:
    """An exercise as the model wrote it, before any check."""

    title: str
    statement: str
    entry_points: tuple[str, ...]
    starter_code: str
    visible_tests: tuple[TestDraft, ...]
    hidden_tests: tuple[TestDraft, ...]
    hints: tuple[str, ...]
    reference_solution: str
    allowed_imports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OwnedExercise:
    """A generated exercise with the student it was generated for."""

    exercise: Exercise
    student_id: str
    cohort: str  # the student's cohort when it was generated (teachers' access)


def is_generated(exercise_id: str) -> bool:
    return exercise_id.startswith(GENERATED_PREFIX)


def new_exercise_id() -> str:
    return f"{GENERATED_PREFIX}{secrets.token_hex(8)}"


def check_exercise(
    draft: ExerciseDraft,
    *,
    exercise_id: str,
    topic: Topic,
    difficulty: Level,
    practises: tuple[str, ...] = (),
) -> Exercise:
    """The draft as an `Exercise` if it passes every check that needs no running.
    Expected values are rewritten as the repr of their literal (`{'a':1}` ->
    `{'a': 1}`), which is what grading compares against."""
    _check_limits(draft)
    entry_points = tuple(name.strip() for name in draft.entry_points)
    for name in entry_points:
        if not name.isidentifier() or keyword.iskeyword(name) or name in RESERVED_NAMES:
            raise Rejected(Reason.ENTRY_POINTS, f"entry point {name!r} is not a usable name")
    if len(set(entry_points)) != len(entry_points):
        raise Rejected(Reason.ENTRY_POINTS, "entry points repeat")
    allowed = tuple(sorted({m.strip() for m in draft.allowed_imports}))
    outside = [m for m in allowed if m not in EXERCISE_IMPORTS]
    if outside:
        raise Rejected(
            Reason.CODE,
            f"allowed_imports lists {', '.join(outside)}; only these may be used: "
            + ", ".join(sorted(EXERCISE_IMPORTS)),
        )
    starter = _source(draft.starter_code, "starter_code", entry_points, allowed)
    reference = _source(draft.reference_solution, "reference_solution", entry_points, allowed)
    if _normalised_code(starter) == _normalised_code(reference):
        raise Rejected(Reason.CODE, "the starter code is the reference solution")
    visible = _tests(draft.visible_tests, "t", entry_points, hidden=False)
    hidden = _tests(draft.hidden_tests, "h", entry_points, hidden=True)
    calls = [t.call for t in visible + hidden]
    if len(set(calls)) != len(calls):
        raise Rejected(Reason.TESTS, "two tests make the same call; each test should differ")
    return Exercise(
        exercise_id=exercise_id,
        title=draft.title.strip(),
        topic=topic,
        difficulty=difficulty,
        statement=draft.statement.strip() + "\n",
        starter_code=starter,
        entry_points=entry_points,
        visible_tests=visible,
        hidden_tests=hidden,
        hints=tuple(h.strip() for h in draft.hints),
        reference_solution=reference,
        allowed_imports=allowed,
        practises=practises,
    )


def prove(exercise: Exercise, execute: Execute, *, slow_seconds: float = SLOW_TEST_SECONDS) -> None:
    """Runs the reference solution on every test, then the starter code until one test
    fails; raises Rejected unless the reference passes all (each within `slow_seconds`)
    and the starter fails one.

    Stops at the first failure either way, so a proof costs at most 2 x tests runs.
    """
    for test in exercise.tests:
        started = time.perf_counter()
        result = _run(exercise.reference_solution, test, execute)
        took = time.perf_counter() - started
        if not result.passed:
            kind = "hidden" if test.hidden else "visible"
            got = result.actual or result.outcome.name.lower().replace("_", " ")
            if result.outcome is TestOutcome.ERROR:
                got = f"an exception: {result.actual}"
            raise Rejected(
                Reason.REFERENCE_FAILS,
                f"the reference solution fails the {kind} test `{test.call}`: expected "
                f"{test.expected}, got {_cut(got, 200)}",
            )
        if took > slow_seconds:
            raise Rejected(
                Reason.LIMITS,
                f"the reference solution took {took:.1f} s on the test `{test.call}`; "
                "every test must run in well under a second",
            )
    for test in exercise.tests:
        result = _run(exercise.starter_code, test, execute)
        if result.outcome in (TestOutcome.TIMED_OUT, TestOutcome.CRASHED):
            # As in the bank: a starter runs and is wrong; one that hangs makes every
            # student's first try wait for the time limit.
            raise Rejected(
                Reason.CODE,
                f"the starter code {result.outcome.name.lower().replace('_', ' ')} on the "
                f"test `{test.call}`; it should run and return a wrong or empty answer",
            )
        if not result.passed:
            return
    raise Rejected(
        Reason.STARTER_PASSES,
        "the starter code already passes every test: it must leave the task undone "
        "(e.g. `return None` or a wrong first attempt) so that at least one test fails",
    )


def _run(code: str, test: ExerciseTest, execute: Execute) -> TestResult:
    nonce = secrets.token_hex(8)
    execution = execute(test_program(code, test.call, nonce), "")
    # Judged as a visible test so the actual value is there for the feedback.
    return outcome(replace(test, hidden=False), execution, nonce)


def _check_limits(draft: ExerciseDraft) -> None:
    problems = []
    for label, value, bounds in (
        ("visible_tests", draft.visible_tests, VISIBLE_TESTS),
        ("hidden_tests", draft.hidden_tests, HIDDEN_TESTS),
        ("hints", draft.hints, HINTS),
        ("entry_points", draft.entry_points, ENTRY_POINTS),
    ):
        if not bounds[0] <= len(value) <= bounds[1]:
            problems.append(f"{label} needs {bounds[0]} to {bounds[1]} items, not {len(value)}")
    for label, text, limit in (
        ("title", draft.title, MAX_TITLE),
        ("statement", draft.statement, MAX_STATEMENT),
        ("starter_code", draft.starter_code, MAX_CODE),
        ("reference_solution", draft.reference_solution, MAX_CODE),
    ):
        if not text.strip():
            problems.append(f"{label} is empty")
        elif len(text) > limit:
            problems.append(f"{label} is longer than {limit} characters")
    for hint in draft.hints:
        if not hint.strip() or len(hint) > MAX_HINT:
            problems.append(f"each hint needs 1 to {MAX_HINT} characters")
            break
    for test in draft.visible_tests + draft.hidden_tests:
        if len(test.call) > MAX_CALL or len(test.expected) > MAX_EXPECTED:
            problems.append(
                f"a test's call is at most {MAX_CALL} and its expected value at most "
                f"{MAX_EXPECTED} characters"
            )
            break
        if len(test.description) > MAX_DESCRIPTION:
            problems.append(f"a test description is at most {MAX_DESCRIPTION} characters")
            break
    if problems:
        raise Rejected(Reason.LIMITS, "; ".join(problems))


def _source(code: str, label: str, entry_points: Sequence[str], allowed: Sequence[str]) -> str:
    source = code.strip("\n").rstrip() + "\n"
    try:
        defined = defined_names(source)
        imports = imported_modules(source)
    except SyntaxError as exc:
        raise Rejected(
            Reason.CODE, f"{label}: syntax error on line {exc.lineno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # null bytes
        raise Rejected(Reason.CODE, f"{label}: {exc}") from None
    missing = [name for name in entry_points if name not in defined]
    if missing:
        raise Rejected(
            Reason.ENTRY_POINTS,
            f"{label} does not define {', '.join(missing)} at the top level",
        )
    extra = sorted(imports - set(allowed))
    if extra:
        raise Rejected(
            Reason.CODE,
            f"{label} imports {', '.join(extra)}, which allowed_imports does not list",
        )
    return source


def _normalised_code(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def _tests(
    drafts: Iterable[TestDraft], prefix: str, entry_points: Sequence[str], *, hidden: bool
) -> tuple[ExerciseTest, ...]:
    tests = []
    for index, draft in enumerate(drafts, start=1):
        call = draft.call.strip()
        try:
            node = parse_expression(call)
        except (SyntaxError, ValueError):
            raise Rejected(
                Reason.TESTS, f"test call `{_cut(call, 80)}` is not a Python expression"
            ) from None
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if not used & set(entry_points):
            raise Rejected(
                Reason.TESTS,
                f"test call `{_cut(call, 80)}` does not use any entry point "
                f"({', '.join(entry_points)})",
            )
        tests.append(
            ExerciseTest(
                test_id=f"{prefix}{index}",
                description=draft.description.strip() or f"checks {_cut(call, 60)}",
                call=call,
                expected=_expected(draft.expected),
                hidden=hidden,
            )
        )
    return tuple(tests)


def _expected(text: str) -> str:
    try:
        value = literal(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise Rejected(
            Reason.TESTS,
            f"expected value {_cut(text, 80)!r} is not a Python literal; write the repr of "
            "the value the call returns, e.g. [1, 2] or 'text'",
        ) from None
    if _unordered(value):
        raise Rejected(
            Reason.TESTS,
            f"expected value {_cut(text, 80)!r} contains a set of strings, whose order "
            "changes between runs; test sorted(...) instead",
        )
    return repr(value)


def _unordered(value: object) -> bool:
    """A set whose repr order is not stable across processes (string hashing is
    randomised; small ints and bools hash to themselves)."""
    if isinstance(value, set | frozenset):
        if len(value) > 1 and not all(isinstance(v, int) for v in value):
            return True
        return any(_unordered(v) for v in value)
    if isinstance(value, list | tuple):
        return any(_unordered(v) for v in value)
    if isinstance(value, dict):
        return any(_unordered(k) or _unordered(v) for k, v in value.items())
    return False


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- quiz questions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuestionDraft:
    """A quiz question as the model wrote it. `claimed_output` is what the model says a
    predict-the-output snippet prints: compared, never used as the answer."""

    kind: QuestionKind
    prompt: str
    code: str
    options: tuple[tuple[str, bool], ...]  # (text, correct), multiple choice only
    claimed_output: str
    explanation: str


@dataclass(frozen=True, slots=True)
class CheckedQuestion:
    question: QuizQuestion
    claim_matched: bool | None  # predict-the-output: was the model right? else None


def check_question(
    draft: QuestionDraft,
    *,
    question_id: str,
    topic: Topic,
    level: Level,
    execute: Execute,
) -> CheckedQuestion:
    """The draft as a `QuizQuestion`, or Rejected. Runs a predict-the-output snippet
    twice in the sandbox; its real stdout is the answer."""
    prompt = draft.prompt.strip()
    explanation = draft.explanation.strip()
    code = draft.code.strip("\n").rstrip()
    if not prompt or len(prompt) > MAX_PROMPT:
        raise Rejected(Reason.LIMITS, f"a prompt needs 1 to {MAX_PROMPT} characters")
    if not explanation or len(explanation) > MAX_EXPLANATION:
        raise Rejected(Reason.LIMITS, f"an explanation needs 1 to {MAX_EXPLANATION} characters")
    if len(code) > MAX_SNIPPET or code.count("\n") >= MAX_SNIPPET_LINES:
        raise Rejected(
            Reason.LIMITS, f"code is at most {MAX_SNIPPET_LINES} lines, {MAX_SNIPPET} characters"
        )
    if code:
        code += "\n"
        try:
            imports = imported_modules(code)
        except (SyntaxError, ValueError) as exc:
            raise Rejected(Reason.CODE, f"the code does not parse: {exc}") from None
    if draft.kind is QuestionKind.MULTIPLE_CHOICE:
        choices, answer_index = _choices(draft.options)
        question = QuizQuestion(
            question_id=question_id,
            topic=topic,
            level=level,
            kind=QuestionKind.MULTIPLE_CHOICE,
            prompt=prompt,
            code=code,
            choices=choices,
            answer_index=answer_index,
            expected_output="",
            explanation=explanation,
        )
        return CheckedQuestion(question, None)
    if not code:
        raise Rejected(Reason.CODE, "a predict-the-output question needs code")
    outside = sorted(imports - SNIPPET_IMPORTS)
    if outside:
        raise Rejected(
            Reason.CODE,
            f"the snippet imports {', '.join(outside)}; its output must be the same every run",
        )
    output = _snippet_output(code, execute)
    matched = normalise_output(draft.claimed_output) == normalise_output(output)
    question = QuizQuestion(
        question_id=question_id,
        topic=topic,
        level=level,
        kind=QuestionKind.PREDICT_OUTPUT,
        prompt=prompt,
        code=code,
        choices=(),
        answer_index=-1,
        expected_output=output,
        # An explanation of a different output than the real one would mislead.
        explanation=explanation if matched else RAN_EXPLANATION,
    )
    return CheckedQuestion(question, matched)


def _choices(options: Sequence[tuple[str, bool]]) -> tuple[tuple[str, ...], int]:
    texts = tuple(text.strip() for text, _ in options)
    if not CHOICES[0] <= len(texts) <= CHOICES[1]:
        raise Rejected(Reason.CHOICES, f"a question needs {CHOICES[0]} to {CHOICES[1]} options")
    if any(not text or len(text) > MAX_CHOICE for text in texts):
        raise Rejected(Reason.LIMITS, f"each option needs 1 to {MAX_CHOICE} characters")
    if len({" ".join(t.casefold().split()) for t in texts}) != len(texts):
        raise Rejected(Reason.CHOICES, "two options say the same thing")
    correct = [i for i, (_, right) in enumerate(options) if right]
    if len(correct) != 1:
        raise Rejected(Reason.CHOICES, f"exactly one option must be correct, not {len(correct)}")
    return texts, correct[0]


def _snippet_output(code: str, execute: Execute) -> str:
    first = execute(code, "")
    problem = _run_problem(first)
    if problem is None:
        second = execute(code, "")
        problem = _run_problem(second)
        if problem is None and second.stdout != first.stdout:
            problem = "prints something different each time it runs"
    if problem is not None:
        raise Rejected(Reason.SNIPPET_FAILS, f"the snippet {problem}")
    return first.stdout


def _run_problem(run: Execution) -> str | None:
    if run.timed_out:
        return "did not finish in time"
    if run.memory_exceeded or run.exit_code != 0:
        last = run.stderr.strip().splitlines()[-1:] or [f"exit code {run.exit_code}"]
        return f"failed: {_cut(last[0], 200)}"
    if run.stderr.strip():
        return f"wrote to stderr: {_cut(run.stderr, 200)}"
    if not run.stdout.strip():
        return "prints nothing"
    if len(run.stdout) > MAX_OUTPUT or run.stdout.count("\n") > MAX_OUTPUT_LINES:
        return f"prints more than {MAX_OUTPUT_LINES} lines or {MAX_OUTPUT} characters"
    return None


# --- storage form -----------------------------------------------------------------------


def exercise_to_json(exercise: Exercise) -> dict[str, Any]:
    """A generated exercise as JSON-able data (stored, then read back by any replica)."""
    return {
        "v": 1,
        "exercise_id": exercise.exercise_id,
        "title": exercise.title,
        "topic": int(exercise.topic),
        "difficulty": int(exercise.difficulty),
        "statement": exercise.statement,
        "starter_code": exercise.starter_code,
        "entry_points": list(exercise.entry_points),
        "tests": [
            {
                "test_id": t.test_id,
                "description": t.description,
                "call": t.call,
                "expected": t.expected,
                "hidden": t.hidden,
            }
            for t in exercise.tests
        ],
        "hints": list(exercise.hints),
        "reference_solution": exercise.reference_solution,
        "allowed_imports": list(exercise.allowed_imports),
        "practises": list(exercise.practises),
    }


def exercise_from_json(data: Mapping[str, Any]) -> Exercise:
    tests = [ExerciseTest(**t) for t in data["tests"]]
    return Exercise(
        exercise_id=data["exercise_id"],
        title=data["title"],
        topic=Topic(data["topic"]),
        difficulty=Level(data["difficulty"]),
        statement=data["statement"],
        starter_code=data["starter_code"],
        entry_points=tuple(data["entry_points"]),
        visible_tests=tuple(t for t in tests if not t.hidden),
        hidden_tests=tuple(t for t in tests if t.hidden),
        hints=tuple(data["hints"]),
        reference_solution=data["reference_solution"],
        allowed_imports=tuple(data["allowed_imports"]),
        practises=tuple(data.get("practises", ())),
    )


def question_to_json(question: QuizQuestion) -> dict[str, Any]:
    return {
        "question_id": question.question_id,
        "topic": int(question.topic),
        "level": int(question.level),
        "kind": int(question.kind),
        "prompt": question.prompt,
        "code": question.code,
        "choices": list(question.choices),
        "answer_index": question.answer_index,
        "expected_output": question.expected_output,
        "explanation": question.explanation,
    }


def question_from_json(data: Mapping[str, Any]) -> QuizQuestion:
    return QuizQuestion(
        question_id=data["question_id"],
        topic=Topic(data["topic"]),
        level=Level(data["level"]),
        kind=QuestionKind(data["kind"]),
        prompt=data["prompt"],
        code=data["code"],
        choices=tuple(data["choices"]),
        answer_index=data["answer_index"],
        expected_output=data["expected_output"],
        explanation=data["explanation"],
    )
