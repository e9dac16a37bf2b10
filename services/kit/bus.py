"""The event bus: Kafka, or an in-process log with the same semantics.

Events are CloudEvents in binary mode: the value is a protobuf message from
`learnflow.events.v1`, `ce_type` is its full name, the Kafka key is the student id.

Consumers are at-least-once. `ConsumerLoop` hands a batch to the handler and commits
offsets only after the handler returned (the handler commits its own database
transaction, recording (ce_source, ce_id) with the effect). Transient failures are
retried with bounded backoff; an event that can never succeed (undecodable, unknown
type, rejected by the handler) goes to `<topic>.dlq` and only then is its offset
committed. A consumer never stalls on one record, and never drops one silently.

Dead letters come in two forms, both on `<topic>.dlq`:

* The whole record (the usual case): the original key, value and headers, plus
  `dlq_original_topic`, `dlq_original_partition`, `dlq_original_offset`,
  `dlq_consumer_group`, `dlq_error_class`, `dlq_error_message` (at most 1,000
  characters) and `dlq_time` (ISO 8601, UTC).

* A reference, when the bus refuses the whole copy (`RecordRejectedError`: say a
  ~1 MB record that, with the headers above, exceeds the producer's
  `message.max.bytes` or the DLQ topic's `max.message.bytes`). It is small (a few KB
  at most) and carries:
    - the same `dlq_*` headers as a whole record, plus
    - `dlq_format: reference` (a whole record has no `dlq_format` header),
    - `dlq_original_size`: the original value's size in bytes,
    - `dlq_original_key`: the original key, cut to 256 characters (also the
      reference's own Kafka key, so it is partitioned like its source),
    - `dlq_copy_error_class`, `dlq_copy_error_message`: why the whole copy was refused,
    - the original's CloudEvents headers (`ce_*`, `traceparent`), each at most 256
      bytes (longer ones are left out), so it is found by `ce_id` like a whole copy;
    - `content-type: application/json`, and a JSON body (`REFERENCE_FORMAT`) with the
      same facts plus the original key, value and header sizes and header names.
  The original bytes stay on the source topic until its retention ends: the
  reference says exactly where.

If even a dead letter cannot be written (the broker is away, the DLQ topic refuses
everything), the loop retries with backoff and commits nothing: that is an outage,
not a poison record, and consumer health reports it.

Consumer health: `ConsumerLoop.health_check(name)` is a component check for
`services.kit.health.HealthMonitor` under its own health name. It fails when the
consumer is behind (it holds records it has not committed, or its assigned partitions
hold records beyond its position) and has committed nothing for `stall_seconds`
(60 s by default); it passes again once the consumer commits or catches up.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, cast

from google.protobuf.message import DecodeError, Message
from learnflow.events.v1 import events_pb2
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential,
)

from services.kit.auth import TENANT_ID
from services.kit.health import ComponentCheck
from services.kit.interceptors import maybe_current_call

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

log = logging.getLogger("learnflow.bus")

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"

# Topics.
PROGRESS_EVENTS = "progress.events"
STRUGGLE_DETECTED = "struggle.detected"
MASTERY_UPDATED = "mastery.updated"
LEARNING_RESPONSES = "learning.responses"
STUDENT_ERASURE = "student.erasure"
# Each service's confirmation that it erased a student (services/kit/erasure.py).
STUDENT_ERASURE_CONFIRMED = "student.erasure.confirmed"
# Requests for each service's part of a student's export (services/kit/export.py).
STUDENT_EXPORT = "student.export"
# Every authenticated call, recorded by the kit (services/kit/audit.py), keyed by tenant;
# the audit service stores it. Its payload is learnflow.events.v1.AuditBatch.
AUDIT_EVENTS = "audit.events"
TOPICS = (
    PROGRESS_EVENTS,
    STRUGGLE_DETECTED,
    MASTERY_UPDATED,
    LEARNING_RESPONSES,
    STUDENT_ERASURE,
    STUDENT_ERASURE_CONFIRMED,
    STUDENT_EXPORT,
    AUDIT_EVENTS,
)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPICS = (*TOPICS, *(dlq_topic(t) for t in TOPICS))

# Partitions per topic. progress.events carries the bulk of the traffic and is what
# mastery replicas share: up to 6 consumer processes. Others keep the default.
DEFAULT_PARTITIONS = 3
TOPIC_PARTITIONS = {PROGRESS_EVENTS: 6}

# ce_type -> message class, for every payload in learnflow.events.v1.
EVENT_TYPES: dict[str, type[Message]] = {
    descriptor.full_name: getattr(events_pb2, name)
    for name, descriptor in events_pb2.DESCRIPTOR.message_types_by_name.items()
}


@dataclass(frozen=True, slots=True)
class Record:
    """One message as it sits on a topic."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str]

    @property
    def event_id(self) -> str:
        return self.headers.get("ce_id", "")

    @property
    def source(self) -> str:
        return self.headers.get("ce_source", "")

    @property
    def event_type(self) -> str:
        return self.headers.get("ce_type", "")

    @property
    def subject(self) -> str:
        return self.headers.get("ce_subject", "")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded event: the record plus its protobuf payload."""

    record: Record
    message: Message


class PoisonEventError(Exception):
    """An event that can never be processed; it goes to the DLQ."""


def event_tenant(record: Record, tenant: str) -> str:
    """`tenant` (the one an event names: its student's, or its own), checked: every
    consumer dead-letters an event that names no tenant, for a student id is unique
    only within one."""
    if not tenant or not TENANT_ID.fullmatch(tenant):
        what = f" ({tenant[:80]!r} is not a tenant id)" if tenant else ""
        raise PoisonEventError(f"{record.event_type} {record.event_id}: no tenant{what}")
    return tenant


class DecodeFailureError(PoisonEventError):
    pass


class RecordRejectedError(Exception):
    """The bus refuses this record as it is (too large, invalid): sending the same
    bytes again can never succeed. (A broker that is away raises something else.)"""


class ConsumerStalledError(Exception):
    """A consumer is behind and has committed nothing for too long."""


DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's message.max.bytes default
DEFAULT_STALL_SECONDS = 60.0
REFERENCE_FORMAT = "learnflow.dlq.reference.v1"
_REFERENCE_TEXT_LIMIT = 256  # characters of a key or header carried by a reference
_REFERENCE_HEADER_NAMES_LIMIT = 50


def record_size(key: str | None, value: bytes, headers: dict[str, str]) -> int:
    """Bytes of a record's key, value and headers (without the protocol's overhead)."""
    header_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())
    return len(key.encode() if key is not None else b"") + len(value) + header_bytes


def new_traceparent() -> str:
    """A W3C traceparent for a new trace (sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def cloudevent_headers(
    message: Message,
    *,
    source: str,
    subject: str,
    event_id: str | None = None,
    traceparent: str | None = None,
    time: datetime | None = None,
) -> dict[str, str]:
    """`time`: when the event happened (default now)."""
    return _headers(message.DESCRIPTOR.full_name, source, subject, event_id, traceparent, time=time)


def _headers(
    event_type: str,
    source: str,
    subject: str,
    event_id: str | None,
    traceparent: str | None,
    *,
    time: datetime | None = None,
) -> dict[str, str]:
    moment = time or datetime.now(UTC)
    return {
        "ce_specversion": SPEC_VERSION,
        "ce_id": event_id or uuid.uuid4().hex,
        "ce_source": source,
        "ce_type": event_type,
        "ce_time": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "ce_subject": subject,
        "content-type": CONTENT_TYPE,
        # The trace crosses Kafka: consumers continue the publisher's trace.
        "traceparent": traceparent or new_traceparent(),
    }


def decode(record: Record) -> Envelope:
    """Decode a record's payload by its ce_type; raises DecodeFailureError when impossible."""
    missing = [
        h for h in ("ce_id", "ce_source", "ce_type", "ce_specversion") if not record.headers.get(h)
    ]
    if missing:
        raise DecodeFailureError(f"missing CloudEvents headers: {', '.join(missing)}")
    if record.headers.get("content-type", CONTENT_TYPE) != CONTENT_TYPE:
        raise DecodeFailureError(f"unsupported content-type {record.headers.get('content-type')!r}")
    message_class = EVENT_TYPES.get(record.event_type)
    if message_class is None:
        raise DecodeFailureError(f"unknown event type {record.event_type!r}")
    message = message_class()
    try:
        message.ParseFromString(record.value)
    except DecodeError as exc:
        raise DecodeFailureError(f"undecodable {record.event_type} payload: {exc}") from None
    return Envelope(record, message)


class ConsumerClient(Protocol):
    def poll(self, max_records: int, timeout: float) -> list[Record]: ...
    def commit(self, records: Sequence[Record]) -> None: ...

    def lag(self) -> int | None:
        """Records on this consumer's partitions beyond its position; None while it
        cannot tell (not assigned yet, nothing fetched yet)."""
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str]
    ) -> None: ...
    def flush(self, timeout: float = 10.0) -> None: ...

    def deliver(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        headers: dict[str, str],
        timeout: float = 10.0,
    ) -> None:
        """Publish one record and wait until the bus holds it. Raises
        RecordRejectedError when the record itself is refused; anything else
        (TimeoutError, KafkaException) means the bus could not take it now."""
        ...

    def consumer(self, group_id: str, topics: Sequence[str]) -> ConsumerClient: ...
    def ensure_topics(self, topics: Iterable[str]) -> None: ...
    def check(self) -> None: ...
    def close(self) -> None: ...


