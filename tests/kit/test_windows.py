"""Sliding windows and episodes: the same behaviour from Redis and in-process."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from services.kit.windows import InProcessWindows, RedisWindows, Windows


@pytest.fixture(params=["in-process", "redis"])
def windows(request: pytest.FixtureRequest) -> Iterator[Windows]:
    if request.param == "in-process":
        yield InProcessWindows()
        return
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("the Redis variant needs REDIS_URL: run with `make test`", pytrace=False)
    real = RedisWindows(url)
    yield real
    real.close()


def test_counts_only_what_is_inside_the_window(windows: Windows) -> None:
    key = f"test:window:{uuid.uuid4().hex}"
    assert windows.record(key, "a", 100.0, 600) == 1
    assert windows.record(key, "b", 300.0, 600) == 2
    assert windows.record(key, "b", 300.0, 600) == 2  # the same occurrence twice
    assert windows.record(key, "c", 650.0, 600) == 3
    assert windows.record(key, "d", 701.0, 600) == 3  # "a" at 100 fell out at 700
    assert windows.record(key, "e", 1300.0, 600) == 2  # only "d" (701) and "e" remain


def test_an_episode_starts_once_while_it_continues(windows: Windows) -> None:
    key = f"test:episode:{uuid.uuid4().hex}"
    assert windows.start_episode(key, 1.0) is True
    assert windows.start_episode(key, 1.0) is False  # ongoing: extended, not restarted
    time.sleep(0.6)
    assert windows.start_episode(key, 1.0) is False  # still within the extended ttl
    time.sleep(1.2)
    assert windows.start_episode(key, 1.0) is True  # quiet long enough: a new episode
