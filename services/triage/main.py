"""Wires the triage service into a kit server.

Its contract is served (health, reflection, the gateway's routes) but its RPCs are not
implemented yet: each answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from learnflow.triage.v1 import triage_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_parts


def build(runtime: Runtime) -> ServiceParts:
    return not_implemented_parts(
        (
            triage_pb2_grpc.add_TriageServiceServicer_to_server,
            triage_pb2_grpc.TriageServiceServicer,
        ),
    )
