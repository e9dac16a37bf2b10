"""Generation through the real openai client against the scripted model server, with
every draft proven in the real sandbox: a good exercise is served (and gradable), bad
ones are rejected and regenerated with the reason fed back, and after three rejections
or any model failure the bank answers. Quizzes take the real output of their snippets.

The engine's generated-exercise storage here is a dict: the Postgres store behind it is
exercised over gRPC in tests/integration/test_exercise_generation.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest

from services.exercise.domain.bank import (
    Exercise,
    Level,
    QuestionKind,
    Topic,
    default_bank,
)
from services.exercise.domain.generation import is_generated
from services.exercise.domain.grading import Execute, Grade
from services.exercise.engine import ExerciseEngine
from services.exercise.generator import ExerciseGenerator, GenerationStats, ModelAuthor
from services.kit.auth import Principal, Role
from services.kit.config import Settings
from services.kit.errors import NotFound, PermissionDenied
from services.kit.interceptors import CallContext, _current
from services.kit.llm import LLM
from services.kit.roster import Roster
from tests.conftest import every_student_consents
from tests.exercise.drafts import (
    CHOICE,
    ERRORING,
    GOOD,
    PREDICT_WRONG_CLAIM,
    REAL_OUTPUT,
    REFERENCE_FAILS,
    STARTER_PASSES,
    TWO_CORRECT,
    DictStore,
    variant,
)
from tests.support.openai_server import (
    ScriptedOpenAI,
    json_reply,
    malformed_reply,
    status_reply,
    text_reply,
)

STUDENT = "ana"
TENANT = "school-a"
OTHER_TENANT = "school-b"


class _RosterDict(dict[tuple[str, str], str]):
    """The roster's store in memory, keyed by (tenant, student id) (the Postgres one is
    tested on the mesh)."""

    def cohort_of(self, tenant: str, student_id: str) -> str | None:
        return self.get((tenant, student_id))

    def enrol(self, tenant: str, student_id: str, cohort: str) -> None:
        self[(tenant, student_id)] = cohort

    def forget(self, tenant: str, student_id: str) -> int:
        return 1 if self.pop((tenant, student_id), None) is not None else 0

    def tenants(self) -> list[str]:
        return sorted({tenant for tenant, _ in self})


@pytest.fixture
def stats() -> GenerationStats:
    return GenerationStats()


@pytest.fixture
def store() -> DictStore:
    return DictStore()


def _engine(llm: LLM, execute: Execute, stats: GenerationStats, store: DictStore) -> ExerciseEngine:
    return ExerciseEngine(
        default_bank(),
        execute,
        lambda student, topic: None,  # no mastery yet: beginner
        generator=ExerciseGenerator(ModelAuthor(llm), execute, stats=stats),
        generated=store,
    )


@pytest.fixture
def engine(llm: LLM, execute: Execute, stats: GenerationStats, store: DictStore) -> ExerciseEngine:
    return _engine(llm, execute, stats, store)


@pytest.fixture
def offline(settings: Settings, execute: Execute, store: DictStore) -> ExerciseEngine:
    """The engine without a model key: nothing is ever sent to a model."""
    return _engine(
        LLM(settings, model_use=every_student_consents), execute, GenerationStats(), store
    )


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[list[dict[str, Any]]]:
    yield SCENARIOS
    _print_rejection_share(SCENARIOS)


SCENARIOS: list[dict[str, Any]] = []


def _print_rejection_share(scenarios: list[dict[str, Any]]) -> None:
    drafts = sum(s["drafts"] for s in scenarios)
    rejected = sum(s["rejected"] for s in scenarios)
    reasons: dict[str, int] = {}
    for s in scenarios:
        for reason, n in s["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    share = rejected / drafts if drafts else 0.0
    print(
        f"\nexercise generation (unit scenarios): {drafts} drafts, {rejected} rejected "
        f"({share:.0%}) by reason {dict(sorted(reasons.items()))}"
    )


def _record(stats: GenerationStats) -> dict[str, Any]:
    snapshot = stats.snapshot()
    SCENARIOS.append(snapshot)
    return snapshot


def _generate(
    engine: ExerciseEngine,
    topic: Topic | None = Topic.COLLECTIONS,
    focus: str = "",
    passed: set[str] | None = None,
    tenant: str = TENANT,
) -> Exercise:
    return engine.generate(
        tenant,
        STUDENT,
        cohort="c1",
        topic=topic,
        difficulty=None,
        focus_error=focus,
        passed=lambda: passed or set(),
    )


def _user_prompt(server: ScriptedOpenAI, index: int) -> str:
    content: str = server.requests[index]["messages"][1]["content"]
    return content


# --- exercises --------------------------------------------------------------------------


def test_a_good_generated_exercise_is_served_stored_and_gradable(
    engine: ExerciseEngine,
    openai_server: ScriptedOpenAI,
    stats: GenerationStats,
    store: DictStore,
) -> None:
    openai_server.enqueue(json_reply(GOOD))
    exercise = _generate(engine)

    assert is_generated(exercise.exercise_id)
    assert (exercise.topic, exercise.difficulty) == (Topic.COLLECTIONS, Level.BEGINNER)
    assert len(exercise.visible_tests) == 2 and len(exercise.hidden_tests) == 2
    assert len(openai_server.requests) == 1
    sent = openai_server.requests[0]
    assert sent["response_format"]["json_schema"]["name"] == "ExerciseOut"
    assert "Level: beginner" in _user_prompt(openai_server, 0)
    assert "Collections" in _user_prompt(openai_server, 0)

    # Stored, found again by id, and graded like a bank exercise.
    assert store.saved[(TENANT, exercise.exercise_id)].student_id == STUDENT
    found = engine.exercise_to_submit(TENANT, STUDENT, exercise.exercise_id)
    graded = engine.grade(found, GOOD["reference_solution"])
    assert isinstance(graded, Grade) and (graded.score, graded.tests_total) == (1.0, 4)
    starter = engine.grade(found, GOOD["starter_code"])
    assert isinstance(starter, Grade) and starter.score == 0.5  # KeyError on missing items

    snapshot = _record(stats)
    assert (snapshot["drafts"], snapshot["accepted"], snapshot["rejected"]) == (1, 1, 0)
    assert snapshot["served"] == {"generated": 1}


def test_a_generated_exercise_is_its_students(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(json_reply(GOOD))
    exercise_id = _generate(engine).exercise_id
    _record(stats)
    student = Principal(STUDENT, Role.STUDENT, ("c1",), TENANT)
    roster = Roster(_RosterDict({(TENANT, STUDENT): "c1"}))
    assert engine.readable_exercise(student, exercise_id, roster).exercise_id == exercise_id
    teacher = Principal("t", Role.TEACHER, ("c1",), TENANT)
    assert engine.readable_exercise(teacher, exercise_id, roster)
    assert engine.readable_exercise(Principal("root", Role.ADMIN, (), TENANT), exercise_id, roster)
    outsiders = (
        Principal("bo", Role.STUDENT, ("c1",), TENANT),
        Principal("t2", Role.TEACHER, ("c2",), TENANT),
    )
    for outsider in outsiders:
        with pytest.raises(PermissionDenied):
            engine.readable_exercise(outsider, exercise_id, roster)
    with pytest.raises(PermissionDenied):
        engine.exercise_to_submit(TENANT, "bo", exercise_id)


def test_a_generated_exercise_is_not_found_in_another_tenant(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    # It belongs to the tenant of the student it was generated for (it was written for
    # them): the same student id, cohort name and roles in another school find nothing.
    openai_server.enqueue(json_reply(GOOD))
    exercise_id = _generate(engine).exercise_id
    _record(stats)
    roster = Roster(_RosterDict({(TENANT, STUDENT): "c1", (OTHER_TENANT, STUDENT): "c1"}))
    others = (
        Principal(STUDENT, Role.STUDENT, ("c1",), OTHER_TENANT),
        Principal("t", Role.TEACHER, ("c1",), OTHER_TENANT),
        Principal("root", Role.ADMIN, (), OTHER_TENANT),
        Principal("ops", Role.OPERATOR, (), TENANT).acting_in(OTHER_TENANT),
    )
    for other in others:
        with pytest.raises(NotFound):
            engine.readable_exercise(other, exercise_id, roster)
    with pytest.raises(NotFound):
        engine.exercise_to_submit(OTHER_TENANT, STUDENT, exercise_id)
    # An operator acting in the exercise's tenant reads it.
    operator = Principal("ops", Role.OPERATOR, (), OTHER_TENANT).acting_in(TENANT)
    assert engine.readable_exercise(operator, exercise_id, roster).exercise_id == exercise_id
    assert engine.exercise(TENANT, exercise_id).exercise_id == exercise_id


def test_a_failing_reference_is_rejected_and_the_reason_fed_back(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(json_reply(REFERENCE_FAILS), json_reply(GOOD))
    exercise = _generate(engine)

    assert is_generated(exercise.exercise_id)
    assert exercise.reference_solution == GOOD["reference_solution"]
    assert len(openai_server.requests) == 2
    assert "rejected" not in _user_prompt(openai_server, 0)
    retry = _user_prompt(openai_server, 1)
    assert (
        "- reference_fails: the reference solution fails the visible test "
        "`stock_of({'apple': 3}, 'pear')`: expected 0, got None"
    ) in retry
    snapshot = _record(stats)
    assert snapshot["rejected_by_reason"] == {"reference_fails": 1}
    assert snapshot["accepted"] == 1


def test_a_starter_that_already_passes_is_rejected(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(json_reply(STARTER_PASSES), json_reply(GOOD))
    exercise = _generate(engine)
    assert exercise.starter_code == GOOD["starter_code"]
    assert "- starter_passes: the starter code already passes every test" in _user_prompt(
        openai_server, 1
    )
    assert _record(stats)["rejected_by_reason"] == {"starter_passes": 1}


def test_three_rejected_drafts_fall_back_to_the_bank(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats, store: DictStore
) -> None:
    no_hidden = variant(hidden_tests=[])
    openai_server.enqueue(
        json_reply(REFERENCE_FAILS),
        json_reply(STARTER_PASSES),
        json_reply(no_hidden),
        json_reply(GOOD),  # never asked for
    )
    exercise = _generate(engine)

    assert not is_generated(exercise.exercise_id)
    assert exercise.topic is Topic.COLLECTIONS and exercise.difficulty is Level.BEGINNER
    assert len(openai_server.requests) == 3
    last = _user_prompt(openai_server, 2)
    assert "- reference_fails:" in last and "- starter_passes:" in last
    assert store.saved == {}
    snapshot = _record(stats)
    assert snapshot["rejected_by_reason"] == {
        "reference_fails": 1,
        "starter_passes": 1,
        "limits": 1,
    }
    assert (snapshot["accepted"], snapshot["rejected_share"]) == (0, 1.0)
    assert snapshot["served"] == {"bank:rejected": 1}


def test_an_answer_off_the_schema_is_a_rejected_attempt(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    missing_tests = {k: v for k, v in GOOD.items() if k != "visible_tests"}
    openai_server.enqueue(json_reply(missing_tests), text_reply("Sure! Here is an exercise"))
    openai_server.enqueue(json_reply(GOOD))
    exercise = _generate(engine)
    assert is_generated(exercise.exercise_id)
    assert len(openai_server.requests) == 3
    assert "- schema: invalid_output: visible_tests: Field required" in _user_prompt(
        openai_server, 1
    )
    assert _record(stats)["rejected_by_reason"] == {"schema": 2}


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(status_reply(500), "server_error"), (malformed_reply(), "malformed")],
)
def test_a_model_failure_falls_back_to_the_bank_at_once(
    engine: ExerciseEngine,
    openai_server: ScriptedOpenAI,
    stats: GenerationStats,
    failure: Any,
    reason: str,
) -> None:
    openai_server.enqueue(failure, json_reply(GOOD))
    exercise = _generate(engine, passed={"collections-001"})
    assert exercise.exercise_id == "collections-002"  # the bank, skipping what was passed
    assert len(openai_server.requests) == 1
    snapshot = _record(stats)
    assert (snapshot["drafts"], snapshot["served"]) == (0, {f"bank:{reason}": 1})


def test_a_rejection_then_a_failure_falls_back(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(json_reply(REFERENCE_FAILS))  # then 503: the script is empty
    assert not is_generated(_generate(engine).exercise_id)
    assert len(openai_server.requests) == 2
    assert _record(stats)["served"] == {"bank:server_error": 1}


class _Inbound:
    """The gRPC call being served, as far as its remaining time goes."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float:
        return self.remaining


