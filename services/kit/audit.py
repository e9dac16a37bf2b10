"""The audit trail: one record per authenticated call, written off the request path.

Every LearnFlow server records, once a call's outcome is known (`CallSteps` in
services/kit/interceptors.py, both server models), who made it (subject, role, home
tenant), the tenant it acted in, the method, the resource names and students its
request named, the request and trace ids, where it came from and its status code.
Health and reflection are exempt, and a call without a valid token is not recorded:
it has no tenant whose admins could read it (the server's log line has it).

Cost on the request path: `Recorder.record` keeps references to what the call already
holds (its outcome, principal, request message, ids) and the connection's address,
appended as one small record (`Pending`) to a bounded in-memory queue (about a
microsecond of the call's time); nothing is built, serialised or sent there, and it
never blocks or raises. One thread per process (`AuditTrail`) wakes every `INTERVAL`
seconds, turns what the queue holds into `learnflow.audit.v1.AuditEvent`s (the request
is walked for resource names then), built straight into one
`learnflow.events.v1.AuditBatch` per tenant and recording service, and hands each
batch to the bus as one message: topic `audit.events`, CloudEvents binary mode, keyed
by tenant. Each event carries its call's trace id; a batch is a message of its own, so
it starts its own trace. The audit service stores them (services/audit/).

Delivery: lossless while the bus takes records. A batch the bus refuses when it is
handed over is logged and its records counted
(`learnflow_audit_records{outcome="failed"}`). A broker that is away is the Kafka
producer's to retry: the idempotent producer holds batches until its delivery timeout,
and the bus logs each it finally could not deliver ("delivery failed"; the bus's
produce API has no per-record callback, so those are not in this counter). Should the
broker stay away so long that the producer's queue and then this queue fill
(`CAPACITY` records), further records are dropped and counted (`outcome="dropped"`)
rather than slow or fail any call. What is queued when a server
stops is handed to the bus (`AuditTrail.flush`, `close`), and the bus flushes its
producer when the runtime closes.

Which students and resources: the request message is walked (nested messages and
repeated fields, bounded) and every string that is a resource name
(`students/alice/mastery`, `cohorts/c1`, `exercises/e1`: a plural collection, then
ids and collections, no spaces) is a resource; `students/{id}...` names student `id`,
as does a bare id in a field named `student`, `student_id`, `students` or
`student_ids`. A new RPC is covered without code as long as its request names what it
touches that way (AIP-122).

Where records go (`Runtime.audit`): with KAFKA_BOOTSTRAP_SERVERS the trail is on. With
the in-process bus only a process that also serves the audit service turns it on
(`AuditTrail.enable`): records published to a private in-process bus would never be
read, only kept (the sandbox's isolated pods have no bus at all).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from learnflow.audit.v1 import audit_pb2
from learnflow.events.v1 import events_pb2
from prometheus_client import Counter

from services.kit.auth import TENANT_METADATA, Principal
from services.kit.bus import AUDIT_EVENTS, Bus, cloudevent_headers
from services.kit.interceptors import CallOutcome

log = logging.getLogger("learnflow.audit")

SOURCE_PREFIX = "//learnflow.dev/"
EVENT_NAME_PREFIX = "auditEvents/"

RECORDS = Counter(
    "learnflow_audit_records",
    "Audit records by outcome: published (handed to the bus), failed (the bus refused "
    "it), dropped (the queue was full or the trail closed).",
    ["outcome"],
)

# Metadata Envoy sets on calls through the gateway (use_remote_address: true): the
# client's address as Envoy saw it, and the forwarding chain (Envoy appends the hop it
# saw last).
EXTERNAL_ADDRESS_KEY = "x-envoy-external-address"
FORWARDED_FOR_KEY = "x-forwarded-for"

# -- what a request names -------------------------------------------------------------

MAX_NAME_LENGTH = 512
MAX_ID_LENGTH = 256
MAX_DEPTH = 4  # nested messages walked
MAX_NAMED = 32  # resources (and students) kept per call
STUDENT_FIELDS = frozenset({"student", "student_id", "students", "student_ids"})
STUDENTS_COLLECTION = "students"
_ID = r"[^/\s\x00-\x1f\x7f]+"
_COLLECTION = r"[a-z][a-zA-Z0-9]*"
# A plural collection and an id, then (collection, id) pairs, maybe ending in a
# singleton (`students/alice/mastery`, `cohorts/c1/summary`).
RESOURCE_NAME = re.compile(
    rf"{_COLLECTION}s/{_ID}(?:/{_COLLECTION}/{_ID})*(?:/{_COLLECTION})?", re.ASCII
)
_BARE_ID = re.compile(_ID, re.ASCII)
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE = "0" * 32


def is_resource_name(value: str) -> bool:
    return len(value) <= MAX_NAME_LENGTH and RESOURCE_NAME.fullmatch(value) is not None


def student_of(name: str) -> str | None:
    """The student a resource name belongs to (`students/{id}...`), if any."""
    collection, _, rest = name.partition("/")
    if collection != STUDENTS_COLLECTION:
        return None
    student = rest.partition("/")[0]
    return student if student and student != "-" else None


def _bare_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and value != "-" and _BARE_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Touched:
    """The resource names a request named and the students whose data they are."""

    resources: tuple[str, ...] = ()
    students: tuple[str, ...] = ()


_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_STUDENTS_PREFIX = STUDENTS_COLLECTION + "/"
_match_name = RESOURCE_NAME.fullmatch


def _text(field_name: str, value: str, resources: list[str], students: list[str]) -> None:
    if not value:
        return
    if len(value) <= MAX_NAME_LENGTH and _match_name(value) is not None:
        if value not in resources and len(resources) < MAX_NAMED:
            resources.append(value)
        if value.startswith(_STUDENTS_PREFIX):
            student = value[len(_STUDENTS_PREFIX) :].partition("/")[0]
            if student != "-" and student not in students and len(students) < MAX_NAMED:
                students.append(student)
    elif (
        field_name in STUDENT_FIELDS
        and _bare_id(value)
        and value not in students
        and len(students) < MAX_NAMED
    ):
        students.append(value)


def _walk(message: Message, depth: int, resources: list[str], students: list[str]) -> None:
    for field, value in message.ListFields():
        kind = field.type
        if kind == _STRING:
            if field.is_repeated:
                for item in value[:MAX_NAMED]:
                    _text(field.name, item, resources, students)
            else:
                _text(field.name, value, resources, students)
        elif kind == _MESSAGE and depth < MAX_DEPTH:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                continue  # maps hold labels and settings, not what a call touches
            for item in value[:MAX_NAMED] if field.is_repeated else (value,):
                _walk(item, depth + 1, resources, students)


def touched(request: object) -> Touched:
    """What `request` names (nothing for anything but a protobuf message: a client
    stream, or bytes that did not parse)."""
    resources, students = _names(request)
    return Touched(tuple(resources), tuple(students))


def _names(request: object) -> tuple[list[str], list[str]]:
    # `touched` without its frozen result: the trail's per-record path, a third cheaper.
    resources: list[str] = []
    students: list[str] = []
    if isinstance(request, Message):
        _walk(request, 0, resources, students)
    return resources, students


def trace_id(traceparent: str | None) -> str:
    """The trace id of a W3C `traceparent` ("" when absent or malformed)."""
    if not traceparent:
        return ""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match.group(1) == _NO_TRACE:
        return ""
    return match.group(1)


def client_address(forwarded: str | None, external: bool, peer: str) -> str:
    """Where a call came from: Envoy's external address, else the last hop of
    `x-forwarded-for` (the one the gateway appended; earlier ones are the client's
    say-so), else the connection's peer."""
    if forwarded:
        return _clean(forwarded if external else forwarded.rsplit(",", 1)[-1].strip(), 256)
    return _clean(peer, 256)


