"""Wires the debug service into a kit server.

Its contract is served (health, reflection, the gateway's routes) but its RPCs are not
implemented yet: each answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from learnflow.debug.v1 import debug_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_parts


def build(runtime: Runtime) -> ServiceParts:
    return not_implemented_parts(
        (debug_pb2_grpc.add_DebugServiceServicer_to_server, debug_pb2_grpc.DebugServiceServicer),
    )
