"""The real parts: Postgres, Redis and Kafka from the test command, the whole mesh
started in-process on free ports against them, and Envoy in front of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.runner import Gateway
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from tests.conftest import MintToken, free_port

REQUIRED = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture(scope="session", autouse=True)
def real_infrastructure() -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"integration tests need {', '.join(missing)}: run them with `make test` "
            '(or `eval "$(make -s infra-up)"` first)',
            pytrace=False,
        )


@pytest.fixture(scope="session")
def runtime(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = Runtime(settings, run_dir=tmp_path_factory.mktemp("run"))
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def mesh(settings: Settings, runtime: Runtime, mint_token: MintToken) -> Iterator[dict[str, int]]:
    """Every service, started as `learnflow run` does, on free ports: name -> port.
    Each service's `<SERVICE>_ADDR` points at its port, so they reach one another."""
    ports = {spec.name: free_port() for spec in SERVICES}
    patch = pytest.MonkeyPatch()
    for spec in SERVICES:
        patch.setenv(spec.address_env, f"127.0.0.1:{ports[spec.name]}")
    servers = [
        LearnFlowServer(spec, builder(spec.name)(runtime), settings, port=ports[spec.name])
        for spec in SERVICES
    ]
    for server in servers:
        server.start()
    yield ports
    for server in servers:
        server.stop(grace=1.0)
    patch.undo()


@pytest.fixture(scope="session")
def gateway(
    settings: Settings, mesh: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = Gateway(
        settings,
        listen_port=free_port(),
        admin_port=free_port(),
        ports=mesh,
        run_dir=tmp_path_factory.mktemp("gateway"),
    )
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def gateway_url(gateway: Gateway) -> str:
    return gateway.url


@pytest.fixture(scope="session")
def envoy_log(gateway: Gateway) -> Path:
    return gateway.log_path
