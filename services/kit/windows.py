"""Sliding windows and episode markers for detection rules (Redis for
sliding windows; losing Redis loses no data, only the window in flight).

`record` adds one occurrence to a window and says how many lie inside it now;
`start_episode` marks a condition as ongoing and says whether this is its start, so a
rule fires once per episode however long the condition lasts. Redis does each in one
round trip and atomically, so replicas of a service share the windows.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from typing import Protocol

import redis


class Windows(Protocol):
    def record(self, key: str, member: str, at: float, window_seconds: float) -> int:
        """Add `member` at time `at`; the number of members within (at - window, at]."""
        ...

    def start_episode(self, key: str, ttl_seconds: float) -> bool:
        """True when no episode `key` is ongoing (one starts now); else extend it."""
        ...

    def check(self) -> None: ...

    def close(self) -> None: ...


class RedisWindows:
    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def record(self, key: str, member: str, at: float, window_seconds: float) -> int:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {member: at})
        pipe.zremrangebyscore(key, "-inf", at - window_seconds)
        pipe.zcard(key)
        pipe.expire(key, math.ceil(window_seconds))
        _, _, count, _ = pipe.execute()
        return int(count)

    def start_episode(self, key: str, ttl_seconds: float) -> bool:
        ttl = max(1, math.ceil(ttl_seconds))
        if self._redis.set(key, b"1", nx=True, ex=ttl):
            return True
        self._redis.expire(key, ttl)
        return False

    def check(self) -> None:
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()


class InProcessWindows:
    """The same semantics in one process (the run command's embedded default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, dict[str, float]] = defaultdict(dict)
        self._episodes: dict[str, float] = {}

    def record(self, key: str, member: str, at: float, window_seconds: float) -> int:
        with self._lock:
            window = self._windows[key]
            window[member] = at
            for old in [m for m, t in window.items() if t <= at - window_seconds]:
                del window[old]
            return len(window)

    def start_episode(self, key: str, ttl_seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            ongoing = self._episodes.get(key, 0.0) > now
            self._episodes[key] = now + ttl_seconds
            return not ongoing

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None
