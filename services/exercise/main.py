"""Wires the exercise service: the bank, the sandbox and the mastery engine over gRPC
(the caller's token and deadline travel along), storage and the progress publisher."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from learnflow.exercise.v1 import exercise_pb2_grpc, quiz_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

from services.exercise.domain.bank import Level, Topic, default_bank
from services.exercise.domain.grading import Execution
from services.exercise.engine import ExerciseEngine
from services.exercise.servicer import ExerciseServicer, QuizServicer
from services.exercise.store import ExerciseStore
from services.kit.bus import Publisher
from services.kit.clients import service_channel
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts

log = logging.getLogger("learnflow.exercise")

MIGRATIONS = Path(__file__).parent / "migrations"
SOURCE = "//learnflow.dev/exercise"
TEST_WALL_SECONDS = 3.0  # per test; a bank test runs in well under 100 ms
BAND_TO_LEVEL = {1: Level.BEGINNER, 2: Level.INTERMEDIATE, 3: Level.ADVANCED, 4: Level.ADVANCED}


class SandboxExecute:
    """grading.Execute over the sandbox service."""

    def __init__(self, stub: sandbox_pb2_grpc.SandboxServiceStub) -> None:
        self._stub = stub
        wall = Duration()
        wall.FromNanoseconds(int(TEST_WALL_SECONDS * 1e9))
        # The harness writes the result line last: a generous output cap keeps a chatty
        # program from pushing it out of what the sandbox returns.
        self._limits = sandbox_pb2.ResourceLimits(
            wall_time=wall, cpu_time=wall, max_output_bytes=1024 * 1024
        )

    def __call__(self, program: str, stdin: str) -> Execution:
        reply = self._stub.ExecuteCode(
            sandbox_pb2.ExecuteCodeRequest(code=program, stdin=stdin, limits=self._limits),
            timeout=TEST_WALL_SECONDS + 5,
        )
        return Execution(
            stdout=reply.stdout,
            stderr=reply.stderr,
            exit_code=reply.exit_code,
            timed_out=reply.timed_out,
            memory_exceeded=reply.memory_exceeded,
        )


class MasteryLevel:
    """The level for a topic from the student's mastery band; None when unknown."""

    def __init__(self, stub: mastery_pb2_grpc.MasteryServiceStub) -> None:
        self._stub = stub

    def __call__(self, student_id: str, topic: Topic) -> Level | None:
        try:
            mastery = self._stub.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"students/{student_id}/mastery"), timeout=2
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.warning(
                    "mastery unavailable; assuming beginner", extra={"code": exc.code().name}
                )
            return None
        for item in mastery.topics:
            if item.topic == topic:
                return BAND_TO_LEVEL.get(int(item.band))
        return None


def build(runtime: Runtime) -> ServiceParts:
    settings = runtime.settings
    db = runtime.database("exercise", MIGRATIONS)
    bus = runtime.bus
    store = ExerciseStore(db)
    sandbox = sandbox_pb2_grpc.SandboxServiceStub(service_channel(settings.address_of("sandbox")))
    mastery = mastery_pb2_grpc.MasteryServiceStub(service_channel(settings.address_of("mastery")))
    engine = ExerciseEngine(default_bank(), SandboxExecute(sandbox), MasteryLevel(mastery))
    publisher = Publisher(bus, SOURCE)

    def register(server: grpc.Server) -> None:
        exercise_pb2_grpc.add_ExerciseServiceServicer_to_server(
            ExerciseServicer(engine, store, publisher), server
        )
        quiz_pb2_grpc.add_QuizServiceServicer_to_server(
            QuizServicer(engine, store, publisher), server
        )

    return ServiceParts(register=register, checks={"postgres": db.check, "bus": bus.check})
