"""Classifying a request: the offline classifier decides, and the model (when one is
configured) gets the final say only where the offline evidence is weak."""

from __future__ import annotations

import logging
from typing import Literal

from learnflow.triage.v1 import triage_pb2
from pydantic import BaseModel, Field

from services.kit.curriculum import CURRICULUM
from services.kit.llm import LLM, LLMUnavailable, PromptTemplates
from services.triage.domain import classifier

log = logging.getLogger("learnflow.triage")

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


class RequestClassifier:
    def __init__(self, llm: LLM, prompts: PromptTemplates) -> None:
        self._llm = llm
        self._prompts = prompts

    def classify(self, question: str, code: str, traceback: str) -> triage_pb2.Classification:
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
