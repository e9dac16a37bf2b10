"""What the kit costs per call, direct and through Envoy, in one run on one machine.

Rows, all against the same concepts server built by the kit:
  health      grpc.health.v1/Check: no token, no interceptor work beyond logging (baseline)
  list        ConceptsService/ListTopics: token verification, handler, JSON log line
  envoy-grpc  the same ListTopics through Envoy (native gRPC)
  envoy-json  GET /v1/topics through Envoy's transcoder (JSON)

The server runs as `learnflow serve concepts` in its own process (as in production);
the callers share this process, so on 2 cores the client side takes CPU too and the
absolute rates are a floor. Each row: calls/s with CONCURRENCY callers in flight, p50
and p99 latency, and its rate against the health baseline. Medians of ROUNDS rounds,
rows interleaved; these machines are noisy.

    python bench/bench_rpc.py [--calls 2000] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.runner import Gateway
from services.kit import devtokens
from services.kit.config import Settings

REPO = Path(__file__).resolve().parents[1]


def measure(call: Callable[[], object], calls: int, concurrency: int) -> tuple[float, float, float]:
    """(calls per second, p50 ms, p99 ms) for `calls` calls from `concurrency` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = calls // concurrency

    def worker() -> None:
        mine = []
        for _ in range(per_worker):
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    for _ in range(min(50, calls)):  # warm-up: connections, caches
        call()
    started = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        for done in [pool.submit(worker) for _ in range(concurrency)]:
            done.result()
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 calls, one round")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds = 500, 1

    work = Path(tempfile.mkdtemp(prefix="lf-bench-"))
    settings = Settings(jwks_path=work / "jwks.json", log_level="WARNING", grpc_host="127.0.0.1")
    devtokens.ensure_keys(key_dir=work, settings=settings)
    token = devtokens.mint_token("bench", "student", key_dir=work, settings=settings)
    metadata = [("authorization", f"Bearer {token}")]

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "concepts"],
        cwd=REPO,
        env={
            **os.environ,
            "GRPC_PORT": str(port),
            "JWKS_PATH": str(settings.jwks_path),
            "LOG_LEVEL": "WARNING",
        },
    )
    ready = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(ready).result(timeout=30)
    ready.close()
    gateway = Gateway(
        settings,
        listen_port=free_port(),
        admin_port=free_port(),
        ports={"concepts": port},
        run_dir=work,
    )
    gateway.start()
    try:
        direct = grpc.insecure_channel(f"127.0.0.1:{port}")
        via_envoy = grpc.insecure_channel(f"127.0.0.1:{gateway.listen_port}")
        health = health_pb2_grpc.HealthStub(direct)
        concepts = concepts_pb2_grpc.ConceptsServiceStub(direct)
        concepts_envoy = concepts_pb2_grpc.ConceptsServiceStub(via_envoy)
        http = httpx.Client(
            base_url=gateway.url,
            headers={"authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=args.concurrency),
        )
        request = concepts_pb2.ListTopicsRequest(page_size=5)
        rows: dict[str, Callable[[], object]] = {
            "health": lambda: health.Check(health_pb2.HealthCheckRequest()),
            "list": lambda: concepts.ListTopics(request, metadata=metadata),
            "envoy-grpc": lambda: concepts_envoy.ListTopics(request, metadata=metadata),
            "envoy-json": lambda: http.get("/v1/topics", params={"pageSize": 5}).raise_for_status(),
        }
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, call in rows.items():  # interleaved, so noise hits every row alike
                results[name].append(measure(call, args.calls, args.concurrency))
    finally:
        gateway.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    def median(name: str, index: int) -> float:
        return statistics.median(r[index] for r in results[name])

    baseline = median("health", 0)
    print(
        f"kit RPC cost: {args.calls} calls x {args.rounds} rounds, "
        f"{args.concurrency} in flight, medians"
    )
    print(f"{'row':<12}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs health':>11}")
    for name in rows:
        rate = median(name, 0)
        print(
            f"{name:<12}{rate:>10.0f}{median(name, 1):>10.2f}{median(name, 2):>10.2f}"
            f"{rate / baseline:>10.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
