"""Wires the mastery engine: store, cache, outbox publisher, the progress.events
consumer, recalculations, erasures (its own part and the confirmations of the others),
and the two servicers."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import grpc
import psycopg
from google.longrunning import operations_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2_grpc

from services.kit.bus import PROGRESS_EVENTS, KafkaBus
from services.kit.cache import TieredCache
from services.kit.export import Records
from services.kit.health import ComponentCheck
from services.kit.retention import Purge, window
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.mastery.consumer import progress_consumer
from services.mastery.engine import MasteryEngine
from services.mastery.erasure import Erasures, confirmations_consumer
from services.mastery.export import Exports
from services.mastery.history_job import HistoryJob
from services.mastery.publisher import OutboxSender, encode_changes, encode_wheel_spins
from services.mastery.recalculation import Recalculations
from services.mastery.relay import OutboxRelay
from services.mastery.servicer import MasteryServicer, OperationsServicer
from services.mastery.store import MasteryStore

MIGRATIONS = Path(__file__).parent / "migrations"
# SERVING while the progress.events consumer keeps up; NOT_SERVING when it is behind
# and has committed nothing for a minute. Readiness ("") is not affected.
CONSUMER_HEALTH = "learnflow.mastery.consumer"
# The same for the consumer of erasure confirmations (its own erasure: the kit's).
CONFIRMATIONS_HEALTH = "learnflow.mastery.erasure-confirmations"


def build(
    runtime: Runtime,
    *,
    topic: str = PROGRESS_EVENTS,
    group_id: str | None = None,
    consumer_stall_seconds: float | None = None,
) -> ServiceParts:
    """The mastery server's parts. The engine consumes `topic` as `group_id`
    (default: the MASTERY_CONSUMER_GROUP setting); tests point both elsewhere, and may
    shorten the stall threshold (default: CONSUMER_STALL_SECONDS)."""
    db = runtime.database("mastery", MIGRATIONS, max_size=16)
    bus = runtime.bus
    # Mastery reads are hot: a 2 s in-process layer in front of Redis (invalidated
    # locally on every update; other replicas' copies expire within 2 s).
    cache = TieredCache(runtime.cache, local_ttl_seconds=2.0)

    def drain_outbox() -> int:  # the engine, built next, wakes the relay after commits
        return engine.drain_outbox()

    relay = OutboxRelay(drain_outbox)
    engine = MasteryEngine(
        MasteryStore(db, tombstones=True),
        cache,
        encode_changes,
        OutboxSender(bus),
        encode_wheel_spins=encode_wheel_spins,
        announce=relay.wake,
    )
    recalculations = Recalculations(engine)
    tombstones = runtime.tombstones
    erasures = Erasures(engine, tombstones)
    roster = runtime.roster

    export_parts = runtime.export_parts
    exports = Exports(engine, export_parts)
    consent = runtime.consent

    def erase_here(tenant: str, student_id: str) -> int:
        return (
            erasures.erase_here(tenant, student_id)
            + roster.forget(tenant, student_id)
            + export_parts.erase_student(tenant, student_id)
            + consent.erase_student(tenant, student_id)
        )

    def gather(tenant: str, student_id: str) -> Records:
        records = engine.export_student(tenant, student_id)
        cohort = roster.cohort_of(tenant, student_id)
        records["roster"] = [] if cohort is None else [{"cohort": cohort}]
        return records | consent.export_student(tenant, student_id)

    stall = consumer_stall_seconds or runtime.settings.consumer_stall_seconds
    transient = (psycopg.OperationalError,)
    confirmations = confirmations_consumer(bus, erasures, transient=transient, stall_seconds=stall)
    history_job = HistoryJob(engine)
    # Lanes: consumers in one group, each a thread with its own partitions (ADR 0005).
    # The in-process bus has one partition per topic and no assignment: a second lane
    # would read the same records again.
    lane_count = runtime.settings.mastery_consumer_lanes if isinstance(bus, KafkaBus) else 1
    lanes = [
        progress_consumer(
            bus,
            engine,
            group_id=group_id or runtime.settings.mastery_consumer_group,
            topic=topic,
            stall_seconds=consumer_stall_seconds or runtime.settings.consumer_stall_seconds,
            horizon=timedelta(days=runtime.settings.mastery_history_horizon_days),
            batch_size=runtime.settings.mastery_batch_size,
        )
        for _ in range(lane_count)
    ]

    def check_lanes() -> None:
        for lane in lanes:
            lane.check_progress()

    def register(server: grpc.Server) -> None:
        # RPCs not implemented here fall through to the generated base (UNIMPLEMENTED);
        # its type stubs call them abstract.
        servicer = MasteryServicer(  # type: ignore[abstract]
            engine,
            cache,
            recalculations=recalculations,
            erasures=erasures,
            exports=exports,
            consent=consent,
            roster=roster,
        )
        mastery_pb2_grpc.add_MasteryServiceServicer_to_server(servicer, server)
        operations_pb2_grpc.add_OperationsServicer_to_server(
            OperationsServicer(engine, exports), server
        )

    def start() -> None:
        relay.start()  # its first round sends announcements committed before a crash
        for lane in lanes:
            lane.start()
        confirmations.start()
        history_job.start()

    parts = ServiceParts(
        register=register,
        checks={
            "postgres": db.check,
            "bus": bus.check,
            "cache": runtime.cache.check,
            "consumer": ComponentCheck(CONSUMER_HEALTH, check_lanes),
            "erasure-confirmations": confirmations.health_check(CONFIRMATIONS_HEALTH),
        },
        roster=roster,
        start_background=[start],
        on_stop=[
            *(lane.stop for lane in lanes),
            confirmations.stop,
            history_job.stop,
            lambda: recalculations.wait(5.0),
            relay.stop,
        ],
    )
    # Its erasure consumer sweeps the tiered cache: this process's layer too.
    return runtime.with_student_data(parts, "mastery", erase=erase_here, gather=gather, cache=cache)


def retention(runtime: Runtime) -> Purge:
    """Evidence of days older than the window, folded into the baseline that history
    and recalculation start from (mastery stays as it was), and operations finished
    that long ago."""
    store = MasteryStore(runtime.database("mastery", MIGRATIONS))
    kept = window(runtime.settings)

    def purge(tenant: str, now: datetime) -> dict[str, int]:
        return {
            "evidence": store.purge_evidence(tenant, now, kept),
            "operations": store.purge_operations(tenant, now - kept),
        }

    return purge
