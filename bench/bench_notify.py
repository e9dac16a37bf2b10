"""Live updates (StreamUpdates): what idle streams cost one notify process, and the
fan-out latency from the bus to subscribers, on the asyncio server notify runs
(docs/adr/0003) beside a baseline in the same run: the same delivery on the
thread-per-stream server (the kit's thread-pool model, one thread per stream).

Each model runs in a process of its own (this script with --serve), so its RSS is its
own, on the infrastructure the environment names (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS,
REDIS_URL; else it brings them up as `make test` does). The subscribers are grpc.aio streams
in this process.

Rows, per server model:
  idle      the server process's RSS with --idle teachers' streams open and idle (the
            issue's target: 5,000 streams under 256 MB; the baseline holds
            --baseline-idle: at 5,000 threads it starves its own consumers), and per
            stream
  cohort    one event to --fanout subscribers (a cohort's teachers and screens; the
            other idle streams watch a quiet cohort): `mastery.updated` band changes
            published one every --gap seconds; publish to each receipt, p50 and p99
  students  --fanout events to --fanout different subscribers (each student's own
            stream), published at --rate events/s; p50 and p99 of publish to receipt
  to hub    from publish to the replica's hub (Kafka, the updates consumer, Postgres,
            the listener): what delivery adds is the rest

    python bench/bench_notify.py [--idle 5000] [--fanout 1000] [--quick]
"""

# ruff: noqa: I001 - `services` must load before grpc (it turns grpc's fork handlers off)
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import services  # noqa: F401

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.bus import MASTERY_UPDATED, Publisher
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.notify.convert import heartbeat
from services.notify.hub import Entry, Hub
from services.notify.main import build
from services.notify.servicer import NotifyServicer

MODELS = ("threads", "asyncio")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


T = TypeVar("T")


def settings_for(work: Path, streams: int) -> Settings:
    return Settings(
        jwks_path=work / "jwks.json",
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        openai_api_key=None,
        grpc_host="127.0.0.1",
        log_level="WARNING",
        grpc_max_streams=streams + 16,
        notify_max_streams=streams + 16,
    )


# -- the server side (--serve) ------------------------------------------------------


class ThreadPerStreamServicer(NotifyServicer):
    """The baseline: StreamUpdates as a plain generator on the thread-pool server, one
    thread per stream waiting on the same hub (live updates only: every stream here
    starts without a cursor)."""

    def StreamUpdates(  # type: ignore[override]  # noqa: N802 - the RPC's name
        self, request: notify_pb2.StreamUpdatesRequest, context: grpc.ServicerContext
    ) -> Iterator[notify_pb2.Update]:
        audience, _ = self._subscription(request)
        ready = threading.Event()
        sub = self._streams.hub.subscribe(audience, ready.set)
        context.add_callback(sub.close)
        try:
            yield heartbeat(0, datetime.now(UTC))
            while context.is_active():
                if not ready.wait(1.0):
                    continue
                ready.clear()
                for entry in sub.drain():
                    yield entry.payload  # type: ignore[misc]
        finally:
            sub.close()


def serve(model: str, work: Path, port: int, streams: int, times: Path) -> None:
    settings = settings_for(work, streams)
    runtime = Runtime(settings, run_dir=work / "run")
    if model == "threads":
        parts = dataclasses.replace(
            build(runtime, servicer=ThreadPerStreamServicer), asynchronous=False
        )
    else:
        parts = build(runtime)
    hub_times: dict[str, float] = {}
    publish = Hub.publish

    def timed_publish(self: Hub, entries: list[Entry]) -> None:
        for entry in entries:
            update = entry.payload
            if isinstance(update, notify_pb2.Update) and update.HasField("mastery_updated"):
                event = update.mastery_updated
                sent = event.update_time.ToNanoseconds() / 1e9
                hub_times[event.cause_event_id] = time.time() - sent
        publish(self, entries)

    Hub.publish = timed_publish  # type: ignore[method-assign,assignment]
    server = LearnFlowServer(SERVICES_BY_NAME["notify"], parts, settings, port=port)
    server.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    times.write_text(json.dumps(hub_times))
    server.stop(grace=0.5)
    runtime.close()


# -- the subscribers ------------------------------------------------------------------


