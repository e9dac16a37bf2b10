"""Fixtures every test may use: dev keys, settings pointing at them, token minting."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from services.kit import devtokens
from services.kit.auth import DEV_TENANT
from services.kit.config import Settings
from services.kit.interceptors import CallContext
from services.kit.llm import LLM
from tests.support.openai_server import ScriptedOpenAI, start

MintToken = Callable[..., str]
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 45.0, what: str = "it") -> T:
    """Poll until `probe` returns something (bounded): events take a moment to arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def dev_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def settings(dev_key_dir: Path) -> Settings:
    """Settings for servers started by tests: the test JWKS, infrastructure URLs from the
    environment (set by the test command) or the embedded defaults."""
    return Settings(
        jwks_path=dev_key_dir / "jwks.json",
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        # Agents run offline unless a test points them at the scripted model server:
        # a developer's own key in the environment must never reach a test.
        openai_api_key=None,
        openai_base_url=None,
        grpc_host="127.0.0.1",
        log_level="WARNING",
        shutdown_grace_seconds=2.0,
    )


@pytest.fixture(scope="session")
def mint_token(dev_key_dir: Path, settings: Settings) -> MintToken:
    devtokens.ensure_keys(key_dir=dev_key_dir, settings=settings)

    def mint(
        sub: str, role: str = "student", cohorts: Sequence[str] = (), tenant: str = DEV_TENANT
    ) -> str:
        return devtokens.mint_token(
            sub, role, cohorts, tenant=tenant, key_dir=dev_key_dir, settings=settings
        )

    return mint


@pytest.fixture(scope="session")
def _openai_script() -> Iterator[ScriptedOpenAI]:
    script = ScriptedOpenAI()
    server = start(script)
    yield script
    server.shutdown()


@pytest.fixture
def openai_server(_openai_script: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """The scripted OpenAI-compatible server, with an empty script for this test."""
    _openai_script.reset()
    yield _openai_script
    _openai_script.reset()


@pytest.fixture
def llm_settings(settings: Settings, openai_server: ScriptedOpenAI) -> Settings:
    """Settings with the agents' model pointed at the scripted server. The client's
    own retries are off so each scripted reply answers exactly one call; short
    timeouts keep failure tests quick."""
    return settings.model_copy(
        update={
            "openai_api_key": "sk-test",
            "openai_base_url": openai_server.base_url,
            "openai_model": "test-model",
            "openai_timeout_seconds": 2.0,
            "openai_max_retries": 0,
            "llm_breaker_reset_seconds": 0.5,
        }
    )


def bearer(token: str) -> list[tuple[str, str]]:
    """gRPC call metadata carrying `token`."""
    return [("authorization", f"Bearer {token}")]


def every_student_consents(call: CallContext | None) -> bool:
    """The model client's consent check for tests about the client itself: every call
    may use the model (consent is tested in tests/integration/test_consent.py)."""
    del call
    return True


@pytest.fixture
def llm(llm_settings: Settings) -> LLM:
    """An enabled model client with a fresh circuit breaker, on the scripted server."""
    return LLM(llm_settings, model_use=every_student_consents)
