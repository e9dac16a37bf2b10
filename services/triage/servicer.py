"""TriageService: classify a student's request, fetch their context, route it to the
agent that answers, and stream that answer back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc
from pydantic import BaseModel, Field

from services.kit.auth import Role
from services.kit.curriculum import CURRICULUM
from services.kit.errors import Validator
from services.kit.interceptors import current_principal
from services.kit.llm import LLM, LLMUnavailable, PromptTemplates
from services.kit.names import check_name
from services.triage.answers import Answerer
from services.triage.context import StudentContexts
from services.triage.domain import classifier

log = logging.getLogger("learnflow.triage")

MAX_QUESTION_CHARS = 4000
MAX_CODE_BYTES = 64 * 1024
MAX_TRACEBACK_BYTES = 16 * 1024
# Below this the offline classifier is guessing from weak keywords; a model (when
# configured) gets the final say. Structural evidence scores well above it.
CONSULT_MODEL_BELOW = 0.6
TOPIC_BY_SLUG = {entry.slug: entry.topic for entry in CURRICULUM}
INTENT_BY_WORD = {
    "concept": triage_pb2.INTENT_CONCEPT,
    "debug": triage_pb2.INTENT_DEBUG,
    "exercise": triage_pb2.INTENT_EXERCISE,
    "review": triage_pb2.INTENT_REVIEW,
    "progress": triage_pb2.INTENT_PROGRESS,
}


class ModelClassification(BaseModel):
    intent: Literal["concept", "debug", "exercise", "review", "progress"]
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(min_length=1, max_length=300)
    topic: str | None = None


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
        llm: LLM,
        prompts: PromptTemplates,
    ) -> None:
        self._contexts = contexts
        self._answerer = answerer
        self._llm = llm
        self._prompts = prompts

    def ClassifyRequest(
        self, request: triage_pb2.ClassifyRequestRequest, context: grpc.ServicerContext
    ) -> triage_pb2.Classification:
        student_id = _check_request(request)
        current_principal().require_acting_as(student_id)
        return self._classify(request.question, request.code, request.traceback)

    def Ask(
        self, request: triage_pb2.AskRequest, context: grpc.ServicerContext
    ) -> Iterator[triage_pb2.AskResponse]:
        student_id = _check_request(request)
        current_principal().require_acting_as(student_id)
        if request.intent:
            classification = triage_pb2.Classification(
                intent=request.intent, confidence=1.0, reason="the intent was given by the caller"
            )
            guess = self._classify(request.question, request.code, request.traceback)
            classification.topic = guess.topic
        else:
            classification = self._classify(request.question, request.code, request.traceback)
        yield triage_pb2.AskResponse(classification=classification)

        student_context = self._contexts.get(student_id)
        answer = self._answerer.answer(request, classification, student_context)
        sequence = 0
        for piece in answer.pieces:
            yield triage_pb2.AskResponse(
                chunk=triage_pb2.AnswerChunk(sequence=sequence, text=piece, agent=answer.agent)
            )
            sequence += 1
        yield triage_pb2.AskResponse(
            chunk=triage_pb2.AnswerChunk(sequence=sequence, final=True, agent=answer.agent)
        )
        if answer.agent == "debug":
            self._contexts.invalidate([student_id])  # a new error for their recent errors

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
        return self._contexts.get(student_id)

    # -- classification --------------------------------------------------------------

    def _classify(self, question: str, code: str, traceback: str) -> triage_pb2.Classification:
        offline = classifier.classify(question, code, traceback)
        result = triage_pb2.Classification(
            intent=int(offline.intent),  # type: ignore[arg-type]
            confidence=offline.confidence,
            reason=offline.reason,
            topic=int(offline.topic or 0),  # type: ignore[arg-type]
            alternatives=[
                triage_pb2.ScoredIntent(intent=int(intent), confidence=score)  # type: ignore[arg-type]
                for intent, score in offline.alternatives
            ],
        )
        if offline.confidence >= CONSULT_MODEL_BELOW or not self._llm.enabled:
            return result
        try:
            model = self._llm.structured(
                self._prompts.render(
                    "classify",
                    question=question,
                    code=code,
                    traceback=traceback,
                    topics=sorted(TOPIC_BY_SLUG),
                ),
                ModelClassification,
                agent="triage",
                max_tokens=200,
            )
        except LLMUnavailable:
            return result
        result.intent = INTENT_BY_WORD[model.intent]
        result.confidence = model.confidence
        result.reason = model.reason
        if model.topic in TOPIC_BY_SLUG:
            result.topic = TOPIC_BY_SLUG[model.topic]
        elif model.topic is not None:
            log.info("model named an unknown topic", extra={"topic": model.topic})
        return result
