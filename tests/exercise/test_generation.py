"""Checking generated content on plain values and real sandbox runs: which topic an
error practises, the shape checks a model's exercise must pass, the proof that its
reference solution passes every test and its starter code fails one, quiz questions
(predict-the-output answers come from running the snippet), and the stored form."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from services.exercise.domain.bank import Level, QuestionKind, Topic, default_bank
from services.exercise.domain.generation import (
    RAN_EXPLANATION,
    ExerciseDraft,
    QuestionDraft,
    Reason,
    Rejected,
    TestDraft,
    check_exercise,
    check_question,
    error_name,
    exercise_from_json,
    exercise_to_json,
    is_generated,
    new_exercise_id,
    prove,
    question_from_json,
    question_to_json,
    topic_for_error,
)
from services.exercise.domain.grading import Execute, Execution, grade

GOOD = ExerciseDraft(
    title="Count the vowels",
    statement="Write `count_vowels(text)` that returns how many vowels `text` has.",
    entry_points=("count_vowels",),
    starter_code="def count_vowels(text):\n    return 0\n",
    visible_tests=(
        TestDraft("count_vowels('Hello')", "2", "a word"),
        TestDraft("count_vowels('sky')", "0", "no vowels"),
    ),
    hidden_tests=(
        TestDraft("count_vowels('')", "0", "empty"),
        TestDraft("count_vowels('AEIOU aeiou')", "10", "both cases"),
    ),
    hints=("Loop over the characters.", "Compare in lower case."),
    reference_solution=(
        "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in 'aeiou')\n"
    ),
)


def _check(draft: ExerciseDraft, **changes: Any) -> Any:
    return check_exercise(
        dataclasses.replace(draft, **changes),
        exercise_id="gen-test",
        topic=Topic.STRINGS,
        difficulty=Level.BEGINNER,
    )


def _rejected(call: Callable[[], object]) -> Rejected:
    with pytest.raises(Rejected) as caught:
        call()
    return caught.value


class CountingExecute:
    """The real sandbox, counting the programs it runs."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self.runs = 0

    def __call__(self, program: str, stdin: str) -> Execution:
        self.runs += 1
        return self._execute(program, stdin)


# --- errors and topics ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "topic"),
    [
        ("KeyError", Topic.COLLECTIONS),
        ("IndexError", Topic.COLLECTIONS),
        ("RecursionError", Topic.RECURSION),
        ("TypeError", Topic.VARIABLES_AND_TYPES),
        ("ValueError", Topic.VARIABLES_AND_TYPES),
        ("ZeroDivisionError", Topic.VARIABLES_AND_TYPES),
        ("AttributeError", Topic.CLASSES_AND_OBJECTS),
        ("NameError", Topic.FUNCTIONS),
        ("UnboundLocalError", Topic.FUNCTIONS),
        ("FileNotFoundError", Topic.FILES),
        ("ImportError", Topic.MODULES),
        ("ModuleNotFoundError", Topic.MODULES),
        ("StopIteration", Topic.ITERATORS_AND_GENERATORS),
        ("AssertionError", Topic.TESTING),
        ("IndentationError", Topic.CONTROL_FLOW),
        ("InsufficientFundsError", Topic.ERRORS_AND_EXCEPTIONS),  # a student's own class
    ],
)
def test_an_error_maps_to_the_topic_that_practises_it(error: str, topic: Topic) -> None:
    assert topic_for_error(error) is topic


def test_error_names_are_read_from_dotted_paths_and_junk_is_refused() -> None:
    assert error_name("json.decoder.JSONDecodeError") == "JSONDecodeError"
    assert topic_for_error("JSONDecodeError") is Topic.FILES
    assert error_name("  KeyError ") == "KeyError"
    for junk in ("", "Key Error", "1Error", "KeyError()", "a..b", "E" * 101):
        assert error_name(junk) is None, junk


def test_bank_practises_tags_are_true(execute: Execute) -> None:
    """An exercise tagged `practises: [X]` has starter code that raises X in a test."""
    tagged = [e for e in default_bank().exercises if e.practises]
    assert len(tagged) >= 8
    for exercise in tagged:
        shown = dataclasses.replace(
            exercise,
            hidden_tests=tuple(dataclasses.replace(t, hidden=False) for t in exercise.hidden_tests),
        )
        raised = {
            r.actual.split(":")[0]
            for r in grade(shown, exercise.starter_code, execute).results
            if r.actual and not r.passed
        }
        assert set(exercise.practises) <= raised, (exercise.exercise_id, raised)