class Publisher:
    """Publishes protobuf events as CloudEvents, keyed by student id."""

    def __init__(self, bus: Bus, source: str) -> None:
        self._bus = bus
        self.source = source

    def publish(
        self, topic: str, message: Message, *, key: str, event_id: str | None = None
    ) -> str:
        return self.publish_serialized(
            topic,
            message.DESCRIPTOR.full_name,
            message.SerializeToString(),
            key=key,
            event_id=event_id,
        )

    def publish_serialized(
        self, topic: str, event_type: str, payload: bytes, *, key: str, event_id: str | None = None
    ) -> str:
        """`publish` for a payload already serialized (an outbox row) of `event_type`
        (a message's full name)."""
        call = maybe_current_call()
        traceparent = call.traceparent if call is not None else None
        headers = _headers(event_type, self.source, key, event_id, traceparent)
        self._bus.publish_raw(topic, key, payload, headers)
        return headers["ce_id"]


# -- the consumer loop --------------------------------------------------------------

BatchHandler = Callable[[Sequence[Envelope]], None]


@dataclass
class ConsumerStats:
    processed: int = 0
    dead_lettered: int = 0  # whole records and references
    referenced: int = 0  # dead-lettered as a reference (the whole copy was refused)
    retries: int = 0
    batches: int = 0
    rejoins: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class ConsumerLoop:
    """Runs a batch handler over topics with at-least-once delivery and a DLQ."""

    def __init__(
        self,
        bus: Bus,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: BatchHandler,
        transient: tuple[type[BaseException], ...] = (),
        batch_size: int = 500,
        poll_timeout: float = 0.2,
        max_backoff: float = 5.0,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ) -> None:
        self._bus = bus
        self._group_id = group_id
        self._topics = tuple(topics)
        self._handler = handler
        self._transient = transient
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._max_backoff = max_backoff
        self._stall_seconds = stall_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ConsumerClient | None = None
        self._last_error: BaseException | None = None
        # Progress, for health: since when the loop has been behind (holding records it
        # has not committed, or seeing records beyond its position) without committing.
        self._behind_since: float | None = None
        self._lag: int | None = None
        self.stats = ConsumerStats()

    def start(self) -> None:
        self._client = self._bus.consumer(self._group_id, self._topics)
        self._thread = threading.Thread(
            target=self._run, name=f"consumer-{self._group_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand; the loop's thread closes its own consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("consumer still busy at stop", extra={"group": self._group_id})

    # -- health -------------------------------------------------------------------

    def health_check(self, health_name: str) -> ComponentCheck:
        """This consumer's progress as a component check reported under `health_name`
        (e.g. `learnflow.mastery.consumer`); it never changes the server's readiness."""
        return ComponentCheck(health_name, self.check_progress)

    def check_progress(self) -> None:
        """Raises ConsumerStalledError when the consumer is behind and has committed
        nothing for `stall_seconds`, or when its thread died."""
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            raise ConsumerStalledError(f"consumer {self._group_id}: its thread is not running")
        since = self._behind_since
        if since is None:
            return
        stalled_for = time.monotonic() - since
        if stalled_for >= self._stall_seconds:
            lag = "unknown" if self._lag is None else str(self._lag)
            raise ConsumerStalledError(
                f"consumer {self._group_id}: records waiting and no offset committed for "
                f"{stalled_for:.0f}s (lag {lag}, last error: {self._last_error!r:.300})"
            )

    def _behind(self) -> None:
        if self._behind_since is None:
            self._behind_since = time.monotonic()

    def _progressed(self) -> None:
        self._behind_since = None

    # -- the loop -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._run_once()
        finally:
            if self._client is not None:
                self._client.close()

    def _run_once(self) -> None:
        assert self._client is not None
        try:
            records = self._client.poll(self._batch_size, self._poll_timeout)
            if records:
                self._behind()
                self.process(records)
            else:
                self._measure_lag()
        except Exception as exc:
            if self._stop.is_set():
                # Stopping mid-retry (a transient handler error, an undeliverable dead
                # letter): nothing was committed, so the batch is redelivered to
                # whoever consumes next.
                return
            if isinstance(exc, self._transient):
                return
            # Poll or commit failed. Committing later batches would skip this one, so
            # rejoin the group: the new consumer resumes at the last committed offset
            # and the batch is delivered again. (Still behind: health keeps counting.)
            self._last_error = exc
            self.stats.rejoins += 1
            log.exception("consumer failed; rejoining the group", extra={"group": self._group_id})
            self._client.close()
            self._stop.wait(1.0)
            self._client = self._bus.consumer(self._group_id, self._topics)

    def _measure_lag(self) -> None:
        assert self._client is not None
        try:
            lag = self._client.lag()
        except Exception:  # health is advisory: never rejoin over it
            log.debug("consumer lag unknown", exc_info=True, extra={"group": self._group_id})
            lag = None
        if lag is None:
            return  # cannot tell (rebalancing, nothing fetched yet): keep what we knew
        self._lag = lag
        if lag > 0:
            self._behind()
        else:
            self._progressed()  # caught up: nothing waits

    def process(self, records: Sequence[Record]) -> None:
        """Handle one polled batch; returns once every record is handled or dead-lettered."""
        assert self._client is not None
        good: list[Envelope] = []
        for record in records:
            try:
                good.append(decode(record))
            except DecodeFailureError as exc:
                self._dead_letter(record, exc)
        if good and not self._with_retry(lambda: self._handler(good)):
            # The batch failed for a non-transient reason: find the culprit one by one.
            for envelope in good:
                if not self._with_retry(lambda e=envelope: self._handler([e])):  # type: ignore[misc]
                    self._dead_letter(
                        envelope.record, self._last_error or PoisonEventError("unknown")
                    )
        self._client.commit(records)
        self._progressed()
        self.stats.batches += 1
        self.stats.processed += len(records)

    def _retrying(self, retry_on: Callable[[BaseException], bool]) -> Retrying:
        """Exponential backoff (capped at max_backoff) for as long as it takes, until
        the loop stops; then the last error is raised and nothing is committed."""
        return Retrying(
            retry=retry_if_exception(retry_on),
            wait=wait_exponential(multiplier=0.05, max=self._max_backoff),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep_unless_stopped,
            before_sleep=self._on_retry,
            reraise=True,
        )

    def _with_retry(self, work: Callable[[], None]) -> bool:
        """True when `work` succeeded. Transient errors are retried (see _retrying)."""
        try:
            self._retrying(lambda exc: isinstance(exc, self._transient))(work)
            return True
        except self._transient:
            raise
        except Exception as exc:  # poison, or an error that retrying cannot fix
            self._last_error = exc
            self.stats.errors[type(exc).__name__] += 1
            return False

    def _sleep_unless_stopped(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a stop request ends the backoff at once

    def _on_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._last_error = error
        self.stats.retries += 1
        self.stats.errors[type(error).__name__] += 1
        log.warning(
            "transient failure, retrying",
            extra={
                "group": self._group_id,
                "error": repr(error),
                "attempt": state.attempt_number,
                "delay_s": round(state.upcoming_sleep, 3),
            },
        )

    # -- dead letters -------------------------------------------------------------

    def _dead_letter(self, record: Record, error: BaseException) -> None:
        """Write `record` to its DLQ whole or, when the bus refuses the whole copy, as a
        reference. Returns only once one of them is written (retrying meanwhile)."""
        topic = dlq_topic(record.topic)
        facts = self._dlq_facts(record, error)
        try:
            # Whatever fails here but a refusal of this very record is an outage: retry.
            self._retrying(lambda exc: not isinstance(exc, RecordRejectedError))(
                self._bus.deliver, topic, record.key, record.value, {**record.headers, **facts}
            )
            form = "record"
        except RecordRejectedError as refused:
            key, value, headers = self.reference(record, facts, refused)
            # A reference is small: if even it cannot be written, retry until it is.
            self._retrying(lambda exc: isinstance(exc, Exception))(
                self._bus.deliver, topic, key, value, headers
            )
            self.stats.referenced += 1
            form = "reference"
        self.stats.dead_lettered += 1
        log.error(
            "event dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "size": len(record.value),
                "dlq_format": form,
                "error_class": type(error).__name__,
                "error": str(error)[:1000],
            },
        )

    def _dlq_facts(self, record: Record, error: BaseException) -> dict[str, str]:
        return {
            "dlq_original_topic": record.topic,
            "dlq_original_partition": str(record.partition),
            "dlq_original_offset": str(record.offset),
            "dlq_consumer_group": self._group_id,
            "dlq_error_class": type(error).__name__,
            "dlq_error_message": str(error)[:1000],
            "dlq_time": datetime.now(UTC).isoformat(),
        }

    @staticmethod
    def reference(
        record: Record, facts: dict[str, str], refused: BaseException
    ) -> tuple[str | None, bytes, dict[str, str]]:
        """The key, value and headers of a reference to `record` (module docstring)."""
        key = record.key[:_REFERENCE_TEXT_LIMIT] if record.key is not None else None
        carried = {
            name: value
            for name, value in record.headers.items()
            if (name.startswith("ce_") or name == "traceparent")
            and len(name.encode()) + len(value.encode()) <= _REFERENCE_TEXT_LIMIT
        }
        copy_error = {
            "dlq_copy_error_class": type(refused).__name__,
            "dlq_copy_error_message": str(refused)[:1000],
        }
        headers = {
            **carried,
            **facts,
            "dlq_format": "reference",
            "dlq_original_size": str(len(record.value)),
            **({"dlq_original_key": key} if key is not None else {}),
            **copy_error,
            "content-type": "application/json",
        }
        names = sorted(record.headers)
        body = {
            "format": REFERENCE_FORMAT,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": key,
            "key_truncated": record.key is not None and key != record.key,
            "key_size": len(record.key.encode()) if record.key is not None else 0,
            "value_size": len(record.value),
            "headers_size": sum(
                len(k.encode()) + len(v.encode()) for k, v in record.headers.items()
            ),
            "header_names": [n[:_REFERENCE_TEXT_LIMIT] for n in names][
                :_REFERENCE_HEADER_NAMES_LIMIT
            ],
            "header_count": len(names),
            "consumer_group": facts["dlq_consumer_group"],
            "error": {"class": facts["dlq_error_class"], "message": facts["dlq_error_message"]},
            "copy_error": {
                "class": copy_error["dlq_copy_error_class"],
                "message": copy_error["dlq_copy_error_message"],
            },
            "time": facts["dlq_time"],
        }
        return key, json.dumps(body, separators=(",", ":")).encode(), headers


# -- in-process bus -----------------------------------------------------------------


class InProcessBus:
    """One partition per topic, committed offsets per consumer group, in memory.

    Same delivery semantics as Kafka for one process: records stay until the group
    commits past them, so a handler failure means redelivery, never loss; a record
    bigger than `max_message_bytes` (key, value and headers; None: no limit) is refused
    with RecordRejectedError, as the Kafka producer refuses it.
    """

    def __init__(self, max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._logs: dict[str, list[Record]] = defaultdict(list)
        self._committed: dict[tuple[str, str], int] = defaultdict(int)
        self._cond = threading.Condition()
        self._max_message_bytes = max_message_bytes

    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str]
    ) -> None:
        size = record_size(key, value, headers)
        if self._max_message_bytes is not None and size > self._max_message_bytes:
            raise RecordRejectedError(
                f"{size} bytes exceed the bus's limit of {self._max_message_bytes} on {topic}"
            )
        with self._cond:
            log_ = self._logs[topic]
            log_.append(Record(topic, 0, len(log_), key, value, dict(headers)))
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        return None

    def deliver(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        headers: dict[str, str],
        timeout: float = 10.0,
    ) -> None:
        self.publish_raw(topic, key, value, headers)  # held as soon as it returns

    def ensure_topics(self, topics: Iterable[str]) -> None:
        with self._cond:
            for topic in topics:
                self._logs.setdefault(topic, [])

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None

    def records(self, topic: str) -> list[Record]:
        with self._cond:
            return list(self._logs[topic])

    def consumer(self, group_id: str, topics: Sequence[str]) -> ConsumerClient:
        return _InProcessConsumer(self, group_id, tuple(topics))


