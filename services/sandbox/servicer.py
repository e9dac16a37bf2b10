"""SandboxService: decode the request, run it through the bounded executor, encode.

Any signed-in user may run code; the run counts against the caller's fair share (the
token's subject: services running code for a student forward the student's token)."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from learnflow.common.v1 import common_pb2
from learnflow.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

from services.kit.errors import FailedPrecondition, Validator
from services.kit.interceptors import current_principal
from services.sandbox.domain.limits import InvalidLimitsError, resolve
from services.sandbox.domain.precheck import PrecheckFailure
from services.sandbox.executor import SandboxExecutor
from services.sandbox.isolation.base import IsolationMode

MAX_CODE_BYTES = 64 * 1024
MAX_STDIN_BYTES = 64 * 1024
MODES = {
    IsolationMode.BUBBLEWRAP: sandbox_pb2.ISOLATION_MODE_BUBBLEWRAP,
    IsolationMode.LANDLOCK: sandbox_pb2.ISOLATION_MODE_LANDLOCK,
    IsolationMode.UNSAFE_NONE: sandbox_pb2.ISOLATION_MODE_UNSAFE_NONE,
}
PRECHECK_KINDS = {
    "syntax_error": sandbox_pb2.PrecheckFailure.KIND_SYNTAX_ERROR,
    "disallowed_import": sandbox_pb2.PrecheckFailure.KIND_DISALLOWED_IMPORT,
}


def _seconds(value: Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, executor: SandboxExecutor) -> None:
        self._executor = executor

    def ExecuteCode(
        self, request: sandbox_pb2.ExecuteCodeRequest, context: grpc.ServicerContext
    ) -> sandbox_pb2.ExecuteCodeResponse:
        principal = current_principal()  # any signed-in user; their share is checked below
        checks = Validator()
        checks.check(bool(request.code.strip()), "code", "is required")
        checks.check(len(request.code.encode()) <= MAX_CODE_BYTES, "code", "must be at most 64 KiB")
        checks.check(
            len(request.stdin.encode()) <= MAX_STDIN_BYTES, "stdin", "must be at most 64 KiB"
        )
        for index, module in enumerate(request.allowed_imports):
            checks.check(module.isidentifier(), f"allowed_imports[{index}]", "is not a module name")
        limits = None
        try:
            given = request.limits
            limits = resolve(
                {
                    "wall_time": _seconds(given.wall_time),
                    "cpu_time": _seconds(given.cpu_time),
                    "memory_bytes": given.memory_bytes,
                    "max_processes": given.max_processes,
                    "max_output_bytes": given.max_output_bytes,
                    "max_file_bytes": given.max_file_bytes,
                    "scratch_bytes": given.scratch_bytes,
                }
            )
        except InvalidLimitsError as exc:
            for name, why in exc.violations:
                checks.add(f"limits.{name}", why)
        checks.raise_if_invalid()
        assert limits is not None
        allowed = list(request.allowed_imports) or None
        outcome = self._executor.execute(
            request.code,
            request.stdin,
            limits,
            allowed,
            context.time_remaining(),
            principal=principal,
        )
        mode = MODES[self._executor.isolation.mode]
        if isinstance(outcome, PrecheckFailure):
            return sandbox_pb2.ExecuteCodeResponse(
                precheck_failure=sandbox_pb2.PrecheckFailure(
                    kind=PRECHECK_KINDS[outcome.kind],
                    message=outcome.message,
                    span=common_pb2.SourceSpan(line=outcome.line, column=outcome.column),
                    excerpt=outcome.excerpt,
                    module=outcome.module,
                ),
                isolation_mode=mode,
            )
        return sandbox_pb2.ExecuteCodeResponse(
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            wall_time=_duration(outcome.wall_seconds),
            cpu_time=_duration(outcome.cpu_seconds),
            timed_out=outcome.timed_out,
            memory_exceeded=outcome.memory_exceeded,
            output_truncated=outcome.output_truncated,
            isolation_mode=mode,
        )


class RefusingSandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    """Where no isolation is available: runs nothing, says why."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def ExecuteCode(
        self, request: sandbox_pb2.ExecuteCodeRequest, context: grpc.ServicerContext
    ) -> sandbox_pb2.ExecuteCodeResponse:
        raise FailedPrecondition(f"no isolation is available on this host: {self._reason}")
