"""Wires the sandbox: the best isolation this host offers, behind a bounded executor.

With no isolation available the service still starts (so operators can see why), its
health is NOT_SERVING and ExecuteCode answers FAILED_PRECONDITION, unless the dev-only
SANDBOX_ALLOW_UNSAFE=true is set, which is logged loudly.

The executor's fair share counts runs per caller on the runtime's limiter (Redis, shared
by the replicas; in-process without REDIS_URL); executor.py documents the bounds."""

from __future__ import annotations

import logging

from learnflow.sandbox.v1 import sandbox_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.sandbox.executor import FairShare, SandboxExecutor
from services.sandbox.isolation.base import IsolationUnavailable, detect
from services.sandbox.servicer import RefusingSandboxServicer, SandboxServicer

log = logging.getLogger("learnflow.sandbox")

HEALTH_PREFIX = "learnflow.sandbox.isolation."


def build(runtime: Runtime) -> ServiceParts:
    settings = runtime.settings
    try:
        isolation = detect(allow_unsafe=settings.sandbox_allow_unsafe, nice=settings.sandbox_nice)
    except IsolationUnavailable as exc:
        reason = str(exc)
        log.error("sandbox refuses to run code", extra={"reason": reason})

        def unavailable() -> None:
            raise RuntimeError(reason)

        refusing = RefusingSandboxServicer(reason)
        return ServiceParts(
            register=lambda server: sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(
                refusing, server
            ),
            checks={"isolation": unavailable},
        )
    mode = isolation.mode.name.lower()
    if mode == "unsafe_none":
        log.critical("SANDBOX_ALLOW_UNSAFE: student code runs WITHOUT isolation (dev only)")
    log.info("sandbox isolation", extra={"mode": mode})
    executor = SandboxExecutor(
        isolation,
        settings.sandbox_workers,
        settings.sandbox_queue_size,
        fair_share=FairShare(
            runtime.limiter,
            runs_per_user=settings.sandbox_runs_per_user,
            runs_per_staff=settings.sandbox_runs_per_staff,
            user_wait_seconds=settings.sandbox_user_wait_seconds,
        ),
        max_wait_seconds=settings.sandbox_max_wait_seconds,
    )
    servicer = SandboxServicer(executor)
    return ServiceParts(
        register=lambda server: sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(
            servicer, server
        ),
        health_names=[HEALTH_PREFIX + mode],
    )
