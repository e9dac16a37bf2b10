"""Wires the debug service: the traceback parser and hint rules, the sandbox (to run
code that came without a traceback, and to prove model fixes), its Postgres schema,
struggle windows in Redis and events on Kafka."""

from __future__ import annotations

from pathlib import Path

import grpc
from learnflow.debug.v1 import debug_pb2_grpc

from services.debug.engine import DebugEngine
from services.debug.servicer import DebugServicer
from services.debug.store import DebugStore
from services.debug.struggle import StruggleDetector
from services.kit.bus import Publisher
from services.kit.peers import SandboxClient
from services.kit.responses import LearningResponses
from services.kit.retention import Purge, older_than_window
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts

MIGRATIONS = Path(__file__).parent / "migrations"
SOURCE = "//learnflow.dev/debug"
RUN_SECONDS = 3.0  # a beginner's program that has not finished by then is stuck


def build(runtime: Runtime) -> ServiceParts:
    settings = runtime.settings
    db = runtime.database("debug", MIGRATIONS)
    store = DebugStore(db)
    sandbox = SandboxClient(settings.address_of("sandbox"), wall_seconds=RUN_SECONDS)
    publisher = Publisher(runtime.bus, SOURCE)
    engine = DebugEngine(
        store,
        detector=StruggleDetector(runtime.windows),
        publisher=publisher,
        responses=LearningResponses(publisher, "debug"),
        run=sandbox.run,
        llm=runtime.llm,
    )

    def register(server: grpc.Server) -> None:
        debug_pb2_grpc.add_DebugServiceServicer_to_server(
            DebugServicer(engine, store, runtime.roster), server
        )

    parts = ServiceParts(
        register=register,
        checks={"postgres": db.check, "bus": runtime.bus.check, "windows": runtime.windows.check},
        roster=runtime.roster,
    )
    return runtime.with_student_data(
        parts, "debug", erase=store.erase_student, gather=store.export_student
    )


def retention(runtime: Runtime) -> Purge:
    """Diagnoses, error occurrences and struggle episodes older than the window."""
    store = DebugStore(runtime.database("debug", MIGRATIONS))
    return older_than_window(runtime.settings, store.purge)
