"""grpc.health.v1 with per-service status that follows the service's dependencies.

The stock HealthServicer (Check, Watch, enter_graceful_shutdown) is used as is; a
monitor thread runs the service's dependency checks (database, broker, cache) and sets
SERVING / NOT_SERVING for the overall server ("") and for each of its gRPC services.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("learnflow.health")

DependencyCheck = Callable[[], None]
"""Raises when the dependency is unusable; returns None when it is fine."""


class HealthMonitor:
    def __init__(
        self,
        servicer: health.HealthServicer,
        service_names: Sequence[str],
        checks: Mapping[str, DependencyCheck],
        interval_seconds: float = 5.0,
    ) -> None:
        self._servicer = servicer
        self._names = ("", *service_names)
        self._checks = dict(checks)
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures: dict[str, str] = {}

    def check_once(self) -> bool:
        failures: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                check()
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
        if failures != self.failures:
            if failures:
                log.warning("dependencies failing", extra={"failures": failures})
            else:
                log.info("dependencies healthy", extra={"dependencies": sorted(self._checks)})
        self.failures = failures
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if failures
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in self._names:
            self._servicer.set(name, status)
        return not failures

    def start(self) -> None:
        self.check_once()
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_once()

    def stop(self) -> None:
        self._stop.set()
