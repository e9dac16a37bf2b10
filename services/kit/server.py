"""Server bootstrap: one way to build, start and gracefully stop a LearnFlow server.

Concurrency model: a synchronous grpc server with a thread pool in two lanes
(docs/adr/0001, 0002): GRPC_MAX_WORKERS threads that only unary calls can use, plus
GRPC_MAX_STREAMS threads for streams, which the stream gate never lets streams exceed.
A service whose streams are many and idle (notify) asks for the asyncio server instead
(docs/adr/0003): the same steps, health, limits and shutdown; its streams are
coroutines and its unary calls run on GRPC_MAX_WORKERS worker threads.
Each server gets health (per-service status following its dependencies), reflection,
the kit interceptor, bounded concurrency (RESOURCE_EXHAUSTED beyond
GRPC_MAX_CONCURRENT_RPCS waiting unary calls or GRPC_MAX_STREAMS streams), and graceful
shutdown: NOT_SERVING first so load balancers stop sending, then drain in-flight calls
within the grace period.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kit.admission import StreamGate
from services.kit.aio import (
    AsyncServerInterceptor,
    EventLoopThread,
    LoopHealth,
)
from services.kit.audit import AuditTrail, Recorder
from services.kit.auth import TokenVerifier
from services.kit.catalogue import MAX_MESSAGE_BYTES, ServiceSpec
from services.kit.config import Settings
from services.kit.health import DependencyCheck, HealthMonitor
from services.kit.interceptors import CallSteps, ServerInterceptor
from services.kit.limits import Limiter
from services.kit.roster import Roster

log = logging.getLogger("learnflow.server")

BIND_ATTEMPTS = 10
BIND_RETRY_SECONDS = 0.5

ServicerT = TypeVar("ServicerT")


def not_implemented_yet(servicer_class: Callable[[], ServicerT]) -> ServicerT:
    """An instance of a generated base servicer: every RPC raises NotImplementedError,
    which the interceptor answers as UNIMPLEMENTED naming the method. (The generated
    type stubs mark the methods abstract; at run time the base class is concrete.)"""
    return servicer_class()


Registration = tuple[Callable[[Any, grpc.Server], None], Callable[[], Any]]
"""A generated `add_XServicer_to_server` function and its base servicer class."""


def not_implemented_parts(*registrations: Registration) -> ServiceParts:
    """Parts for a service whose contract is served but not implemented yet."""

    def register(server: grpc.Server) -> None:
        for add_to_server, servicer_class in registrations:
            add_to_server(not_implemented_yet(servicer_class), server)

    return ServiceParts(register=register)


@dataclass
class ServiceParts:
    """What a service contributes to its server; everything else is the kit's."""

    register: Callable[[grpc.Server], None]
    checks: Mapping[str, DependencyCheck] = field(default_factory=dict)
    # Background work (consumers, jobs) started after the port is bound ...
    start_background: Sequence[Callable[[], None]] = ()
    # ... and stopped, with adapters closed, after the server has drained.
    on_stop: Sequence[Callable[[], None]] = ()
    # More names the health service reports on (e.g. the sandbox's isolation mode).
    health_names: Sequence[str] = ()
    # Where per-user stream limits are counted (Runtime.limiter shares them across
    # replicas); None: within this process.
    limiter: Limiter | None = None
    # The shared student roster, for services that keep student data: the server
    # records each student's cohort from their token (services.kit.roster).
    roster: Roster | None = None
    # Served by the asyncio server (docs/adr/0003): streams are coroutines (async
    # generators), unary methods plain functions run on its worker threads.
    asynchronous: bool = False
    # How many streams the server holds at once; None: GRPC_MAX_STREAMS.
    max_streams: int | None = None


# Collections of the youngest generation every 20,000 allocations (not 700): a mastery
# batch allocates millions of short-lived objects, and the default thresholds spent 0.8
# s of every 10,000 events' 1.5 s collecting (0.17 s with these). The oldest generation
# is still collected every 100 younger ones: cycles made per batch are freed (rarer
# full collections let a mastery process grow from 230 MB to 278 MB).
GC_THRESHOLDS = (20_000, 10, 10)
# The asyncio server holds thousands of open streams, thousands of long-lived objects:
# a full collection over them paused every thread for hundreds of ms (notify's fan-out
# p99 447 ms against 282 ms with these, bench/bench_notify.py). It collects the oldest
# generation rarely.
GC_THRESHOLDS_MANY_STREAMS = (20_000, 50, 1000)


def tune_gc(many_streams: bool) -> None:
    """Called once the server has started: what exists by then lives as long as the
    process, so it leaves the collector's generations (gc.freeze)."""
    gc.freeze()
    gc.set_threshold(*(GC_THRESHOLDS_MANY_STREAMS if many_streams else GC_THRESHOLDS))


