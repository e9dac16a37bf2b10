"""Examples are proven by running them in the real sandbox: the output is the real
stdout, failures are dropped with a logged reason, results are cached by code."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from services.concepts.domain.content import Example
from services.concepts.domain.proof import ExampleProver, Execute, Run


def test_output_is_the_real_stdout(execute: Execute) -> None:
    prover = ExampleProver(execute)
    proven, rejected = prover.prove([Example("for i in range(3):\n    print(i * i)\n", "sq")])
    assert rejected == []
    assert proven[0].output == "0\n1\n4\n"
    assert proven[0].caption == "sq"


def test_a_failing_example_is_dropped_with_its_reason(
    execute: Execute, caplog: pytest.LogCaptureFixture
) -> None:
    prover = ExampleProver(execute)
    examples = [
        Example("print('first')\n", "good"),
        Example("values = []\nprint(values[0])\n", "raises"),
        Example("import sys\nprint('partial')\nsys.exit(3)\n", "exits 3"),
        Example("print('last')\n", "also good"),
    ]
    with caplog.at_level(logging.WARNING, logger="learnflow.concepts.proof"):
        proven, rejected = prover.prove(examples)
    assert [p.caption for p in proven] == ["good", "also good"]
    assert [r.caption for r in rejected] == ["raises", "exits 3"]
    assert "IndexError: list index out of range" in rejected[0].reason
    assert rejected[1].reason.startswith("exit code 3")
    dropped = [r for r in caplog.records if r.getMessage().startswith("example dropped")]
    assert len(dropped) == 2 and "IndexError" in dropped[0].getMessage()


def test_a_syntax_error_is_dropped_without_running(execute: Execute) -> None:
    prover = ExampleProver(execute)
    proven, rejected = prover.prove([Example("def f(:\n    pass\n", "broken")])
    assert proven == [] and "does not compile" in rejected[0].reason
    assert prover.runs == 0


def test_a_timeout_is_dropped_and_tried_again_later(
    execute_with_timeout: Callable[[float], Execute],
) -> None:
    prover = ExampleProver(execute_with_timeout(0.5))
    slow = Example("while True:\n    pass\n", "spins")
    for attempt in (1, 2):
        proven, rejected = prover.prove([slow])
        assert proven == [] and rejected[0].reason == "timed out"
        assert prover.runs == attempt  # not cached: it may be the machine, not the code


def test_a_sandbox_failure_drops_the_example_and_is_not_cached() -> None:
    calls = []

    def down(code: str) -> Run:
        calls.append(code)
        raise ConnectionError("sandbox unreachable")

    prover = ExampleProver(down)
    for _ in range(2):
        proven, rejected = prover.prove([Example("print(1)\n", "x")])
        assert proven == [] and "sandbox unavailable: sandbox unreachable" in rejected[0].reason
    assert len(calls) == 2


def test_results_are_cached_by_code(execute: Execute) -> None:
    prover = ExampleProver(execute)
    good = Example("print('once')\n", "a")
    bad = Example("raise SystemExit(2)\n", "b")
    for _ in range(3):
        proven, rejected = prover.prove([good, bad, Example(good.code, "same code")])
        assert [p.output for p in proven] == ["once\n", "once\n"]
        assert len(rejected) == 1
    assert prover.runs == 2


def test_concurrent_requests_run_one_example_once(execute: Execute) -> None:
    prover = ExampleProver(execute)
    example = Example("import time\ntime.sleep(0.2)\nprint('shared')\n", "slow")
    outputs: list[str] = []
    threads = [
        threading.Thread(target=lambda: outputs.append(prover.prove([example])[0][0].output))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == ["shared\n"] * 6
    assert prover.runs == 1


def test_limit_stops_running_once_enough_examples_are_proven(execute: Execute) -> None:
    prover = ExampleProver(execute)
    examples = [Example(f"print({n})\n", str(n)) for n in range(4)]
    proven, _ = prover.prove(examples, limit=2)
    assert [p.output for p in proven] == ["0\n", "1\n"]
    assert prover.runs == 2


def test_huge_output_is_not_an_example(execute: Execute) -> None:
    prover = ExampleProver(execute)
    proven, rejected = prover.prove([Example("print('x' * 5000)\n", "wall of text")])
    assert proven == [] and "more than 4000 characters" in rejected[0].reason
