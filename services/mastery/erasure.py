"""EraseStudentData as a long-running operation (AIP-151), coordinated here (ADR 0009).

Starting an erasure buries the student (the kit's tombstones, so every consumer turns
away their late events from then on), then records the operation and the
`StudentErased` announcement in one transaction (the outbox relays it). Each service in
`ERASING_SERVICES` confirms on `student.erasure.confirmed`; each confirmation moves a
service from pending to confirmed in the operation's metadata, and the last one makes
the operation done, with what each service erased as its response.

The operation never names the student: its metadata and response name the pseudonym,
and its owner is recorded as the requester's pseudonym (a student may erase
themself, and may still follow the operation afterwards).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2

from services.kit.bus import (
    DEFAULT_STALL_SECONDS,
    MASTERY_UPDATED,
    STRUGGLE_DETECTED,
    STUDENT_ERASURE,
    STUDENT_ERASURE_CONFIRMED,
    Bus,
    ConsumerLoop,
    Envelope,
    PoisonEventError,
    event_tenant,
)
from services.kit.erasure import ERASING_SERVICES, Tombstones, pseudonym
from services.mastery.convert import packed, timestamp, unpack
from services.mastery.engine import MasteryEngine
from services.mastery.store import OutboxMessage

log = logging.getLogger("learnflow.mastery.erasure")

CONFIRMATIONS_GROUP = "mastery-erasure-confirmations"
OPERATION_PREFIX = "operations/erasure-"
# What the mastery engine announces per student, unsent announcements of which an
# erasure deletes.
ANNOUNCED_TOPICS = (MASTERY_UPDATED, STRUGGLE_DETECTED)


def owner(tenant: str, subject: str) -> str:
    """How an erasure's requester is recorded as its operation's owner."""
    return pseudonym(tenant, subject)


class Erasures:
    def __init__(
        self,
        engine: MasteryEngine,
        tombstones: Tombstones,
        services: Sequence[str] = ERASING_SERVICES,
    ) -> None:
        self._engine = engine
        self._tombstones = tombstones
        self._services = tuple(services)

    def preview(self, tenant: str, student_id: str) -> bytes:
        """What an erasure would wait for (its metadata, packed), starting nothing."""
        metadata = mastery_pb2.EraseStudentDataMetadata(
            pending_services=self._services,
            create_time=timestamp(datetime.now(UTC)),
            pseudonym=pseudonym(tenant, student_id),
        )
        return packed(metadata)

    def start(self, tenant: str, student_id: str, requested_by: str) -> str:
        """Erase a student of `tenant` everywhere; the operation's name."""
        name = f"{OPERATION_PREFIX}{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        self._tombstones.bury(tenant, student_id, name)
        metadata = mastery_pb2.EraseStudentDataMetadata(
            pending_services=self._services,
            create_time=timestamp(now),
            pseudonym=pseudonym(tenant, student_id),
        )
        announcement = events_pb2.StudentErased(
            student_id=student_id,
            requested_by=requested_by,
            request_time=timestamp(now),
            tenant=tenant,
            erasure=name,
        )
        self._engine.start_announced_operation(
            tenant,
            name,
            owner(tenant, requested_by),
            packed(metadata),
            OutboxMessage(
                STUDENT_ERASURE, student_id, announcement.SerializeToString(), tenant=tenant
            ),
        )
        log.info("erasure started", extra={"erasure": name, "tenant": tenant})
        return name

    def confirm(self, confirmed: events_pb2.StudentErasureConfirmed) -> bool:
        """Record one service's confirmation; False when the erasure is unknown here."""

        def change(
            raw_metadata: bytes, raw_response: bytes | None
        ) -> tuple[bytes, bytes | None, bool] | None:
            metadata = mastery_pb2.EraseStudentDataMetadata()
            unpack(raw_metadata, metadata)
            if confirmed.service not in metadata.pending_services:
                return None  # confirmed before (a redelivery), or not a service we wait for
            pending = [s for s in metadata.pending_services if s != confirmed.service]
            del metadata.pending_services[:]
            metadata.pending_services.extend(pending)
            metadata.confirmed_services.append(confirmed.service)
            response = mastery_pb2.EraseStudentDataResponse(pseudonym=metadata.pseudonym)
            if raw_response is not None:
                unpack(raw_response, response)
            response.services.add(
                service=confirmed.service,
                erased_record_count=confirmed.erased_record_count,
                erase_time=confirmed.erase_time,
            )
            response.erase_time.CopyFrom(confirmed.erase_time)
            return packed(metadata), packed(response), not pending

        return self._engine.change_operation(confirmed.tenant, confirmed.erasure, change)

    def erase_here(self, tenant: str, student_id: str) -> int:
        """The mastery engine's own part of an erasure."""
        return self._engine.erase_student(tenant, student_id, ANNOUNCED_TOPICS)


def confirmations_consumer(
    bus: Bus,
    erasures: Erasures,
    *,
    transient: tuple[type[BaseException], ...] = (),
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ConsumerLoop:
    """Records every service's confirmation on its erasure's operation."""

    def handle(batch: Sequence[Envelope]) -> None:
        for envelope in batch:
            record, message = envelope.record, envelope.message
            if not isinstance(message, events_pb2.StudentErasureConfirmed):
                raise PoisonEventError(f"{record.event_type} does not belong on {record.topic}")
            event_tenant(record, message.tenant)
            if not message.erasure.startswith(OPERATION_PREFIX) or not message.service:
                raise PoisonEventError(f"confirmation {record.event_id}: no erasure or service")
            if not erasures.confirm(message):
                raise PoisonEventError(f"confirmation of an unknown erasure {message.erasure}")

    return ConsumerLoop(
        bus,
        group_id=CONFIRMATIONS_GROUP,
        topics=[STUDENT_ERASURE_CONFIRMED],
        handler=handle,
        transient=transient,
        batch_size=100,
        stall_seconds=stall_seconds,
    )