def band_change(student: str, cohort: str, n: int, event_id: str) -> events_pb2.MasteryUpdated:
    now = Timestamp()
    now.GetCurrentTime()
    red, yellow = common_pb2.MASTERY_BAND_RED, common_pb2.MASTERY_BAND_YELLOW
    return events_pb2.MasteryUpdated(
        student=events_pb2.StudentRef(student_id=student, cohort=cohort, tenant="dev"),
        previous_score=0.3,
        score=0.5,
        previous_band=red if n % 2 else yellow,
        band=yellow if n % 2 else red,
        update_time=now,  # the publish time, read back by the subscribers
        evidence_count=5,
        cause_event_id=event_id,
    )


class Subscribers:
    """Streams on one grpc.aio event loop in a thread; receipts as (event, seconds)."""

    def __init__(self, address: str) -> None:
        self.receipts: list[tuple[str, float]] = []
        self.open = 0
        self.failed: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._channel = self._call(self._connect(address))
        self._tasks: list[asyncio.Task[None]] = []

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(120)

    async def _connect(self, address: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address)

    def hold(self, streams: list[tuple[str, str]], step: int = 200) -> None:
        """Open a stream per (token, subscriber), `step` at a time (as screens connect:
        a burst of thousands of calls opened at the same instant stalls in grpc's
        transport), each step once each stream has its first message or was refused."""

        async def start(batch: list[tuple[str, str]]) -> None:
            stub = notify_pb2_grpc.NotifyServiceStub(self._channel)
            for token, subscriber in batch:
                self._tasks.append(asyncio.create_task(self._read(stub, token, subscriber)))

        deadline = time.monotonic() + 300
        for k in range(0, len(streams), step):
            batch = streams[k : k + step]
            target = self.open + len(self.failed) + len(batch)
            self._call(start(batch))
            while self.open + len(self.failed) < target and time.monotonic() < deadline:
                time.sleep(0.05)

    async def _read(
        self, stub: notify_pb2_grpc.NotifyServiceStub, token: str, subscriber: str
    ) -> None:
        call = stub.StreamUpdates(
            notify_pb2.StreamUpdatesRequest(subscriber=subscriber),
            metadata=[("authorization", f"Bearer {token}")],
        )
        first = True
        try:
            async for update in call:
                if first:
                    first = False
                    self.open += 1
                if update.WhichOneof("payload") == "mastery_updated":
                    sent = update.mastery_updated.update_time.ToNanoseconds() / 1e9
                    self.receipts.append(
                        (update.mastery_updated.cause_event_id, time.time() - sent)
                    )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.failed.append(exc.code().name)

    def wait_for(self, event_ids: set[str], each: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = sum(1 for e, _ in list(self.receipts) if e in event_ids)
            if got >= each * len(event_ids):
                return
            time.sleep(0.1)

    def close(self) -> None:
        async def stop() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._channel.close()

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- the run ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ms(values: list[float]) -> str:
    if not values:
        return "no receipts"
    ordered = sorted(v * 1000 for v in values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):7.1f} ms  p99 {p99:7.1f} ms  (n={len(ordered)})"


