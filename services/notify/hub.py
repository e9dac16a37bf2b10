"""Live updates in one replica: who is subscribed, and the walk of one stream.

Free of grpc and of storage (docs/adr/0003):

- `Hub` fans out each update, once, to the local subscribers it is for (a student's
  own stream; the streams of a cohort's teachers), into a bounded queue per
  subscriber, and wakes the subscriber through the callback it gave. Only ever within
  the update's tenant: subscriptions are keyed by (tenant, student) and (tenant,
  cohort), so school-b's "c1" never hears school-a's "c1"; each tenant's log counts its
  own seq, so the hub's position is per tenant too. Publishing (on
  the update listener's thread) never waits for a subscriber: one whose queue is full
  is marked overflowed, its queue dropped, and its stream ends (to resume from its
  cursor), so a slow or dead client never holds anyone else up.
- `follow` is one stream's walk, a coroutine on the server's event loop: subscribe
  first, then replay what the log holds after the cursor, then the live queue,
  skipping what was already sent (by seq), with a heartbeat on an idle stream. An idle
  stream costs a coroutine and a timer, not a thread; a caller that goes away cancels
  it, which unsubscribes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

REPLAY_PAGE = 500
# A replay that the live queue outruns this many times in a row gives up (the stream
# ends and the client resumes from its cursor).
MAX_CATCH_UPS = 3


@dataclass(frozen=True, slots=True)
class Audience:
    """Whom a stream is for, within one tenant: one student's own updates, or the
    updates of cohorts (`cohorts` None: every cohort of the tenant, an admin's
    `cohorts/-`)."""

    tenant: str
    student_id: str | None = None
    cohorts: frozenset[str] | None = frozenset()

    @staticmethod
    def student(tenant: str, student_id: str) -> Audience:
        return Audience(tenant, student_id=student_id, cohorts=frozenset())

    @staticmethod
    def of_cohorts(tenant: str, cohorts: frozenset[str] | None) -> Audience:
        return Audience(tenant, student_id=None, cohorts=cohorts)

    def wants(self, entry: Entry) -> bool:
        if entry.tenant != self.tenant:
            return False
        if self.student_id is not None:
            return entry.student_id == self.student_id
        if entry.cohort is None:
            return False
        return self.cohorts is None or entry.cohort in self.cohorts


@dataclass(frozen=True, slots=True)
class Entry:
    """One update of a tenant's log: its tenant, its seq there (the cursor), its
    audience, and its payload (opaque here: the wire message, made once and shared by
    every subscriber)."""

    tenant: str
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
    def __init__(
        self, hub: Hub, audience: Audience, capacity: int, wake: Callable[[], None], start: int
    ) -> None:
        self.audience = audience
        # The hub's position in the audience's tenant when this subscription joined:
        # every entry of the tenant after it is offered to this subscription.
        self.start = start
        self.capacity = capacity
        self._hub = hub
        self._wake = wake
        self._lock = threading.Lock()
        self._queue: deque[Entry] = deque()
        self.overflowed = False

    def offer(self, entry: Entry) -> None:
        """Never blocks: a full queue marks the subscription overflowed instead. Wakes
        the subscriber either way."""
        with self._lock:
            if self.overflowed:
                return
            if len(self._queue) >= self.capacity:
                self.overflowed = True
                self._queue.clear()
            else:
                self._queue.append(entry)
        self._wake()

    def drain(self) -> list[Entry]:
        """Everything queued, oldest first (empty once overflowed: check `overflowed`)."""
        with self._lock:
            entries = list(self._queue)
            self._queue.clear()
            return entries

    def reset(self) -> None:
        """Forget an overflow (the caller catches up from the log instead)."""
        with self._lock:
            self.overflowed = False
            self._queue.clear()

    def close(self) -> None:
        """Leave the hub (idempotent; safe from any thread)."""
        self._hub.unsubscribe(self)


Key = tuple[str, str, str]
"""What a subscription is indexed by: ("student", tenant, student id), ("cohort",
tenant, cohort) or ("every", tenant, ""). Names mean something only in a tenant."""


def _student_key(tenant: str, student_id: str) -> Key:
    return ("student", tenant, student_id)


def _cohort_key(tenant: str, cohort: str) -> Key:
    return ("cohort", tenant, cohort)


def _every_cohort_key(tenant: str) -> Key:
    return ("every", tenant, "")


class Hub:
    """The local subscribers of one replica, indexed by (tenant, student), by (tenant,
    cohort), and by tenant for every cohort of it."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        # Per tenant, the seq of the last entry published: a tenant's entries arrive in
        # its seq order.
        self._positions: dict[str, int] = {}
        self._index: dict[Key, set[Subscription]] = {}

    def position(self, tenant: str) -> int:
        with self._lock:
            return self._positions.get(tenant, 0)

    def subscribe(self, audience: Audience, wake: Callable[[], None]) -> Subscription:
        """A subscription whose `wake` is called (on the publishing thread) after each
        entry offered to it: every entry of the audience's tenant published after
        `sub.start`."""
        with self._lock:
            start = self._positions.get(audience.tenant, 0)
            sub = Subscription(self, audience, self.capacity, wake, start)
            for key in _keys(audience):
                self._index.setdefault(key, set()).add(sub)
        return sub

    def start_at(self, tenant: str, position: int) -> None:
        """Where `tenant`'s log stood when this replica's listener started (before any
        of its entries was published), or where it skipped to."""
        with self._lock:
            self._positions[tenant] = max(self._positions.get(tenant, 0), position)

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            for key in _keys(sub.audience):
                members = self._index.get(key)
                if members is not None:
                    members.discard(sub)
                    if not members:
                        del self._index[key]

    def publish(self, entries: Sequence[Entry]) -> None:
        """Hand each entry, in its tenant's seq order, to the subscribers it is for (of
        its tenant only)."""
        for entry in entries:
            tenant = entry.tenant
            keys = []
            if entry.student_id is not None:
                keys.append(_student_key(tenant, entry.student_id))
            if entry.cohort is not None:
                keys += [_cohort_key(tenant, entry.cohort), _every_cohort_key(tenant)]
            with self._lock:
                self._positions[tenant] = max(self._positions.get(tenant, 0), entry.seq)
                targets: set[Subscription] = set()
                for key in keys:
                    targets |= self._index.get(key, set())
            for sub in targets:
                sub.offer(entry)

    def __len__(self) -> int:
        with self._lock:
            subs: set[Subscription] = set()
            for members in self._index.values():
                subs |= members
            return len(subs)


