"""What the sandbox costs per program, and how fast Submit grades, in one run on one machine.

Part 1, the per-program cost of isolation (rows interleaved, RUNS runs each):
  bare        /usr/bin/python3 -c 'print(1)' as a plain subprocess (baseline)
  bare -I -S  the same with the flags the sandbox passes (-I -S -u -B -X utf8)
  isolation   isolation.run("print(1)") in this process, with the mode detect() picks
  grpc        SandboxService/ExecuteCode end to end against the running service
Each row: median and p90 wall ms, the overhead over bare (median of the paired
per-run differences, run i of a row against run i of bare) and the ratio of medians.

Part 2, Submit (ExerciseService/CreateSubmission) of a 5-test exercise's reference
solution: p50 and p99 latency at 1 and at 8 concurrent submissions, and submissions
per second at 8. Medians of ROUNDS rounds. Each submission grades its 5 tests in 5
sandbox processes (bounded by SANDBOX_WORKERS in the sandbox service, default 4).

The services run as `learnflow run --services sandbox,exercise,mastery --no-gateway`
in their own process (as in production) against the real infra (.infra/env); the
callers share this machine, so on 2 cores the client takes CPU too and the absolute
rates are a floor. Targets (issue #4): sandbox overhead over bare Python < 15 ms
median; Submit p99 < 1 s at 8 concurrent. Runs and submissions that fail (an RPC
error, a wrong result) are counted under "failed" and left out of the figures. This
process turns grpc's fork handlers off (it forks sandboxes itself); the mesh keeps the
caller's GRPC_ENABLE_FORK_SUPPORT, so the service is measured as it would be deployed.

    python bench/bench_sandbox.py [--runs 60] [--submits-1 40] [--submits-8 120] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

# ruff: noqa: E402 - grpc must load after the fork-support switch below
# Part 1 forks sandboxes from this process while its gRPC client is live; with grpc's fork
# handlers on, the forked child can abort in grpc's poller (status -6, "epoll_wait error:
# Bad file descriptor"). Off here, before grpc loads; the mesh keeps the caller's setting.
CALLER_FORK_SUPPORT = os.environ.get("GRPC_ENABLE_FORK_SUPPORT")
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc
from learnflow.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.exercise.domain.bank import default_bank
from services.kit import devtokens
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import PYTHON_FLAGS, detect

REPO = Path(__file__).resolve().parents[1]
BARE_PYTHON = "/usr/bin/python3"
SERVICES = ("sandbox", "exercise", "mastery")
INFRA_VARS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
OVERHEAD_TARGET_MS = 15.0
SUBMIT_P99_TARGET_MS = 1000.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def parse_exports(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            found[name.strip()] = value.strip().strip("'\"")
    return found


def answers(url_host_port: str) -> bool:
    host, _, port = url_host_port.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def infra_env() -> dict[str, str]:
    """DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS: .infra/env if its parts answer,
    else whatever `infra/up.sh` reuses or starts."""
    env_file = REPO / ".infra" / "env"
    if env_file.exists():
        found = parse_exports(env_file.read_text())
        addresses = [found.get(v, "").split("@")[-1].split("/")[0] for v in INFRA_VARS[:2]]
        addresses.append(found.get("KAFKA_BOOTSTRAP_SERVERS", "").split(",")[0])
        if all(v in found for v in INFRA_VARS) and all(answers(a) for a in addresses):
            return {v: found[v] for v in INFRA_VARS}
    up = subprocess.run(
        ["bash", "infra/up.sh"], cwd=REPO, capture_output=True, text=True, check=True
    )
    found = parse_exports(up.stdout)
    return {v: found[v] for v in INFRA_VARS}


def pick_offset(preferred: int) -> int:
    """The first offset from `preferred` (stepping by 100) whose ports are all free."""
    for offset in range(preferred, preferred + 1000, 100):
        ports = [SERVICES_BY_NAME[name].port + offset for name in SERVICES]
        if all(port_free(p) for p in ports):
            return offset
    raise RuntimeError(f"no free ports near offset {preferred}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_serving(address: str, deadline: float) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING")
            time.sleep(0.2)


FAILED = float("nan")  # a run or submission that failed: counted, kept out of the figures


def timed(call: Callable[[], object]) -> float:
    """Wall ms of one call, or FAILED when it raised (an RPC error, a wrong result)."""
    started = time.perf_counter()
    try:
        call()
    except (grpc.RpcError, RuntimeError):
        return FAILED
    return (time.perf_counter() - started) * 1000


def ok(values: list[float]) -> list[float]:
    return [v for v in values if v == v]  # NaN != NaN


def per_program(rows: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Wall ms per run for every row, rows interleaved within each run."""
    for call in rows.values():  # warm-up: page cache, connections
        for _ in range(3):
            timed(call)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):
        for name, call in rows.items():
            times[name].append(timed(call))
    return times


