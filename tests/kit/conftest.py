"""Fixtures the kit's tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.kit.bus import ConsumerLoop


@pytest.fixture
def loops() -> Iterator[list[ConsumerLoop]]:
    """Consumer loops a test starts, stopped after it."""
    started: list[ConsumerLoop] = []
    yield started
    for loop in started:
        loop.stop(timeout=2.0)
