"""Live updates in one replica: who is subscribed, and the walk of one stream.

Free of grpc and of storage, so the same logic can serve a grpc.aio server later:

- `Hub` fans out each update, once, to the local subscribers it is for (a student's
  own stream; the streams of a cohort's teachers), into a bounded queue per
  subscriber. Publishing never waits for a subscriber: one whose queue is full is
  marked overflowed, its queue dropped, and its stream ends (to resume from its
  cursor), so a slow or dead client never holds anyone else up.
- `follow` is one stream's walk: subscribe first, then replay what the log holds after
  the cursor, then the live queue, skipping what was already sent (by seq), with a
  heartbeat on an idle stream and a wake-up at least every `wake` seconds to notice a
  caller that went away.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

REPLAY_PAGE = 500
# A replay that the live queue outruns this many times in a row gives up (the stream
# ends and the client resumes from its cursor).
MAX_CATCH_UPS = 3


@dataclass(frozen=True, slots=True)
class Audience:
    """Whom a stream is for: one student's own updates, or the updates of cohorts
    (`cohorts` None: every cohort, an admin's `cohorts/-`)."""

    student_id: str | None = None
    cohorts: frozenset[str] | None = frozenset()

    @staticmethod
    def student(student_id: str) -> Audience:
        return Audience(student_id=student_id, cohorts=frozenset())

    @staticmethod
    def of_cohorts(cohorts: frozenset[str] | None) -> Audience:
        return Audience(student_id=None, cohorts=cohorts)

    def wants(self, entry: Entry) -> bool:
        if self.student_id is not None:
            return entry.student_id == self.student_id
        if entry.cohort is None:
            return False
        return self.cohorts is None or entry.cohort in self.cohorts


@dataclass(frozen=True, slots=True)
class Entry:
    """One update of the log: its seq (the cursor), its audience, and its payload
    (opaque here: the wire message, made once and shared by every subscriber)."""

    seq: int
    student_id: str | None
    cohort: str | None
    payload: object


@dataclass(frozen=True, slots=True)
class Beat:
    """An idle stream's heartbeat, at its position (the last seq sent)."""

    position: int


class StreamOverflowError(Exception):
    """The subscriber fell too far behind; it should resume from `position`."""

    def __init__(self, position: int, capacity: int) -> None:
        super().__init__(
            f"this stream fell more than {capacity} updates behind and was closed; "
            f"reconnect with cursor {position} to resume"
        )
        self.position = position
        self.capacity = capacity


class Subscription:
    def __init__(self, hub: Hub, audience: Audience, capacity: int) -> None:
        self.audience = audience
        self.capacity = capacity
        self._hub = hub
        self._ready = threading.Condition(threading.Lock())
        self._queue: deque[Entry] = deque()
        self.overflowed = False

    def offer(self, entry: Entry) -> None:
        """Never blocks: a full queue marks the subscription overflowed instead."""
        with self._ready:
            if self.overflowed:
                return
            if len(self._queue) >= self.capacity:
                self.overflowed = True
                self._queue.clear()
            else:
                self._queue.append(entry)
            self._ready.notify()

    def take(self, timeout: float) -> Entry | None:
        """The next entry, or None after `timeout` seconds; StreamOverflowError's caller
        checks `overflowed` (the queue is empty then)."""
        with self._ready:
            if not self._queue and not self.overflowed:
                self._ready.wait(timeout)
            return self._queue.popleft() if self._queue else None

    def reset(self) -> None:
        """Forget an overflow (the caller catches up from the log instead)."""
        with self._ready:
            self.overflowed = False
            self._queue.clear()

    def close(self) -> None:
        """Leave the hub (idempotent; safe from any thread)."""
        self._hub.unsubscribe(self)


class Hub:
    """The local subscribers of one replica, indexed by student and by cohort."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._by_student: dict[str, set[Subscription]] = {}
        self._by_cohort: dict[str, set[Subscription]] = {}
        self._every_cohort: set[Subscription] = set()

    def subscribe(self, audience: Audience) -> Subscription:
        sub = Subscription(self, audience, self.capacity)
        with self._lock:
            for index, key in self._keys(audience):
                index.setdefault(key, set()).add(sub)
            if audience.student_id is None and audience.cohorts is None:
                self._every_cohort.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            for index, key in self._keys(sub.audience):
                members = index.get(key)
                if members is not None:
                    members.discard(sub)
                    if not members:
                        del index[key]
            self._every_cohort.discard(sub)

    def _keys(self, audience: Audience) -> list[tuple[dict[str, set[Subscription]], str]]:
        if audience.student_id is not None:
            return [(self._by_student, audience.student_id)]
        return [(self._by_cohort, c) for c in audience.cohorts or ()]

    def publish(self, entries: Sequence[Entry]) -> None:
        """Hand each entry, in order, to the subscribers it is for."""
        for entry in entries:
            with self._lock:
                targets: set[Subscription] = set(self._every_cohort if entry.cohort else ())
                if entry.student_id is not None:
                    targets |= self._by_student.get(entry.student_id, set())
                if entry.cohort is not None:
                    targets |= self._by_cohort.get(entry.cohort, set())
            for sub in targets:
                sub.offer(entry)

    def __len__(self) -> int:
        with self._lock:
            subs = set(self._every_cohort)
            for index in (self._by_student, self._by_cohort):
                for members in index.values():
                    subs |= members
            return len(subs)


Replay = Callable[[Audience, int, int], Sequence[Entry]]
"""(audience, after seq, at most) -> the log's entries for the audience after that seq."""


def follow(
    sub: Subscription,
    after: int | Callable[[], int],
    replay: Replay,
    *,
    heartbeat: float,
    is_active: Callable[[], bool],
    wake: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Entry | Beat, None, None]:
    """One stream, on a subscription made before (so nothing committed since is
    missed): the log's entries after `after` (a seq, or how to read the head for a
    stream without a cursor), a Beat, then live entries, each once and in seq order,
    with a Beat after every `heartbeat` idle seconds. Ends when `is_active()` turns
    false; raises StreamOverflowError when the subscriber falls too far behind. The
    subscription is closed at the end (the caller may close it sooner: when its call
    ends while this generator is suspended)."""
    try:
        position = yield from _catch_up(sub, after, replay, is_active)
        # A first heartbeat at once: the caller (and a proxy waiting for the first
        # byte) knows the stream is live, and holds a cursor before any update.
        yield Beat(position)
        idle_since = clock()
        while is_active():
            wait = max(0.0, min(wake, idle_since + heartbeat - clock()))
            entry = sub.take(wait)
            if sub.overflowed:
                raise StreamOverflowError(position, sub.capacity)
            if entry is not None:
                if entry.seq > position:  # else: already sent by the replay
                    position = entry.seq
                    yield entry
                    idle_since = clock()
            elif clock() - idle_since >= heartbeat:
                yield Beat(position)
                idle_since = clock()
    finally:
        sub.close()


def _catch_up(
    sub: Subscription,
    after: int | Callable[[], int],
    replay: Replay,
    is_active: Callable[[], bool],
) -> Generator[Entry, None, int]:
    """Replay from the log until the live queue holds everything since; returns the
    position reached."""
    position = after() if callable(after) else after
    for _ in range(MAX_CATCH_UPS + 1):
        while True:
            page = replay(sub.audience, position, REPLAY_PAGE)
            for entry in page:
                if entry.seq > position:
                    position = entry.seq
                    yield entry
            if len(page) < REPLAY_PAGE or not is_active():
                break
        if not sub.overflowed:
            return position
        sub.reset()  # the queue lost entries meanwhile: the log still has them
    raise StreamOverflowError(position, sub.capacity)
