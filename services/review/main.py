"""Wires the review service into a kit server.

Its RPCs are not implemented yet: the generated base servicer raises
NotImplementedError, which the kit answers as UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

import grpc
from learnflow.review.v1 import review_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_yet


def _register(server: grpc.Server) -> None:
    review_pb2_grpc.add_ReviewServiceServicer_to_server(
        not_implemented_yet(review_pb2_grpc.ReviewServiceServicer), server
    )


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(register=_register)
