"""Wires the notify service into a kit server.

Its RPCs are not implemented yet: the generated base servicer raises
NotImplementedError, which the kit answers as UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

import grpc
from learnflow.notify.v1 import notify_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_yet


def _register(server: grpc.Server) -> None:
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(
        not_implemented_yet(notify_pb2_grpc.NotifyServiceServicer), server
    )


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(register=_register)