# --- the shape of a generated exercise --------------------------------------------------


def test_a_good_draft_becomes_an_exercise() -> None:
    draft = dataclasses.replace(
        GOOD,
        visible_tests=(
            TestDraft(" count_vowels('Hello') ", " 2 ", "a word"),
            TestDraft("(count_vowels('ab'), {'n':1})", "(1,{'n':1})", ""),
        ),
    )
    exercise = check_exercise(
        draft,
        exercise_id="gen-1",
        topic=Topic.STRINGS,
        difficulty=Level.INTERMEDIATE,
        practises=("TypeError",),
    )
    assert [t.test_id for t in exercise.tests] == ["t1", "t2", "h1", "h2"]
    assert [t.hidden for t in exercise.tests] == [False, False, True, True]
    # Expected values become the repr grading compares against.
    assert [(t.call, t.expected) for t in exercise.visible_tests] == [
        ("count_vowels('Hello')", "2"),
        ("(count_vowels('ab'), {'n':1})", "(1, {'n': 1})"),
    ]
    assert exercise.visible_tests[1].description.startswith("checks ")
    assert (exercise.topic, exercise.difficulty, exercise.practises) == (
        Topic.STRINGS,
        Level.INTERMEDIATE,
        ("TypeError",),
    )
    assert exercise.entry_points == ("count_vowels",) and exercise.allowed_imports == ()


@pytest.mark.parametrize(
    ("changes", "reason", "words"),
    [
        ({"hidden_tests": ()}, Reason.LIMITS, "hidden_tests needs 1 to 6"),
        ({"visible_tests": ()}, Reason.LIMITS, "visible_tests needs 1 to 4"),
        ({"hints": ()}, Reason.LIMITS, "hints needs"),
        ({"statement": "x" * 4001}, Reason.LIMITS, "statement is longer"),
        ({"title": " "}, Reason.LIMITS, "title is empty"),
        ({"entry_points": ("count vowels",)}, Reason.ENTRY_POINTS, "not a usable name"),
        ({"entry_points": ("raises",)}, Reason.ENTRY_POINTS, "not a usable name"),
        ({"entry_points": ("vowels",)}, Reason.ENTRY_POINTS, "does not define vowels"),
        (
            {"reference_solution": "def count_vowels(text)\n    return 1\n"},
            Reason.CODE,
            "reference_solution: syntax error on line 1",
        ),
        (
            {"reference_solution": "import random\n\ndef count_vowels(text):\n    return 1\n"},
            Reason.CODE,
            "imports random",
        ),
        ({"allowed_imports": ("socket",)}, Reason.CODE, "allowed_imports lists socket"),
        ({"starter_code": GOOD.reference_solution + "\n\n"}, Reason.CODE, "is the reference"),
        (
            {"visible_tests": (TestDraft("x = count_vowels('a')", "1", ""),)},
            Reason.TESTS,
            "is not a Python expression",
        ),
        (
            {"visible_tests": (TestDraft("len('abc')", "3", ""),)},
            Reason.TESTS,
            "does not use any entry point",
        ),
        (
            {"visible_tests": (TestDraft("count_vowels('a')", "one", ""),)},
            Reason.TESTS,
            "is not a Python literal",
        ),
        (
            {"visible_tests": (TestDraft("count_vowels('a')", "Counter(a=1)", ""),)},
            Reason.TESTS,
            "is not a Python literal",
        ),
        (
            {"visible_tests": (TestDraft("set('ab') and count_vowels('a')", "{'a', 'b'}", ""),)},
            Reason.TESTS,
            "set of strings",
        ),
        (
            {"visible_tests": (TestDraft("count_vowels('')", "0", ""),)},
            Reason.TESTS,
            "same call",
        ),
    ],
)
def test_drafts_that_cannot_be_graded_are_rejected(
    changes: dict[str, Any], reason: Reason, words: str
) -> None:
    rejected = _rejected(lambda: _check(GOOD, **changes))
    assert rejected.reason is reason
    assert words in rejected.detail


def test_sets_of_numbers_are_fine_as_expected_values() -> None:
    exercise = _check(GOOD, visible_tests=(TestDraft("{count_vowels('a'), 3}", "{3,1}", ""),))
    assert exercise.visible_tests[0].expected == "{1, 3}"


# --- the proof in the sandbox -----------------------------------------------------------


