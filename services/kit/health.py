"""grpc.health.v1 with per-service status that follows the service's dependencies.

The stock HealthServicer (Check, Watch, enter_graceful_shutdown) is used as is (its
asyncio twin on the asyncio server); a monitor thread runs the service's dependency
checks (database, broker, cache) and sets SERVING / NOT_SERVING for the overall
server ("") and for each of its gRPC services.

A `ComponentCheck` among the checks is different: it watches one part of the service
(a Kafka consumer loop, say) and sets SERVING / NOT_SERVING under its own health name
only (e.g. `learnflow.mastery.consumer`). A stuck consumer is something to alert on,
not a reason to take the replica out of rotation: its calls are still answered, so the
server's readiness ("" and the gRPC service names) stays driven by dependencies alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from grpc_health.v1 import health_pb2

log = logging.getLogger("learnflow.health")

DependencyCheck = Callable[[], None]
"""Raises when the dependency is unusable; returns None when it is fine."""


class StatusBoard(Protocol):
    """Where statuses are set: the stock health servicer, or the asyncio one's adapter."""

    def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None: ...


class ComponentCheck:
    """A check reported under its own health name, never folded into readiness.

    Callable like a DependencyCheck, so it travels in `ServiceParts.checks`."""

    def __init__(self, health_name: str, check: DependencyCheck) -> None:
        self.health_name = health_name
        self._check = check

    def __call__(self) -> None:
        self._check()

    def __repr__(self) -> str:
        return f"ComponentCheck({self.health_name!r})"


def _status(ok: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return (
        health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
    )


def _run(checks: Mapping[str, DependencyCheck]) -> dict[str, str]:
    failures: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    return failures


class HealthMonitor:
    def __init__(
        self,
        servicer: StatusBoard,
        service_names: Sequence[str],
        checks: Mapping[str, DependencyCheck],
        interval_seconds: float = 5.0,
    ) -> None:
        self._servicer = servicer
        self._names = ("", *service_names)
        self._checks = {n: c for n, c in checks.items() if not isinstance(c, ComponentCheck)}
        self._components = {n: c for n, c in checks.items() if isinstance(c, ComponentCheck)}
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures: dict[str, str] = {}
        self.component_failures: dict[str, str] = {}

    def check_once(self) -> bool:
        """Runs every check and sets the statuses; True when the dependencies are fine
        (components do not count)."""
        failures = _run(self._checks)
        if failures != self.failures:
            if failures:
                log.warning("dependencies failing", extra={"failures": failures})
            else:
                log.info("dependencies healthy", extra={"dependencies": sorted(self._checks)})
        self.failures = failures
        for name in self._names:
            self._servicer.set(name, _status(not failures))

        component_failures = _run(self._components)
        for name, component in self._components.items():
            failure = component_failures.get(name)
            if failure != self.component_failures.get(name):
                if failure:
                    log.warning(
                        "component not serving",
                        extra={"component": component.health_name, "failure": failure},
                    )
                else:
                    log.info("component serving", extra={"component": component.health_name})
            self._servicer.set(component.health_name, _status(failure is None))
        self.component_failures = component_failures
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
