"""Wires triage: the offline classifier (and the model, when configured), student
context from the mastery engine cached in Redis and dropped on mastery.updated, and
stubs for the agents it routes to, and the publisher of the answers it streams
(learning.responses)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from learnflow.concepts.v1 import concepts_pb2_grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.review.v1 import review_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.bus import Publisher
from services.kit.clients import service_channel
from services.kit.errors import PermissionDenied
from services.kit.llm import PromptTemplates
from services.kit.responses import LearningResponses
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.triage.answers import AgentStubs, Answerer
from services.triage.classification import RequestClassifier
from services.triage.context import MasteryUnavailableError, StudentContexts, invalidation_consumer
from services.triage.servicer import TriageServicer

PROMPTS = Path(__file__).parent / "prompts"
SOURCE = "//learnflow.dev/triage"
CONTEXT_GROUP = "triage-context"
MASTERY_TIMEOUT_SECONDS = 2.0
RECENT_DIAGNOSES = 50
RECENT_ERROR_DAYS = 7
log = logging.getLogger("learnflow.triage")


class MasteryLookup:
    """The student's mastery with the caller's token, so the engine decides access."""

    def __init__(self, stub: mastery_pb2_grpc.MasteryServiceStub) -> None:
        self._stub = stub

    def __call__(self, student_id: str) -> mastery_pb2.Mastery | None:
        try:
            mastery: mastery_pb2.Mastery = self._stub.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"students/{student_id}/mastery"),
                timeout=MASTERY_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return None
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied(exc.details() or "mastery refused") from None
            raise MasteryUnavailableError(f"{code.name}: {exc.details()}") from None
        return mastery


class RecentErrors:
    """The error types a student met in the last RECENT_ERROR_DAYS, from their newest
    diagnoses at the debug service (with the caller's token)."""

    def __init__(self, stub: debug_pb2_grpc.DebugServiceStub) -> None:
        self._stub = stub

    def __call__(self, student_id: str) -> Sequence[triage_pb2.RecentError]:
        try:
            listed = self._stub.ListDiagnoses(
                debug_pb2.ListDiagnosesRequest(
                    parent=f"students/{student_id}", page_size=RECENT_DIAGNOSES
                ),
                timeout=MASTERY_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            log.warning("recent errors unavailable", extra={"code": exc.code().name})
            return ()
        since = datetime.now(UTC) - timedelta(days=RECENT_ERROR_DAYS)
        found: dict[str, triage_pb2.RecentError] = {}
        for diagnosis in listed.diagnoses:  # newest first
            if not diagnosis.error.error_type or diagnosis.create_time.ToDatetime(UTC) < since:
                continue
            entry = found.setdefault(
                diagnosis.error.error_type,
                triage_pb2.RecentError(
                    error_type=diagnosis.error.error_type,
                    topic=diagnosis.topic,
                    last_occur_time=diagnosis.create_time,
                ),
            )
            entry.occurrence_count += 1
        return sorted(found.values(), key=lambda e: -e.occurrence_count)


def build(runtime: Runtime) -> ServiceParts:
    settings = runtime.settings
    mastery = mastery_pb2_grpc.MasteryServiceStub(service_channel(settings.address_of("mastery")))
    debug = debug_pb2_grpc.DebugServiceStub(service_channel(settings.address_of("debug")))
    agents = AgentStubs(
        concepts=concepts_pb2_grpc.ConceptsServiceStub(
            service_channel(settings.address_of("concepts"))
        ),
        debug=debug,
        review=review_pb2_grpc.ReviewServiceStub(service_channel(settings.address_of("review"))),
        exercise=exercise_pb2_grpc.ExerciseServiceStub(
            service_channel(settings.address_of("exercise"))
        ),
        mastery=mastery,
    )
    prompts = PromptTemplates(PROMPTS)
    contexts = StudentContexts(runtime.cache, MasteryLookup(mastery), RecentErrors(debug))
    consumer = invalidation_consumer(
        runtime.bus,
        contexts,
        group_id=CONTEXT_GROUP,
        stall_seconds=settings.consumer_stall_seconds,
    )

    def register(server: grpc.Server) -> None:
        triage_pb2_grpc.add_TriageServiceServicer_to_server(
            TriageServicer(
                contexts,
                Answerer(agents, runtime.llm, prompts),
                RequestClassifier(runtime.llm, prompts),
                LearningResponses(Publisher(runtime.bus, SOURCE), "triage"),
            ),
            server,
        )

    parts = ServiceParts(
        register=register,
        checks={
            "bus": runtime.bus.check,
            "cache": runtime.cache.check,
            # Its own health name: a stuck consumer never changes readiness.
            "consumer": consumer.health_check("learnflow.triage.consumer"),
        },
        start_background=[consumer.start],
        on_stop=[consumer.stop],
        limiter=runtime.limiter,
    )
    # Triage keeps nothing of a student but their cached context, which the erasure
    # consumer sweeps from the cache like every service's keys, and which an export shows.
    return runtime.with_student_data(
        parts, "triage", erase=lambda _tenant, _student: 0, gather=contexts.export_student
    )
