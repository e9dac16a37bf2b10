"""Consumer health on the in-process bus: a consumer that is behind and commits nothing
for `stall_seconds` reports NOT_SERVING under its own health name, SERVING again once it
commits; the server's readiness ("" and its gRPC services) never follows it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from learnflow.events.v1 import events_pb2

from services.kit.bus import (
    ConsumerClient,
    ConsumerLoop,
    ConsumerStalledError,
    Envelope,
    InProcessBus,
    Publisher,
    Record,
)
from services.kit.catalogue import ServiceSpec
from services.kit.config import Settings
from services.kit.health import ComponentCheck, HealthMonitor
from services.kit.server import LearnFlowServer, ServiceParts
from tests.conftest import MintToken

TOPIC = "progress.events"
STALL_S = 0.3
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class TransientError(Exception):
    pass


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def stalled(loop: ConsumerLoop) -> bool:
    try:
        loop.check_progress()
    except ConsumerStalledError:
        return True
    return False


def publish(bus: InProcessBus, n: int = 1) -> list[str]:
    publisher = Publisher(bus, source="//learnflow.dev/test")
    return [
        publisher.publish(
            TOPIC, events_pb2.ExerciseGraded(exercise_id=f"ex-{i}", score=0.5), key=f"s{i}"
        )
        for i in range(n)
    ]


class Gate:
    """A handler that fails transiently (a database away) until opened."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.handled: list[str] = []

    def __call__(self, batch: Sequence[Envelope]) -> None:
        if not self.open.is_set():
            raise TransientError("database unavailable")
        self.handled.extend(e.record.event_id for e in batch)


def start(
    loops: list[ConsumerLoop],
    bus: InProcessBus,
    handler: Callable[[Sequence[Envelope]], None],
    **kwargs: object,
) -> ConsumerLoop:
    loop = ConsumerLoop(
        bus,
        group_id=f"g-{uuid.uuid4().hex}",
        topics=[TOPIC],
        handler=handler,
        transient=(TransientError,),
        poll_timeout=0.02,
        max_backoff=0.05,
        stall_seconds=STALL_S,
        **kwargs,  # type: ignore[arg-type]
    )
    loop.start()
    loops.append(loop)
    return loop


def test_an_idle_consumer_is_never_stalled(loops: list[ConsumerLoop]) -> None:
    loop = start(loops, InProcessBus(), Gate())
    time.sleep(STALL_S * 3)
    loop.check_progress()  # no records waiting: nothing to commit, nothing wrong


def test_a_busy_consumer_that_commits_is_not_stalled(loops: list[ConsumerLoop]) -> None:
    bus = InProcessBus()
    gate = Gate()
    gate.open.set()
    loop = start(loops, bus, gate, batch_size=1)
    deadline = time.monotonic() + STALL_S * 4
    while time.monotonic() < deadline:  # always more to do, always progressing
        publish(bus, 3)
        loop.check_progress()
        time.sleep(0.01)


def test_a_consumer_blocked_with_records_waiting_stalls_then_recovers(
    loops: list[ConsumerLoop],
) -> None:
    bus = InProcessBus()
    gate = Gate()
    ids = publish(bus, 2)
    loop = start(loops, bus, gate)

    assert wait_until(lambda: loop.stats.retries >= 1)
    loop.check_progress()  # not yet: the threshold has not passed
    assert wait_until(lambda: stalled(loop))
    with pytest.raises(ConsumerStalledError, match=r"no offset committed .* TransientError"):
        loop.check_progress()

    gate.open.set()
    assert wait_until(lambda: loop.stats.batches >= 1)
    loop.check_progress()  # committed: serving again
    assert gate.handled == ids


def test_a_consumer_rejoining_in_a_loop_is_stalled() -> None:
    """Commits that always fail make the loop rejoin again and again: it stays behind
    across the rejoins, so health reports it."""

    class NeverCommits(InProcessBus):
        def consumer(self, group_id: str, topics: Sequence[str]) -> ConsumerClient:
            inner = super().consumer(group_id, topics)

            class Client:
                def poll(self, max_records: int, timeout: float) -> list[Record]:
                    return inner.poll(max_records, timeout)

                def commit(self, records: Sequence[Record]) -> None:
                    raise RuntimeError("commit failed: not the group's member")

                def lag(self) -> int | None:
                    return inner.lag()

                def close(self) -> None:
                    inner.close()

            return Client()

    bus = NeverCommits()
    publish(bus)
    loop = ConsumerLoop(
        bus,
        group_id="g-rejoin",
        topics=[TOPIC],
        handler=lambda _: None,
        poll_timeout=0.02,
        stall_seconds=0.5,
    )
    loop.start()
    try:
        assert wait_until(lambda: loop.stats.rejoins >= 2 and stalled(loop), timeout=10)
    finally:
        loop.stop(timeout=2.0)


def test_component_checks_report_under_their_own_name_only() -> None:
    servicer = health.HealthServicer()
    failing = threading.Event()

    def component() -> None:
        if failing.is_set():
            raise ConsumerStalledError("stuck")

    monitor = HealthMonitor(
        servicer,
        ["learnflow.x.v1.X"],
        {"db": lambda: None, "consumer": ComponentCheck("learnflow.x.consumer", component)},
    )

    def status(name: str) -> int:
        request = health_pb2.HealthCheckRequest(service=name)
        return int(servicer.Check(request, None).status)

    assert monitor.check_once() is True
    assert [status(n) for n in ("", "learnflow.x.v1.X", "learnflow.x.consumer")] == [SERVING] * 3
    failing.set()
    assert monitor.check_once() is True  # readiness does not follow the component
    assert [status(n) for n in ("", "learnflow.x.v1.X")] == [SERVING, SERVING]
    assert status("learnflow.x.consumer") == NOT_SERVING
    assert monitor.component_failures == {"consumer": "ConsumerStalledError: stuck"}
    failing.clear()
    monitor.check_once()
    assert status("learnflow.x.consumer") == SERVING


def test_server_reports_a_stalled_consumer_under_its_name_and_stays_ready(
    settings: Settings, mint_token: MintToken, loops: list[ConsumerLoop]
) -> None:
    bus = InProcessBus()
    gate = Gate()
    loop = ConsumerLoop(
        bus,
        group_id="g-server",
        topics=[TOPIC],
        handler=gate,
        transient=(TransientError,),
        poll_timeout=0.02,
        max_backoff=0.05,
        stall_seconds=STALL_S,
    )
    loops.append(loop)
    spec = ServiceSpec("healthtest", "learnflow.healthtest.v1", ("Nothing",), 0)
    parts = ServiceParts(
        register=lambda _server: None,
        checks={"bus": bus.check, "consumer": loop.health_check("learnflow.healthtest.consumer")},
        start_background=[loop.start],
    )
    server = LearnFlowServer(spec, parts, settings, port=0)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def status(name: str) -> int:
                request = health_pb2.HealthCheckRequest(service=name)
                return int(stub.Check(request, timeout=2).status)

            names = ("", "learnflow.healthtest.v1.Nothing", "learnflow.healthtest.consumer")
            assert [status(n) for n in names] == [SERVING] * 3
            publish(bus, 3)
            assert wait_until(lambda: server.refresh_health() and stalled(loop))
            assert server.refresh_health() is True  # the dependencies are fine...
            assert [status(n) for n in names] == [SERVING, SERVING, NOT_SERVING]  # ...only it
            gate.open.set()
            assert wait_until(lambda: loop.stats.batches >= 1)
            server.refresh_health()
            assert [status(n) for n in names] == [SERVING] * 3
    finally:
        server.stop(grace=0.5)
