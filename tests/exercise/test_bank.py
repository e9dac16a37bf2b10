"""The curated banks: they load, meet the minimums, and their content is true when run.

Every reference solution passes all its tests and every starter code fails at least one,
graded through `grade` exactly as submissions are; every predict-the-output snippet
prints what the bank says. Runs go through the `execute` fixture, in a small thread pool
(each run is its own process, so threads only wait).
"""

from __future__ import annotations

import ast
import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from services.exercise.domain.bank import (
    Bank,
    BankError,
    Exercise,
    Level,
    QuestionKind,
    Topic,
    default_bank,
    load_bank,
)
from services.exercise.domain.grading import Execute, Execution, Grade, TestOutcome, grade
from services.exercise.domain.quizzes import normalise_output

MIN_EXERCISES = 40
MIN_PER_TOPIC = 3
MIN_PER_DIFFICULTY = 10
MIN_QUESTIONS_PER_TOPIC = 6
WORKERS = 4  # processes in flight; each run is mostly process start-up

T = TypeVar("T")
R = TypeVar("R")


def _parallel(func: Callable[[T], R], items: list[T]) -> list[R]:
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(func, items))


def _exercise_ids() -> list[str]:
    try:
        return [e.exercise_id for e in default_bank().exercises]
    except BankError:
        return []  # test_bank_loads reports why


@pytest.fixture(scope="module")
def bank() -> Bank:
    return default_bank()


@pytest.fixture(scope="module")
def graded(bank: Bank, execute: Execute) -> dict[str, tuple[Grade, Grade]]:
    """(reference grade, starter grade) per exercise id, computed once, in parallel."""

    def run(exercise: Exercise) -> tuple[Grade, Grade]:
        return (
            grade(exercise, exercise.reference_solution, execute),
            grade(exercise, exercise.starter_code, execute),
        )

    results = _parallel(run, list(bank.exercises))
    return {e.exercise_id: r for e, r in zip(bank.exercises, results, strict=True)}


def test_bank_loads() -> None:
    bank = load_bank()
    assert bank.exercises
    assert bank.questions
    assert default_bank() is default_bank()  # loaded once per process


def test_exercise_counts(bank: Bank) -> None:
    assert len(bank.exercises) >= MIN_EXERCISES
    per_topic = collections.Counter(e.topic for e in bank.exercises)
    per_difficulty = collections.Counter(e.difficulty for e in bank.exercises)
    assert {t: per_topic[t] for t in Topic if per_topic[t] < MIN_PER_TOPIC} == {}
    assert {lv: per_difficulty[lv] for lv in Level if per_difficulty[lv] < MIN_PER_DIFFICULTY} == {}


def test_quiz_counts(bank: Bank) -> None:
    for topic in Topic:
        questions = bank.questions_for(topic)
        assert len(questions) >= MIN_QUESTIONS_PER_TOPIC, topic
        assert {q.kind for q in questions} == set(QuestionKind), topic


def test_ids_are_unique(bank: Bank) -> None:
    exercise_ids = [e.exercise_id for e in bank.exercises]
    question_ids = [q.question_id for q in bank.questions]
    assert len(set(exercise_ids)) == len(exercise_ids)
    assert len(set(question_ids)) == len(question_ids)
    for exercise in bank.exercises:
        test_ids = [t.test_id for t in exercise.tests]
        assert len(set(test_ids)) == len(test_ids), exercise.exercise_id
    assert bank.exercise("functions-001") is not None
    assert bank.exercise("no-such-exercise") is None


def test_exercise_shape(bank: Bank) -> None:
    for e in bank.exercises:
        assert 2 <= len(e.visible_tests) <= 4, e.exercise_id
        assert 2 <= len(e.hidden_tests) <= 5, e.exercise_id
        assert 2 <= len(e.hints) <= 3, e.exercise_id
        assert not any(t.hidden for t in e.visible_tests)
        assert all(t.hidden for t in e.hidden_tests)
        assert e.tests == e.visible_tests + e.hidden_tests


def test_expected_values_are_python_literals(bank: Bank) -> None:
    for exercise in bank.exercises:
        for test in exercise.tests:
            ast.literal_eval(test.expected)  # raises for a non-literal
            ast.parse(test.call, mode="eval")


