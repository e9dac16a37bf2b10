"""The kit's side of an erasure: which cache keys name a student, the pseudonym, and
the in-process cache's sweep (the Redis one runs in tests/integration/test_erasure.py)."""

from __future__ import annotations

import pytest

from services.kit.cache import InProcessCache, names_student
from services.kit.erasure import PSEUDONYM_PREFIX, pseudonym


@pytest.mark.parametrize(
    "key",
    [
        "mastery:v1:school-a:alice",
        "debug:struggle:window:school-a:alice:KeyError",
        "limit:llm:school-a/alice",
        "limit:streams:notify:school-a/alice",
    ],
)
def test_keys_about_the_student_are_named(key: str) -> None:
    assert names_student(key, "school-a", "alice")


@pytest.mark.parametrize(
    "key",
    [
        "mastery:v1:school-a:alice2",  # another student whose id starts alike
        "mastery:v1:school-a:bob",
        "mastery:v1:school-b:alice",  # the same id in another school
        "mastery:v1:xschool-a:alice",  # a tenant ending alike
        "mastery:v1:school-a-alice",
    ],
)
def test_keys_about_others_are_not(key: str) -> None:
    assert not names_student(key, "school-a", "alice")


def test_the_pseudonym_is_stable_per_tenant_and_hides_the_id() -> None:
    first = pseudonym("school-a", "alice")
    assert first == pseudonym("school-a", "alice")
    assert first != pseudonym("school-b", "alice")
    assert first.startswith(PSEUDONYM_PREFIX) and "alice" not in first
    assert len(first) == len(PSEUDONYM_PREFIX) + 32


def test_the_in_process_cache_forgets_only_that_student() -> None:
    cache = InProcessCache()
    for key in ("mastery:v1:school-a:alice", "ctx:school-a:alice:1", "mastery:v1:school-a:al"):
        cache.set(key, b"x", 60)
    assert cache.erase_student("school-a", "alice") == 2
    assert cache.get("mastery:v1:school-a:alice") is None
    assert cache.get("mastery:v1:school-a:al") == b"x"
