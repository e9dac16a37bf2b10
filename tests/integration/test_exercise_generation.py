"""Generated exercises and quizzes over real gRPC: a second exercise server configured
with the scripted model generates (every draft proven by the mesh's sandbox service);
what it stores is found, shown and graded by the mesh's own exercise server through the
shared Postgres schema. A draft whose reference solution fails is rejected end to end.

The share of drafts rejected across these scenarios is printed at the end of the module
(`pytest -s`), from the service's own counters."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from learnflow.common.v1 import common_pb2
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc, quiz_pb2, quiz_pb2_grpc
from prometheus_client import REGISTRY

from services.kit.auth import TENANT_METADATA
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from tests.conftest import MintToken, bearer, free_port
from tests.exercise.drafts import (
    CHOICE,
    ERRORING,
    GOOD,
    PREDICT_WRONG_CLAIM,
    REAL_OUTPUT,
    REFERENCE_FAILS,
)
from tests.support.openai_server import ScriptedOpenAI, json_reply

pytestmark = pytest.mark.integration

ATTEMPTS = "learnflow_exercise_generation_attempts_total"
OUTCOMES = (
    "accepted",
    "schema",
    "limits",
    "entry_points",
    "tests",
    "code",
    "reference_fails",
    "starter_passes",
)


def _attempt_counts() -> dict[str, float]:
    return {o: REGISTRY.get_sample_value(ATTEMPTS, {"outcome": o}) or 0.0 for o in OUTCOMES}


@pytest.fixture(scope="module", autouse=True)
def rejection_share() -> Iterator[None]:
    """Prints how many generated drafts these scenarios rejected, and why."""
    before = _attempt_counts()
    yield
    after = _attempt_counts()
    delta = {o: int(after[o] - before[o]) for o in OUTCOMES if after[o] > before[o]}
    drafts = sum(delta.values())
    rejected = drafts - delta.get("accepted", 0)
    reasons = {o: n for o, n in delta.items() if o != "accepted"}
    share = f"{rejected / drafts:.0%}" if drafts else "n/a"
    print(
        f"\nexercise generation over gRPC: {drafts} drafts, {rejected} rejected ({share}) "
        f"by reason {reasons}"
    )


@pytest.fixture(scope="module")
def mesh_channel(mesh: dict[str, int]) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh['exercise']}")
    yield channel
    channel.close()


@pytest.fixture
def with_model(
    llm_settings: Settings,
    mesh: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
    model_use_granted: None,
) -> Iterator[grpc.Channel]:
    """A second exercise server configured with the scripted model, on the mesh."""
    spec = next(s for s in SERVICES if s.name == "exercise")
    assert all(os.environ.get(s.address_env) for s in SERVICES)
    runtime = Runtime(llm_settings, run_dir=tmp_path_factory.mktemp("exercise-llm"))
    port = free_port()
    server = LearnFlowServer(spec, builder("exercise")(runtime), llm_settings, port=port)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server.stop(grace=1.0)
    runtime.close()


def _generate(
    channel: grpc.Channel, token: str, student: str, **fields: Any
) -> exercise_pb2.Exercise:
    stub = exercise_pb2_grpc.ExerciseServiceStub(channel)
    reply: exercise_pb2.Exercise = stub.GenerateExercise(
        exercise_pb2.GenerateExerciseRequest(student=f"students/{student}", **fields),
        metadata=bearer(token),
        timeout=60,
    )
    return reply


def _submit(
    channel: grpc.Channel, token: str, student: str, exercise: str, code: str
) -> exercise_pb2.Submission:
    stub = exercise_pb2_grpc.ExerciseServiceStub(channel)
    reply: exercise_pb2.Submission = stub.CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{student}",
            submission=exercise_pb2.Submission(exercise=exercise, code=code),
        ),
        metadata=bearer(token),
        timeout=60,
    )
    return reply


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code: grpc.StatusCode = caught.value.code()
    return code


def test_a_generated_exercise_is_stored_shown_and_graded_by_the_mesh(
    with_model: grpc.Channel,
    mesh_channel: grpc.Channel,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-gen"])
    openai_server.enqueue(json_reply(GOOD))
    served = _generate(with_model, token, student, topic=common_pb2.TOPIC_COLLECTIONS)

    assert served.origin == exercise_pb2.Exercise.ORIGIN_GENERATED
    assert served.name.startswith("exercises/gen-")
    assert (served.topic, served.difficulty) == (
        common_pb2.TOPIC_COLLECTIONS,
        common_pb2.LEVEL_BEGINNER,
    )
    assert [t.call for t in served.visible_tests] == [t["call"] for t in GOOD["visible_tests"]]
    assert served.hidden_test_count == 2
    assert served.starter_code == GOOD["starter_code"]
    wire = served.SerializeToString()
    for hidden in GOOD["hidden_tests"]:
        assert hidden["call"].encode() not in wire
    assert GOOD["reference_solution"].strip().encode() not in wire
    assert len(openai_server.requests) == 1

    # The mesh's own (offline) exercise server finds it in the shared schema.
    mesh = exercise_pb2_grpc.ExerciseServiceStub(mesh_channel)

    def get(who: str) -> exercise_pb2.Exercise:
        found: exercise_pb2.Exercise = mesh.GetExercise(
            exercise_pb2.GetExerciseRequest(name=served.name), metadata=bearer(who)
        )
        return found

    # Its student and staff of the student's cohort see it; nobody else.
    assert get(token) == served
    assert get(mint_token("t-gen", "teacher", ["c-gen"])).hidden_test_count == 2
    assert get(mint_token("root", "admin")).name == served.name
    for outsider in (
        mint_token("someone-else", "student", ["c-gen"]),
        mint_token("t-other", "teacher", ["c-other"]),
    ):
        assert _code(lambda t=outsider: get(t)) == grpc.StatusCode.PERMISSION_DENIED

    perfect = _submit(mesh_channel, token, student, served.name, GOOD["reference_solution"])
    assert (perfect.score, perfect.tests_passed, perfect.tests_total) == (1.0, 4, 4)
    for result in perfect.results:
        if result.hidden:
            assert (result.call, result.expected, result.actual) == ("", "", "")
    starter = _submit(mesh_channel, token, student, served.name, GOOD["starter_code"])
    assert (starter.score, starter.tests_passed) == (0.5, 2)
    missing = next(r for r in starter.results if r.call == "stock_of({'apple': 3}, 'pear')")
    assert missing.outcome == exercise_pb2.TEST_OUTCOME_ERROR
    assert missing.actual == "KeyError: 'pear'"

    other = mint_token("someone-else", "student", ["c-gen"])
    assert (
        _code(lambda: _submit(mesh_channel, other, "someone-else", served.name, "x = 1"))
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_a_generated_exercise_belongs_to_its_students_school(
    with_model: grpc.Channel,
    mesh_channel: grpc.Channel,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    # Generated for a student of school-a (it may carry that student's context: their
    # level, their recurring error), it is stored in school-a and found there only.
    student, cohort = f"stu-{uuid.uuid4().hex[:8]}", "c1"
    token = mint_token(student, "student", [cohort], tenant="school-a")
    openai_server.enqueue(json_reply(GOOD))
    served = _generate(with_model, token, student, topic=common_pb2.TOPIC_COLLECTIONS)
    assert served.origin == exercise_pb2.Exercise.ORIGIN_GENERATED
    mesh = exercise_pb2_grpc.ExerciseServiceStub(mesh_channel)

    def get(metadata: list[tuple[str, str]]) -> exercise_pb2.Exercise:
        found: exercise_pb2.Exercise = mesh.GetExercise(
            exercise_pb2.GetExerciseRequest(name=served.name), metadata=metadata, timeout=10
        )
        return found

    operator = mint_token("ops", "operator", tenant="platform")
    assert get(bearer(token)) == served
    assert get(bearer(mint_token("tess", "teacher", [cohort], tenant="school-a"))) == served
    assert get([*bearer(operator), (TENANT_METADATA, "school-a")]) == served
    # NOT_FOUND for school-b, whoever asks, the same student id and a teacher of the
    # same-named cohort included: the exercise is looked up in the caller's school first
    # and school-b has none by that id (a refusal would say it exists somewhere).
    for outsider in (
        bearer(mint_token(student, "student", [cohort], tenant="school-b")),
        bearer(mint_token("tess", "teacher", [cohort], tenant="school-b")),
        bearer(mint_token("root", "admin", tenant="school-b")),
        [*bearer(operator), (TENANT_METADATA, "school-b")],
    ):
        assert _code(lambda o=outsider: get(o)) == grpc.StatusCode.NOT_FOUND
    # school-b's student of that id cannot submit to it either: not found in school-b.
    namesake = mint_token(student, "student", [cohort], tenant="school-b")
    assert (
        _code(lambda: _submit(mesh_channel, namesake, student, served.name, "x = 1"))
        == grpc.StatusCode.NOT_FOUND
    )
    perfect = _submit(mesh_channel, token, student, served.name, GOOD["reference_solution"])
    assert perfect.score == 1.0


def test_a_failing_reference_is_rejected_then_the_bank_answers(
    with_model: grpc.Channel, openai_server: ScriptedOpenAI, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-gen"])

    openai_server.enqueue(json_reply(REFERENCE_FAILS), json_reply(GOOD))
    second_try = _generate(with_model, token, student, topic=common_pb2.TOPIC_COLLECTIONS)
    assert second_try.origin == exercise_pb2.Exercise.ORIGIN_GENERATED
    assert len(openai_server.requests) == 2
    assert "reference_fails" in openai_server.requests[1]["messages"][1]["content"]

    openai_server.reset()
    openai_server.enqueue(*[json_reply(REFERENCE_FAILS)] * 3)
    fallback = _generate(
        with_model,
        token,
        student,
        topic=common_pb2.TOPIC_COLLECTIONS,
        difficulty=common_pb2.LEVEL_ADVANCED,
    )
    assert fallback.origin == exercise_pb2.Exercise.ORIGIN_BANK
    assert fallback.name == "exercises/collections-004"  # the bank's advanced one
    assert len(openai_server.requests) == 3


def test_a_focus_error_chooses_the_topic(
    with_model: grpc.Channel,
    mesh_channel: grpc.Channel,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-gen"])
    openai_server.enqueue(json_reply(GOOD))
    targeted = _generate(with_model, token, student, focus_error_type="KeyError")
    assert targeted.origin == exercise_pb2.Exercise.ORIGIN_GENERATED
    assert targeted.topic == common_pb2.TOPIC_COLLECTIONS
    assert "keeps running into `KeyError`" in openai_server.requests[0]["messages"][1]["content"]

    # Offline (the mesh's server): a bank exercise whose starter code hits the error.
    offline = _generate(mesh_channel, token, student, focus_error_type="UnboundLocalError")
    assert (offline.name, offline.origin) == (
        "exercises/functions-003",
        exercise_pb2.Exercise.ORIGIN_BANK,
    )

    with pytest.raises(grpc.RpcError) as caught:
        _generate(mesh_channel, token, student, focus_error_type="Key Error!")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "focus_error_type" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as caught:
        _generate(mesh_channel, token, student)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "topic" in (caught.value.details() or "")


def test_a_generated_quiz_is_graded_on_real_output_by_the_mesh(
    with_model: grpc.Channel,
    mesh_channel: grpc.Channel,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-gen"])
    openai_server.enqueue(json_reply({"questions": [PREDICT_WRONG_CLAIM, ERRORING, CHOICE]}))
    quiz = quiz_pb2_grpc.QuizServiceStub(with_model).GenerateQuiz(
        quiz_pb2.GenerateQuizRequest(
            parent=f"students/{student}", topic=common_pb2.TOPIC_COLLECTIONS, question_count=3
        ),
        metadata=bearer(token),
        timeout=60,
    )
    ids = [q.question_id for q in quiz.questions]
    assert ids[:2] == ["gen-1", "gen-2"] and ids[2].startswith("collections-q")
    assert quiz.questions[0].kind == quiz_pb2.Question.KIND_PREDICT_OUTPUT
    assert quiz.questions[0].code == PREDICT_WRONG_CLAIM["code"]
    assert REAL_OUTPUT.strip().encode() not in quiz.SerializeToString()  # not before grading

    # Graded by the mesh's server from the answers stored with the quiz: the real output
    # is right, the model's claim is wrong.
    graded = quiz_pb2_grpc.QuizServiceStub(mesh_channel).GradeQuiz(
        quiz_pb2.GradeQuizRequest(
            name=quiz.name,
            answers=[
                quiz_pb2.Answer(question_id="gen-1", text=REAL_OUTPUT),
                quiz_pb2.Answer(question_id="gen-2", choice_index=1),
            ],
        ),
        metadata=bearer(token),
        timeout=10,
    )
    by_id = {r.question_id: r for r in graded.results}
    assert by_id["gen-1"].correct and by_id["gen-1"].correct_answer == REAL_OUTPUT
    assert by_id["gen-2"].correct and by_id["gen-2"].correct_answer == "(1, 2)"
    assert not by_id[ids[2]].correct  # unanswered
    assert graded.score == pytest.approx(2 / 3)
