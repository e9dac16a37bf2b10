"""Wires the sandbox service into a kit server.

Its contract is served (health, reflection, the gateway's routes) but its RPCs are not
implemented yet: each answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from learnflow.sandbox.v1 import sandbox_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_parts


def build(runtime: Runtime) -> ServiceParts:
    return not_implemented_parts(
        (
            sandbox_pb2_grpc.add_SandboxServiceServicer_to_server,
            sandbox_pb2_grpc.SandboxServiceServicer,
        ),
    )
