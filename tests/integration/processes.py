"""A service as a process of its own (`learnflow serve <name>`), beside the in-process
mesh: same database, broker, cache and test keys, its own port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.kit.config import Settings
from tests.conftest import free_port

LEARNFLOW = str(Path(sys.executable).with_name("learnflow"))


def start_service(
    name: str, settings: Settings, log: Path, **extra_env: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start it and wait until it serves; (the process, its port)."""
    port = free_port()
    env = {
        **os.environ,
        "GRPC_PORT": str(port),
        "GRPC_HOST": "127.0.0.1",
        "JWKS_PATH": str(settings.jwks_path),
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    env.pop("METRICS_PORT", None)
    process = subprocess.Popen(
        [LEARNFLOW, "serve", name], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} process exited: {log.read_text()[-3000:]}")
        probe = subprocess.run([LEARNFLOW, "probe", str(port)], capture_output=True, check=False)
        if probe.returncode == 0:
            return process, port
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"{name} on {port} not serving: {log.read_text()[-3000:]}")


def stop_service(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, and a clean exit within 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(30) == 0, log.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        process.kill()
        raise
