"""Prometheus metrics over HTTP for the process (one endpoint however many services it
runs), when METRICS_PORT is set."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from services.kit.config import Settings

log = logging.getLogger("learnflow.metrics")


def serve_metrics(settings: Settings) -> int | None:
    """Start the /metrics endpoint; the port it listens on, or None when off."""
    if settings.metrics_port is None:
        return None
    start_http_server(settings.metrics_port, addr=settings.grpc_host)
    log.info("metrics", extra={"port": settings.metrics_port})
    return settings.metrics_port
