"""Live updates (StreamUpdates): fan-out latency and what idle streams cost.

One notify server runs in this process on the infrastructure the environment names
(DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, REDIS_URL: run `eval "$(make -s infra-up)"`
first for real Kafka), else on the embedded defaults (pgserver, the in-process bus).
N teachers of one cohort each hold a StreamUpdates stream; the streams are read by a
grpc.aio client in the same process (one event loop, so the client costs little next
to the server's thread per stream).

Rows:
  fan-out  `mastery.updated` events with a band change are published to the bus, one
           every --gap seconds (1: apart enough that one event's fan-out does not
           queue behind the last); the time from publish to each subscriber's receipt
           (p50, p99 over every receipt), and to the last subscriber per event (p50)
  to hub   from publish to the replica's hub (Kafka, the updates consumer, Postgres,
           the listener): what fan-out adds is the rest
  idle     the process's RSS with the N streams open and idle, against before, and
           per stream (server and client together)

    python bench/bench_notify.py [--subscribers 1000] [--events 20] [--quick]
"""

# ruff: noqa: I001 - `mesh` must load before grpc (it turns grpc's fork handlers off)
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from mesh import free_port  # first: it sets up the process for grpc

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit import devtokens
from services.kit.bus import MASTERY_UPDATED, Publisher
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.notify.hub import Entry, Hub
from services.notify.main import build

HUB_TIMES: dict[str, float] = {}  # event -> seconds from publish to the replica's hub
_publish = Hub.publish


def _timed_publish(self: Hub, entries: list[Entry]) -> None:
    for entry in entries:
        update = entry.payload
        if isinstance(update, notify_pb2.Update) and update.HasField("mastery_updated"):
            event = update.mastery_updated
            HUB_TIMES[event.cause_event_id] = time.time() - event.update_time.ToNanoseconds() / 1e9
    _publish(self, entries)


Hub.publish = _timed_publish  # type: ignore[method-assign,assignment]


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def band_change(student: str, cohort: str, n: int) -> events_pb2.MasteryUpdated:
    now = Timestamp()
    now.GetCurrentTime()
    red, yellow = common_pb2.MASTERY_BAND_RED, common_pb2.MASTERY_BAND_YELLOW
    return events_pb2.MasteryUpdated(
        student=events_pb2.StudentRef(student_id=student, cohort=cohort),
        previous_score=0.3,
        score=0.5,
        previous_band=red if n % 2 else yellow,
        band=yellow if n % 2 else red,
        update_time=now,  # the publish time, read back by the subscribers
        evidence_count=5,
    )


class Subscribers:
    """N streams on one grpc.aio event loop in a thread; receipts as (event, latency)."""

    def __init__(self, address: str, tokens: list[str], subscriber: str) -> None:
        self.receipts: list[tuple[str, float]] = []
        self.open = 0
        self.failed: list[str] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(address, tokens, subscriber), daemon=True
        )
        self._thread.start()

    def _run(self, address: str, tokens: list[str], subscriber: str) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(address, tokens, subscriber))

    async def _main(self, address: str, tokens: list[str], subscriber: str) -> None:
        self._stop = asyncio.Event()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            tasks = [asyncio.create_task(self._hold(stub, t, subscriber)) for t in tokens]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _hold(
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

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="100 subscribers, 10 events")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.events = 100, 10

    work = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    settings = Settings(
        jwks_path=work / "jwks.json",
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        openai_api_key=None,
        grpc_host="127.0.0.1",
        log_level="WARNING",
        grpc_max_streams=args.subscribers + 16,
    )
    devtokens.ensure_keys(key_dir=work, settings=settings)
    runtime = Runtime(settings, run_dir=work / "run")
    server = LearnFlowServer(SERVICES_BY_NAME["notify"], build(runtime), settings, port=free_port())
    server.start()
    run = uuid.uuid4().hex[:8]
    cohort = f"bench-{run}"
    tokens = [
        devtokens.mint_token(
            f"bench-t{i}-{run}", "teacher", (cohort,), key_dir=work, settings=settings
        )
        for i in range(args.subscribers)
    ]
    before = rss_mb()
    subs = Subscribers(f"127.0.0.1:{server.port}", tokens, f"cohorts/{cohort}")
    deadline = time.monotonic() + 60
    while subs.open + len(subs.failed) < args.subscribers and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # idle
    held = rss_mb()

    publisher = Publisher(runtime.bus, "//learnflow.dev/bench")
    student = f"bench-s-{run}"
    # Warm-up: until one event reaches every subscriber (the consumer has caught up).
    warm = band_change(student, cohort, 0)
    warm.cause_event_id = "warm-up"
    publisher.publish(MASTERY_UPDATED, warm, key=student)
    runtime.bus.flush()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(1 for e, _ in subs.receipts if e == "warm-up") >= subs.open:
            break
        time.sleep(0.1)
    for n in range(1, args.events + 1):
        event = band_change(student, cohort, n)
        event.cause_event_id = f"e{n}"
        publisher.publish(MASTERY_UPDATED, event, key=student)
        runtime.bus.flush()
        time.sleep(args.gap)
    time.sleep(3.0)
    subs.stop()
    time.sleep(1.5)  # the handlers notice their calls ended (they wake every second)
    gc.collect()  # and those cancelled between two messages are finalised now

    measured = [(e, s * 1000) for e, s in subs.receipts if e.startswith("e")]
    latencies = sorted(ms for _, ms in measured)
    per_event: dict[str, float] = {}
    for event_id, ms in measured:
        per_event[event_id] = max(per_event.get(event_id, 0.0), ms)
    expected = subs.open * args.events
    bus = "Kafka" if settings.kafka_bootstrap_servers else "in-process bus"
    print(
        f"notify replica ({bus}): {args.subscribers} subscribers, {subs.open} open, "
        f"{len(subs.failed)} refused {sorted(set(subs.failed))}; {args.events} events"
    )
    if latencies:
        print(
            f"fan-out  receipts {len(latencies)}/{expected}"
            f"  p50 {statistics.median(latencies):.1f} ms"
            f"  p99 {percentile(latencies, 0.99):.1f} ms"
            f"  last subscriber per event p50 {statistics.median(per_event.values()):.1f} ms"
        )
    else:
        print("fan-out  no receipts")
    to_hub = sorted(ms * 1000 for e, ms in HUB_TIMES.items() if e.startswith("e"))
    if to_hub:
        print(
            f"to hub   (bus, consumer, Postgres, listener) p50 {statistics.median(to_hub):.1f} ms"
            f"  max {to_hub[-1]:.1f} ms"
        )
    print(
        f"idle     RSS {before:.0f} MB -> {held:.0f} MB with {subs.open} streams open: "
        f"{(held - before) * 1024 / max(1, subs.open):.0f} KB per stream (server and client)"
    )
    server.stop(grace=0.5)
    runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