def measure(model: str, args: argparse.Namespace, work: Path) -> dict[str, str]:
    idle = args.idle if model == "asyncio" else args.baseline_idle
    streams = idle + args.fanout + 16
    settings = settings_for(work, streams)
    port = free_port()
    times = work / f"hub-{model}.json"
    command = [sys.executable, __file__, "--serve", model, "--work", str(work)]
    command += ["--port", str(port), "--idle", str(streams), "--times", str(times)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {model} server did not start")
    run = uuid.uuid4().hex[:8]
    watched, quiet, own = (f"{name}-{run}" for name in ("watched", "quiet", "own"))

    from services.kit import devtokens  # here: the --serve process stays as lean as notify's

    def token(sub: str, role: str, cohort: str) -> str:
        return devtokens.mint_token(sub, role, (cohort,), key_dir=work, settings=settings)

    rows: dict[str, str] = {}
    runtime = Runtime(settings, run_dir=work / f"client-{model}")
    publisher = Publisher(runtime.bus, "//learnflow.dev/bench")
    subs = Subscribers(f"127.0.0.1:{port}")
    try:
        # Idle: `fanout` teachers of the watched cohort, the rest of a quiet one.
        before = rss_mb(server.pid)
        teachers = [(token(f"t{i}-{run}", "teacher", watched), watched) for i in range(idle)]
        teachers[args.fanout :] = [
            (token(f"q{i}-{run}", "teacher", quiet), quiet) for i in range(idle - args.fanout)
        ]
        subs.hold([(t, f"cohorts/{c}") for t, c in teachers])
        time.sleep(2.0)
        held = rss_mb(server.pid)
        rows["idle"] = (
            f"{subs.open:5d} streams held ({len(subs.failed)} refused)  RSS {before:4.0f} MB "
            f"-> {held:4.0f} MB  ({(held - before) * 1024 / max(1, subs.open):.0f} KB/stream)"
        )
        watchers = min(args.fanout, subs.open)

        # One event to a cohort: its `fanout` teachers' streams receive it.
        student = f"s-{run}"
        warm = band_change(student, watched, 0, f"warm-{run}")
        publisher.publish(MASTERY_UPDATED, warm, key=student)
        runtime.bus.flush()
        subs.wait_for({f"warm-{run}"}, watchers, timeout=120)
        cohort_ids = [f"c{n}-{run}" for n in range(1, args.events + 1)]
        for n, event_id in enumerate(cohort_ids, 1):
            event = band_change(student, watched, n, event_id)
            publisher.publish(MASTERY_UPDATED, event, key=student)
            runtime.bus.flush()
            time.sleep(args.gap)
        subs.wait_for(set(cohort_ids), watchers)
        cohort_latency = [sec for e, sec in subs.receipts if e in set(cohort_ids)]
        rows["cohort"] = f"1 event -> {watchers} subscribers x {args.events}: " + ms(cohort_latency)

        # Events to different subscribers: each student's own stream (a cohort nobody
        # watches).
        students = [f"st{i}-{run}" for i in range(args.fanout)]
        subs.hold([(token(s, "student", own), f"students/{s}") for s in students])
        time.sleep(1.0)
        own_ids = {f"o-{s}" for s in students}
        pause = 1.0 / args.rate
        for n, s in enumerate(students):
            publisher.publish(MASTERY_UPDATED, band_change(s, own, n, f"o-{s}"), key=s)
            if n % 50 == 49:
                runtime.bus.flush()
            time.sleep(pause)
        runtime.bus.flush()
        subs.wait_for(own_ids, 1)
        mine = [sec for e, sec in subs.receipts if e in own_ids]
        rows["students"] = (
            f"{len(students)} events -> {len(students)} subscribers at {args.rate}/s: " + ms(mine)
        )
    finally:
        subs.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        runtime.close()
    hub = json.loads(times.read_text()) if times.exists() else {}
    rows["to hub"] = "bus, consumer, Postgres, listener: " + ms(
        [v for k, v in hub.items() if k.endswith(run) and not k.startswith("warm")]
    )
    return rows


def infra_up() -> None:
    """Bring up (or reuse) Postgres, Redis and Kafka as `make test` does; use them."""
    script = Path(__file__).resolve().parents[1] / "infra" / "up.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = line.removeprefix("export ").split("=", 1)
            os.environ[name] = value.strip("'\"")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=5000, help="idle teacher streams to hold")
    parser.add_argument(
        "--baseline-idle",
        type=int,
        default=1000,
        help="idle streams for the thread-per-stream baseline (5,000 threads starve it)",
    )
    parser.add_argument("--fanout", type=int, default=1000, help="students with their own stream")
    parser.add_argument("--events", type=int, default=10, help="cohort events")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between cohort events")
    parser.add_argument("--rate", type=int, default=1000, help="student events per second")
    parser.add_argument("--quick", action="store_true", help="500 idle, 200 fan-out, 5 events")
    parser.add_argument("--models", default=",".join(MODELS), help="threads,asyncio")
    parser.add_argument("--serve", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--times", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.work, args.port, args.idle, args.times)
        return 0
    if args.quick:
        args.idle, args.baseline_idle, args.fanout, args.events = 500, 500, 200, 5

    if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL")):
        # The servers run in processes of their own: they need a real broker and database.
        infra_up()
    from services.kit import devtokens

    work = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    devtokens.ensure_keys(key_dir=work, settings=settings_for(work, args.idle))
    print(f"notify on Kafka and Postgres, one process per model ({', '.join(MODELS)})")
    models = args.models.split(",")
    results = {model: measure(model, args, work) for model in models}
    for row in ("idle", "cohort", "students", "to hub"):
        for model in models:
            print(f"{row:9s} {model:8s} {results[model][row]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
