"""Sandbox and autograding through the running mesh: code runs isolated, submissions are
graded per test with hidden tests kept hidden, and graded work moves mastery (exercise
-> Kafka -> mastery -> GetMastery through Envoy)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc, quiz_pb2, quiz_pb2_grpc
from learnflow.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

from services.exercise.domain.bank import QuestionKind, default_bank
from tests.conftest import MintToken, bearer, wait_for

pytestmark = pytest.mark.integration

BANK = default_bank()


@pytest.fixture(scope="module")
def sandbox(channels: dict[str, grpc.Channel]) -> sandbox_pb2_grpc.SandboxServiceStub:
    return sandbox_pb2_grpc.SandboxServiceStub(channels["sandbox"])


@pytest.fixture(scope="module")
def exercises(channels: dict[str, grpc.Channel]) -> exercise_pb2_grpc.ExerciseServiceStub:
    return exercise_pb2_grpc.ExerciseServiceStub(channels["exercise"])


@pytest.fixture(scope="module")
def quizzes(channels: dict[str, grpc.Channel]) -> quiz_pb2_grpc.QuizServiceStub:
    return quiz_pb2_grpc.QuizServiceStub(channels["exercise"])


# -- the sandbox service -----------------------------------------------------------


def test_sandbox_runs_code_and_reports_its_isolation(
    sandbox: sandbox_pb2_grpc.SandboxServiceStub,
    channels: dict[str, grpc.Channel],
    mint_token: MintToken,
) -> None:
    reply = sandbox.ExecuteCode(
        sandbox_pb2.ExecuteCodeRequest(code="print(input()[::-1])", stdin="olleh\n"),
        metadata=bearer(mint_token("alice")),
        timeout=15,
    )
    assert (reply.stdout, reply.exit_code, reply.timed_out) == ("hello\n", 0, False)
    assert reply.isolation_mode == sandbox_pb2.ISOLATION_MODE_BUBBLEWRAP
    health = health_pb2_grpc.HealthStub(channels["sandbox"])
    status = health.Check(
        health_pb2.HealthCheckRequest(service="learnflow.sandbox.isolation.bubblewrap")
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_sandbox_prechecks_and_limits(
    sandbox: sandbox_pb2_grpc.SandboxServiceStub, mint_token: MintToken
) -> None:
    token = bearer(mint_token("alice"))
    syntax = sandbox.ExecuteCode(
        sandbox_pb2.ExecuteCodeRequest(code="def f(:\n    pass\n"), metadata=token, timeout=15
    )
    assert syntax.precheck_failure.kind == sandbox_pb2.PrecheckFailure.KIND_SYNTAX_ERROR
    assert syntax.precheck_failure.span.line == 1 and "^" in syntax.precheck_failure.excerpt
    banned = sandbox.ExecuteCode(
        sandbox_pb2.ExecuteCodeRequest(code="import socket\n", allowed_imports=["math"]),
        metadata=token,
        timeout=15,
    )
    assert banned.precheck_failure.kind == sandbox_pb2.PrecheckFailure.KIND_DISALLOWED_IMPORT
    assert banned.precheck_failure.module == "socket"
    slow = sandbox.ExecuteCode(
        sandbox_pb2.ExecuteCodeRequest(
            code="while True: pass",
            limits=sandbox_pb2.ResourceLimits(
                wall_time=Duration(seconds=1), cpu_time=Duration(seconds=1)
            ),
        ),
        metadata=token,
        timeout=15,
    )
    assert slow.timed_out and slow.exit_code != 0
    with pytest.raises(grpc.RpcError) as caught:
        sandbox.ExecuteCode(
            sandbox_pb2.ExecuteCodeRequest(
                code="print(1)", limits=sandbox_pb2.ResourceLimits(memory_bytes=1 << 40)
            ),
            metadata=token,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.memory_bytes" in (caught.value.details() or "")


# -- exercises and submissions -------------------------------------------------------


def test_exercises_hide_their_hidden_tests(
    exercises: exercise_pb2_grpc.ExerciseServiceStub, mint_token: MintToken
) -> None:
    bank_item = BANK.exercises[0]
    shown = exercises.GetExercise(
        exercise_pb2.GetExerciseRequest(name=f"exercises/{bank_item.exercise_id}"),
        metadata=bearer(mint_token("alice")),
    )
    assert shown.hidden_test_count == len(bank_item.hidden_tests) > 0
    assert len(shown.visible_tests) == len(bank_item.visible_tests)
    serialized = shown.SerializeToString()
    for hidden in bank_item.hidden_tests:
        assert hidden.call.encode() not in serialized
    assert bank_item.reference_solution.strip().encode() not in serialized


def _submit(
    exercises: exercise_pb2_grpc.ExerciseServiceStub,
    token: str,
    student: str,
    exercise_id: str,
    code: str,
    request_id: str = "",
) -> exercise_pb2.Submission:
    submission: exercise_pb2.Submission = exercises.CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{student}",
            submission=exercise_pb2.Submission(exercise=f"exercises/{exercise_id}", code=code),
            request_id=request_id,
        ),
        metadata=bearer(token),
        timeout=60,
    )
    return submission


def test_grading_gives_partial_credit_and_keeps_hidden_tests_hidden(
    exercises: exercise_pb2_grpc.ExerciseServiceStub, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-grade"])
    item = BANK.exercises[0]
    perfect = _submit(exercises, token, student, item.exercise_id, item.reference_solution)
    assert (perfect.score, perfect.tests_passed) == (1.0, len(item.tests))
    starter = _submit(exercises, token, student, item.exercise_id, item.starter_code)
    assert starter.tests_passed < starter.tests_total == len(item.tests)
    assert starter.score == pytest.approx(starter.tests_passed / starter.tests_total)
    for result in starter.results:
        if result.hidden:
            assert (result.call, result.expected, result.actual, result.output) == ("", "", "", "")
    visible = [r for r in starter.results if not r.hidden]
    assert visible and all(r.call and r.expected for r in visible)

    broken = _submit(exercises, token, student, item.exercise_id, "def (:\n")
    assert broken.precheck_message.startswith("SyntaxError") and broken.score == 0

    first = _submit(
        exercises, token, student, item.exercise_id, item.starter_code, request_id="r-1"
    )
    again = _submit(
        exercises, token, student, item.exercise_id, item.reference_solution, request_id="r-1"
    )
    assert again.name == first.name and again.score == first.score  # the retry is the first

    with pytest.raises(grpc.RpcError) as caught:
        _submit(exercises, mint_token("mallory"), student, item.exercise_id, "x = 1")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_graded_submission_and_quiz_move_mastery_through_kafka_and_envoy(
    exercises: exercise_pb2_grpc.ExerciseServiceStub,
    quizzes: quiz_pb2_grpc.QuizServiceStub,
    mint_token: MintToken,
    gateway_url: str,
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-e2e"])
    item = BANK.exercises[0]
    _submit(exercises, token, student, item.exercise_id, item.reference_solution)
    http = httpx.Client(
        base_url=gateway_url, headers={"authorization": f"Bearer {token}"}, timeout=10
    )

    def mastery() -> dict[str, Any] | None:
        reply = http.get(f"/v1/students/{student}/mastery")
        return reply.json() if reply.status_code == 200 else None

    body = wait_for(mastery, what="mastery after the submission")
    assert body["components"]["completion"] == 1.0

    quiz = quizzes.GenerateQuiz(
        quiz_pb2.GenerateQuizRequest(
            parent=f"students/{student}",
            topic=int(item.topic),  # type: ignore[arg-type]
            question_count=3,
        ),
        metadata=bearer(token),
    )
    assert quiz.state == quiz_pb2.Quiz.STATE_OPEN and len(quiz.questions) == 3
    answers = []
    for question in quiz.questions:
        truth = BANK.question(question.question_id)
        assert truth is not None
        if truth.kind is QuestionKind.MULTIPLE_CHOICE:
            answers.append(
                quiz_pb2.Answer(question_id=truth.question_id, choice_index=truth.answer_index)
            )
        else:
            answers.append(
                quiz_pb2.Answer(question_id=truth.question_id, text=truth.expected_output)
            )
    graded = quizzes.GradeQuiz(
        quiz_pb2.GradeQuizRequest(name=quiz.name, answers=answers), metadata=bearer(token)
    )
    assert graded.score == 1.0 and all(r.correct for r in graded.results)
    with pytest.raises(grpc.RpcError) as caught:
        quizzes.GradeQuiz(
            quiz_pb2.GradeQuizRequest(name=quiz.name, answers=answers), metadata=bearer(token)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    def with_quiz() -> dict[str, Any] | None:
        current = mastery()
        return current if current and current["components"].get("quiz") == 1.0 else None

    after = wait_for(with_quiz, what="the quiz in mastery")
    assert after["components"]["completion"] == 1.0