def test_a_good_exercise_is_proven_with_few_runs(execute: Execute) -> None:
    counting = CountingExecute(execute)
    exercise = _check(GOOD)
    prove(exercise, counting)
    # Four reference runs, then the starter until its first failure: 'Hello' -> 0 != 2.
    assert counting.runs == 5
    assert grade(exercise, exercise.reference_solution, execute).score == 1.0


def test_a_reference_that_fails_a_hidden_test_is_rejected_with_the_reason(
    execute: Execute,
) -> None:
    counting = CountingExecute(execute)
    wrong = "def count_vowels(text):\n    return sum(1 for ch in text if ch in 'aeiou')\n"
    exercise = _check(GOOD, reference_solution=wrong)
    rejected = _rejected(lambda: prove(exercise, counting))
    assert rejected.reason is Reason.REFERENCE_FAILS
    assert rejected.detail == (
        "the reference solution fails the hidden test `count_vowels('AEIOU aeiou')`: "
        "expected 10, got 5"
    )
    assert counting.runs == 4  # stops at the first failure


def test_a_reference_that_raises_is_rejected(execute: Execute) -> None:
    boom = "def count_vowels(text):\n    return len(text) / 0\n"
    rejected = _rejected(lambda: prove(_check(GOOD, reference_solution=boom), execute))
    assert rejected.reason is Reason.REFERENCE_FAILS
    assert "got an exception: ZeroDivisionError: division by zero" in rejected.detail


def test_a_reference_that_hangs_is_rejected(
    execute_with_timeout: Callable[[float], Execute],
) -> None:
    hang = "def count_vowels(text):\n    while True:\n        pass\n"
    rejected = _rejected(
        lambda: prove(_check(GOOD, reference_solution=hang), execute_with_timeout(0.5))
    )
    assert rejected.reason is Reason.REFERENCE_FAILS
    assert rejected.detail.endswith("got timed out")


def test_a_starter_that_hangs_is_rejected(
    execute_with_timeout: Callable[[float], Execute],
) -> None:
    hang = "def count_vowels(text):\n    while True:\n        pass\n"
    rejected = _rejected(lambda: prove(_check(GOOD, starter_code=hang), execute_with_timeout(0.5)))
    assert (rejected.reason, rejected.detail) == (
        Reason.CODE,
        "the starter code timed out on the test `count_vowels('Hello')`; it should run "
        "and return a wrong or empty answer",
    )


def test_a_reference_too_slow_for_grading_is_rejected(execute: Execute) -> None:
    # ~0.7 s of pure Python per test here: well past the 0.2 s bound on any machine, well
    # inside the wall limit on a slow one.
    slow = GOOD.reference_solution.replace(
        "    return", "    sum(i * i for i in range(10**7))\n    return"
    )
    rejected = _rejected(
        lambda: prove(
            _check(GOOD, reference_solution=slow),
            execute,
            slow_seconds=0.2,
        )
    )
    assert rejected.reason is Reason.LIMITS
    assert "on the test `count_vowels(" in rejected.detail
    assert rejected.detail.endswith("every test must run in well under a second")


def test_a_starter_that_already_passes_is_rejected(execute: Execute) -> None:
    # Written differently from the reference, but just as correct.
    also_right = (
        "def count_vowels(text):\n"
        "    total = 0\n"
        "    for ch in text.lower():\n"
        "        total += ch in 'aeiou'\n"
        "    return total\n"
    )
    counting = CountingExecute(execute)
    rejected = _rejected(lambda: prove(_check(GOOD, starter_code=also_right), counting))
    assert rejected.reason is Reason.STARTER_PASSES
    assert counting.runs == 8  # every test, twice


# --- quiz questions ---------------------------------------------------------------------


def _question(kind: QuestionKind, **fields: Any) -> QuestionDraft:
    values: dict[str, Any] = {
        "kind": kind,
        "prompt": "What does this print?",
        "code": "",
        "options": (),
        "claimed_output": "",
        "explanation": "Because.",
    }
    values.update(fields)
    return QuestionDraft(**values)


def _checked(draft: QuestionDraft, execute: Execute) -> Any:
    return check_question(
        draft, question_id="gen-1", topic=Topic.COLLECTIONS, level=Level.BEGINNER, execute=execute
    )


