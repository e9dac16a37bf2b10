"""Wires the mastery engine: store, cache, outbox publisher, the progress.events
consumer, recalculations, and the two servicers."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.longrunning import operations_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2_grpc

from services.kit.cache import TieredCache
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.mastery.consumer import progress_consumer
from services.mastery.engine import MasteryEngine
from services.mastery.publisher import OutboxSender, encode_changes, encode_wheel_spins
from services.mastery.recalculation import Recalculations
from services.mastery.servicer import MasteryServicer, OperationsServicer
from services.mastery.store import MasteryStore

MIGRATIONS = Path(__file__).parent / "migrations"


def build(runtime: Runtime) -> ServiceParts:
    db = runtime.database("mastery", MIGRATIONS, max_size=16)
    bus = runtime.bus
    # Mastery reads are hot: a 2 s in-process layer in front of Redis (invalidated
    # locally on every update; other replicas' copies expire within 2 s).
    cache = TieredCache(runtime.cache, local_ttl_seconds=2.0)
    engine = MasteryEngine(
        MasteryStore(db),
        cache,
        encode_changes,
        OutboxSender(bus),
        encode_wheel_spins=encode_wheel_spins,
    )
    recalculations = Recalculations(engine)
    consumer = progress_consumer(bus, engine, group_id=runtime.settings.mastery_consumer_group)

    def register(server: grpc.Server) -> None:
        # RPCs not implemented here fall through to the generated base (UNIMPLEMENTED);
        # its type stubs call them abstract.
        servicer = MasteryServicer(engine, cache, recalculations)  # type: ignore[abstract]
        mastery_pb2_grpc.add_MasteryServiceServicer_to_server(servicer, server)
        operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(engine), server)

    def start() -> None:
        engine.drain_outbox()  # announcements committed before a crash
        consumer.start()

    return ServiceParts(
        register=register,
        checks={"postgres": db.check, "bus": bus.check, "cache": runtime.cache.check},
        start_background=[start],
        on_stop=[consumer.stop, lambda: recalculations.wait(5.0)],
    )
