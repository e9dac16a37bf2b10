"""The bounded executor: a full sandbox says RESOURCE_EXHAUSTED instead of queueing."""

from __future__ import annotations

import threading
import time

import pytest

from services.kit.errors import ResourceExhausted
from services.sandbox.domain.limits import Limits
from services.sandbox.domain.precheck import PrecheckFailure
from services.sandbox.executor import SandboxExecutor
from services.sandbox.isolation.base import RunResult, detect


def test_a_full_sandbox_refuses_instead_of_queueing() -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=0)
    limits = Limits(wall_seconds=3, cpu_seconds=3)
    started = threading.Event()
    results: list[RunResult | PrecheckFailure] = []

    def slow() -> None:
        started.set()
        results.append(executor.execute("import time; time.sleep(1)", "", limits, None, 10))

    worker = threading.Thread(target=slow)
    worker.start()
    started.wait(5)
    time.sleep(0.2)  # the slow program holds the only slot
    with pytest.raises(ResourceExhausted, match="busy"):
        executor.execute("print(1)", "", limits, None, 10)
    worker.join(10)
    assert isinstance(results[0], RunResult) and results[0].exit_code == 0
    # The slot is free again.
    again = executor.execute("print(2)", "", limits, None, 10)
    assert isinstance(again, RunResult) and again.stdout == "2\n"


def test_a_failed_precheck_runs_nothing() -> None:
    executor = SandboxExecutor(detect(), workers=1, queue_size=0)
    outcome = executor.execute("import os\nos.system('x')", "", Limits(), ["math"], 10)
    assert isinstance(outcome, PrecheckFailure) and outcome.module == "os"