def test_predict_output_answer_is_what_the_snippet_prints_not_the_claim(
    execute: Execute,
) -> None:
    code = "xs = [1, 2]\nxs.append(xs[:])\nprint(len(xs), xs)\n"
    wrong = _checked(
        _question(
            QuestionKind.PREDICT_OUTPUT,
            code=code,
            claimed_output="4 [1, 2, 1, 2]",
            explanation="append adds each item.",
        ),
        execute,
    )
    assert wrong.question.expected_output == "3 [1, 2, [1, 2]]\n"
    assert wrong.question.correct_answer == "3 [1, 2, [1, 2]]\n"
    assert wrong.claim_matched is False
    assert wrong.question.explanation == RAN_EXPLANATION  # its explanation was of a lie
    right = _checked(
        _question(
            QuestionKind.PREDICT_OUTPUT,
            code=code,
            claimed_output="3 [1, 2, [1, 2]]  \n",
            explanation="append adds ONE item: the copy.",
        ),
        execute,
    )
    assert right.claim_matched is True
    assert right.question.explanation == "append adds ONE item: the copy."
    assert (right.question.kind, right.question.answer_index) == (QuestionKind.PREDICT_OUTPUT, -1)


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        ("d = {}\nprint(d['missing'])\n", Reason.SNIPPET_FAILS, "KeyError: 'missing'"),
        ("x = 1\n", Reason.SNIPPET_FAILS, "prints nothing"),
        ("print(set('abcdefgh'))\n", Reason.SNIPPET_FAILS, "different each time"),
        ("import sys\nprint(1, file=sys.stderr)\nprint(2)\n", Reason.CODE, "imports sys"),
        ("import random\nprint(random.random())\n", Reason.CODE, "imports random"),
        ("for i in range(20):\n    print(i)\n", Reason.SNIPPET_FAILS, "more than 12 lines"),
        ("print(1\n", Reason.CODE, "does not parse"),
        ("", Reason.CODE, "needs code"),
    ],
)
def test_snippets_that_cannot_give_a_fair_answer_are_rejected(
    execute: Execute, code: str, reason: Reason, words: str
) -> None:
    draft = _question(QuestionKind.PREDICT_OUTPUT, code=code, claimed_output="1")
    rejected = _rejected(lambda: _checked(draft, execute))
    assert rejected.reason is reason
    assert words in rejected.detail


def test_a_snippet_that_hangs_is_rejected(
    execute_with_timeout: Callable[[float], Execute],
) -> None:
    draft = _question(QuestionKind.PREDICT_OUTPUT, code="while True:\n    pass\n")
    rejected = _rejected(lambda: _checked(draft, execute_with_timeout(0.5)))
    assert (rejected.reason, rejected.detail) == (
        Reason.SNIPPET_FAILS,
        "the snippet did not finish in time",
    )


def test_multiple_choice_needs_distinct_options_and_one_correct(execute: Execute) -> None:
    good = _checked(
        _question(
            QuestionKind.MULTIPLE_CHOICE,
            prompt="Which is immutable?",
            options=(("list", False), ("tuple", True), ("dict", False)),
        ),
        execute,
    )
    assert good.question.choices == ("list", "tuple", "dict")
    assert (good.question.answer_index, good.question.correct_answer) == (1, "tuple")
    assert good.claim_matched is None
    for options, words in [
        ((("list", True), ("tuple", True)), "exactly one option must be correct, not 2"),
        ((("list", False), ("tuple", False)), "exactly one option must be correct, not 0"),
        ((("a tuple", True), ("A  Tuple", False)), "two options say the same thing"),
        ((("tuple", True),), "a question needs 2 to 6 options"),
    ]:
        draft = _question(QuestionKind.MULTIPLE_CHOICE, options=options)
        with pytest.raises(Rejected) as caught:
            _checked(draft, execute)
        assert (caught.value.reason, caught.value.detail) == (Reason.CHOICES, words)


# --- the stored form --------------------------------------------------------------------


def test_exercises_and_questions_survive_the_stored_form() -> None:
    bank = default_bank()
    for exercise in bank.exercises:
        assert exercise_from_json(json.loads(json.dumps(exercise_to_json(exercise)))) == exercise
    for question in bank.questions:
        assert question_from_json(json.loads(json.dumps(question_to_json(question)))) == question


def test_generated_ids_never_look_like_bank_ids() -> None:
    made = {new_exercise_id() for _ in range(50)}
    assert len(made) == 50 and all(is_generated(i) and len(i) == 20 for i in made)
    assert not any(is_generated(e.exercise_id) for e in default_bank().exercises)
