"""Wires the exercise service into a kit server.

Its contract is served (health, reflection, the gateway's routes) but its RPCs are not
implemented yet: each answers UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

from learnflow.exercise.v1 import exercise_pb2_grpc, quiz_pb2_grpc

from services.kit.runtime import Runtime
from services.kit.server import ServiceParts, not_implemented_parts


def build(runtime: Runtime) -> ServiceParts:
    return not_implemented_parts(
        (
            exercise_pb2_grpc.add_ExerciseServiceServicer_to_server,
            exercise_pb2_grpc.ExerciseServiceServicer,
        ),
        (quiz_pb2_grpc.add_QuizServiceServicer_to_server, quiz_pb2_grpc.QuizServiceServicer),
    )