class LearnFlowServer:
    def __init__(
        self,
        spec: ServiceSpec,
        parts: ServiceParts,
        settings: Settings,
        *,
        port: int | None = None,
        verifier: TokenVerifier | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        """`audit`: the trail this server's calls are recorded in (its Runtime's,
        services/kit/audit.py); None: they are not recorded."""
        self.spec = spec
        self.settings = settings
        self._parts = parts
        self._port = port if port is not None else (settings.grpc_port or spec.port)
        self._stopped = threading.Event()
        verifier = verifier or TokenVerifier.from_settings(settings)
        max_streams = parts.max_streams or settings.grpc_max_streams
        gate = StreamGate(
            max_streams=max_streams,
            per_user=settings.grpc_streams_per_user,
            anonymous=settings.grpc_anonymous_streams,
            limiter=parts.limiter,
            service=spec.name,
        )
        options = [
            # Without this a second server on the same port silently shares it.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        max_rpcs = settings.grpc_max_concurrent_rpcs + max_streams
        self._loop: EventLoopThread | None = None
        self.health: LoopHealth | health.HealthServicer
        self._audit: Recorder | None = audit.recorder(spec.name) if audit is not None else None
        # One set of steps, whichever server model.
        steps = CallSteps(verifier, gate, parts.roster, audit=self._audit)
        if parts.asynchronous:
            self._loop = EventLoopThread(spec.name, settings.grpc_max_workers)
            self.health = LoopHealth(self._loop)
            interceptor = AsyncServerInterceptor(steps)
            self.server = self._loop.run(self._async_server(interceptor, max_rpcs, options))
        else:
            self.health = health.HealthServicer(
                experimental_non_blocking=True,
                experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2),
            )
            self.server = grpc.server(
                # Streams hold their thread for their lifetime; the gate admits at most
                # max_streams of them, so grpc_max_workers threads stay for unary calls.
                futures.ThreadPoolExecutor(
                    max_workers=settings.grpc_max_workers + max_streams,
                    thread_name_prefix=f"{spec.name}-rpc",
                ),
                interceptors=[ServerInterceptor(steps)],
                maximum_concurrent_rpcs=max_rpcs,
                options=options,
            )
            self._register(self.server, self.health)
        self._monitor = HealthMonitor(
            self.health, (*spec.full_names, *parts.health_names), parts.checks
        )
        self.port = 0

    def _register(self, server: Any, health_servicer: Any) -> None:
        self._parts.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*self.spec.full_names, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
        )

    async def _async_server(
        self, interceptor: AsyncServerInterceptor, max_rpcs: int, options: list[tuple[str, Any]]
    ) -> grpc.aio.Server:
        # Made on the loop's own thread: an asyncio server belongs to the running loop.
        assert isinstance(self.health, LoopHealth)
        server = grpc.aio.server(
            interceptors=[interceptor], maximum_concurrent_rpcs=max_rpcs, options=options
        )
        self._register(server, self.health.servicer)
        return server

    def start(self) -> int:
        self.port = self._bind(f"{self.settings.grpc_host}:{self._port}")
        if self._loop is not None:
            self._loop.run(self.server.start())
        else:
            self.server.start()
        tune_gc(many_streams=self._loop is not None)
        self._monitor.start()
        for start in self._parts.start_background:
            start()
        log.info(
            "serving",
            extra={"service": self.spec.name, "address": f"{self.settings.grpc_host}:{self.port}"},
        )
        return self.port

    def _bind(self, address: str) -> int:
        """The port bound. The service ports (50051-50058) lie in Linux's ephemeral
        range, so an outgoing connection may hold one for a moment: a taken port is
        tried again for a few seconds before giving up."""
        for attempt in range(BIND_ATTEMPTS):
            try:
                port: int = self._add_port(address)
            except RuntimeError:
                port = 0
            if port:
                return port
            if self._port == 0 or attempt == BIND_ATTEMPTS - 1:
                break
            log.warning(
                "port taken, retrying", extra={"service": self.spec.name, "address": address}
            )
            time.sleep(BIND_RETRY_SECONDS)
        raise RuntimeError(f"{self.spec.name}: cannot bind {address}")

    def _add_port(self, address: str) -> int:
        if self._loop is None:
            port: int = self.server.add_insecure_port(address)
            return port

        async def add() -> int:
            bound: int = self.server.add_insecure_port(address)
            return bound

        return self._loop.run(add())

    def refresh_health(self) -> bool:
        """Run the dependency checks now (they also run every few seconds)."""
        return self._monitor.check_once()

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, then drain within `grace` seconds, then close adapters."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._monitor.stop()
        self.health.enter_graceful_shutdown()
        if self._loop is not None:
            self._loop.run(self.server.stop(grace))
        else:
            self.server.stop(grace).wait()
        if self._audit is not None:
            # The drained calls' records, to the bus now (it flushes when the runtime closes).
            self._audit.flush()
        for stop in self._parts.on_stop:
            try:
                stop()
            except Exception:
                log.exception("error while stopping", extra={"service": self.spec.name})
        if self._loop is not None:
            self._loop.close()
        log.info("stopped", extra={"service": self.spec.name})


def wait_for_termination(
    stop_all: Callable[[], None], extra_signals: Sequence[signal.Signals] = ()
) -> None:
    """Block until SIGTERM or SIGINT, then call `stop_all` once."""
    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("shutdown requested", extra={"signal": signal.Signals(signum).name})
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT, *extra_signals):
        signal.signal(sig, on_signal)
    done.wait()
    stop_all()