def test_without_time_for_a_proof_the_bank_answers(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(json_reply(GOOD))
    call = CallContext(
        method="/learnflow.exercise.v1.ExerciseService/GenerateExercise",
        request_id="r1",
        principal=None,
        grpc_context=cast(grpc.ServicerContext, _Inbound(4.0)),
        authorization=None,
    )
    token = _current.set(call)
    try:
        exercise = _generate(engine)
    finally:
        _current.reset(token)
    assert not is_generated(exercise.exercise_id)
    assert openai_server.requests == []
    assert stats.snapshot()["served"] == {"bank:no_time_left": 1}


def test_a_focus_error_picks_the_topic_and_is_in_the_prompt(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(json_reply(GOOD))
    exercise = _generate(engine, topic=None, focus="KeyError")
    assert exercise.topic is Topic.COLLECTIONS and exercise.practises == ("KeyError",)
    prompt = _user_prompt(openai_server, 0)
    assert "Topic: Collections" in prompt
    assert "keeps running into `KeyError`" in prompt
    assert "a naive solution raises KeyError" in prompt
    _record(stats)


def test_recent_titles_are_sent_so_the_model_writes_something_new(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(
        json_reply(GOOD),
        json_reply(variant(title="Shelf counts")),
        json_reply(variant(title="Shelf counts")),
    )
    _generate(engine)
    _generate(engine)
    assert "titles" not in _user_prompt(openai_server, 0)
    assert "- Stock on hand" in _user_prompt(openai_server, 1)
    # The same student id in another school is another student: none of these titles.
    _generate(engine, tenant=OTHER_TENANT)
    assert "titles" not in _user_prompt(openai_server, 2)
    _record(stats)


def test_offline_the_bank_prefers_an_exercise_practising_the_error(
    offline: ExerciseEngine, openai_server: ScriptedOpenAI
) -> None:
    # functions-003's starter code hits UnboundLocalError; it is intermediate and the
    # student a beginner, but practising their error comes before the level.
    assert _generate(offline, topic=None, focus="UnboundLocalError").exercise_id == (
        "functions-003"
    )
    passed = {"functions-003"}
    assert _generate(offline, topic=None, focus="UnboundLocalError", passed=passed).exercise_id == (
        "functions-001"
    )
    # No error: the nearest level first.
    assert _generate(offline, topic=Topic.FUNCTIONS).exercise_id == "functions-001"
    assert openai_server.requests == []


# --- quizzes ----------------------------------------------------------------------------


def _quiz_reply(*questions: dict[str, Any]) -> Any:
    return json_reply({"questions": list(questions)})


def test_quiz_answers_come_from_running_the_snippet(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(_quiz_reply(PREDICT_WRONG_CLAIM, CHOICE))
    quiz = engine.new_quiz(STUDENT, Topic.COLLECTIONS, None, 2)

    assert [q.question_id for q in quiz.questions] == ["gen-1", "gen-2"]
    assert quiz.generated == quiz.questions and quiz.level is Level.BEGINNER
    predict, choice = quiz.questions
    assert predict.kind is QuestionKind.PREDICT_OUTPUT
    assert predict.expected_output == REAL_OUTPUT  # not the model's "1 {'ana': 3}"
    assert choice.answer_index == 1
    assert "Write 2 questions on this topic" in _user_prompt(openai_server, 0)

    graded = engine.grade_quiz(
        ["gen-1", "gen-2"], {"gen-1": "2 {'ana': 3, 'bo': 1}", "gen-2": 1}, quiz.generated
    )
    assert graded.score == 1.0
    believed_the_model = engine.grade_quiz(
        ["gen-1", "gen-2"], {"gen-1": "1 {'ana': 3}", "gen-2": 1}, quiz.generated
    )
    assert [r.correct for r in believed_the_model.results] == [False, True]
    assert believed_the_model.results[0].correct_answer == REAL_OUTPUT
    assert stats.snapshot()["questions"] == {"accepted": 2}


def test_rejected_questions_are_dropped_and_the_bank_fills_the_quiz(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI, stats: GenerationStats
) -> None:
    openai_server.enqueue(_quiz_reply(ERRORING, CHOICE, TWO_CORRECT, CHOICE))
    quiz = engine.new_quiz(STUDENT, Topic.COLLECTIONS, Level.BEGINNER, 4)

    assert [q.question_id for q in quiz.generated] == ["gen-1"]
    assert quiz.generated[0].prompt == "Which can be a dictionary key?"
    from_bank = quiz.questions[1:]
    assert len(from_bank) == 3 and all(q.question_id.startswith("collections-q") for q in from_bank)
    assert stats.snapshot()["questions"] == {
        "snippet_fails": 1,
        "accepted": 1,
        "choices": 1,
        "duplicate": 1,
    }
    # Bank questions are graded from the bank, generated ones from the quiz's own key.
    answers: dict[str, int | str] = {"gen-1": 1}
    for q in from_bank:
        answers[q.question_id] = (
            q.answer_index if q.kind is QuestionKind.MULTIPLE_CHOICE else q.expected_output
        )
    ids = [q.question_id for q in quiz.questions]
    assert engine.grade_quiz(ids, answers, quiz.generated).score == 1.0


def test_a_quiz_falls_back_to_the_bank_when_the_model_fails(
    engine: ExerciseEngine, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(status_reply(500))
    quiz = engine.new_quiz(STUDENT, Topic.RECURSION, Level.BEGINNER, 3)
    assert quiz.generated == () and len(quiz.questions) == 3
    assert all(q.topic is Topic.RECURSION for q in quiz.questions)
    assert len(openai_server.requests) == 1
