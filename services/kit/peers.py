"""Typed adapters over the mesh services other services lean on: the sandbox (run a
program) and the mastery engine (how far along a student is).

They call the generated stubs over `service_channel`, so the caller's token, deadline
and request id travel along. Services wrap these in their own domain interfaces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from learnflow.common.v1 import common_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

from services.kit.clients import service_channel
from services.kit.topics import Level

log = logging.getLogger("learnflow.peers")

# A mastery band read as the level to teach at: no evidence or red -> beginner.
BAND_TO_LEVEL: dict[int, Level] = {
    common_pb2.MASTERY_BAND_RED: Level.BEGINNER,
    common_pb2.MASTERY_BAND_YELLOW: Level.INTERMEDIATE,
    common_pb2.MASTERY_BAND_GREEN: Level.ADVANCED,
    common_pb2.MASTERY_BAND_BLUE: Level.ADVANCED,
}


@dataclass(frozen=True, slots=True)
class ProgramRun:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    memory_exceeded: bool
    # Why the sandbox refused to run it (a syntax error, a disallowed import); "" if it ran.
    precheck_failure: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and not self.timed_out
            and not self.memory_exceeded
            and not self.precheck_failure
        )


class SandboxClient:
    """Runs a program in the sandbox service with a wall/CPU limit per run."""

    def __init__(
        self, address: str, *, wall_seconds: float = 3.0, max_output_bytes: int = 64 * 1024
    ) -> None:
        self._stub = sandbox_pb2_grpc.SandboxServiceStub(service_channel(address))
        self._wall_seconds = wall_seconds
        wall = Duration()
        wall.FromNanoseconds(int(wall_seconds * 1e9))
        self._limits = sandbox_pb2.ResourceLimits(
            wall_time=wall, cpu_time=wall, max_output_bytes=max_output_bytes
        )

    def run(self, code: str, stdin: str = "") -> ProgramRun:
        reply = self._stub.ExecuteCode(
            sandbox_pb2.ExecuteCodeRequest(code=code, stdin=stdin, limits=self._limits),
            timeout=self._wall_seconds + 5,
        )
        if reply.HasField("precheck_failure"):
            # Nothing ran: report it as a failed run, never as a silent success.
            failure = reply.precheck_failure
            return ProgramRun(
                stdout="",
                stderr=f"{failure.message}\n{failure.excerpt}".strip(),
                exit_code=1,
                timed_out=False,
                memory_exceeded=False,
                precheck_failure=failure.message or "precheck failed",
            )
        return ProgramRun(
            stdout=reply.stdout,
            stderr=reply.stderr,
            exit_code=reply.exit_code,
            timed_out=reply.timed_out,
            memory_exceeded=reply.memory_exceeded,
        )


class MasteryClient:
    """Reads a student's mastery; None when there is none yet or the engine is down
    (callers then assume a beginner rather than fail the student's request)."""

    def __init__(self, address: str, *, timeout_seconds: float = 2.0) -> None:
        self._stub = mastery_pb2_grpc.MasteryServiceStub(service_channel(address))
        self._timeout = timeout_seconds

    def get(self, student_id: str) -> mastery_pb2.Mastery | None:
        try:
            mastery: mastery_pb2.Mastery = self._stub.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"students/{student_id}/mastery"),
                timeout=self._timeout,
            )
            return mastery
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.warning(
                    "mastery unavailable; assuming beginner", extra={"code": exc.code().name}
                )
            return None

    def level(self, student_id: str, topic: int | None = None) -> Level | None:
        """The level to teach `topic` at (the overall level without a topic); None
        without evidence."""
        mastery = self.get(student_id)
        if mastery is None:
            return None
        if topic is None:
            return BAND_TO_LEVEL.get(int(mastery.band))
        for item in mastery.topics:
            if item.topic == topic:
                return BAND_TO_LEVEL.get(int(item.band))
        return None
