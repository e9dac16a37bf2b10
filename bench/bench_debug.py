# ruff: noqa: I001 - `mesh` must load before grpc (it turns grpc's fork handlers off)
"""Diagnose latency: CreateDiagnosis over gRPC on the whole mesh (embedded defaults, as
`make run` has it), with a read of the same service as the baseline.

Rows (sequential calls; p50/p99 of all calls; the machine is noisy):
  get             GetDiagnosis: token check, one Postgres read (baseline)
  traceback       CreateDiagnosis with code + traceback: parse, three hint levels,
                  topic, Postgres insert, struggle window, HintRevealed event
  code only       CreateDiagnosis with code alone: the code runs in the sandbox first
  reveal          RevealNextHint (row lock, stamp, event)

    python bench/bench_debug.py [--calls 200] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from mesh import start_mesh

import grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc

CODE = 'ages = {"amy": 31}\nprint(ages["bob"])\n'
TRACEBACK = """Traceback (most recent call last):
  File "main.py", line 2, in <module>
    print(ages["bob"])
          ~~~~^^^^^^^
KeyError: 'bob'
"""
CRASHING = "def mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([]))\n"


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(p50 ms, p99 ms)."""
    for _ in range(3):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times) * 1000, p99 * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="40 calls per row")
    args = parser.parse_args()
    calls = 40 if args.quick else args.calls

    mesh = start_mesh("bench-debug-")
    stub = debug_pb2_grpc.DebugServiceStub(grpc.insecure_channel(mesh.address("debug")))
    students = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(calls + 10)]
    tokens = {s: [("authorization", f"Bearer {mesh.token(s)}")] for s in students}
    turn = iter(range(10**9))

    def create(code: str, traceback: str) -> debug_pb2.Diagnosis:
        # A new student each call: no struggle episode builds up and skews the rows.
        student = students[next(turn) % len(students)]
        reply: debug_pb2.Diagnosis = stub.CreateDiagnosis(
            debug_pb2.CreateDiagnosisRequest(
                parent=f"students/{student}",
                diagnosis=debug_pb2.Diagnosis(code=code, traceback=traceback),
            ),
            metadata=tokens[student],
            timeout=30,
        )
        return reply

    sample = create(CODE, TRACEBACK)
    owner = tokens[sample.name.split("/")[1]]
    assert sample.error.error_type == "KeyError" and sample.error.span.line == 2
    pending = [create(CODE, TRACEBACK) for _ in range(calls + 3)]

    def reveal() -> object:
        diagnosis = pending.pop()
        return stub.RevealNextHint(
            debug_pb2.RevealNextHintRequest(name=diagnosis.name),
            metadata=tokens[diagnosis.name.split("/")[1]],
            timeout=10,
        )

    rows = {
        "get": measure(
            lambda: stub.GetDiagnosis(
                debug_pb2.GetDiagnosisRequest(name=sample.name), metadata=owner, timeout=10
            ),
            calls,
        ),
        "traceback": measure(lambda: create(CODE, TRACEBACK), calls),
        "code only": measure(lambda: create(CRASHING, ""), max(10, calls // 4)),
        "reveal": measure(reveal, calls),
    }
    baseline = rows["get"][0]
    sandboxed = max(10, calls // 4)
    print(f"Diagnose on the embedded mesh ({calls} calls per row; code only: {sandboxed})")
    print(f"{'row':<12}{'p50 ms':>9}{'p99 ms':>9}{'p50 / get':>11}")
    for name, (p50, p99) in rows.items():
        print(f"{name:<12}{p50:>9.2f}{p99:>9.2f}{p50 / baseline:>10.1f}x")
    mesh.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
