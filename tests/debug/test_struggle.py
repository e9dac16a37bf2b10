"""The struggle rule on its own: more than 3 of one error type in the window, one
episode per burst (on the in-process windows; the Redis ones are the same, see
tests/kit/test_windows.py). Windows are per tenant: the same student id in two schools
is two students."""

from __future__ import annotations

import time

import pytest

from services.debug.struggle import StruggleDetector
from services.kit.windows import InProcessWindows


def test_the_fourth_occurrence_in_the_window_starts_one_episode() -> None:
    detector = StruggleDetector(InProcessWindows())
    seen = [detector.observe("dev", "amy", "KeyError", str(n), 1000.0 + n) for n in range(6)]
    assert [s.count for s in seen] == [1, 2, 3, 4, 5, 6]
    assert [s.struggling for s in seen] == [False, False, False, True, True, True]
    episodes = [s.new_episode for s in seen if s.new_episode]
    assert len(episodes) == 1 and seen[3].new_episode == episodes[0]


def test_occurrences_spread_beyond_the_window_are_not_struggle() -> None:
    detector = StruggleDetector(InProcessWindows())
    seen = [detector.observe("dev", "amy", "KeyError", str(n), n * 200.0) for n in range(8)]
    assert max(s.count for s in seen) == 3  # 10 minutes hold at most three of them
    assert not any(s.struggling for s in seen)


def test_error_types_and_students_have_their_own_windows() -> None:
    detector = StruggleDetector(InProcessWindows())
    for n in range(3):
        detector.observe("dev", "amy", "KeyError", f"k{n}", 10.0 + n)
        detector.observe("dev", "amy", "IndexError", f"i{n}", 10.0 + n)
        detector.observe("dev", "bob", "KeyError", f"b{n}", 10.0 + n)
    assert not detector.observe("dev", "amy", "NameError", "x", 20.0).struggling
    assert detector.observe("dev", "amy", "KeyError", "k3", 20.0).new_episode is not None
    assert detector.observe("dev", "bob", "KeyError", "b3", 20.0).new_episode is not None


def test_a_new_burst_after_a_quiet_spell_is_a_new_episode() -> None:
    detector = StruggleDetector(InProcessWindows(), window_seconds=0.5)
    first = [detector.observe("dev", "amy", "KeyError", f"a{n}", time.time()) for n in range(4)]
    time.sleep(0.6)  # the window and the episode both lapse
    second = [detector.observe("dev", "amy", "KeyError", f"b{n}", time.time()) for n in range(4)]
    assert first[3].new_episode and second[3].new_episode
    assert first[3].new_episode != second[3].new_episode


class KeyedWindows(InProcessWindows):
    """The in-process windows, remembering the keys they were asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def record(self, key: str, member: str, at: float, window_seconds: float) -> int:
        self.keys.add(key)
        return super().record(key, member, at, window_seconds)

    def start_episode(self, key: str, ttl_seconds: float) -> bool:
        self.keys.add(key)
        return super().start_episode(key, ttl_seconds)


def test_the_same_student_id_in_two_tenants_has_two_windows() -> None:
    windows = KeyedWindows()
    detector = StruggleDetector(windows)
    for n in range(3):
        detector.observe("school-a", "amy", "KeyError", f"a{n}", 10.0 + n)
    other = detector.observe("school-b", "amy", "KeyError", "b0", 20.0)
    assert (other.count, other.struggling) == (1, False)  # school-a's errors do not count
    assert detector.observe("school-a", "amy", "KeyError", "a3", 20.0).new_episode is not None
    # Windows and episodes are kept under keys that name the tenant.
    assert windows.keys == {
        "debug:struggle:window:school-a:amy:KeyError",
        "debug:struggle:window:school-b:amy:KeyError",
        "debug:struggle:episode:school-a:amy:KeyError",
    }


def test_a_tenant_is_required() -> None:
    with pytest.raises(ValueError, match="tenant"):
        StruggleDetector(InProcessWindows()).observe("", "amy", "KeyError", "x", 1.0)
