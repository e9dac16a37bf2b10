"""Wires the notify service: the `notify` schema, the consumer that makes alerts from
struggle.detected and mastery.updated, the consumer that writes students' answers and
mastery changes to the update log, the replica's listener and hub for live streams,
and the servicer. Everything is scoped by tenant (migrations/0003_tenants.sql); the
roster is asked `cohort_of(tenant, student_id)`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.audit import touched
from services.kit.bus import LEARNING_RESPONSES, MASTERY_UPDATED, STRUGGLE_DETECTED
from services.kit.export import Records
from services.kit.retention import Purge, older_than_window
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.notify.consumer import alert_consumer, updates_consumer
from services.notify.convert import alert_update, decode_update
from services.notify.engine import NotifyEngine
from services.notify.hub import Hub
from services.notify.servicer import NotifyServicer, Streams
from services.notify.store import AlertStore
from services.notify.updates import UpdateLog

MIGRATIONS = Path(__file__).parent / "migrations"
# SERVING while the consumers keep up; readiness ("") is not affected.
CONSUMER_HEALTH = "learnflow.notify.consumer"
UPDATES_CONSUMER_HEALTH = "learnflow.notify.updates"


def build(
    runtime: Runtime,
    *,
    topics: tuple[str, ...] = (STRUGGLE_DETECTED, MASTERY_UPDATED),
    group_id: str | None = None,
    update_topics: tuple[str, ...] = (LEARNING_RESPONSES, MASTERY_UPDATED),
    updates_group_id: str | None = None,
    servicer: type[NotifyServicer] = NotifyServicer,
) -> ServiceParts:
    """The notify server's parts. The alert consumer reads `topics` as `group_id`
    (default: NOTIFY_CONSUMER_GROUP), the updates consumer `update_topics` as
    `updates_group_id` (default: NOTIFY_UPDATES_CONSUMER_GROUP); tests may point them
    elsewhere, and a benchmark may serve its baseline `servicer`."""
    settings = runtime.settings
    db = runtime.database("notify", MIGRATIONS)
    bus = runtime.bus
    roster = runtime.roster
    hub = Hub(capacity=settings.notify_stream_queue)
    log = UpdateLog(
        db,
        hub,
        decode_update,
        retention=timedelta(hours=settings.notify_update_retention_hours),
    )
    alerts = AlertStore(db)
    engine = NotifyEngine(alerts, roster.cohort_of, announce=alert_update)

    def names_student(student_id: str) -> Callable[[bytes], bool]:
        def names(payload: bytes) -> bool:
            return student_id in touched(notify_pb2.Update.FromString(payload)).students

        return names

    def erase(tenant: str, student_id: str) -> int:
        return alerts.erase_student(tenant, student_id, names_student(student_id))

    def gather(tenant: str, student_id: str) -> Records:
        return alerts.export_student(tenant, student_id, names_student(student_id))

    # The erased students' tombstones (kit schema `erasure`), which the store and the
    # update log ask inside their transactions (ADR 0009), must exist.
    runtime.tombstones  # noqa: B018
    consumer = alert_consumer(
        bus,
        engine,
        group_id=group_id or settings.notify_consumer_group,
        topics=topics,
        stall_seconds=settings.consumer_stall_seconds,
    )
    updates = updates_consumer(
        bus,
        log,
        roster.cohort_of,
        group_id=updates_group_id or settings.notify_updates_consumer_group,
        topics=update_topics,
        stall_seconds=settings.consumer_stall_seconds,
    )
    streams = Streams(hub=hub, log=log, heartbeat_seconds=settings.notify_heartbeat_seconds)

    def register(server: grpc.aio.Server) -> None:
        notify_pb2_grpc.add_NotifyServiceServicer_to_server(
            servicer(engine, roster, streams), server
        )

    parts = ServiceParts(
        register=register,
        checks={
            "postgres": db.check,
            "bus": bus.check,
            "listener": log.check,
            "consumer": consumer.health_check(CONSUMER_HEALTH),
            "updates": updates.health_check(UPDATES_CONSUMER_HEALTH),
        },
        roster=roster,
        limiter=runtime.limiter,
        asynchronous=True,
        max_streams=settings.notify_max_streams,
        start_background=[log.start, consumer.start, updates.start],
        on_stop=[consumer.stop, updates.stop, log.stop],
    )
    return runtime.with_student_data(parts, "notify", erase=erase, gather=gather)


def retention(runtime: Runtime) -> Purge:
    """Alerts resolved longer ago than the window."""
    store = AlertStore(runtime.database("notify", MIGRATIONS))
    return older_than_window(runtime.settings, store.purge)
