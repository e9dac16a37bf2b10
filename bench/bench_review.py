"""How long a code review takes, next to the linter it is built on, in one run.

The input is a realistic 199-line student program (bench/data/review_student_200.py.txt:
a gradebook script with the usual beginner findings: camelCase names, `== None`, a bare
except, globals, long lines, two functions above complexity 10). Rows, interleaved so
machine noise hits them alike, RUNS runs each:

  ruff bare     `ruff check --isolated -` with ruff's default rules, as a subprocess
                (the baseline: the least a review that runs a real linter can cost)
  ruff review   `ruff check` with the review's rule set and JSON output (the linter
                call inside a review)
  domain        review_code(): ruff check and ruff format (started together) while
                radon measures, then suggestions, score and summary
  grpc          ReviewService/CreateCodeReview end to end against an in-process server
                (authentication, the review, the Postgres insert, the CodeReviewed event
                on the in-process bus); the client shares the process and the cores

Each row prints median and p90 wall ms and its ratio to `ruff bare` (ratio of medians).
The model is off (no OPENAI_API_KEY): this measures the part a review always pays.
Postgres is DATABASE_URL when set (e.g. `eval "$(make -s infra-up)"`), else the
embedded server, which starts in a few seconds.

    .venv/bin/python bench/bench_review.py [--runs 40] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from learnflow.common.v1 import common_pb2
from learnflow.review.v1 import review_pb2, review_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kit import devtokens
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from services.review.domain.linter import RuffLinter
from services.review.domain.review import review_code
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
STUDENT_FILE = REPO / "bench" / "data" / "review_student_200.py.txt"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def start_review_service(run_dir: Path) -> tuple[LearnFlowServer, Runtime, str, str]:
    settings = Settings(
        jwks_path=run_dir / "jwks.json",
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=None,
        kafka_bootstrap_servers=None,  # the in-process bus: no broker in the figure
        openai_api_key=None,
        grpc_host="127.0.0.1",
        log_level="WARNING",
    )
    devtokens.ensure_keys(key_dir=run_dir, settings=settings)
    token = devtokens.mint_token("bench-student", "student", ["bench"], key_dir=run_dir,
                                 settings=settings)  # fmt: skip
    runtime = Runtime(settings, run_dir=run_dir)
    port = free_port()
    server = LearnFlowServer(
        SERVICES_BY_NAME["review"], builder("review")(runtime), settings, port=port
    )
    server.start()
    return server, runtime, f"127.0.0.1:{port}", token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="15 runs")
    args = parser.parse_args()
    runs = 15 if args.quick else args.runs

    code = STUDENT_FILE.read_text()
    linter = RuffLinter()
    bare_args = [linter.binary, "check", "--isolated", "--no-cache",
                 "--stdin-filename", "student.py", "--exit-zero", "-"]  # fmt: skip

    def ruff_bare() -> None:
        subprocess.run(bare_args, input=code, capture_output=True, text=True, check=True)

    review = review_code(code, linter)
    print(
        f"input: {STUDENT_FILE.relative_to(REPO)}: {len(code.splitlines())} lines, "
        f"{review.metrics.lines_of_code} lines of code; {len(review.findings)} findings, "
        f"{len(review.suggestions)} suggestions, quality {review.quality_score}/100"
    )
    print(f"ruff {linter.version().split()[-1]}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, {runs} runs per row\n")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        server, runtime, address, token = start_review_service(Path(tmp))
        channel = grpc.insecure_channel(address)
        stub = review_pb2_grpc.ReviewServiceStub(channel)
        request = review_pb2.CreateCodeReviewRequest(
            parent="students/bench-student",
            code_review=review_pb2.CodeReview(code=code, topic=common_pb2.TOPIC_FUNCTIONS),
        )
        metadata = [("authorization", f"Bearer {token}")]

        def over_grpc() -> None:
            reply = stub.CreateCodeReview(request, metadata=metadata, timeout=30)
            assert reply.quality_score == review.quality_score

        rows: dict[str, Callable[[], object]] = {
            "ruff bare": ruff_bare,
            "ruff review": lambda: linter.check(code),
            "domain": lambda: review_code(code, linter),
            "grpc": over_grpc,
        }
        for call in rows.values():  # warm-up: page cache, connections, imports
            call()
        times: dict[str, list[float]] = {name: [] for name in rows}
        try:
            for _ in range(runs):
                for name, call in rows.items():
                    times[name].append(timed(call))
        finally:
            channel.close()
            server.stop(grace=1.0)
            runtime.close()

    base = statistics.median(times["ruff bare"])
    print(f"{'row':<12} {'median ms':>10} {'p90 ms':>8} {'x ruff bare':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<12} {median:>10.1f} {percentile(values, 0.9):>8.1f} {median / base:>11.2f}x")
    domain, linted = statistics.median(times["domain"]), statistics.median(times["ruff review"])
    print(
        f"\nwall time a review adds to its linter call: {domain - linted:.1f} ms median "
        "(radon and the suggestions; ruff format runs alongside ruff check)"
    )


if __name__ == "__main__":
    main()
