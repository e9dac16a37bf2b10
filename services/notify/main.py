"""Wires the notify service into a kit server.

Its contract is served (health, reflection, the gateway's routes) but its RPCs are not
implemented yet: each answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from learnflow.notify.v1 import notify_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_parts


def build(runtime: Runtime) -> ServiceParts:
    return not_implemented_parts(
        (
            notify_pb2_grpc.add_NotifyServiceServicer_to_server,
            notify_pb2_grpc.NotifyServiceServicer,
        ),
    )