def _clean(text: str, limit: int) -> str:
    """Text a store can hold: no NUL, at most `limit` characters."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text[:limit]


# -- recording ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """What the publishing thread needs of one call: plain values copied on the request
    path. Nothing of the live call (its gRPC context) is kept past the call's end: the
    context belongs to the server, which may be stopped before the record is built."""

    source: str
    method: str
    request: object
    principal: Principal
    request_id: str
    traceparent: str | None
    code: str
    metadata: dict[str, str] | None
    started: float
    peer: str


def fill_event(event: audit_pb2.AuditEvent, pending: Pending, event_id: str) -> None:
    """Set an empty `event` to the record of one call (filled in place: the trail
    builds straight into its batch)."""
    principal = pending.principal
    started, peer = pending.started, pending.peer
    metadata = pending.metadata or {}
    forwarded = metadata.get(EXTERNAL_ADDRESS_KEY)
    external = forwarded is not None
    if not external:
        forwarded = metadata.get(FORWARDED_FOR_KEY)
    resources, students = _names(pending.request)
    named = metadata.get(TENANT_METADATA)
    if named and named != principal.tenant:
        # A refused attempt to act in another tenant: which one it was is part of what.
        resources.append(f"tenants/{_clean(named, MAX_ID_LENGTH)}")
    # Set field by field: half the cost of keyword construction.
    event.name = EVENT_NAME_PREFIX + event_id
    actor = event.actor
    actor.subject = _clean(principal.subject, MAX_ID_LENGTH)
    actor.role = principal.role.value
    actor.tenant = principal.home_tenant
    event.tenant = principal.tenant
    event.method = pending.method
    if resources:
        event.resources.extend(resources)
    if students:
        event.students.extend(students)
    event.request_id = _clean(pending.request_id, MAX_ID_LENGTH)
    if pending.traceparent:
        event.trace_id = trace_id(pending.traceparent)
    event.peer = client_address(forwarded, external, peer)
    event.code = pending.code
    stamp = event.event_time
    stamp.seconds = int(started)
    stamp.nanos = int((started - stamp.seconds) * 1e9)


class _Batch:
    """The records of one tenant and recording service gathered in one drain: one
    message on the topic (AuditBatch), kept well under the broker's 1 MB default."""

    MAX_EVENTS = 500
    MAX_BYTES = 512 * 1024  # one event is at most about 25 kB (MAX_NAMED names)

    __slots__ = ("message", "size", "source", "tenant")

    def __init__(self, tenant: str, source: str) -> None:
        self.tenant = tenant
        self.source = source
        self.message = events_pb2.AuditBatch()
        self.size = 0

    def full(self) -> bool:
        return self.size >= self.MAX_BYTES or len(self.message.audit_events) >= self.MAX_EVENTS


