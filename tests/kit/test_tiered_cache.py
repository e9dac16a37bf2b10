"""The in-process layer in front of the shared cache: fast reads, bounded staleness."""

from __future__ import annotations

import time

from services.kit.cache import InProcessCache, TieredCache


def test_reads_fill_the_local_layer_and_deletes_clear_both() -> None:
    shared = InProcessCache()
    cache = TieredCache(shared, local_ttl_seconds=60)
    shared.set("k", b"v1", 60)
    assert cache.get("k") == b"v1"
    shared.set("k", b"v2", 60)  # written by another replica
    assert cache.get("k") == b"v1"  # served from this process until its copy expires
    cache.delete("k")
    assert cache.get("k") is None and shared.get("k") is None
    cache.set("k", b"v3", 60)
    assert shared.get("k") == b"v3" and cache.get("k") == b"v3"


def test_local_copies_expire_so_other_replicas_invalidations_land() -> None:
    shared = InProcessCache()
    cache = TieredCache(shared, local_ttl_seconds=0.05)
    cache.set("k", b"old", 60)
    shared.delete("k")  # another replica saw an update
    deadline = time.monotonic() + 2
    while cache.get("k") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("k") is None
