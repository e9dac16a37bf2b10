"""The ruff linter and formatter, run as a subprocess on the student's code (stdin).

One process per call: nothing is shared between calls, so concurrent reviews are safe.
Calls run on a small thread pool, which bounds how many ruff processes run at once
(each is a short CPU burst; more processes than cores only moves the queue into the
kernel) and lets a review start `check` and `format` together and measure the code in
Python while both run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.review.domain import rules

STDIN_FILENAME = "student.py"
TARGET_VERSION = f"py3{sys.version_info.minor}"  # the Python the sandbox runs


class LinterError(Exception):
    """ruff could not be run or answered something unreadable."""


@dataclass(frozen=True, slots=True)
class Position:
    row: int  # 1-based
    column: int  # 1-based, in characters


@dataclass(frozen=True, slots=True)
class Edit:
    content: str
    start: Position
    end: Position  # exclusive


@dataclass(frozen=True, slots=True)
class Fix:
    message: str
    applicability: str  # safe | unsafe | display-only
    edits: tuple[Edit, ...]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str  # "invalid-syntax" for a parse error
    message: str
    start: Position
    end: Position  # exclusive
    url: str
    fix: Fix | None


def find_ruff() -> str:
    """The ruff binary installed with this Python (the pinned runtime dependency), else
    the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "ruff"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ruff")
    if found is None:
        raise LinterError("the ruff binary is not installed")
    return found


def _position(raw: dict[str, Any]) -> Position:
    return Position(row=int(raw["row"]), column=int(raw["column"]))


def parse_diagnostics(output: str) -> list[Diagnostic]:
    """ruff's `--output-format json` as Diagnostics."""
    try:
        items = json.loads(output)
        diagnostics = []
        for item in items:
            fix = None
            if item.get("fix"):
                raw_fix = item["fix"]
                fix = Fix(
                    message=raw_fix.get("message") or "",
                    applicability=raw_fix.get("applicability") or "unsafe",
                    edits=tuple(
                        Edit(
                            content=e["content"],
                            start=_position(e["location"]),
                            end=_position(e["end_location"]),
                        )
                        for e in raw_fix["edits"]
                    ),
                )
            diagnostics.append(
                Diagnostic(
                    code=item.get("code") or "invalid-syntax",
                    message=item["message"],
                    start=_position(item["location"]),
                    end=_position(item["end_location"]),
                    url=item.get("url") or "",
                    fix=fix,
                )
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise LinterError(f"unreadable ruff output: {exc}") from None
    return diagnostics


class RuffLinter:
    """`check` and `format` on a string of code."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        max_concurrent: int | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.binary = binary or find_ruff()
        self._pool = ThreadPoolExecutor(
            max_workers=max_concurrent or max(2, os.cpu_count() or 2), thread_name_prefix="ruff"
        )
        self._timeout = timeout_seconds
        # --isolated ignores every configuration file; the settings below are the whole
        # configuration, so a review does not depend on where the service runs.
        common = [
            "--isolated",
            "--no-cache",
            "--line-length",
            str(rules.LINE_LENGTH),
            "--target-version",
            TARGET_VERSION,
            "--stdin-filename",
            STDIN_FILENAME,
        ]
        self.check_args = [
            self.binary,
            "check",
            *common,
            "--output-format",
            "json",
            # The score is the student's: noqa comments must not buy points.
            "--ignore-noqa",
            "--preview",
            "--config",
            "lint.explicit-preview-rules = true",
            "--select",
            ",".join((*rules.SELECT, *rules.PREVIEW)),
            "--ignore",
            ",".join(rules.IGNORE),
            "--exit-zero",
            "-",
        ]
        self.format_args = [
            self.binary,
            "format",
            *common,
            # Quote style is not a PEP 8 matter: leave the student's quotes alone.
            "--config",
            "format.quote-style = 'preserve'",
            "-",
        ]

    def _run(self, args: list[str], code: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                args,
                input=code,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=self._timeout,
                cwd=tempfile.gettempdir(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LinterError(f"ruff took longer than {self._timeout}s") from None
        except OSError as exc:
            raise LinterError(f"ruff could not be started: {exc}") from None

    def _check(self, code: str) -> list[Diagnostic]:
        done = self._run(self.check_args, code)
        if done.returncode != 0:
            raise LinterError(f"ruff check exited {done.returncode}: {done.stderr.strip()[:300]}")
        return parse_diagnostics(done.stdout)

    def _format(self, code: str) -> str | None:
        done = self._run(self.format_args, code)
        return done.stdout if done.returncode == 0 else None

    def start_check(self, code: str) -> Future[list[Diagnostic]]:
        """`check` started; `.result()` raises LinterError like `check`."""
        return self._pool.submit(self._check, code)

    def start_format(self, code: str) -> Future[str | None]:
        return self._pool.submit(self._format, code)

    def check(self, code: str) -> list[Diagnostic]:
        return self.start_check(code).result()

    def format(self, code: str) -> str | None:
        """The code as `ruff format` lays it out; None if it cannot (a syntax error)."""
        return self.start_format(code).result()

    def version(self) -> str:
        """`ruff --version`; LinterError if the binary does not run."""
        done = self._pool.submit(self._run, [self.binary, "--version"], "").result()
        if done.returncode != 0:
            raise LinterError(f"ruff --version exited {done.returncode}")
        return done.stdout.strip()

    def check_installed(self) -> None:
        """Cheap health check: the binary is still there and executable."""
        if not os.access(self.binary, os.X_OK):
            raise LinterError(f"{self.binary} is missing or not executable")
