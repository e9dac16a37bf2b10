"""The whole mesh in the benchmark's process, on embedded defaults, as `make run` has it:
pgserver Postgres, the in-process bus and cache, offline agents, the real sandbox."""

from __future__ import annotations

import os

# As in every LearnFlow process (services/__init__.py): grpc's fork handlers crash the
# sandbox's forked starts under load, and a benchmark may import grpc before services.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kit import devtokens
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mesh:
    settings: Settings
    work: Path
    runtime: Runtime
    ports: dict[str, int]
    servers: list[LearnFlowServer] = field(default_factory=list)

    def token(self, sub: str, role: str = "student", cohorts: tuple[str, ...] = ("c1",)) -> str:
        return devtokens.mint_token(sub, role, cohorts, key_dir=self.work, settings=self.settings)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def stop(self) -> None:
        for server in self.servers:
            server.stop(grace=0.5)
        self.runtime.close()


def start_mesh(prefix: str) -> Mesh:
    """Every service on free ports (each one's <SERVICE>_ADDR pointing at the others)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    settings = Settings(
        jwks_path=work / "jwks.json", grpc_host="127.0.0.1", log_level="ERROR", openai_api_key=None
    )
    devtokens.ensure_keys(key_dir=work, settings=settings)
    ports = {spec.name: free_port() for spec in SERVICES}
    for spec in SERVICES:
        os.environ[spec.address_env] = f"127.0.0.1:{ports[spec.name]}"
    runtime = Runtime(settings, run_dir=work / "run")
    mesh = Mesh(settings, work, runtime, ports)
    for spec in SERVICES:
        server = LearnFlowServer(
            spec, builder(spec.name)(runtime), settings, port=ports[spec.name], audit=runtime.audit
        )
        server.start()
        mesh.servers.append(server)
    return mesh
