"""Sandbox programs run at a lower CPU priority than the service, in both isolation modes,
and nothing inside a run can raise it back: a spinning program yields the CPU to the
services (and to other students' requests)."""

from __future__ import annotations

import os
import textwrap

import pytest

from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import DEFAULT_NICE, Isolation
from services.sandbox.isolation.bubblewrap import BubblewrapIsolation
from services.sandbox.isolation.landlock import LandlockIsolation

PROGRAM = textwrap.dedent(
    """
    import os
    print(os.nice(0))
    try:
        os.nice(-1)
        print("raised")
    except PermissionError:
        print("refused")
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
        print("raised")
    except PermissionError:
        print("refused")
    print(os.nice(0))
    """
)


def _expected(nice: int) -> int:
    return min(os.getpriority(os.PRIO_PROCESS, 0) + nice, 19)


@pytest.mark.parametrize("mode", ["bubblewrap", "landlock"])
def test_programs_run_niced_and_cannot_raise_their_priority(mode: str) -> None:
    isolation: Isolation = BubblewrapIsolation() if mode == "bubblewrap" else LandlockIsolation()
    result = isolation.run(PROGRAM, "", Limits())
    assert result.exit_code == 0, result.stderr
    niceness = str(_expected(DEFAULT_NICE))
    assert result.stdout.split() == [niceness, "refused", "refused", niceness]


def test_the_whole_tree_inherits_it_in_bubblewrap() -> None:
    code = (
        "import subprocess, sys\n"
        "child = 'import os; print(os.nice(0))'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True)"
        ".stdout.strip())\n"
    )
    result = BubblewrapIsolation().run(code, "", Limits())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(_expected(DEFAULT_NICE))


@pytest.mark.parametrize("nice", [0, 5])
def test_the_niceness_is_configurable(nice: int) -> None:
    result = BubblewrapIsolation(nice=nice).run("import os; print(os.nice(0))", "", Limits())
    assert result.stdout.strip() == str(_expected(nice))
