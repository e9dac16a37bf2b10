"""Grading a submission: one sandbox process per test, results compared on the host.

For each test the host builds a small program (`test_program`): a harness that runs the
student's code as a module, evaluates the test's `call` once, and writes one result line
`MARKER + nonce + ":" + payload` as the last thing it does before `os._exit(0)`. The host
then reads that line out of the run's stdout and compares it with the expected value
(`outcome`). The expected value never enters the sandbox.

Why a student cannot forge a pass on a hidden test:
- The expected value is not in the program, and hidden tests' calls and expected values
  are never returned by the API: to forge a passing line a student would have to know
  what to write, which is exactly what solving the test means.
- The comparison happens here on the host, not in a harness inside the sandbox that the
  student's code could patch (a patched `assertEqual` once scored 3/3).
- Each test runs in its own process, so nothing a student does while one test runs
  (patching builtins, atexit handlers, threads) can reach another test's result.
- The harness captures `repr`, `os.write` and `os._exit` before the student's code runs,
  so patching builtins does not change how the result is rendered; it writes with
  `os.write` on fd 1 after the student's output and leaves with `os._exit`, so atexit
  handlers and buffered prints cannot add a line after it; and the host takes the LAST
  line carrying this run's nonce.
- The nonce is random per test run and not in the student's code, so stray marker-like
  lines (a student printing one, output from another run) do not count. It is not a
  secret from code running in the same process (it is in the program text), which is
  why the points above, not the nonce, are what keep hidden tests honest.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from services.exercise.domain.bank import Exercise, ExerciseTest, imported_modules, literal

MARKER = "@@LEARNFLOW-RESULT@@"
OUTPUT_EXCERPT_CHARS = 2000  # of the program's output shown with a visible test's result
ACTUAL_CHARS = 4000  # of a result's repr sent back from the sandbox; longer is cut
SOLUTION_FILENAME = "solution.py"  # how the student's code appears in tracebacks
_NONCE = re.compile(r"[0-9A-Za-z_-]{8,64}")


@dataclass(frozen=True, slots=True)
class Execution:
    """What one sandbox run returns (the sandbox adapter maps its reply to this)."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    memory_exceeded: bool


# (program source, stdin) -> Execution; the caller binds the limits (time, memory, ...).
Execute = Callable[[str, str], Execution]


class TestOutcome(IntEnum):
    """Values match learnflow.exercise.v1.TestOutcome."""

    __test__ = False  # not a pytest test class
    PASSED = 1
    FAILED = 2
    ERROR = 3  # the code raised an exception
    TIMED_OUT = 4
    CRASHED = 5  # killed (memory, signal), or no result line


@dataclass(frozen=True, slots=True)
class TestResult:
    """One test's result. A hidden test carries only its id, `hidden` and the outcome:
    `call`, `expected`, `actual` and `output` are empty, so nothing about its inputs or
    expected value can leak through the API."""

    __test__ = False  # not a pytest test class
    test_id: str
    hidden: bool
    outcome: TestOutcome
    call: str = ""
    expected: str = ""
    actual: str = ""  # the result's repr, or "ExceptionType: message"
    output: str = ""  # an excerpt of the program's stdout and stderr
    duration_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome is TestOutcome.PASSED


@dataclass(frozen=True, slots=True)
class Grade:
    score: float  # tests_passed / tests_total, in [0, 1]
    tests_passed: int
    tests_total: int
    results: tuple[TestResult, ...]  # visible tests first, in the exercise's order


# The harness. The student's code is embedded as a string and executed as a module named
# "solution" (registered in sys.modules, so dataclasses, pickle and typing work as they do
# for an imported module), which also keeps `from __future__` imports legal and line
# numbers in tracebacks right. Everything the harness relies on after the student's code
# has run is bound before it runs. The student's code, the call and the nonce are embedded
# with ascii(): no input can break out of its string literal, and the program is pure
# ASCII whatever the code contains.
_HARNESS = '''\
import builtins as _builtins
import os as _os
import sys as _sys
import types as _types


def _learnflow_main(_source, _call, _tag):
    _repr, _type, _str, _exc_base = repr, type, str, BaseException
    _write, _exit, _compile, _exec, _eval = _os.write, _os._exit, compile, exec, eval
    _module = _types.ModuleType("solution")
    _sys.modules["solution"] = _module

    def _raises(func, *args, **kwargs):
        """For calls: the type name of the exception func(*args, **kwargs) raises, or None."""
        try:
            func(*args, **kwargs)
        except Exception as exc:
            return _type(exc).__name__
        return None

    def _describe(exc):
        try:
            name = _type(exc).__name__
            text = _str(exc)
        except _exc_base:
            return "exception"
        return name + ": " + text if text else name

    try:
        _exec(_compile(_source, {filename!r}, "exec"), _module.__dict__)
        _builtins.raises = _raises  # visible to the call only: the student's code has run
        _value = _eval(_compile(_call, "<test>", "eval"), _module.__dict__)
        _text = _repr(_value)
        if _type(_text) is not _str:
            raise TypeError("__repr__ returned a non-string")
        _payload = "V:" + _repr(_text[:{limit}])
    except _exc_base as _exc:
        _payload = "E:" + _repr(_describe(_exc)[:{limit}])
        try:
            import linecache
            import traceback

            linecache.cache[{filename!r}] = (
                len(_source), None, _source.splitlines(True), {filename!r}
            )
            traceback.print_exception(_type(_exc), _exc, _exc.__traceback__.tb_next)
        except _exc_base:
            pass
    for _stream in (_sys.stdout, _sys.stderr):
        try:
            _stream.flush()
        except _exc_base:
            pass
    _data = ("\\n" + {marker!r} + _tag + ":" + _payload + "\\n").encode("utf-8", "backslashreplace")
    try:
        while _data:
            _data = _data[_write(1, _data):]
    finally:
        _exit(0)


_learnflow_main({source}, {call}, {nonce})
'''


