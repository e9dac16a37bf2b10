"""Wires the concepts servicer into a kit server."""

from __future__ import annotations

from learnflow.concepts.v1 import concepts_pb2_grpc

from services.concepts.servicer import ConceptsServicer
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(
        register=lambda server: concepts_pb2_grpc.add_ConceptsServiceServicer_to_server(
            ConceptsServicer(), server
        )
    )
