"""Wires the exercise service: the bank, the sandbox and the mastery engine over gRPC
(the caller's token and deadline travel along), storage, the progress publisher, and
the model (exercise and quiz generation) when OPENAI_API_KEY is set."""

from __future__ import annotations

from pathlib import Path

import grpc
from learnflow.exercise.v1 import exercise_pb2_grpc, quiz_pb2_grpc

from services.exercise.answers import ExerciseAnswers
from services.exercise.domain.bank import default_bank
from services.exercise.domain.grading import Execution
from services.exercise.engine import ExerciseEngine
from services.exercise.generator import MAX_ATTEMPTS, ExerciseGenerator, ModelAuthor
from services.exercise.graded import GradedWork
from services.exercise.servicer import ExerciseServicer, QuizServicer
from services.exercise.store import ExerciseStore
from services.kit.bus import Publisher
from services.kit.peers import MasteryClient, SandboxClient
from services.kit.responses import LearningResponses
from services.kit.retention import Purge, older_than_window
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts

MIGRATIONS = Path(__file__).parent / "migrations"
SOURCE = "//learnflow.dev/exercise"
TEST_WALL_SECONDS = 3.0  # per test; a bank test runs in well under 100 ms


class SandboxExecute:
    """grading.Execute over the sandbox service."""

    def __init__(self, sandbox: SandboxClient) -> None:
        self._sandbox = sandbox

    def __call__(self, program: str, stdin: str) -> Execution:
        run = self._sandbox.run(program, stdin)
        return Execution(
            stdout=run.stdout,
            stderr=run.stderr,
            exit_code=run.exit_code,
            timed_out=run.timed_out,
            memory_exceeded=run.memory_exceeded,
        )


def build(runtime: Runtime) -> ServiceParts:
    settings = runtime.settings
    db = runtime.database("exercise", MIGRATIONS)
    bus = runtime.bus
    store = ExerciseStore(db)
    # The harness writes the result line last: a generous output cap keeps a chatty
    # program from pushing it out of what the sandbox returns.
    sandbox = SandboxClient(
        settings.address_of("sandbox"),
        wall_seconds=TEST_WALL_SECONDS,
        max_output_bytes=1024 * 1024,
    )
    mastery = MasteryClient(settings.address_of("mastery"))
    execute = SandboxExecute(sandbox)
    engine = ExerciseEngine(
        default_bank(),
        execute,
        mastery.level,
        generator=ExerciseGenerator(ModelAuthor(runtime.llm), execute, max_attempts=MAX_ATTEMPTS),
        generated=store,
    )
    publisher = Publisher(bus, SOURCE)
    answers = ExerciseAnswers(LearningResponses(publisher, "exercise"))
    graded = GradedWork(engine, store, publisher, answers)

    def register(server: grpc.Server) -> None:
        exercise_pb2_grpc.add_ExerciseServiceServicer_to_server(
            ExerciseServicer(engine, store, graded, answers, runtime.roster), server
        )
        quiz_pb2_grpc.add_QuizServiceServicer_to_server(
            QuizServicer(engine, store, graded, answers, runtime.roster), server
        )

    parts = ServiceParts(
        register=register,
        checks={"postgres": db.check, "bus": bus.check},
        roster=runtime.roster,
    )
    return runtime.with_student_data(
        parts, "exercise", erase=store.erase_student, gather=store.export_student
    )


def retention(runtime: Runtime) -> Purge:
    """Submissions, quizzes and generated exercises older than the window."""
    store = ExerciseStore(runtime.database("exercise", MIGRATIONS))
    return older_than_window(runtime.settings, store.purge)