def test_hints_do_not_hand_out_a_whole_solution(bank: Bank) -> None:
    """No hint (or all hints together) contains every line of a reference function body."""
    for exercise in bank.exercises:
        hints = "\n".join(exercise.hints)
        tree = ast.parse(exercise.reference_solution)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and len(node.body) > 1:
                lines = {
                    line.strip()
                    for stmt in node.body
                    for line in (ast.get_source_segment(exercise.reference_solution, stmt) or "")
                    .strip()
                    .splitlines()
                }
                assert not all(line in hints for line in lines), (exercise.exercise_id, node.name)


@pytest.mark.parametrize("exercise_id", _exercise_ids())
def test_reference_solution_passes_every_test(
    exercise_id: str, graded: dict[str, tuple[Grade, Grade]]
) -> None:
    reference, _ = graded[exercise_id]
    failures = [r for r in reference.results if not r.passed]
    assert reference.score == 1.0, failures
    assert reference.tests_passed == reference.tests_total


@pytest.mark.parametrize("exercise_id", _exercise_ids())
def test_starter_code_fails_a_test(
    exercise_id: str, graded: dict[str, tuple[Grade, Grade]]
) -> None:
    _, starter = graded[exercise_id]
    assert starter.tests_passed < starter.tests_total
    # The starter code runs: it is wrong, it does not hang or crash (which would also
    # make this test slow).
    outcomes = {r.outcome for r in starter.results}
    assert outcomes <= {TestOutcome.PASSED, TestOutcome.FAILED, TestOutcome.ERROR}, outcomes


def test_every_test_run_is_quick(graded: dict[str, tuple[Grade, Grade]]) -> None:
    # Mostly interpreter start-up; a generous bound since runs overlap in the pool.
    slow = [
        (exercise_id, r.test_id, round(r.duration_seconds, 2))
        for exercise_id, (reference, _) in graded.items()
        for r in reference.results
        if r.duration_seconds > 2.0
    ]
    assert slow == []


def test_predict_output_snippets_print_their_expected_output(bank: Bank, execute: Execute) -> None:
    questions = [q for q in bank.questions if q.kind is QuestionKind.PREDICT_OUTPUT]

    def run_twice(code: str) -> tuple[Execution, Execution]:
        return execute(code, ""), execute(code, "")  # twice: output must be deterministic

    runs = _parallel(run_twice, [q.code for q in questions])
    wrong = {}
    for question, (first, second) in zip(questions, runs, strict=True):
        if (
            first.exit_code != 0
            or first.stderr
            or first.stdout != second.stdout
            or normalise_output(first.stdout) != normalise_output(question.expected_output)
        ):
            wrong[question.question_id] = (first.stdout, first.stderr)
    assert wrong == {}


def test_multiple_choice_answers_are_in_range(bank: Bank) -> None:
    for q in bank.questions:
        if q.kind is QuestionKind.MULTIPLE_CHOICE:
            assert 0 <= q.answer_index < len(q.choices), q.question_id
            assert q.correct_answer == q.choices[q.answer_index]
            assert len(set(q.choices)) == len(q.choices)
        else:
            assert q.code and q.expected_output and not q.choices, q.question_id
            assert q.correct_answer == q.expected_output


# --- validation of bad content ------------------------------------------------------------

_GOOD_EXERCISE = """\
  - id: functions-001
    title: Add
    difficulty: beginner
    statement: Add two numbers.
    starter_code: |
      def add(a, b):
          return 0
    entry_points: [add]
    visible_tests:
      - {id: t1, description: d, call: "add(1, 2)", expected: "3"}
      - {id: t2, description: d, call: "add(2, 2)", expected: "4"}
    hidden_tests:
      - {id: h1, description: d, call: "add(0, 0)", expected: "0"}
      - {id: h2, description: d, call: "add(-1, 1)", expected: "0"}
    hints: [Use +., "return a + b"]
    reference_solution: |
      def add(a, b):
          return a + b
"""

_GOOD_QUESTIONS = """\
topic: functions
questions:
  - id: functions-q01
    level: beginner
    kind: predict_output
    prompt: What does this print?
    code: print(1)
    expected_output: "1"
    explanation: It prints 1.
"""


