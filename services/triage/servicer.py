"""TriageService: classify a student's request, fetch their context, route it to the
agent that answers, and stream that answer back. Everything acts in the caller's tenant
(`Principal.tenant`): the context cached, the agents called (the kit's clients carry the
token, and an operator's tenant), and the live answer published."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.auth import Role
from services.kit.errors import Validator
from services.kit.interceptors import current_call, current_principal
from services.kit.names import check_name
from services.kit.responses import LearningResponses
from services.triage.answers import Answerer, live
from services.triage.classification import RequestClassifier
from services.triage.context import StudentContexts

MAX_QUESTION_CHARS = 4000
MAX_CODE_BYTES = 64 * 1024
MAX_TRACEBACK_BYTES = 16 * 1024


def _check_request(
    request: triage_pb2.ClassifyRequestRequest | triage_pb2.AskRequest,
) -> str:
    """The student id, after validating every field (all problems reported at once)."""
    checks = Validator()
    (student_id,) = check_name(checks, request.student, "students/*", "student")
    checks.check(bool(request.question.strip()), "question", "is required")
    checks.check(
        len(request.question) <= MAX_QUESTION_CHARS,
        "question",
        f"is longer than {MAX_QUESTION_CHARS} characters",
    )
    checks.check(
        len(request.code.encode()) <= MAX_CODE_BYTES,
        "code",
        f"is larger than {MAX_CODE_BYTES // 1024} KiB",
    )
    checks.check(
        len(request.traceback.encode()) <= MAX_TRACEBACK_BYTES,
        "traceback",
        f"is larger than {MAX_TRACEBACK_BYTES // 1024} KiB",
    )
    if isinstance(request, triage_pb2.AskRequest):
        checks.check(
            request.intent in triage_pb2.Intent.values(), "intent", "is not a known intent"
        )
    checks.raise_if_invalid()
    return student_id


class TriageServicer(triage_pb2_grpc.TriageServiceServicer):
    def __init__(
        self,
        contexts: StudentContexts,
        answerer: Answerer,
        classifier: RequestClassifier,
        responses: LearningResponses,
    ) -> None:
        self._contexts = contexts
        self._answerer = answerer
        self._classifier = classifier
        self._responses = responses

    def ClassifyRequest(
        self, request: triage_pb2.ClassifyRequestRequest, context: grpc.ServicerContext
    ) -> triage_pb2.Classification:
        student_id = _check_request(request)
        current_principal().require_acting_as(student_id)
        return self._classifier.classify(request.question, request.code, request.traceback)

    def Ask(
        self, request: triage_pb2.AskRequest, context: grpc.ServicerContext
    ) -> Iterator[triage_pb2.AskResponse]:
        student_id = _check_request(request)
        principal = current_principal()
        principal.require_acting_as(student_id)
        if request.intent:
            classification = triage_pb2.Classification(
                intent=request.intent, confidence=1.0, reason="the intent was given by the caller"
            )
            guess = self._classifier.classify(request.question, request.code, request.traceback)
            classification.topic = guess.topic
        else:
            classification = self._classifier.classify(
                request.question, request.code, request.traceback
            )
        yield triage_pb2.AskResponse(classification=classification)

        student_context = self._contexts.get(principal.tenant, student_id)
        answer = self._answerer.answer(request, classification, student_context)
        for chunk in live(
            answer,
            self._responses,
            student_id=student_id,
            request_id=current_call().request_id,
            tenant=principal.tenant,
        ):
            yield triage_pb2.AskResponse(chunk=chunk)
        if answer.agent == "debug":
            # A new error for their recent errors.
            self._contexts.invalidate([(principal.tenant, student_id)])

    def GetStudentContext(
        self, request: triage_pb2.GetStudentContextRequest, context: grpc.ServicerContext
    ) -> triage_pb2.StudentContext:
        checks = Validator()
        (student_id,) = check_name(checks, request.name, "students/*/context", "name")
        checks.raise_if_invalid()
        principal = current_principal()
        if principal.role is Role.TEACHER:
            # Only the mastery engine knows the student's class: it is asked with the
            # teacher's own token before any cached context is shown.
            self._contexts.confirm_readable(student_id)
        else:
            principal.require_acting_as(student_id)
        return self._contexts.get(principal.tenant, student_id)
