"""Wires the exercise service into a kit server.

Its RPCs are not implemented yet: the generated base servicer raises
NotImplementedError, which the kit answers as UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

import grpc
from learnflow.exercise.v1 import exercise_pb2_grpc, quiz_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_yet


def _register(server: grpc.Server) -> None:
    exercise_pb2_grpc.add_ExerciseServiceServicer_to_server(
        not_implemented_yet(exercise_pb2_grpc.ExerciseServiceServicer), server
    )
    quiz_pb2_grpc.add_QuizServiceServicer_to_server(
        not_implemented_yet(quiz_pb2_grpc.QuizServiceServicer), server
    )


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(register=_register)