class _InProcessConsumer:
    def __init__(self, bus: InProcessBus, group_id: str, topics: tuple[str, ...]) -> None:
        self._bus = bus
        self._group = group_id
        self._topics = topics
        # Delivered but not yet committed: the next poll continues after them.
        self._position = {t: bus._committed[(group_id, t)] for t in topics}

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        deadline = time.monotonic() + timeout
        bus = self._bus
        with bus._cond:
            while True:
                batch: list[Record] = []
                for topic in self._topics:
                    start = self._position[topic]
                    batch.extend(bus._logs[topic][start : start + max_records - len(batch)])
                    if len(batch) >= max_records:
                        break
                if batch:
                    for record in batch:
                        self._position[record.topic] = record.offset + 1
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                bus._cond.wait(remaining)

    def commit(self, records: Sequence[Record]) -> None:
        with self._bus._cond:
            for record in records:
                key = (self._group, record.topic)
                self._bus._committed[key] = max(self._bus._committed[key], record.offset + 1)

    def lag(self) -> int:
        with self._bus._cond:
            return sum(
                max(0, len(self._bus._logs[topic]) - self._position[topic])
                for topic in self._topics
            )

    def close(self) -> None:
        return None


# -- Kafka --------------------------------------------------------------------------


class KafkaBus:
    def __init__(self, bootstrap_servers: str, client_id: str = "learnflow") -> None:
        from confluent_kafka import Producer

        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                # Idempotent producer: retries never duplicate or reorder within a partition.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        self._delivery_errors: list[str] = []

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))
            log.error("delivery failed", extra={"error": str(err)})

    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str]
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key.encode() if key is not None else None,
                    headers=[(k, v.encode()) for k, v in headers.items()],
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
        self._producer.poll(0)

    def deliver(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        headers: dict[str, str],
        timeout: float = 10.0,
    ) -> None:
        from confluent_kafka import KafkaError, KafkaException

        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            outcome.append(err)
            done.set()

        try:
            self._producer.produce(
                topic,
                value=value,
                key=key.encode() if key is not None else None,
                headers=[(k, v.encode()) for k, v in headers.items()],
                on_delivery=on_delivery,
            )
        except KafkaException as exc:  # refused before it left: too large, invalid
            error = exc.args[0] if exc.args else None
            if _rejects_record(error):
                raise RecordRejectedError(f"{_describe(error)} ({topic})") from exc
            raise
        except BufferError:
            raise TimeoutError(f"the producer's queue is full; {topic} not written") from None
        deadline = time.monotonic() + timeout
        while not done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"a record for {topic} not delivered within {timeout}s")
            self._producer.poll(min(remaining, 0.1))  # serves delivery callbacks
        error = outcome[0]
        if error is not None:  # refused by the broker, or given up on
            if _rejects_record(error):
                raise RecordRejectedError(f"{_describe(error)} ({topic})")
            raise KafkaException(error)

    def flush(self, timeout: float = 10.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} events not delivered within {timeout}s")
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise RuntimeError(f"event delivery failed: {errors[0]}")

    def ensure_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create missing topics with `partitions` (default: TOPIC_PARTITIONS, else
        DEFAULT_PARTITIONS), and grow existing ones that have fewer. Growing moves keys
        to other partitions from then on; every consumer here is order-independent per
        key or keyed by event id, so that costs nothing but a rebalance."""
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewPartitions, NewTopic

        def wanted_count(topic: str) -> int:
            return partitions or TOPIC_PARTITIONS.get(topic, DEFAULT_PARTITIONS)

        admin = AdminClient({"bootstrap.servers": self._bootstrap})
        existing = admin.list_topics(timeout=10).topics
        create = [NewTopic(t, num_partitions=wanted_count(t)) for t in topics if t not in existing]
        grow = [
            NewPartitions(t, wanted_count(t))
            for t in topics
            if t in existing and len(existing[t].partitions) < wanted_count(t)
        ]
        for topic, done in (admin.create_topics(create) if create else {}).items():
            try:
                done.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("topic created", extra={"topic": topic})
        for topic, done in (admin.create_partitions(grow) if grow else {}).items():
            try:
                done.result()
            except Exception as exc:  # another process grew it first
                if "INVALID_PARTITIONS" not in str(exc):
                    raise
            log.info("topic partitions added", extra={"topic": topic})

    def check(self) -> None:
        self._producer.list_topics(timeout=2.0)

    def close(self) -> None:
        self._producer.flush(10)

    def consumer(self, group_id: str, topics: Sequence[str]) -> ConsumerClient:
        return _KafkaConsumer(self._bootstrap, group_id, topics)


# Produce errors that mean "never this record" rather than "not now" (librdkafka codes):
# MSG_SIZE_TOO_LARGE (from the producer's own check, or the broker's), RECORD_LIST_TOO_LARGE
# and INVALID_RECORD (the broker's validation, e.g. no key for a compacted topic).
_REJECTED_CODES = frozenset({10, 18, 87})


def _rejects_record(error: object) -> bool:
    from confluent_kafka import KafkaError

    return isinstance(error, KafkaError) and error.code() in _REJECTED_CODES


def _describe(error: object) -> str:
    from confluent_kafka import KafkaError

    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return repr(error)


class _KafkaConsumer:
    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str]) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                # Which process a group member is, for operators (and the benchmark).
                "client.id": f"{socket.gethostname()}-{os.getpid()}",
                "enable.auto.commit": False,
                "on_commit": _log_failed_commit,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "fetch.wait.max.ms": 50,
                # librdkafka prefetches up to 100,000 messages per partition by default:
                # ~100 MB of RSS with a backlog. A batch ahead is enough (mastery takes
                # 8,000 a batch; a consumer of its has 3 partitions).
                "queued.min.messages": 5_000,
            }
        )
        # Partitions assigned to this member; None until the group assigns (or while it
        # rebalances), when its lag cannot be told.
        self._assigned: list[TopicPartition] | None = None
        self._consumer.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        self._assigned = list(partitions)

    def _on_revoke(self, _consumer: object, _partitions: list[TopicPartition]) -> None:
        self._assigned = None

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        # Wait for the first message only, then take what is already fetched: waiting for
        # a full batch would add the whole timeout to every event's latency at low rates.
        messages = self._consumer.consume(num_messages=1, timeout=timeout)
        if messages and max_records > 1:
            messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        records: list[Record] = []
        append = records.append  # per message: this loop runs 10,000 times a second
        for msg in messages:
            if msg.error() is not None:
                log.warning("consumer error", extra={"error": str(msg.error())})
                continue
            key = msg.key()
            append(
                Record(
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                    None if key is None else _text(key),
                    _bytes(msg.value()),
                    decode_headers(msg.headers()),
                )
            )
        return records

    def commit(self, records: Sequence[Record]) -> None:
        from confluent_kafka import TopicPartition

        latest: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            latest[key] = max(latest.get(key, -1), record.offset)
        if latest:
            # Not waiting for the broker's answer: it took a fifth of a mastery lane's
            # time at 1,000 events/s. A commit that fails is covered by the next one
            # (offsets are absolute); if none follows, the records are delivered again,
            # which every consumer here handles (at-least-once, idempotent handlers).
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in latest.items()],
                asynchronous=True,
            )

    def lag(self) -> int | None:
        """Records beyond this consumer's position on its partitions, from the high
        watermarks its fetches brought (no broker round trip)."""
        assigned = self._assigned
        if assigned is None:
            return None
        if not assigned:
            return 0  # the group gave this member nothing to consume
        try:
            total = 0
            for tp in self._consumer.position(assigned):
                watermarks = self._consumer.get_watermark_offsets(tp, cached=True)
                if watermarks is None or watermarks[1] < 0:
                    return None  # no fetch answered for this partition yet
                if tp.offset >= 0:
                    total += max(0, watermarks[1] - tp.offset)
                # else: fetched, yet nothing handed out since the assignment, and the poll
                # that came back empty would have handed out what it fetched: caught up.
        except Exception:  # a closed or failing consumer: not known
            return None
        return total

    def close(self) -> None:
        self._consumer.close()


def _log_failed_commit(error: object, partitions: object) -> None:
    if error is not None:
        log.warning("offset commit failed", extra={"error": str(error)})


def decode_headers(raw: object) -> dict[str, str]:
    """Kafka headers (confluent-kafka: a list of (key, bytes) pairs, or None) as text."""
    pairs = cast(list[tuple[str, str | bytes | None]], raw or [])
    return {
        key: value.decode(errors="replace") if isinstance(value, bytes) else _text(value)
        for key, value in pairs
    }


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value
