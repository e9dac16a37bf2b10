"""Fixtures for the concepts tests: examples run in the real sandbox isolation (the same
bubblewrap or Landlock mode the sandbox service uses), diagrams go to the real Mermaid
parser, and the curated library is the one shipped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from services.concepts.domain.content import Library, default_library
from services.concepts.domain.proof import ExampleProver, Execute, Run
from services.concepts.mermaid_validator import MermaidValidator
from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import Isolation, detect

WALL_SECONDS = 5.0


@pytest.fixture(scope="session")
def isolation() -> Isolation:
    return detect()


def _runner(isolation: Isolation, wall: float) -> Execute:
    limits = Limits(wall_seconds=wall, cpu_seconds=wall, max_output_bytes=16 * 1024)

    def run(code: str) -> Run:
        result = isolation.run(code, "", limits)
        return Run(
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
    def make(timeout: float) -> Execute:
        return _runner(isolation, timeout)

    return make


@pytest.fixture(scope="session")
def library() -> Library:
    return default_library()


@pytest.fixture(scope="session")
def shared_prover(execute: Execute) -> ExampleProver:
    """One prover for the session, as one service process has: each curated example
    runs once however many tests show it."""
    return ExampleProver(execute)


@pytest.fixture(scope="session")
def validator() -> Iterator[MermaidValidator]:
    checker = MermaidValidator(call_timeout=20.0)  # generous: a loaded CI machine
    yield checker
    checker.close()
