"""Wires the notify service: the `notify` schema, the consumer that makes alerts from
struggle.detected and mastery.updated, and the servicer.

StreamUpdates (the live stream) is not implemented yet: the servicer does not override
it, so the generated base answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from learnflow.notify.v1 import notify_pb2_grpc

from services.kit.bus import MASTERY_UPDATED, STRUGGLE_DETECTED
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.notify.consumer import alert_consumer
from services.notify.engine import NotifyEngine
from services.notify.servicer import NotifyServicer
from services.notify.store import AlertStore

MIGRATIONS = Path(__file__).parent / "migrations"
# SERVING while the alert consumer keeps up; readiness ("") is not affected.
CONSUMER_HEALTH = "learnflow.notify.consumer"


def build(
    runtime: Runtime,
    *,
    topics: tuple[str, ...] = (STRUGGLE_DETECTED, MASTERY_UPDATED),
    group_id: str | None = None,
) -> ServiceParts:
    """The notify server's parts. The consumer reads `topics` as `group_id` (default:
    the NOTIFY_CONSUMER_GROUP setting); tests may point both elsewhere."""
    db = runtime.database("notify", MIGRATIONS)
    bus = runtime.bus
    roster = runtime.roster
    engine = NotifyEngine(AlertStore(db), roster.cohort_of)
    consumer = alert_consumer(
        bus,
        engine,
        group_id=group_id or runtime.settings.notify_consumer_group,
        topics=topics,
        stall_seconds=runtime.settings.consumer_stall_seconds,
    )

    def register(server: grpc.Server) -> None:
        # StreamUpdates falls through to the generated base (UNIMPLEMENTED); its type
        # stubs call it abstract.
        servicer = NotifyServicer(engine, roster)  # type: ignore[abstract]
        notify_pb2_grpc.add_NotifyServiceServicer_to_server(servicer, server)

    return ServiceParts(
        register=register,
        checks={
            "postgres": db.check,
            "bus": bus.check,
            "consumer": consumer.health_check(CONSUMER_HEALTH),
        },
        roster=roster,
        start_background=[consumer.start],
        on_stop=[consumer.stop],
    )
