"""The command line as a developer uses it: `make token` and `learnflow probe`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.kit.auth import Principal, Role, TokenVerifier
from services.kit.config import Settings

REPO = Path(__file__).resolve().parents[1]


def learnflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_token_prints_a_verifiable_token_alone_on_its_last_line(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    result = subprocess.run(
        ["make", "-s", "token", "role=teacher", "sub=tess", "cohorts=c1,c2"],
        cwd=REPO,
        env={**os.environ, "JWKS_PATH": str(jwks)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.count(".") == 2 and " " not in token
    settings = Settings(jwks_path=jwks)
    verifier = TokenVerifier(jwks, settings.jwt_issuer, settings.jwt_audience)
    assert verifier.verify(f"Bearer {token}") == Principal("tess", Role.TEACHER, ("c1", "c2"))


def test_token_rejects_an_unknown_role(tmp_path: Path) -> None:
    result = learnflow(
        "token", "--role", "root", "--sub", "x", env={"JWKS_PATH": str(tmp_path / "j.json")}
    )
    assert result.returncode == 2
    assert "invalid choice: 'root'" in result.stderr


def test_probe_fails_when_nothing_serves(tmp_path: Path) -> None:
    from tests.conftest import free_port

    result = learnflow("probe", str(free_port()), "--timeout", "0.5")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
