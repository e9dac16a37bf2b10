"""Fixtures for the exercise tests: programs run in the real sandbox isolation (the
same bubblewrap or Landlock mode the sandbox service uses), with the grading limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.exercise.domain.grading import Execute, Execution
from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import Isolation, detect

WALL_SECONDS = 5.0


@pytest.fixture(scope="session")
def isolation() -> Isolation:
    return detect()


def _runner(isolation: Isolation, wall: float) -> Execute:
    limits = Limits(wall_seconds=wall, cpu_seconds=wall, max_output_bytes=1024 * 1024)

    def run(program: str, stdin: str) -> Execution:
        result = isolation.run(program, stdin, limits)
        return Execution(
            stdout=result.stdout,
            stderr=result.stderr,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            memory_exceeded=result.memory_exceeded,
        )

    return run


@pytest.fixture(scope="session")
def execute(isolation: Isolation) -> Execute:
    return _runner(isolation, WALL_SECONDS)


@pytest.fixture(scope="session")
def execute_with_timeout(isolation: Isolation) -> Callable[[float], Execute]:
    """A factory for an `Execute` with a shorter wall timeout (timeout tests)."""

    def make(timeout: float) -> Execute:
        return _runner(isolation, timeout)

    return make
