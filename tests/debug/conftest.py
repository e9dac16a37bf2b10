"""The debug evaluation set, and its programs really run.

Every program in tests/debug/programs/ is run twice, once per test session:

- in the real sandbox (the same bubblewrap or Landlock isolation the sandbox service
  uses, with its limits), where the program is /tmp/main.py: the stderr the debug
  service gets when it runs a student's code;
- as `python -X utf8 student_<name>.py` in a fresh temporary directory, with the
  interpreter running the tests (CPython 3.11 here): the traceback a student gets on
  their own machine, with an absolute path under another file name.

Both get the program's `stdin` from expected.yaml and a 10 s timeout. Corrected programs
from solution hints are run in the sandbox the same way.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import Isolation, detect

HERE = Path(__file__).parent
PROGRAMS = HERE / "programs"
TRACEBACKS = HERE / "tracebacks"
TIMEOUT = 10.0


@dataclass(frozen=True)
class Program:
    """One buggy program and the truth about it (see programs/expected.yaml)."""

    name: str
    code: str
    error_type: str
    line: int
    topic: str
    fix: tuple[str, ...] = ()
    stdin: str = ""
    chain: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Run:
    stderr: str
    exit_code: int


@dataclass
class Runs:
    """Program runs, each done once per session."""

    run: Callable[[str, str], Run]
    done: dict[tuple[str, str], Run] = field(default_factory=dict)

    def __call__(self, code: str, stdin: str = "") -> Run:
        key = (code, stdin)
        if key not in self.done:
            self.done[key] = self.run(code, stdin)
        return self.done[key]


def _program_file(path: Path) -> str:
    return path.name.removesuffix(".txt").removesuffix(".py")


def load_programs() -> list[Program]:
    expected: dict[str, dict[str, Any]] = yaml.safe_load((PROGRAMS / "expected.yaml").read_text())[
        "programs"
    ]
    files = {
        _program_file(path): path
        for path in sorted(PROGRAMS.iterdir())
        if path.name.endswith((".py", ".py.txt"))
    }
    assert set(files) == set(expected), "every program needs an expected.yaml entry and back"
    return [
        Program(
            name=name,
            code=files[name].read_text(),
            error_type=entry["type"],
            line=entry["line"],
            topic=entry["topic"],
            fix=tuple(entry.get("fix", ())),
            stdin=entry.get("stdin", ""),
            chain=tuple((kind, line) for kind, line in entry.get("chain", ())),
        )
        for name, entry in expected.items()
    ]


PROGRAM_LIST = load_programs()


@pytest.fixture(scope="session")
def isolation() -> Isolation:
    return detect()


@pytest.fixture(scope="session")
def sandbox_run(isolation: Isolation) -> Runs:
    limits = Limits(wall_seconds=TIMEOUT, cpu_seconds=TIMEOUT, max_output_bytes=1024 * 1024)

    def run(code: str, stdin: str) -> Run:
        result = isolation.run(code, stdin, limits)
        assert not result.timed_out, "a program of the evaluation set timed out"
        return Run(stderr=result.stderr, exit_code=result.exit_code)

    return Runs(run)


@pytest.fixture(scope="session")
def python_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Program], Run]:
    """Runs a program as `python -X utf8 student_<name>.py` in its own directory."""
    done: dict[str, Run] = {}

    def run(program: Program) -> Run:
        if program.name not in done:
            folder = tmp_path_factory.mktemp(program.name)
            path = folder / f"student_{program.name}.py"
            path.write_text(program.code)
            result = subprocess.run(
                [sys.executable, "-X", "utf8", path.name],
                input=program.stdin,
                capture_output=True,
                text=True,
                cwd=folder,
                timeout=TIMEOUT,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                check=False,
            )
            done[program.name] = Run(stderr=result.stderr, exit_code=result.returncode)
        return done[program.name]

    return run
