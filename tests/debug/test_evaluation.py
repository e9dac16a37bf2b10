"""The evaluation set: buggy beginner programs, really run, parsed and hinted.

Asserted over the whole set: the error type and the line in the student's file are
parsed right for every program (100%), from the sandbox's stderr and from a plain
`python` run under another file name; chained exceptions come out in order; every
program gets its topic; the general hint never contains the corrected line or the fixed
program; and every corrected program a solution hint gives really runs without that
error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from services.debug.domain.hints import HintLevel, build_hints, normalise_code
from services.debug.domain.topics import topic_for
from services.debug.domain.traceback import ParsedTraceback, parse_traceback
from tests.debug.conftest import PROGRAM_LIST, Program, Run, Runs

BY_NAME = {program.name: program for program in PROGRAM_LIST}
WITH_FIX = [program for program in PROGRAM_LIST if program.fix]
# Every error type the issue lists, with the least number of programs for it.
REQUIRED_TYPES = {
    "SyntaxError": 5,
    "IndentationError": 3,
    "TabError": 2,
    "NameError": 4,
    "TypeError": 5,
    "ValueError": 4,
    "IndexError": 4,
    "KeyError": 4,
    "AttributeError": 4,
    "ZeroDivisionError": 3,
    "ModuleNotFoundError": 2,
    "ImportError": 2,
    "RecursionError": 2,
    "UnboundLocalError": 2,
    "FileNotFoundError": 2,
    "StopIteration": 2,
    "AssertionError": 2,
}


def _parsed(run: Run, program: Program) -> ParsedTraceback:
    assert run.exit_code == 1, f"{program.name} should fail; stderr: {run.stderr!r}"
    parsed = parse_traceback(run.stderr, program.code)
    assert parsed is not None, f"{program.name}: no traceback found in {run.stderr!r}"
    return parsed


def test_the_set_is_large_and_covers_every_error_type() -> None:
    assert len(PROGRAM_LIST) >= 65
    counts = Counter(program.error_type for program in PROGRAM_LIST)
    chains = [program for program in PROGRAM_LIST if program.chain]
    for kind, least in REQUIRED_TYPES.items():
        in_chains = sum(1 for program in chains for k, _ in program.chain if k == kind)
        assert counts[kind] + in_chains >= least, kind
    assert len(chains) >= 3
    assert len(WITH_FIX) >= 50


@pytest.mark.parametrize("program", PROGRAM_LIST, ids=lambda p: p.name)
def test_sandbox_traceback_parses_to_the_true_type_and_line(
    program: Program, sandbox_run: Runs
) -> None:
    parsed = _parsed(sandbox_run(program.code, program.stdin), program)
    assert (parsed.error.error_type, parsed.error.line) == (program.error_type, program.line)
    assert [(e.error_type, e.line) for e in parsed.chain] == list(program.chain)
    assert parsed.student_file == "/tmp/main.py"
    assert parsed.error.source_line == program.code.splitlines()[program.line - 1].strip()


@pytest.mark.parametrize("program", PROGRAM_LIST, ids=lambda p: p.name)
def test_python_traceback_parses_to_the_true_type_and_line(
    program: Program, python_run: Callable[[Program], Run]
) -> None:
    run = python_run(program)
    parsed = _parsed(run, program)
    assert (parsed.error.error_type, parsed.error.line) == (program.error_type, program.line)
    assert [(e.error_type, e.line) for e in parsed.chain] == list(program.chain)
    assert parsed.student_file.endswith(f"/student_{program.name}.py")


def test_parse_accuracy_is_100_percent_on_type_and_line(
    sandbox_run: Runs, python_run: Callable[[Program], Run]
) -> None:
    """The figure the issue asks for, over both ways of running the set."""
    right = total = 0
    misses: list[str] = []
    for program in PROGRAM_LIST:
        for how, run in (
            ("sandbox", sandbox_run(program.code, program.stdin)),
            ("python", python_run(program)),
        ):
            parsed = parse_traceback(run.stderr, program.code)
            got = (parsed.error.error_type, parsed.error.line) if parsed else None
            total += 1
            if got == (program.error_type, program.line):
                right += 1
            else:
                misses.append(f"{program.name} ({how}): {got}")
    assert right / total == 1.0, misses


@pytest.mark.parametrize("program", PROGRAM_LIST, ids=lambda p: p.name)
def test_topic(program: Program, sandbox_run: Runs) -> None:
    parsed = _parsed(sandbox_run(program.code, program.stdin), program)
    assert topic_for(parsed, program.code).name == program.topic


@pytest.mark.parametrize("program", PROGRAM_LIST, ids=lambda p: p.name)
def test_general_hint_never_contains_the_fix(program: Program, sandbox_run: Runs) -> None:
    parsed = _parsed(sandbox_run(program.code, program.stdin), program)
    hints = build_hints(parsed, program.code)
    general = normalise_code(hints.general.text)
    assert hints.general.level is HintLevel.GENERAL
    assert f"line {program.line}" in hints.general.text
    for line in (*program.fix, *hints.corrected_lines):
        assert normalise_code(line) not in general, line
    if hints.solution.fixed_code:
        assert normalise_code(hints.solution.fixed_code) not in general
    assert hints.general.fixed_code == hints.specific.fixed_code == ""


@pytest.mark.parametrize("program", PROGRAM_LIST, ids=lambda p: p.name)
def test_solution_gives_a_fix_exactly_where_one_is_known(
    program: Program, sandbox_run: Runs
) -> None:
    parsed = _parsed(sandbox_run(program.code, program.stdin), program)
    hints = build_hints(parsed, program.code)
    fixed = hints.solution.fixed_code
    assert bool(fixed) == bool(program.fix), hints.solution.text
    assert hints.solution.text.strip()
    if not fixed:
        assert "```python" in hints.solution.text  # the fix in words comes with an example
        return
    lines = [line.rstrip() for line in fixed.splitlines()]
    for expected in program.fix:
        assert expected in lines, f"{expected!r} not in the corrected program:\n{fixed}"


@pytest.mark.parametrize("program", WITH_FIX, ids=lambda p: p.name)
def test_corrected_program_runs_without_the_error(program: Program, sandbox_run: Runs) -> None:
    parsed = _parsed(sandbox_run(program.code, program.stdin), program)
    fixed = build_hints(parsed, program.code).solution.fixed_code
    run = sandbox_run(fixed, program.stdin)
    after = parse_traceback(run.stderr, fixed)
    assert after is None or after.error.error_type != program.error_type, run.stderr
    assert run.exit_code == 0, run.stderr


def test_specific_hint_points_at_the_line(sandbox_run: Runs) -> None:
    for program in PROGRAM_LIST:
        parsed = _parsed(sandbox_run(program.code, program.stdin), program)
        specific = build_hints(parsed, program.code).specific.text
        assert specific.startswith(f"Line {program.line}:"), (program.name, specific)
