"""Grading on plain values: partial credit, outcomes, hidden tests, attempts to cheat;
and quizzes: choosing questions and grading answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from services.exercise.domain import grading
from services.exercise.domain.bank import (
    Exercise,
    ExerciseTest,
    Level,
    QuestionKind,
    QuizQuestion,
    Topic,
)
from services.exercise.domain.grading import (
    MARKER,
    Execute,
    Execution,
    TestOutcome,
    TestResult,
    grade,
    outcome,
    precheck,
)
from services.exercise.domain.quizzes import choose_questions, grade_quiz, normalise_output

NONCE = "fixednonce0123456789"


def _test(test_id: str, call: str, expected: str, *, hidden: bool = False) -> ExerciseTest:
    return ExerciseTest(test_id, f"checks {call}", call, expected, hidden)


ADD = Exercise(
    exercise_id="functions-900",
    title="Add",
    topic=Topic.FUNCTIONS,
    difficulty=Level.BEGINNER,
    statement="Add two numbers.",
    starter_code="def add(a, b):\n    return 0\n",
    entry_points=("add",),
    visible_tests=(_test("t1", "add(2, 3)", "5"), _test("t2", "add(1, 0)", "1")),
    hidden_tests=(
        _test("h1", "add(-4, 4)", "0", hidden=True),
        _test("h2", "add(20, 22)", "42", hidden=True),
    ),
    hints=("Use +.", "Return the sum."),
    reference_solution="def add(a, b):\n    return a + b\n",
    allowed_imports=(),
)


def _fixed_nonce() -> str:
    return NONCE


def _assert_hidden_results_are_bare(results: tuple[TestResult, ...]) -> None:
    for r in results:
        if r.hidden:
            assert (r.call, r.expected, r.actual, r.output) == ("", "", "", ""), r


def _execution(stdout: str = "", *, exit_code: int = 0, **flags: bool) -> Execution:
    return Execution(
        stdout=stdout,
        stderr="",
        exit_code=exit_code,
        timed_out=flags.get("timed_out", False),
        memory_exceeded=flags.get("memory_exceeded", False),
    )


def _line(payload: str, nonce: str = NONCE) -> str:
    return f"{MARKER}{nonce}:{payload}\n"


# --- grading through real runs ----------------------------------------------------------


def test_a_correct_solution_scores_one(execute: Execute) -> None:
    result = grade(ADD, ADD.reference_solution, execute)
    assert (result.score, result.tests_passed, result.tests_total) == (1.0, 4, 4)
    assert [r.test_id for r in result.results] == ["t1", "t2", "h1", "h2"]
    visible = result.results[0]
    assert (visible.call, visible.expected, visible.actual) == ("add(2, 3)", "5", "5")
    assert all(r.duration_seconds > 0 for r in result.results)
    _assert_hidden_results_are_bare(result.results)


def test_partial_credit(execute: Execute) -> None:
    code = "def add(a, b):\n    return abs(a) + abs(b)\n"  # wrong for negative numbers
    result = grade(ADD, code, execute)
    outcomes = {r.test_id: r.outcome for r in result.results}
    assert outcomes == {
        "t1": TestOutcome.PASSED,
        "t2": TestOutcome.PASSED,
        "h1": TestOutcome.FAILED,  # |-4| + 4 = 8
        "h2": TestOutcome.PASSED,
    }
    assert (result.score, result.tests_passed, result.tests_total) == (0.75, 3, 4)
    two_of_four = grade(ADD, "def add(a, b):\n    return a + b if a > 1 else 99\n", execute)
    assert (two_of_four.score, two_of_four.tests_passed) == (0.5, 2)


def test_visible_failure_shows_call_expected_actual_and_output(execute: Execute) -> None:
    code = "def add(a, b):\n    print('adding', a, b)\n    return a - b\n"
    result = grade(ADD, code, execute)
    t1 = result.results[0]
    assert t1.outcome is TestOutcome.FAILED
    assert (t1.call, t1.expected, t1.actual) == ("add(2, 3)", "5", "-1")
    assert t1.output == "adding 2 3"  # the student's output, without the result line
    _assert_hidden_results_are_bare(result.results)


def test_an_exception_is_an_error_with_its_message(execute: Execute) -> None:
    code = "def add(a, b):\n    return a / 0\n"
    result = grade(ADD, code, execute)
    assert {r.outcome for r in result.results} == {TestOutcome.ERROR}
    t1 = result.results[0]
    assert t1.actual == "ZeroDivisionError: division by zero"
    assert 'File "solution.py", line 2, in add' in t1.output  # a traceback into their code
    assert "return a / 0" in t1.output
    assert result.score == 0.0
    _assert_hidden_results_are_bare(result.results)


def test_an_error_at_import_time_fails_every_test(execute: Execute) -> None:
    code = "import sys\nsys.exit(3)\ndef add(a, b):\n    return a + b\n"
    result = grade(ADD, code, execute)
    assert {r.outcome for r in result.results} == {TestOutcome.ERROR}
    assert result.results[0].actual == "SystemExit: 3"


def test_input_reads_an_empty_stdin(execute: Execute) -> None:
    result = grade(ADD, "def add(a, b):\n    return int(input())\n", execute)
    assert result.results[0].outcome is TestOutcome.ERROR
    assert result.results[0].actual.startswith("EOFError")


def test_an_infinite_loop_times_out(execute_with_timeout: Callable[[float], Execute]) -> None:
    code = "def add(a, b):\n    while True:\n        pass\n"
    result = grade(ADD, code, execute_with_timeout(0.5))
    assert {r.outcome for r in result.results} == {TestOutcome.TIMED_OUT}
    assert result.score == 0.0
    _assert_hidden_results_are_bare(result.results)


def test_a_process_that_dies_without_a_result_crashed(execute: Execute) -> None:
    code = "import os\ndef add(a, b):\n    os._exit(0)\n"
    result = grade(ADD, code, execute)
    assert {r.outcome for r in result.results} == {TestOutcome.CRASHED}
    # A segfault, not kill(getpid()): in the sandbox the program is its namespace's
    # PID 1, which a signal it sends itself without a handler does not end.
    killed = "import ctypes\ndef add(a, b):\n    ctypes.string_at(0)\n"
    assert {r.outcome for r in grade(ADD, killed, execute).results} == {TestOutcome.CRASHED}


def test_each_test_runs_in_its_own_process(execute: Execute) -> None:
    # A counter on the builtins module would grow if two tests shared an interpreter.
    code = (
        "import builtins\n"
        "builtins.runs = getattr(builtins, 'runs', 0) + 1\n"
        "def add(a, b):\n    return a + b + builtins.runs - 1\n"
    )
    assert grade(ADD, code, execute).score == 1.0


def test_student_code_may_use_future_imports_and_dataclasses(execute: Execute) -> None:
    code = (
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n\n"
        "@dataclass\nclass Pair:\n    a: int\n    b: int\n\n"
        "def add(a: int, b: int) -> int:\n    return Pair(a, b).a + Pair(a, b).b\n"
    )
    assert grade(ADD, code, execute).score == 1.0


def test_raises_helper_is_available_to_calls(execute: Execute) -> None:
    exercise = dataclasses.replace(
        ADD,
        visible_tests=(
            _test("t1", "raises(add, 1, 'x')", "'TypeError'"),
            _test("t2", "[raises(f) for f in [lambda: add(1, 2)]]", "[None]"),
        ),
    )
    assert grade(exercise, ADD.reference_solution, execute).score == 1.0


def test_a_fresh_nonce_for_every_test(execute: Execute) -> None:
    nonces: list[str] = []

    def factory() -> str:
        nonces.append(f"nonce{len(nonces):04d}abcdef")
        return nonces[-1]

    grade(ADD, ADD.reference_solution, execute, nonce_factory=factory)
    assert len(set(nonces)) == 4
    seen: list[str] = []

    def recording(program: str, stdin: str) -> Execution:
        seen.append(program)
        return execute(program, stdin)

    grade(ADD, ADD.reference_solution, recording)
    # The expected values never enter the sandbox.
    assert len(seen) == 4
    assert all(repr(t.expected) not in p for t, p in zip(ADD.tests, seen, strict=True))


# --- attempts to forge a result ---------------------------------------------------------
# Each student below solves nothing (add returns 0): the hidden test h2 (42) must not pass.
# They know the nonce (a fixed factory stands in for reading it out of the process), and
# they even know the expected value, the one thing a real student lacks.

FORGED_LINE = f"{MARKER}{NONCE}:V:{'42'!r}"

CHEATS = {
    "prints a fake result line": f"print({FORGED_LINE!r})\ndef add(a, b):\n    return 0\n",
    "prints it from the function": (
        f"def add(a, b):\n    print({FORGED_LINE!r}, flush=True)\n    return 0\n"
    ),
    "prints a line with a guessed nonce": (
        f"print({MARKER + 'deadbeefdeadbeef:V:' + repr('42')!r})\ndef add(a, b):\n    return 0\n"
    ),
    "patches builtins.repr": (
        "import builtins\nbuiltins.repr = lambda x: '42'\ndef add(a, b):\n    return 0\n"
    ),
    "patches repr and str on the module": (
        "repr = lambda x: '42'\nstr = lambda x: '42'\ndef add(a, b):\n    return 0\n"
    ),
    "registers an atexit handler": (
        "import atexit\n"
        f"atexit.register(lambda: print({FORGED_LINE!r}, flush=True))\n"
        "def add(a, b):\n    return 0\n"
    ),
    "replaces sys.stdout": (
        "import sys\n"
        "class Out:\n"
        "    def write(self, s):\n"
        f"        return sys.__stdout__.write({FORGED_LINE!r} + chr(10))\n"
        "    def flush(self):\n        sys.__stdout__.flush()\n"
        "sys.stdout = Out()\n"
        "def add(a, b):\n    print('working')\n    return 0\n"
    ),
    "patches os.write and os._exit": (
        "import os\n"
        "os.write = lambda fd, data: len(data)\n"
        "os._exit = lambda code: None\n"
        "def add(a, b):\n    return 0\n"
    ),
    "returns an object whose repr lies": (
        "class Liar:\n    def __repr__(self):\n        return '0'\n"
        "def add(a, b):\n    return Liar()\n"
    ),
}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_forging_a_hidden_result_does_not_pass(execute: Execute, cheat: str) -> None:
    result = grade(ADD, CHEATS[cheat], execute, nonce_factory=_fixed_nonce)
    h2 = next(r for r in result.results if r.test_id == "h2")
    assert h2.outcome is not TestOutcome.PASSED, cheat
    _assert_hidden_results_are_bare(result.results)


def test_the_last_line_with_the_nonce_counts() -> None:
    test = _test("t1", "f()", "1")
    stdout = _line("V:'1'") + "noise\n" + _line("V:'2'") + _line("V:'1'", nonce="other" * 3)
    assert outcome(test, _execution(stdout), NONCE).actual == "2"


# --- outcome on synthetic executions ----------------------------------------------------


@pytest.mark.parametrize(
    ("execution", "expected"),
    [
        (_execution(_line("V:'5'")), TestOutcome.PASSED),
        (_execution(_line("V:' 5 '")), TestOutcome.PASSED),  # surrounding whitespace only
        (_execution(_line("V:'5.0'")), TestOutcome.FAILED),
        (_execution(_line("E:'ValueError: bad'")), TestOutcome.ERROR),
        (_execution(_line("V:'5'"), timed_out=True), TestOutcome.TIMED_OUT),
        (_execution(_line("V:'5'"), memory_exceeded=True), TestOutcome.CRASHED),
        (_execution(_line("V:'5'"), exit_code=-9), TestOutcome.CRASHED),
        (_execution("5\n"), TestOutcome.CRASHED),  # no result line
        (_execution(_line("V:5")), TestOutcome.CRASHED),  # payload not a string literal
        (_execution(_line("X:'5'")), TestOutcome.CRASHED),
        (_execution(_line("V:'5", nonce="someoneelse1")), TestOutcome.CRASHED),
    ],
)
def test_outcome(execution: Execution, expected: TestOutcome) -> None:
    assert outcome(_test("t1", "add(2, 3)", "5"), execution, NONCE).outcome is expected


def test_hidden_outcomes_carry_nothing_but_the_outcome() -> None:
    hidden = _test("h1", "secret_input()", "'secret'", hidden=True)
    for stdout in (_line("V:'wrong'"), _line("E:'KeyError: secret'"), "", _line("V:\"'secret'\"")):
        result = outcome(hidden, _execution(stdout + "printed secret\n"), NONCE)
        assert (result.test_id, result.hidden) == ("h1", True)
        assert (result.call, result.expected, result.actual, result.output) == ("", "", "", "")
    assert outcome(hidden, _execution(_line("V:\"'secret'\"")), NONCE).passed


def test_output_excerpt_is_cut() -> None:
    stdout = "x" * 10_000 + "\n" + _line("V:'1'")
    result = outcome(_test("t1", "f()", "1"), _execution(stdout), NONCE)
    assert result.passed
    assert len(result.output) < grading.OUTPUT_EXCERPT_CHARS + 50
    assert MARKER not in result.output


def test_test_program_refuses_a_nonce_that_could_break_out() -> None:
    with pytest.raises(ValueError, match="nonce"):
        grading.test_program("x = 1", "x", "a'b\ncd12345")
    program = grading.test_program("print('''hi''')\n", "1 + 1", NONCE)
    compile(program, "<program>", "exec")  # the student's code is embedded, not spliced


# --- precheck -------------------------------------------------------------------------------


def test_precheck_reports_syntax_errors_with_line_and_caret() -> None:
    message = precheck("def add(a, b)\n    return a + b\n", [])
    assert message is not None
    assert message.startswith("SyntaxError on line 1")
    assert "def add(a, b)" in message
    assert "^" in message


def test_precheck_flags_imports_the_exercise_does_not_allow() -> None:
    assert precheck("import math\nfrom os import path\n", ["math"]) == (
        "This exercise does not allow importing os (allowed: math)."
    )
    assert precheck("import subprocess\n", []) == (
        "This exercise does not allow importing subprocess (allowed: none)."
    )
    assert precheck("from __future__ import annotations\nimport math.tau\n", ["math"]) is None
    assert precheck("def f():\n    return 1\n", []) is None


# --- quizzes --------------------------------------------------------------------------------


def _question(
    n: int,
    level: Level,
    kind: QuestionKind = QuestionKind.MULTIPLE_CHOICE,
    topic: Topic = Topic.STRINGS,
) -> QuizQuestion:
    multiple = kind is QuestionKind.MULTIPLE_CHOICE
    return QuizQuestion(
        question_id=f"{topic.slug}-q{n:02d}",
        topic=topic,
        level=level,
        kind=kind,
        prompt="?",
        code="" if multiple else "print('a  ')\nprint('b')",
        choices=("yes", "no", "maybe") if multiple else (),
        answer_index=1 if multiple else -1,
        expected_output="" if multiple else "a  \nb\n",
        explanation=f"because {n}",
    )


POOL = (
    [_question(n, Level.BEGINNER) for n in range(1, 4)]
    + [_question(n, Level.INTERMEDIATE) for n in range(4, 6)]
    + [_question(n, Level.ADVANCED) for n in range(6, 8)]
    + [_question(n, Level.BEGINNER, topic=Topic.FILES) for n in range(1, 4)]
)


def test_choose_prefers_the_level_then_its_neighbours() -> None:
    chosen = choose_questions(POOL, Topic.STRINGS, Level.BEGINNER, 4, seed=1)
    assert [q.level for q in chosen[:3]] == [Level.BEGINNER] * 3
    assert chosen[3].level is Level.INTERMEDIATE
    middle = choose_questions(POOL, Topic.STRINGS, Level.INTERMEDIATE, 5, seed=1)
    assert [q.level for q in middle[:2]] == [Level.INTERMEDIATE] * 2
    assert all(q.topic is Topic.STRINGS for q in middle)
    everything = choose_questions(POOL, Topic.STRINGS, Level.ADVANCED, 20, seed=1)
    assert len(everything) == 7  # all there is; nothing from another topic
    assert [q.level for q in everything][-3:] == [Level.BEGINNER] * 3


def test_choose_is_deterministic_given_a_seed_and_varies_between_seeds() -> None:
    def ids(seed: int | str) -> list[str]:
        return [
            q.question_id
            for q in choose_questions(POOL, Topic.STRINGS, Level.BEGINNER, 3, seed=seed)
        ]

    assert ids("quiz-1") == ids("quiz-1")
    assert len({tuple(ids(seed)) for seed in range(20)}) > 1
    with pytest.raises(ValueError):
        choose_questions(POOL, Topic.STRINGS, Level.BEGINNER, 0, seed=1)
    assert choose_questions(POOL, Topic.TESTING, Level.BEGINNER, 3, seed=1) == ()


def test_grade_quiz() -> None:
    mc, mc2 = _question(1, Level.BEGINNER), _question(2, Level.BEGINNER)
    mc3 = _question(5, Level.BEGINNER)
    predict = _question(3, Level.BEGINNER, QuestionKind.PREDICT_OUTPUT)
    predict2 = _question(4, Level.BEGINNER, QuestionKind.PREDICT_OUTPUT)
    unanswered = _question(6, Level.BEGINNER)
    answers: dict[str, int | str] = {
        mc.question_id: 1,
        mc2.question_id: 0,
        mc3.question_id: True,  # a bool is not an index
        predict.question_id: "a\r\nb   \n\n",  # trailing whitespace and line endings
        predict2.question_id: " a\nb",  # leading whitespace counts
        "strings-q99": 1,  # not in the quiz: ignored
    }
    result = grade_quiz([mc, mc2, mc3, predict, predict2, unanswered], answers)
    assert [r.correct for r in result.results] == [True, False, False, True, False, False]
    assert (result.correct, result.total) == (2, 6)
    assert result.score == pytest.approx(2 / 6)
    assert result.results[1].correct_answer == "no"
    assert result.results[1].explanation == "because 2"
    assert result.results[3].correct_answer == "a  \nb\n"
    assert grade_quiz([], {}).score == 0.0


def test_normalise_output() -> None:
    assert normalise_output("a \r\n b\t\n\n") == "a\n b"
    assert normalise_output("\nx") == "\nx"  # leading blank lines count
    assert normalise_output("  \n") == ""


def test_non_ascii_code_and_values(execute: Execute) -> None:
    exercise = dataclasses.replace(
        ADD,
        visible_tests=(
            _test("t1", "add('café ', '☕')", "'café ☕'"),
            _test("t2", "add('\\u2028', '\\x1c')", "'\\u2028\\x1c'"),
        ),
    )
    code = "# naïve sum 😀\ndef add(a, b):\n    return a + b\n"
    assert grading.test_program(code, "add(1, 2)", NONCE).isascii()
    assert grade(exercise, code, execute).score == 1.0