def _keys(audience: Audience) -> list[Key]:
    tenant = audience.tenant
    if audience.student_id is not None:
        return [_student_key(tenant, audience.student_id)]
    if audience.cohorts is None:
        return [_every_cohort_key(tenant)]
    return [_cohort_key(tenant, c) for c in audience.cohorts]


Replay = Callable[[Audience, int, int], Sequence[Entry]]
"""(audience, after seq, at most) -> the log's entries for the audience after that seq."""


async def follow(
    hub: Hub,
    audience: Audience,
    after: int | None,
    replay: Replay,
    *,
    heartbeat: float,
) -> AsyncGenerator[Entry | Beat, None]:
    """One stream: subscribe (every entry the hub publishes from now on is offered),
    then the log's entries after `after` up to where the hub stood (a stream without a
    cursor, `after` None, starts there and reads nothing), a Beat, then live entries,
    each once and in seq order, with a Beat after every `heartbeat` idle seconds.
    Raises StreamOverflowError when the subscriber falls too far behind. The log is
    read on worker threads. The subscription ends with the walk: closed, cancelled or
    failed."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:  # on the publishing thread
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
            loop.call_soon_threadsafe(ready.set)

    sub = hub.subscribe(audience, wake)
    try:
        if after is None or after >= sub.start:
            # Nothing to read: what follows `after` reaches the hub after we joined it
            # (entries up to `after` that it still brings are skipped below).
            position = sub.start if after is None else after
        else:
            position = after
            async for entry in _catch_up(sub, after, replay):
                position = entry.seq
                yield entry
        # A first heartbeat at once: the caller (and a proxy waiting for the first
        # byte) knows the stream is live, and holds a cursor before any update.
        yield Beat(position)
        while True:
            try:
                async with asyncio.timeout(heartbeat):  # a timer, not a task, per wait
                    await ready.wait()
            except TimeoutError:
                yield Beat(position)
                continue
            ready.clear()  # before draining: an entry offered after this wakes us again
            if sub.overflowed:
                raise StreamOverflowError(position, sub.capacity)
            for entry in sub.drain():
                if entry.seq > position:  # else: already sent by the replay
                    position = entry.seq
                    yield entry
    finally:
        sub.close()


async def _catch_up(sub: Subscription, after: int, replay: Replay) -> AsyncGenerator[Entry, None]:
    """The log's entries after `after`, until the live queue holds everything since."""
    position = after
    for _ in range(MAX_CATCH_UPS + 1):
        while True:
            page = await asyncio.to_thread(replay, sub.audience, position, REPLAY_PAGE)
            for entry in page:
                if entry.seq > position:
                    position = entry.seq
                    yield entry
            if len(page) < REPLAY_PAGE:
                break
        if not sub.overflowed:
            return
        sub.reset()  # the queue lost entries meanwhile: the log still has them
    raise StreamOverflowError(position, sub.capacity)
