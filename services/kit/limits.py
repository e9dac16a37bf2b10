"""Per-caller concurrency limits (fair share): how many of one thing one user may have
running at once, across every replica of a service.

`acquire(key, limit)` hands out a `Lease` while fewer than `limit` leases on `key` are
live, else None; the caller answers RESOURCE_EXHAUSTED with a retry hint. On Redis a
key is a sorted set of lease ids scored by their expiry, so a replica that dies frees
its leases when they expire; a keeper thread renews the leases still held (a stream
may outlive any fixed lease). Without Redis (the run command's embedded default) the
same semantics hold within one process.

Losing Redis must not lock students out: when Redis fails, leases are granted (and the
failure logged) rather than refused.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from typing import Protocol

import redis

log = logging.getLogger("learnflow.limits")


class Lease:
    """One granted slot; release it exactly once (a context manager does)."""

    def __init__(self, limiter: _LeaseOwner, key: str, lease_id: str) -> None:
        self._limiter = limiter
        self.key = key
        self.lease_id = lease_id
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter.release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class _LeaseOwner(Protocol):
    def release(self, lease: Lease) -> None: ...


class Limiter(Protocol):
    def acquire(self, key: str, limit: int) -> Lease | None:
        """A lease on `key` when fewer than `limit` are held; None when at the limit."""
        ...

    def close(self) -> None: ...


# KEYS[1] the set; ARGV: now, limit, expiry of the new lease, its id, key TTL in ms.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class RedisLimiter:
    """Leases shared by every replica; each expires `lease_seconds` after its last renewal."""

    def __init__(self, url: str, *, lease_seconds: float = 30.0, prefix: str = "limit:") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._lease_seconds = lease_seconds
        self._prefix = prefix
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def acquire(self, key: str, limit: int) -> Lease | None:
        lease = Lease(self, self._prefix + key, uuid.uuid4().hex)
        now = time.time()
        try:
            granted = self._acquire(
                keys=[lease.key],
                args=[
                    now,
                    limit,
                    now + self._lease_seconds,
                    lease.lease_id,
                    int(self._lease_seconds * 2000),
                ],
            )
        except redis.RedisError as exc:
            log.warning("limiter unavailable; granting", extra={"key": key, "error": str(exc)})
            return _Unlimited(key)
        if not granted:
            return None
        with self._lock:
            self._held[lease.lease_id] = lease
            self._ensure_keeper()
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.lease_id, None)
        try:
            self._redis.zrem(lease.key, lease.lease_id)
        except redis.RedisError as exc:  # it expires on its own
            log.warning("lease not released", extra={"key": lease.key, "error": str(exc)})

    def _ensure_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._renew, name="lease-keeper", daemon=True)
            self._keeper.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._lease_seconds / 3):
            with self._lock:
                held = list(self._held.values())
            if not held:
                continue
            expiry = time.time() + self._lease_seconds
            try:
                pipe = self._redis.pipeline(transaction=False)
                for lease in held:
                    pipe.zadd(lease.key, {lease.lease_id: expiry}, xx=True)
                    pipe.pexpire(lease.key, int(self._lease_seconds * 2000))
                pipe.execute()
            except redis.RedisError as exc:
                log.warning("leases not renewed", extra={"error": str(exc)})

    def close(self) -> None:
        self._stop.set()
        self._redis.close()


class InProcessLimiter:
    """The same limits within one process (no Redis configured)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def acquire(self, key: str, limit: int) -> Lease | None:
        with self._lock:
            if self._held[key] >= limit:
                return None
            self._held[key] += 1
        return Lease(self, key, uuid.uuid4().hex)

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.key] -= 1
            if self._held[lease.key] <= 0:
                del self._held[lease.key]

    def close(self) -> None:
        return None


class _Unlimited(Lease):
    """Granted while the shared limiter is unreachable: releasing it does nothing."""

    def __init__(self, key: str) -> None:
        super().__init__(_NoOwner(), key, "")


class _NoOwner:
    def release(self, lease: Lease) -> None:
        return None
