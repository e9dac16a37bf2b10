"""Wires the audit service: the `audit` schema, the consumer that stores what every
server records on audit.events, its part of an erasure (pseudonymising the trail), and
the servicer that lists it."""

from __future__ import annotations

from pathlib import Path

import grpc
from learnflow.audit.v1 import audit_pb2_grpc

from services.audit.consumer import audit_consumer
from services.audit.servicer import AuditServicer
from services.audit.store import AuditStore
from services.kit.bus import AUDIT_EVENTS
from services.kit.erasure import pseudonym
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts

MIGRATIONS = Path(__file__).parent / "migrations"
# Replicas share it: each event is stored once.
CONSUMER_GROUP = "audit-trail"
# SERVING while the consumer keeps up; readiness ("") is not affected.
CONSUMER_HEALTH = "learnflow.audit.consumer"


def build(
    runtime: Runtime, *, topic: str = AUDIT_EVENTS, group_id: str = CONSUMER_GROUP
) -> ServiceParts:
    """The audit server's parts. Tests may point the consumer at another topic or group."""
    db = runtime.database("audit", MIGRATIONS)
    bus = runtime.bus
    store = AuditStore(db)
    tombstones = runtime.tombstones
    consumer = audit_consumer(
        bus,
        store,
        group_id=group_id,
        topics=(topic,),
        stall_seconds=runtime.settings.consumer_stall_seconds,
        tombstones=tombstones,
    )
    # On the in-process bus the trail is read here, in this process: record it.
    runtime.audit.enable()

    def register(server: grpc.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(store), server)

    parts = ServiceParts(
        register=register,
        checks={
            "postgres": db.check,
            "bus": bus.check,
            "consumer": consumer.health_check(CONSUMER_HEALTH),
        },
        start_background=[consumer.start],
        on_stop=[consumer.stop],
    )
    return runtime.with_student_data(
        parts,
        "audit",
        erase=lambda tenant, student: store.pseudonymise(
            tenant, student, pseudonym(tenant, student)
        ),
        gather=store.export_student,
    )