@dataclass
class AuditStats:
    published: int = 0
    failed: int = 0
    dropped: int = 0


class Recorder:
    """A server's handle on the process's trail: what `CallSteps` calls once per call
    of a non-exempt method (`services.kit.interceptors.CallRecorder`)."""

    __slots__ = ("_trail", "source")

    def __init__(self, trail: AuditTrail, source: str) -> None:
        self._trail = trail
        self.source = source  # the CloudEvents source: the recording service

    def record(self, method: str, request: object, outcome: CallOutcome, started: float) -> None:
        """Leave the call's record (request path: cheap, never raises). Whether there is
        anything to record: a call with a valid token (so a tenant to record it in)."""
        trail = self._trail
        if not trail.enabled:
            return
        try:
            call = outcome.call
            # The principal the call acted as; for a refused attempt to act in another
            # tenant, the verified caller in their own tenant (their admins see it).
            principal = None if call is None else call.principal or outcome.caller
            if call is None or principal is None:
                return  # no valid token: no tenant to record it in
            metadata = outcome.metadata
            forwarded = metadata and (
                FORWARDED_FOR_KEY in metadata or EXTERNAL_ADDRESS_KEY in metadata
            )
            peer = "" if forwarded else outcome.peer
            trail.submit(
                Pending(
                    self.source,
                    method,
                    request,
                    principal,
                    call.request_id,
                    call.traceparent,
                    outcome.code,
                    metadata,
                    time.time() - (time.perf_counter() - started),
                    peer,
                )
            )
        except Exception:  # the call never pays for its record
            trail.count_dropped("record failed", exc_info=True)

    def flush(self) -> None:
        self._trail.flush()


