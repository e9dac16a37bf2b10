"""The whole mesh on the real parts, seen as an operator sees it: grpcurl, health
probes, the mastery schema in the real Postgres, and the run command itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from tests.conftest import MintToken

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STANDARD = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl")
    assert binary, "grpcurl is not on PATH: the test command installs it (infra/tools.sh)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=20, check=False)


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_grpcurl_lists_services_and_health_serves(spec: object, mesh: dict[str, int]) -> None:
    port = mesh[spec.name]  # type: ignore[attr-defined]
    listed = grpcurl("-plaintext", f"127.0.0.1:{port}", "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {*spec.full_names, *STANDARD}  # type: ignore[attr-defined]
    health = grpcurl("-plaintext", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert '"status": "SERVING"' in health.stdout


def test_grpcurl_describes_and_calls_with_a_token(
    mesh: dict[str, int], mint_token: MintToken
) -> None:
    port = mesh["concepts"]
    described = grpcurl(
        "-plaintext", f"127.0.0.1:{port}", "describe", "learnflow.concepts.v1.ConceptsService"
    )
    assert "rpc ListTopics" in described.stdout
    called = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {mint_token('alice')}",
        "-d",
        '{"name": "topics/recursion"}',
        f"127.0.0.1:{port}",
        "learnflow.concepts.v1.ConceptsService/GetTopic",
    )
    assert called.returncode == 0, called.stderr
    assert '"display_name": "Recursion"' in called.stdout


def test_mastery_migrated_its_schema_in_the_real_postgres(
    mesh: dict[str, int], settings: Settings
) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mastery'"
        ).fetchall()
    assert {("evidence",), ("mastery_current",), ("outbox",)} <= set(tables)
    assert ("processed_events",) not in tables  # the evidence is the inbox (0005)


def test_run_command_serves_the_mesh_and_gateway(mint_token: MintToken, settings: Settings) -> None:
    """`learnflow run` (what `make run` calls) on the real infrastructure, ports shifted
    so it can run beside anything else; SIGTERM stops it cleanly. The ports stay below
    Linux's ephemeral range (32768+), where port-0 servers and client sockets land."""
    offset, gateway_port = -21000, 27080
    env = {**os.environ, "JWKS_PATH": str(settings.jwks_path), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "run",
            "--port-offset",
            str(offset),
            "--gateway-port",
            str(gateway_port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(banner)
        if "LearnFlow is up" not in text:
            process.kill()
            pytest.fail(f"the run command did not start:\n{text}\n{process.communicate()[1]}")
        assert "postgres=DATABASE_URL" in text and "kafka=KAFKA_BOOTSTRAP_SERVERS" in text
        reply = httpx.get(
            f"http://127.0.0.1:{gateway_port}/v1/topics/files",
            headers={"authorization": f"Bearer {mint_token('alice')}"},
            timeout=5,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["displayName"] == "Files"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_probe_command_reports_serving(mesh: dict[str, int]) -> None:
    """`learnflow probe` is what docker-compose health checks run."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "probe",
            str(mesh["mastery"]),
            "--host",
            "127.0.0.1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SERVING"
