"""Wires the mastery service into a kit server.

Its RPCs are not implemented yet: the generated base servicer raises
NotImplementedError, which the kit answers as UNIMPLEMENTED naming the method. Its
dependencies are real already: the `mastery` schema is migrated at start and health
follows Postgres, the bus and the cache.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from google.longrunning import operations_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_yet


def _register(server: grpc.Server) -> None:
    mastery_pb2_grpc.add_MasteryServiceServicer_to_server(
        not_implemented_yet(mastery_pb2_grpc.MasteryServiceServicer), server
    )
    operations_pb2_grpc.add_OperationsServicer_to_server(
        not_implemented_yet(operations_pb2_grpc.OperationsServicer), server
    )


MIGRATIONS = Path(__file__).parent / "migrations"


def build(runtime: Runtime) -> ServiceParts:
    db = runtime.database("mastery", MIGRATIONS)
    bus, cache = runtime.bus, runtime.cache
    return ServiceParts(
        register=_register,
        checks={"postgres": db.check, "bus": bus.check, "cache": cache.check},
    )
