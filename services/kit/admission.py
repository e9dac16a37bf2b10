"""Admission of streaming calls (docs/adr/0002): streams cannot starve unary calls.

The thread-pool server holds one pool thread per open stream. The pool has
`GRPC_MAX_WORKERS` threads for unary calls plus `GRPC_MAX_STREAMS` for streams, and
this gate admits at most `GRPC_MAX_STREAMS` streams at once, so unary calls always
have their own threads however many streams are open. On the asyncio server (notify,
docs/adr/0003) a stream costs a coroutine, and the lane is that service's own larger
maximum. Within the stream lane:
- one user holds at most `GRPC_STREAMS_PER_USER` streams (shared across replicas when
  the limiter is on Redis);
- callers without a token (health Watch on a service port) share a small lane of
  their own, so probes cannot take the lane from students.
Over a limit the call is refused at once with RESOURCE_EXHAUSTED and a retry hint.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from services.kit.auth import Principal
from services.kit.errors import ResourceExhausted, TooManyRequests
from services.kit.limits import InProcessLimiter, Lease, Limiter

ANONYMOUS_KEY = "anonymous"
STREAM_RETRY_SECONDS = 5.0


class StreamGate:
    def __init__(
        self,
        *,
        max_streams: int,
        per_user: int,
        anonymous: int,
        limiter: Limiter | None = None,
        service: str = "",
    ) -> None:
        self._lane = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams
        self._per_user = per_user
        self._anonymous = anonymous
        # Per-user leases may be shared across replicas; the anonymous lane is local.
        self._users = limiter or InProcessLimiter()
        self._local = InProcessLimiter()
        self._service = service

    @contextmanager
    def admit(self, principal: Principal | None) -> Iterator[None]:
        ticket = self.acquire(principal)
        try:
            yield
        finally:
            ticket.release()

    def acquire(self, principal: Principal | None) -> Ticket:
        """A place for one stream (release it when the stream ends), or the refusal."""
        if principal is None:
            lease = self._local.acquire(ANONYMOUS_KEY, self._anonymous)
            if lease is None:
                raise ResourceExhausted(
                    f"too many unauthenticated streams ({self._anonymous}) on this server",
                    metadata={"limit": str(self._anonymous)},
                    retry_after=STREAM_RETRY_SECONDS,
                )
        else:
            key = f"streams:{self._service}:{principal.user_key}"
            lease = self._users.acquire(key, self._per_user)
            if lease is None:
                raise TooManyRequests(
                    f"{principal.subject!r} already has {self._per_user} open streams here; "
                    "close one or retry later",
                    metadata={"limit": str(self._per_user), "user": principal.subject},
                    retry_after=STREAM_RETRY_SECONDS,
                )
        if not self._lane.acquire(blocking=False):
            lease.release()
            raise ResourceExhausted(
                f"this server holds its maximum of {self.max_streams} open streams; retry",
                metadata={"limit": str(self.max_streams)},
                retry_after=STREAM_RETRY_SECONDS,
            )
        return Ticket(self._lane, lease)


class Ticket:
    """One admitted stream's place in the lane and its user's lease."""

    def __init__(self, lane: threading.BoundedSemaphore, lease: Lease) -> None:
        self._lane = lane
        self._lease = lease
        self._released = False

    def release(self) -> None:
        """Idempotent."""
        if self._released:
            return
        self._released = True
        self._lane.release()
        self._lease.release()
