"""Read caches and counters: Redis, or an in-process TTL cache under the run command.

Caches hold only what can be recomputed: losing Redis loses no data, so
callers treat a cache error as a miss.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Protocol

import redis

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class Cache(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...
    def delete(self, *keys: str) -> None: ...
    def erase_student(self, tenant: str, student_id: str) -> int:
        """Delete every key naming this student (`names_student`), whoever wrote it:
        caches, windows, limits (an erasure; rare, so a scan); how many."""
        ...

    def check(self) -> None: ...
    def close(self) -> None: ...


def names_student(key: str, tenant: str, student_id: str) -> bool:
    """Whether a key names a student: every key about one holds `<tenant>:<student>` or
    `<tenant>/<student>` (the kit's and the services' key shapes), ending the key or
    followed by `:` or `/`."""
    for joined in (f"{tenant}:{student_id}", f"{tenant}/{student_id}"):
        start = key.find(joined)
        while start >= 0:
            before = key[start - 1] if start else ":"
            end = start + len(joined)
            after = key[end] if end < len(key) else ":"
            if before in ":/" and after in ":/":
                return True
            start = key.find(joined, start + 1)
    return False


class RedisCache:
    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def get(self, key: str) -> bytes | None:
        value = self._client.get(key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._client.set(key, value, px=max(1, int(ttl_seconds * 1000)))

    def delete(self, *keys: str) -> None:
        if keys:
            self._client.delete(*keys)

    def erase_student(self, tenant: str, student_id: str) -> int:
        pattern = "*" + _GLOB_SPECIAL.sub(r"\\\1", student_id) + "*"
        doomed = [
            key
            for raw in self._client.scan_iter(match=pattern, count=1000)
            if names_student(key := raw.decode(errors="replace"), tenant, student_id)
        ]
        for start in range(0, len(doomed), 500):
            self._client.delete(*doomed[start : start + 500])
        return len(doomed)

    def check(self) -> None:
        self._client.ping()

    def close(self) -> None:
        self._client.close()


class InProcessCache:
    """A dict with expiry; for one process only."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires < time.monotonic():
                del self._data[key]
                return None
            return value

    def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        with self._lock:
            if len(self._data) >= self._max_entries:
                now = time.monotonic()
                self._data = {k: e for k, e in self._data.items() if e[0] >= now}
                if len(self._data) >= self._max_entries:
                    self._data.pop(next(iter(self._data)))
            self._data[key] = (time.monotonic() + ttl_seconds, value)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def erase_student(self, tenant: str, student_id: str) -> int:
        with self._lock:
            doomed = [k for k in self._data if names_student(k, tenant, student_id)]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def check(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._data.clear()


class TieredCache:
    """A short-lived in-process cache in front of a shared one (Redis).

    Reads hit process memory first: a Redis round trip costs more than a whole cached
    RPC. Writes and deletes go to both. Another replica's delete reaches this process's
    copy only when it expires, so `local_ttl_seconds` bounds how stale a read can be."""

    def __init__(
        self, shared: Cache, local_ttl_seconds: float = 2.0, max_entries: int = 50_000
    ) -> None:
        self._shared = shared
        self._local = InProcessCache(max_entries)
        self._local_ttl = local_ttl_seconds

    def get(self, key: str) -> bytes | None:
        value = self._local.get(key)
        if value is None:
            value = self._shared.get(key)
            if value is not None:
                self._local.set(key, value, self._local_ttl)
        return value

    def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._local.set(key, value, min(ttl_seconds, self._local_ttl))
        self._shared.set(key, value, ttl_seconds)

    def delete(self, *keys: str) -> None:
        self._local.delete(*keys)
        self._shared.delete(*keys)

    def erase_student(self, tenant: str, student_id: str) -> int:
        self._local.erase_student(tenant, student_id)
        return self._shared.erase_student(tenant, student_id)

    def check(self) -> None:
        self._shared.check()

    def close(self) -> None:
        self._local.close()