def _write_bank(root: Path, exercises: str, questions: str = _GOOD_QUESTIONS) -> Path:
    (root / "exercises").mkdir(parents=True)
    (root / "quizzes").mkdir()
    (root / "exercises" / "functions.yaml").write_text(
        "topic: functions\nexercises:\n" + exercises, encoding="utf-8"
    )
    (root / "quizzes" / "functions.yaml").write_text(questions, encoding="utf-8")
    return root


def test_a_minimal_bank_loads(tmp_path: Path) -> None:
    bank = load_bank(_write_bank(tmp_path, _GOOD_EXERCISE))
    (exercise,) = bank.exercises
    assert exercise.topic is Topic.FUNCTIONS
    assert exercise.difficulty is Level.BEGINNER
    assert [t.test_id for t in exercise.tests] == ["t1", "t2", "h1", "h2"]
    assert exercise.allowed_imports == ()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('expected: "3"', 'expected: "add(1, 2)"'), "is not a Python literal"),
        (('call: "add(0, 0)"', 'call: "add(0,"'), "call is not a Python expression"),
        (("entry_points: [add]", "entry_points: [add, sub]"), "does not define entry point 'sub'"),
        (("difficulty: beginner", "difficulty: expert"), "'difficulty' must be one of"),
        (("id: functions-001", "id: strings-001"), "id must look like functions-001"),
        (
            (
                "      def add(a, b):\n          return a + b",
                "      import os\n      def add(a, b):\n          return a + b",
            ),
            "reference_solution imports 'os'",
        ),
        (
            ("          return 0\n", "          return a + b\n"),
            "starter_code is the reference solution",
        ),
        (('hints: [Use +., "return a + b"]', "hints: [Only one]"), "'hints' must have 2..3 items"),
        (
            ('      - {id: h2, description: d, call: "add(-1, 1)", expected: "0"}\n', ""),
            "'hidden_tests' must have 2..5 tests",
        ),
        (("{id: h2,", "{id: h1,"), "duplicate test id 'h1'"),
        (("entry_points: [add]", "entry_points: [raises]"), "reserved for the test harness"),
        (('expected: "4"', "expected: 4"), "'expected' must be a non-empty string"),
    ],
)
def test_invalid_exercises_are_rejected(
    tmp_path: Path, change: tuple[str, str], problem: str
) -> None:
    old, new = change
    assert old in _GOOD_EXERCISE
    with pytest.raises(BankError) as raised:
        load_bank(_write_bank(tmp_path, _GOOD_EXERCISE.replace(old, new, 1)))
    assert problem in str(raised.value)


def test_duplicate_exercise_ids_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(BankError, match="duplicate exercise id 'functions-001'"):
        load_bank(_write_bank(tmp_path, _GOOD_EXERCISE + _GOOD_EXERCISE))


@pytest.mark.parametrize(
    ("question", "problem"),
    [
        (
            """\
  - id: functions-q02
    level: beginner
    kind: multiple_choice
    prompt: Which?
    choices: [a, b]
    answer_index: 2
    explanation: x
""",
            "answer_index must be an index into the 2 choices",
        ),
        (
            """\
  - id: functions-q02
    level: beginner
    kind: predict_output
    prompt: What does this print?
    expected_output: "1"
    explanation: x
""",
            "'code' must be a non-empty string",
        ),
        (
            """\
  - id: functions-q02
    level: beginner
    kind: essay
    prompt: Discuss.
    explanation: x
""",
            "kind must be one of",
        ),
    ],
)
def test_invalid_questions_are_rejected(tmp_path: Path, question: str, problem: str) -> None:
    with pytest.raises(BankError) as raised:
        load_bank(_write_bank(tmp_path, _GOOD_EXERCISE, _GOOD_QUESTIONS + question))
    assert problem in str(raised.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    broken = _GOOD_EXERCISE.replace('expected: "3"', "expected: nope").replace(
        "difficulty: beginner", "difficulty: expert"
    )
    with pytest.raises(BankError) as raised:
        load_bank(_write_bank(tmp_path, broken))
    assert len(raised.value.problems) == 2, raised.value.problems
