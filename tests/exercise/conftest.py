"""Fixtures for the exercise domain tests: a stand-in for the sandbox.

`execute` runs a program with the system Python (`/usr/bin/python3 -I -c`, as the sandbox
will) in a fresh temporary working directory, with an empty environment and a wall
timeout. It isolates nothing; it will be switched to the real sandbox, and keeps the
`Execute` signature so the tests do not change.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable

import pytest

from services.exercise.domain.grading import Execute, Execution

PYTHON = "/usr/bin/python3"
TIMEOUT_SECONDS = 5.0


def run_python(program: str, stdin: str, *, timeout: float = TIMEOUT_SECONDS) -> Execution:
    with (
        tempfile.TemporaryDirectory(prefix="learnflow-exercise-") as scratch,
        subprocess.Popen(
            [PYTHON, "-I", "-c", program],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=scratch,
            env={},  # like the sandbox: nothing from the test runner's environment
            text=True,
            encoding="utf-8",
            errors="replace",
            # Its own process group, so a timeout kills children holding the pipes too.
            start_new_session=True,
        ) as process,
    ):
        timed_out = False
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            # The leader is not reaped yet, so its group id still names only this run.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        return Execution(
            stdout=stdout,
            stderr=stderr,
            exit_code=process.returncode,
            timed_out=timed_out,
            memory_exceeded=False,
        )


@pytest.fixture(scope="session")
def execute() -> Execute:
    def run(program: str, stdin: str) -> Execution:
        return run_python(program, stdin)

    return run


@pytest.fixture(scope="session")
def execute_with_timeout() -> Callable[[float], Execute]:
    """A factory for an `Execute` with a shorter wall timeout (timeout tests)."""

    def make(timeout: float) -> Execute:
        def run(program: str, stdin: str) -> Execution:
            return run_python(program, stdin, timeout=timeout)

        return run

    return make
