"""Wires the review service into a kit server.

Its contract is served (health, reflection, the gateway's routes) but its RPCs are not
implemented yet: each answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from learnflow.review.v1 import review_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_parts


def build(runtime: Runtime) -> ServiceParts:
    return not_implemented_parts(
        (
            review_pb2_grpc.add_ReviewServiceServicer_to_server,
            review_pb2_grpc.ReviewServiceServicer,
        ),
    )
