"""The cache kit on the real Redis from the test command, checked with a plain client."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from services.kit.cache import RedisCache

pytestmark = pytest.mark.integration


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    yield client
    client.close()


@pytest.fixture
def prefix(raw: redis.Redis) -> Iterator[str]:
    value = f"test:cache:{uuid.uuid4().hex}:"
    yield value
    keys = list(raw.scan_iter(match=f"{value}*"))
    if keys:
        raw.delete(*keys)


@pytest.fixture
def cache() -> Iterator[RedisCache]:
    client = RedisCache(os.environ["REDIS_URL"])
    yield client
    client.close()


def test_set_stores_the_value_with_a_ttl(cache: RedisCache, raw: redis.Redis, prefix: str) -> None:
    key = f"{prefix}mastery:stu-1"

    cache.set(key, b"\x00payload\xff", ttl_seconds=30)

    assert raw.get(key) == b"\x00payload\xff"
    pttl = raw.pttl(key)
    assert 0 < pttl <= 30_000
    assert cache.get(key) == b"\x00payload\xff"


def test_fractional_ttl_is_kept_in_milliseconds(
    cache: RedisCache, raw: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}short"
    cache.set(key, b"v", ttl_seconds=1.5)
    assert 1_000 < raw.pttl(key) <= 1_500


def test_delete_removes_the_keys(cache: RedisCache, raw: redis.Redis, prefix: str) -> None:
    keys = [f"{prefix}a", f"{prefix}b"]
    for key in keys:
        cache.set(key, b"v", ttl_seconds=60)
    cache.set(f"{prefix}kept", b"k", ttl_seconds=60)
    assert raw.exists(*keys) == 2

    cache.delete(*keys)
    cache.delete()  # nothing to delete is fine

    assert raw.exists(*keys) == 0
    assert cache.get(keys[0]) is None
    assert raw.get(f"{prefix}kept") == b"k"


def test_entries_expire_in_redis(cache: RedisCache, raw: redis.Redis, prefix: str) -> None:
    key = f"{prefix}expiring"
    cache.set(key, b"v", ttl_seconds=0.2)
    assert cache.get(key) == b"v"
    deadline = time.monotonic() + 5
    while raw.exists(key) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not raw.exists(key)
    assert cache.get(key) is None


def test_a_miss_is_none(cache: RedisCache, prefix: str) -> None:
    assert cache.get(f"{prefix}never-set") is None


def test_check_pings_redis(cache: RedisCache) -> None:
    cache.check()
    unreachable = RedisCache("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            unreachable.check()
    finally:
        unreachable.close()