def test_program(student_code: str, call: str, nonce: str) -> str:
    """The program for ONE test: the student's code, then `call` evaluated once.

    The last line it writes to stdout is `MARKER + nonce + ":" + payload`, where payload
    is `V:` + repr(repr(result)) or `E:` + repr("ExceptionType: message"). Calls may use
    `raises(func, *args, **kwargs)`, which returns the name of the exception raised (or
    None), to test code that is supposed to raise.
    """
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 8-64 characters from [0-9A-Za-z_-]")
    return _HARNESS.format(
        filename=SOLUTION_FILENAME,
        limit=ACTUAL_CHARS,
        marker=MARKER,
        source=ascii(student_code),
        call=ascii(call),
        nonce=ascii(nonce),
    )


# pytest would otherwise collect `test_program` from test modules that import it.
test_program.__test__ = False  # type: ignore[attr-defined]


def outcome(
    test: ExerciseTest, execution: Execution, nonce: str, *, duration_seconds: float = 0.0
) -> TestResult:
    """Judges one run on the host: finds this run's result line and compares it."""
    output = _excerpt(execution)
    result: tuple[str, str] | None = None
    if execution.timed_out:
        status = TestOutcome.TIMED_OUT
    elif execution.memory_exceeded or execution.exit_code != 0:
        # The harness always exits 0 after its line: anything else means the process
        # was killed or ended by the student's code before a result was written.
        status = TestOutcome.CRASHED
    elif (result := _result_line(execution.stdout, nonce)) is None:
        status = TestOutcome.CRASHED
    elif result[0] == "E":
        status = TestOutcome.ERROR
    elif result[1].strip() == test.expected.strip():
        status = TestOutcome.PASSED
    else:
        status = TestOutcome.FAILED
    if test.hidden:
        return TestResult(test.test_id, True, status, duration_seconds=duration_seconds)
    return TestResult(
        test_id=test.test_id,
        hidden=False,
        outcome=status,
        call=test.call,
        expected=test.expected,
        actual=result[1] if result else "",
        output=output,
        duration_seconds=duration_seconds,
    )


def grade(
    exercise: Exercise,
    student_code: str,
    execute: Execute,
    *,
    nonce_factory: Callable[[], str] = secrets.token_hex,
) -> Grade:
    """Runs every test in its own process (sequentially) and grades the submission."""
    results: list[TestResult] = []
    for test in exercise.tests:
        nonce = nonce_factory()
        started = time.perf_counter()
        execution = execute(test_program(student_code, test.call, nonce), "")
        results.append(
            replace(
                outcome(test, execution, nonce),
                duration_seconds=time.perf_counter() - started,
            )
        )
    return summarise(results)


def summarise(results: Sequence[TestResult]) -> Grade:
    """The grade for a set of results (for callers that run the tests themselves)."""
    ordered = tuple(sorted(results, key=lambda r: r.hidden))  # stable: visible first
    passed = sum(r.passed for r in ordered)
    total = len(ordered)
    return Grade(
        score=passed / total if total else 0.0,
        tests_passed=passed,
        tests_total=total,
        results=ordered,
    )


def precheck(student_code: str, allowed_imports: Sequence[str]) -> str | None:
    """A friendly message when the code cannot run as intended, else None.

    Syntax errors (with the line and a caret) and imports the exercise does not allow.
    This is pedagogy, not security: the sandbox is the boundary.
    """
    try:
        modules = imported_modules(student_code)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if exc.lineno else "the code"
        message = f"SyntaxError on {where}: {exc.msg}"
        if exc.text and exc.offset:
            line = exc.text.rstrip("\n")
            code = line.lstrip()
            caret = " " * max(exc.offset - 1 - (len(line) - len(code)), 0) + "^"
            message += f"\n    {code}\n    {caret}"
        return message
    except ValueError as exc:  # e.g. null bytes in the source
        return f"The code cannot be parsed: {exc}"
    forbidden = sorted(modules - set(allowed_imports))
    if not forbidden:
        return None
    allowed = ", ".join(sorted(allowed_imports)) or "none"
    names = ", ".join(forbidden)
    return f"This exercise does not allow importing {names} (allowed: {allowed})."


def _result_line(stdout: str, nonce: str) -> tuple[str, str] | None:
    """(kind, text) from the LAST line carrying this nonce, or None if there is none or it
    is malformed. Split on "\\n" only: str.splitlines also splits on characters such as
    \\x1c and \\u2028 that a repr may contain."""
    prefix = f"{MARKER}{nonce}:"
    last = None
    for line in stdout.split("\n"):
        if line.startswith(prefix):
            last = line[len(prefix) :]
    if last is None or last[:2] not in ("V:", "E:"):
        return None
    try:
        text = literal(last[2:])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return (last[0], text) if isinstance(text, str) else None


def _excerpt(execution: Execution) -> str:
    """The program's own output (result lines removed), cut to a readable size."""
    stdout = "\n".join(line for line in execution.stdout.split("\n") if MARKER not in line)
    parts = [part.strip("\n") for part in (stdout, execution.stderr) if part.strip()]
    text = "\n".join(parts)
    if len(text) > OUTPUT_EXCERPT_CHARS:
        text = text[:OUTPUT_EXCERPT_CHARS] + "\n... (output cut)"
    return text
