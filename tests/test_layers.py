"""The import rules `make lint` enforces (import-linter, contracts in pyproject.toml)
cover every service package, so a new service is checked from its first commit, and a
domain module that imports grpc breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts: list[dict[str, Any]] = config["contracts"]
    return contracts


def service_packages() -> set[str]:
    return {
        f"services.{p.name}"
        for p in (REPO / "services").iterdir()
        if p.is_dir() and p.name not in {"kit", "__pycache__"}
    }


def test_every_service_is_independent_of_the_others() -> None:
    (independence,) = [c for c in contracts() if c["type"] == "independence"]
    assert set(independence["modules"]) == service_packages()


def test_the_kit_may_import_no_service() -> None:
    (kit,) = [c for c in contracts() if c.get("source_modules") == ["services.kit"]]
    assert kit["type"] == "forbidden"
    assert service_packages() <= set(kit["forbidden_modules"])


def test_a_domain_module_importing_grpc_breaks_the_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "services", copy / "services", ignore=shutil.ignore_patterns("node_modules")
    )
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LINT_IMPORTS), "--no-cache"],
            cwd=copy,
            capture_output=True,
            text=True,
            check=False,
            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
        )

    kept = lint()
    assert kept.returncode == 0, kept.stdout[-2000:]
    model = copy / "services" / "mastery" / "domain" / "model.py"
    model.write_text(model.read_text() + "\nimport grpc  # noqa: E402\n")
    broken = lint()
    assert broken.returncode != 0
    assert "services.mastery.domain.model -> grpc" in broken.stdout
