"""Unary latency with hundreds of Ask streams open on the same triage replica (ADR 0002).

The whole mesh runs in this process on embedded defaults, as `make run` has it. A
triage server is pointed at the scripted OpenAI-compatible server from the tests,
which streams each progress answer slowly (a chunk every --chunk-seconds), so every
Ask stays open for several seconds, as it does while a real model writes.

Rows:
  idle     ClassifyRequest (unary) on that triage server, nothing else running
  loaded   the same calls while N Ask streams by N students are open on it
The figures are p50 and p95 of sequential calls, and loaded/idle ratios. Before the
stream lane, 32 open streams took every pool thread and unary calls waited for them.

    python bench/bench_streams.py [--streams 200] [--calls 300] [--quick]
"""

# ruff: noqa: I001 - `mesh` must load before grpc (it turns grpc's fork handlers off)
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

from mesh import free_port, start_mesh  # first: it sets up the process for grpc

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.bus import PROGRESS_EVENTS, Publisher
from services.kit.auth import DEV_TENANT
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.consent import Purpose
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from tests.support.openai_server import Reply, ScriptedOpenAI, json_reply, start, stream_reply

QUESTION = "how am I doing?"
UNARY_TIMEOUT = 5.0


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


def graded(student: str) -> events_pb2.ExerciseGraded:
    """Some graded work, so the progress answer is streamed by the model."""
    now = Timestamp()
    now.GetCurrentTime()
    return events_pb2.ExerciseGraded(
        student=events_pb2.StudentRef(
            student_id=student, cohort="c1", time_zone="UTC", tenant="dev"
        ),
        topic=common_pb2.TOPIC_FUNCTIONS,
        exercise_id="functions-001",
        score=0.8,
        occur_time=now,
    )


def unary_latencies(
    stub: triage_pb2_grpc.TriageServiceStub, token: str, calls: int
) -> tuple[list[float], int]:
    """Sorted latencies (ms) of the calls answered within UNARY_TIMEOUT, and how many
    were not (a server whose threads are all held by streams answers none)."""
    request = triage_pb2.ClassifyRequestRequest(student="students/bench-probe", question=QUESTION)
    metadata = [("authorization", f"Bearer {token}")]
    found, failed = [], 0
    for _ in range(calls):
        started = time.perf_counter()
        try:
            stub.ClassifyRequest(request, metadata=metadata, timeout=UNARY_TIMEOUT)
        except grpc.RpcError:
            failed += 1
            if failed >= 3:  # the server is frozen: three timeouts say enough
                break
            continue
        found.append((time.perf_counter() - started) * 1000)
    return sorted(found), failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--chunk-seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="100 streams, 100 calls")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.calls = 100, 100
    chunks = 6  # each stream lasts about chunks x chunk-seconds

    mesh = start_mesh("bench-streams-")
    script = ScriptedOpenAI()

    def model_reply(body: dict[str, Any]) -> Reply:
        if body.get("stream"):
            return stream_reply(["Keep going. "] * chunks, delay=args.chunk_seconds)
        return json_reply({"intent": "progress", "confidence": 0.9, "reason": "progress"})

    script.respond_with(model_reply)
    model_server = start(script)
    model_settings = mesh.settings.model_copy(
        update={
            "openai_api_key": "sk-bench",
            "openai_base_url": script.base_url,
            "openai_timeout_seconds": 120.0,
            "database_url": mesh.runtime.database_url,  # one embedded Postgres for both
        }
    )
    model_runtime = Runtime(model_settings, run_dir=mesh.work / "run")
    # The benchmark's school lets its students' text reach the model (the platform's
    # default is no model use: the "+model" rows would be offline).
    model_runtime.consent.set_defaults(DEV_TENANT, {Purpose.MODEL_USE: True}, "bench")
    port = free_port()
    triage = LearnFlowServer(
        SERVICES_BY_NAME["triage"], builder("triage")(model_runtime), model_settings, port=port
    )
    triage.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = triage_pb2_grpc.TriageServiceStub(channel)
    probe = mesh.token("bench-probe")

    students = [f"bench-s{i}" for i in range(args.streams)]
    publisher = Publisher(mesh.runtime.bus, "//learnflow.dev/bench")
    for student in students:
        publisher.publish(PROGRESS_EVENTS, graded(student), key=student)
    time.sleep(2.0)  # the in-process mastery consumer applies the events

    unary_latencies(stub, probe, 5)  # warm-up
    idle, _ = unary_latencies(stub, probe, args.calls)

    opened = threading.Semaphore(0)
    lock = threading.Lock()
    outcome = {"open": 0, "refused": 0, "finished": 0}

    def hold(student: str) -> None:
        token = mesh.token(student)
        stream = stub.Ask(
            triage_pb2.AskRequest(student=f"students/{student}", question=QUESTION),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=300,
        )
        try:
            next(stream)  # the classification: the stream is open on the server
            with lock:
                outcome["open"] += 1
            opened.release()
            for _ in stream:
                pass
            with lock:
                outcome["finished"] += 1
        except grpc.RpcError:
            with lock:
                outcome["refused"] += 1
            opened.release()

    holders = [threading.Thread(target=hold, args=(s,), daemon=True) for s in students]
    for thread in holders:
        thread.start()
    # Wait until every stream is open, or 5 s: a server that cannot hold them all has
    # them queued, and the unary calls are measured behind that queue.
    deadline = time.monotonic() + 5.0
    for _ in holders:
        opened.acquire(timeout=max(0.0, deadline - time.monotonic()))
    open_at_start = outcome["open"]
    loaded, timed_out = unary_latencies(stub, probe, args.calls)
    with lock:
        still_open = outcome["open"] - outcome["finished"] - outcome["refused"]
    for thread in holders:
        thread.join(timeout=120)

    print(
        f"triage replica: {args.streams} Ask streams requested, {open_at_start} open at once, "
        f"{outcome['refused']} refused; {still_open} still open when the loaded calls ended; "
        f"each stream ~{chunks * args.chunk_seconds:.0f} s"
    )
    print(f"{'row':<8} {'answered':>8} {'timed out':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for name, values, failed in (("idle", idle, 0), ("loaded", loaded, timed_out)):
        if not values:
            print(f"{name:<8} {0:>8} {failed:>9} {'-':>8} {'-':>8}")
            continue
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        print(f"{name:<8} {len(values):>8} {failed:>9} {p50:>8.2f} {p95:>8.2f}")
    if loaded and not timed_out:
        print(
            f"loaded/idle: p50 {statistics.median(loaded) / statistics.median(idle):.2f}x, "
            f"p95 {percentile(loaded, 0.95) / percentile(idle, 0.95):.2f}x"
        )
    else:
        print(f"loaded: {timed_out} unary calls got no answer within {UNARY_TIMEOUT:.0f} s")

    channel.close()
    triage.stop(grace=0.5)
    model_runtime.close()
    model_server.shutdown()
    mesh.stop()
    os.environ.pop("OPENAI_API_KEY", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