class AuditTrail:
    """One per process: the queue the servers' recorders fill and the thread that
    publishes it (module docstring)."""

    CAPACITY = 50_000
    INTERVAL = 0.05  # seconds between drains
    WAKE_AT = 1_000  # queued records that wake the thread before its interval
    LOG_EVERY = 10.0  # seconds between repeated warnings
    FLUSH_WAIT = 5.0  # seconds a stopping server waits for a drain in progress

    def __init__(
        self,
        bus: Callable[[], Bus],
        *,
        enabled: bool = True,
        capacity: int = CAPACITY,
        interval: float = INTERVAL,
    ) -> None:
        # How to get the bus (`Runtime.bus`, made on first use there: servers start
        # without waiting for the broker).
        self._bus = bus
        self.enabled = enabled
        self._capacity = capacity
        self._interval = interval
        self._queue: deque[Pending] = deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warned_at: dict[str, float] = {}
        # Event ids: a random prefix per trail and a counter (unique, and cheaper than
        # a uuid4 per record).
        self._id_prefix = os.urandom(10).hex()
        self._ids = itertools.count()
        self.stats = AuditStats()

    def enable(self) -> None:
        """Record from now on (a process serving the audit service on the in-process bus)."""
        self.enabled = True

    def recorder(self, service: str) -> Recorder:
        return Recorder(self, SOURCE_PREFIX + service)

    # -- the request path ------------------------------------------------------------

    def submit(self, pending: Pending) -> None:
        queue = self._queue
        if self._closed or len(queue) >= self._capacity:
            self.count_dropped("audit trail closed" if self._closed else "audit queue full")
            return
        queue.append(pending)
        if self._thread is None:
            self._start()
        elif len(queue) >= self.WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def count_dropped(self, why: str, *, exc_info: bool = False) -> None:
        self.stats.dropped += 1
        RECORDS.labels("dropped").inc()
        self._warn(why, exc_info=exc_info)

    # -- the publishing thread -------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()

    def _drain(self, wait: float = -1) -> int:
        """Publish what the queue holds, a batch per tenant; how many records were handed
        to the bus. `wait`: how long to wait for a drain already running (a producer
        whose own queue is full blocks until the broker takes records; a stopping server
        must not wait for it forever); -1: as long as it takes."""
        if not self._drain_lock.acquire(timeout=wait):
            self._warn("audit trail busy publishing; not flushed")
            return 0
        try:
            queue = self._queue
            if not queue:
                return 0
            try:
                bus = self._bus()
            except Exception:  # the bus cannot be reached yet: the records wait
                self._warn("audit bus unavailable; records wait", exc_info=True)
                return 0
            published = 0
            # One batch per tenant (the topic's key) and recording service (the source).
            open_batches: dict[tuple[str, str], _Batch] = {}
            while queue:
                pending = queue.popleft()
                key = (pending.principal.tenant, pending.source)
                batch = open_batches.get(key)
                if batch is None:
                    batch = open_batches[key] = _Batch(*key)
                if self._add(batch, pending) and batch.full():
                    published += self._publish(bus, open_batches.pop(key))
            for batch in open_batches.values():
                published += self._publish(bus, batch)
            if published:
                RECORDS.labels("published").inc(published)
            return published
        finally:
            self._drain_lock.release()

    def _add(self, batch: _Batch, pending: Pending) -> bool:
        event = batch.message.audit_events.add()
        try:
            fill_event(event, pending, f"{self._id_prefix}{next(self._ids):012x}")
            batch.size += event.ByteSize()
        except Exception:  # a record that cannot be built is counted, not the batch lost
            del batch.message.audit_events[-1]
            self._count_failed(1, "audit record not built")
            return False
        return True

    def _publish(self, bus: Bus, batch: _Batch) -> int:
        message = batch.message
        count = len(message.audit_events)
        if not count:
            return 0
        try:
            bus.publish_raw(
                AUDIT_EVENTS,
                batch.tenant,
                message.SerializeToString(),
                cloudevent_headers(message, source=batch.source, subject=batch.tenant),
            )
        except Exception:
            self._count_failed(count, "audit records not published")
            return 0
        self.stats.published += count
        return count

    def _count_failed(self, count: int, why: str) -> None:
        self.stats.failed += count
        RECORDS.labels("failed").inc(count)
        self._warn(why, exc_info=True)

    def _warn(self, message: str, *, exc_info: bool = False) -> None:
        """Log `message` at most every LOG_EVERY seconds (a broken bus or a full queue
        would otherwise log once per call)."""
        now = time.monotonic()
        last = self._warned_at.get(message)
        if last is not None and now - last < self.LOG_EVERY:
            return
        self._warned_at[message] = now
        log.warning(
            message,
            exc_info=exc_info,
            extra={
                "dropped": self.stats.dropped,
                "failed": self.stats.failed,
                "waiting": len(self._queue),
            },
        )

    # -- shutdown ----------------------------------------------------------------------

    def flush(self, wait: float = FLUSH_WAIT) -> int:
        """Hand what is queued to the bus now (a server stopping); how many."""
        return self._drain(wait)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and hand the rest to the bus (the runtime closing, before the
        bus flushes its producer). Records made afterwards are dropped."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._drain(timeout)
        if self._queue:
            log.error("audit records lost at shutdown", extra={"count": len(self._queue)})