def submit_round(
    submit: Callable[[], exercise_pb2.Submission], count: int, concurrency: int
) -> tuple[float, float, float, int]:
    """(graded submissions per second, p50 ms, p99 ms, failures) for `count` submissions,
    `concurrency` at once. A failure is an RPC error or a reference solution not 5/5."""
    latencies = []

    def one() -> None:
        latencies.append(timed(submit))  # list.append is atomic

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        for done in [pool.submit(one) for _ in range(count)]:
            done.result()
    elapsed = time.perf_counter() - started
    good = ok(latencies)
    if not good:
        return 0.0, FAILED, FAILED, count
    return (
        len(good) / elapsed,
        statistics.median(good),
        percentile(good, 0.99),
        count - len(good),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="runs per row in part 1")
    parser.add_argument("--submits-1", type=int, default=40, help="submissions at concurrency 1")
    parser.add_argument("--submits-8", type=int, default=120, help="submissions at concurrency 8")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of part 2 (medians)")
    parser.add_argument("--port-offset", type=int, default=-20000)
    parser.add_argument("--quick", action="store_true", help="20 runs, 10/40 submissions, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.submits_1, args.submits_8, args.rounds = 20, 10, 40, 1

    exercise = next(e for e in default_bank().exercises if len(e.tests) == 5)
    work = Path(tempfile.mkdtemp(prefix="lf-bench-sandbox-"))
    settings = Settings(jwks_path=work / "jwks.json", log_level="WARNING")
    devtokens.ensure_keys(key_dir=work, settings=settings)
    student = f"bench-{uuid.uuid4().hex[:8]}"
    token = devtokens.mint_token(student, "student", ["bench"], key_dir=work, settings=settings)
    metadata = [("authorization", f"Bearer {token}")]

    isolation = detect()
    limits = Limits()
    offset = pick_offset(args.port_offset)
    address = {name: f"127.0.0.1:{SERVICES_BY_NAME[name].port + offset}" for name in SERVICES}
    workers = os.environ.get("SANDBOX_WORKERS", f"{Settings().sandbox_workers} (default)")
    mesh = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "python"),
            *("-m", "services.cli", "run", "--services", ",".join(SERVICES)),
            *("--no-gateway", "--port-offset", str(offset)),
        ],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"},
            **({"GRPC_ENABLE_FORK_SUPPORT": CALLER_FORK_SUPPORT} if CALLER_FORK_SUPPORT else {}),
            **infra_env(),
            "JWKS_PATH": str(settings.jwks_path),
            "LOG_LEVEL": "WARNING",
            **{SERVICES_BY_NAME[name].address_env: address[name] for name in SERVICES},
        },
        stdout=subprocess.DEVNULL,
    )
    channels: list[grpc.Channel] = []
    try:
        deadline = time.monotonic() + 60
        for name in SERVICES:
            wait_serving(address[name], deadline)
        channels = [grpc.insecure_channel(address[n]) for n in ("sandbox", "exercise")]
        sandbox = sandbox_pb2_grpc.SandboxServiceStub(channels[0])
        exercises = exercise_pb2_grpc.ExerciseServiceStub(channels[1])

        def bare() -> None:
            subprocess.run([BARE_PYTHON, "-c", "print(1)"], capture_output=True, check=True)

        def bare_flags() -> None:
            argv = [BARE_PYTHON, *PYTHON_FLAGS, "-c", "print(1)"]
            subprocess.run(argv, capture_output=True, check=True)

        def isolated() -> None:
            result = isolation.run("print(1)", "", limits)
            if result.stdout != "1\n":
                raise RuntimeError(f"sandbox run failed: {result}")

        execute_request = sandbox_pb2.ExecuteCodeRequest(code="print(1)")

        def through_grpc() -> None:
            reply = sandbox.ExecuteCode(execute_request, metadata=metadata, timeout=30)
            if reply.stdout != "1\n":
                raise RuntimeError(f"ExecuteCode failed: {reply}")

        rows = {"bare": bare, "bare -I -S": bare_flags, "isolation": isolated, "grpc": through_grpc}
        times = per_program(rows, args.runs)

        request = exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{student}",
            submission=exercise_pb2.Submission(
                exercise=f"exercises/{exercise.exercise_id}", code=exercise.reference_solution
            ),
        )

        def submit() -> exercise_pb2.Submission:
            reply: exercise_pb2.Submission = exercises.CreateSubmission(
                request, metadata=metadata, timeout=60
            )
            if reply.tests_total != 5 or reply.tests_passed != 5:
                raise RuntimeError(f"graded {reply.tests_passed}/{reply.tests_total}")
            return reply

        for _ in range(2):  # warm-up: connections, the bank, the first Kafka publish
            timed(submit)
        submits: dict[int, list[tuple[float, float, float, int]]] = {1: [], 8: []}
        for _ in range(args.rounds):
            submits[1].append(submit_round(submit, args.submits_1, 1))
            submits[8].append(submit_round(submit, args.submits_8, 8))
    finally:
        for channel in channels:
            channel.close()
        mesh.send_signal(signal.SIGTERM)
        try:
            mesh.wait(timeout=30)
        except subprocess.TimeoutExpired:
            mesh.kill()
            mesh.wait()

    def overhead_of(name: str) -> float:
        pairs = zip(times[name], times["bare"], strict=True)
        return statistics.median(ok([v - b for v, b in pairs]) or [FAILED])

    base = statistics.median(ok(times["bare"]))
    print(
        f"sandbox cost per program: print(1), {args.runs} runs per row interleaved, "
        f"isolation mode {isolation.mode.value}, {os.cpu_count()} CPUs"
    )
    header = f"{'row':<12}{'median ms':>11}{'p90 ms':>9}{'overhead ms':>13}{'vs bare':>9}"
    print(f"{header}{'failed':>8}")
    for name, values in times.items():
        good = ok(values) or [FAILED]
        median = statistics.median(good)
        print(
            f"{name:<12}{median:>11.2f}{percentile(good, 0.9):>9.2f}"
            f"{overhead_of(name):>13.2f}{median / base:>8.2f}x{len(values) - len(ok(values)):>8}"
        )

    def median_of(level: int, index: int) -> float:
        return statistics.median(r[index] for r in submits[level])

    print()
    print(
        f"Submit of exercises/{exercise.exercise_id} (5 tests, reference solution), "
        f"SANDBOX_WORKERS={workers}, medians of {args.rounds} round(s)"
    )
    print(f"{'concurrent':<12}{'submits':>9}{'subs/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}")
    failed = 0
    for level, count in ((1, args.submits_1), (8, args.submits_8)):
        failures = sum(r[3] for r in submits[level])
        failed += failures
        print(
            f"{level:<12}{count:>9}{median_of(level, 0):>9.2f}"
            f"{median_of(level, 1):>10.1f}{median_of(level, 2):>10.1f}{failures:>8}"
        )
    total = args.rounds * (args.submits_1 + args.submits_8)

    overhead = overhead_of("isolation")
    p99 = median_of(8, 2)
    print()
    print("targets (issue #4)")
    verdict = "PASS" if overhead < OVERHEAD_TARGET_MS else "MISS"
    print(f"  sandbox overhead over bare python3, median  {overhead:8.2f} ms  < 15 ms    {verdict}")
    verdict = "PASS" if p99 < SUBMIT_P99_TARGET_MS else "MISS"
    print(f"  Submit p99, 5 tests, 8 concurrent           {p99:8.1f} ms  < 1000 ms  {verdict}")
    verdict = "PASS" if failed == 0 else "MISS"
    print(
        f"  Submit failures (RPC error or not 5/5)      {failed:>5} of {total}  none     {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
