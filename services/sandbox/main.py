"""Wires the sandbox service into a kit server.

Its RPCs are not implemented yet: the generated base servicer raises
NotImplementedError, which the kit answers as UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

import grpc
from learnflow.sandbox.v1 import sandbox_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_yet


def _register(server: grpc.Server) -> None:
    sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(
        not_implemented_yet(sandbox_pb2_grpc.SandboxServiceServicer), server
    )


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(register=_register)
