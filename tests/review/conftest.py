"""Fixtures for the review tests: the real ruff binary the service runs."""

from __future__ import annotations

import pytest

from services.review.domain.linter import RuffLinter


@pytest.fixture(scope="session")
def linter() -> RuffLinter:
    return RuffLinter()
