"""Wires the triage service into a kit server.

Its RPCs are not implemented yet: the generated base servicer raises
NotImplementedError, which the kit answers as UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

import grpc
from learnflow.triage.v1 import triage_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_yet


def _register(server: grpc.Server) -> None:
    triage_pb2_grpc.add_TriageServiceServicer_to_server(
        not_implemented_yet(triage_pb2_grpc.TriageServiceServicer), server
    )


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(register=_register)
