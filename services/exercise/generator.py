"""The model path: exercises and quiz questions written by the LLM from the prompt
templates in `prompts/`, checked by `domain/generation.py` before anything is served.

Exercises: up to `max_attempts` model calls (3). Each draft is checked (schema, shape,
limits) and proven in the sandbox (reference passes every test, starter fails one); a
rejected draft's reason goes back to the model with the next attempt. When every
attempt is rejected, or the model is unavailable (no key, timeout, 5xx, circuit open),
the caller serves a bank exercise. An answer that does not match the JSON schema is the
model's content, not the provider's health, so it counts as a rejected attempt
(reason "schema") and is tried again; a transport failure falls back at once.

Quizzes: one model call for the questions; each is checked on its own (predict-the-
output snippets run in the sandbox and their real output is the answer), and the caller
fills the quiz from the bank when fewer than asked survive.

Every attempt's verdict is logged and counted (`learnflow_exercise_generation_attempts`,
`learnflow_quiz_generation_questions`) and kept in `GenerationStats`, so the share of
generated exercises rejected can be reported.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client import Counter as MetricCounter
from pydantic import BaseModel, ConfigDict, Field

from services.exercise.domain.bank import Exercise, Level, QuestionKind, QuizQuestion, Topic
from services.exercise.domain.generation import (
    EXERCISE_IMPORTS,
    SNIPPET_IMPORTS,
    ExerciseDraft,
    QuestionDraft,
    Reason,
    Rejected,
    TestDraft,
    check_exercise,
    check_question,
    new_exercise_id,
    prove,
)
from services.exercise.domain.grading import Execute
from services.kit.curriculum import BY_TOPIC
from services.kit.interceptors import maybe_current_call
from services.kit.llm import LLM, LLMUnavailable, PromptTemplates

log = logging.getLogger("learnflow.exercise.generation")

PROMPTS = Path(__file__).resolve().parent / "prompts"
EXERCISE_AGENT = "exercise"
QUIZ_AGENT = "quiz"
MAX_ATTEMPTS = 3  # model calls per GenerateExercise before the bank answers
GENERATED_QUESTION_PREFIX = "gen-"  # quiz question ids; bank ids are "<topic>-qNN"
# A draft is asked for only with this much of the caller's deadline left: its proof can
# take seconds (a test that hangs waits for the sandbox's time limit), and the bank
# must still answer in time.
ATTEMPT_RESERVE_SECONDS = 5.0

ATTEMPTS = MetricCounter(
    "learnflow_exercise_generation_attempts",
    "Generated exercise drafts by verdict: accepted, or the reason they were rejected.",
    ["outcome"],
)
SERVED = MetricCounter(
    "learnflow_exercise_generation_served",
    "GenerateExercise answers with the model on, by origin (generated or bank) and why "
    "the bank answered (rejected: every attempt failed its checks; else the model's "
    "unavailability reason).",
    ["origin", "reason"],
)
QUESTIONS = MetricCounter(
    "learnflow_quiz_generation_questions",
    "Generated quiz questions by verdict: accepted, or the reason they were rejected.",
    ["outcome"],
)
CLAIMS = MetricCounter(
    "learnflow_quiz_predicted_output_claims",
    "Predict-the-output questions whose model-claimed output matched the real output.",
    ["matched"],
)


# --- what the model must return (its JSON schema is sent with the request) -------------


class TestCaseOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    __test__ = False  # not a pytest test class

    call: str
    expected: str
    description: str = ""


class ExerciseOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str
    statement: str
    entry_points: list[str]
    starter_code: str
    visible_tests: list[TestCaseOut]
    hidden_tests: list[TestCaseOut]
    hints: list[str]
    reference_solution: str
    allowed_imports: list[str] = Field(default_factory=list)


class OptionOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    correct: bool


class QuestionOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["multiple_choice", "predict_output"]
    prompt: str
    code: str = ""
    options: list[OptionOut] = Field(default_factory=list)
    output: str = ""  # the model's claim; never used as the answer
    explanation: str


class QuizOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    questions: list[QuestionOut] = Field(max_length=40)


# --- results and statistics -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One model draft's verdict: `reason` is None when it was accepted."""

    reason: str | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Generation:
    exercise: Exercise | None  # None: serve from the bank
    attempts: tuple[Attempt, ...]
    fallback: str | None  # why the bank answers: "rejected" or the model's reason


class GenerationStats:
    """Counts since the process started (thread-safe), for tests, benchmarks and notes:
    drafts accepted and rejected by reason, and which origin answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self._served: Counter[str] = Counter()
        self._questions: Counter[str] = Counter()

    def attempt(self, outcome: str) -> None:
        outcome = str(outcome)  # a Reason is a str; keep the plain value
        with self._lock:
            self._attempts[outcome] += 1
        ATTEMPTS.labels(outcome).inc()

    def served(self, origin: str, reason: str = "") -> None:
        with self._lock:
            self._served[f"{origin}:{reason}" if reason else origin] += 1
        SERVED.labels(origin, reason).inc()

    def question(self, outcome: str) -> None:
        outcome = str(outcome)
        with self._lock:
            self._questions[outcome] += 1
        QUESTIONS.labels(outcome).inc()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            attempts = dict(self._attempts)
            total = sum(attempts.values())
            rejected = total - attempts.get("accepted", 0)
            return {
                "drafts": total,
                "accepted": attempts.get("accepted", 0),
                "rejected": rejected,
                "rejected_share": rejected / total if total else 0.0,
                "rejected_by_reason": {k: v for k, v in attempts.items() if k != "accepted"},
                "served": dict(self._served),
                "questions": dict(self._questions),
            }


def _time_left() -> float | None:
    """Seconds left of the gRPC call being served, None without a deadline (or call)."""
    call = maybe_current_call()
    return call.time_remaining() if call is not None else None


# --- the model-facing writer ------------------------------------------------------------


def _level_name(level: Level) -> str:
    return level.name.lower()


def _topic_words(topic: Topic) -> tuple[str, str]:
    entry = BY_TOPIC[int(topic)]  # type: ignore[index]
    return entry.display_name, entry.description


class ModelAuthor:
    """Asks the model for drafts; raises `LLMUnavailable` whenever it cannot."""

    def __init__(self, llm: LLM, templates: PromptTemplates | None = None) -> None:
        self._llm = llm
        self._templates = templates or PromptTemplates(PROMPTS)

    @property
    def enabled(self) -> bool:
        return self._llm.enabled

    def exercise(
        self,
        *,
        topic: Topic,
        level: Level,
        focus_error: str,
        rejections: Sequence[Attempt] = (),
        avoid_titles: Sequence[str] = (),
    ) -> ExerciseDraft:
        name, description = _topic_words(topic)
        prompt = self._templates.render(
            "exercise",
            topic_name=name,
            topic_description=description,
            level=_level_name(level),
            focus_error=focus_error,
            rejections=list(rejections),
            avoid_titles=list(avoid_titles),
            allowed_imports=", ".join(sorted(EXERCISE_IMPORTS)),
        )
        out = self._llm.structured(prompt, ExerciseOut, agent=EXERCISE_AGENT, max_tokens=4096)

        def tests(items: list[TestCaseOut]) -> tuple[TestDraft, ...]:
            return tuple(TestDraft(t.call, t.expected, t.description) for t in items)

        return ExerciseDraft(
            title=out.title,
            statement=out.statement,
            entry_points=tuple(out.entry_points),
            starter_code=out.starter_code,
            visible_tests=tests(out.visible_tests),
            hidden_tests=tests(out.hidden_tests),
            hints=tuple(out.hints),
            reference_solution=out.reference_solution,
            allowed_imports=tuple(out.allowed_imports),
        )

    def questions(self, *, topic: Topic, level: Level, count: int) -> list[QuestionDraft]:
        name, description = _topic_words(topic)
        prompt = self._templates.render(
            "quiz",
            topic_name=name,
            topic_description=description,
            level=_level_name(level),
            count=count,
            snippet_imports=", ".join(sorted(SNIPPET_IMPORTS)),
        )
        out = self._llm.structured(prompt, QuizOut, agent=QUIZ_AGENT, max_tokens=4096)
        return [
            QuestionDraft(
                kind=QuestionKind.MULTIPLE_CHOICE
                if q.kind == "multiple_choice"
                else QuestionKind.PREDICT_OUTPUT,
                prompt=q.prompt,
                code=q.code,
                options=tuple((o.text, o.correct) for o in q.options),
                claimed_output=q.output,
                explanation=q.explanation,
            )
            for q in out.questions
        ]


# --- generation with checks -------------------------------------------------------------


class ExerciseGenerator:
    """Drafts from the model, checked and proven in the sandbox, with bounded retries."""

    def __init__(
        self,
        author: ModelAuthor,
        execute: Execute,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        stats: GenerationStats | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._author = author
        self._execute = execute
        self.max_attempts = max_attempts
        self.stats = stats or GenerationStats()

    @property
    def enabled(self) -> bool:
        return self._author.enabled

    def exercise(
        self,
        *,
        topic: Topic,
        level: Level,
        focus_error: str = "",
        avoid_titles: Sequence[str] = (),
    ) -> Generation:
        attempts: list[Attempt] = []
        for number in range(1, self.max_attempts + 1):
            left = _time_left()
            if left is not None and left < ATTEMPT_RESERVE_SECONDS:
                log.info("%.1f s left in the call: exercise from the bank", left)
                self.stats.served("bank", "no_time_left")
                return Generation(None, tuple(attempts), "no_time_left")
            rejections = [a for a in attempts if a.reason is not None]
            try:
                draft = self._author.exercise(
                    topic=topic,
                    level=level,
                    focus_error=focus_error,
                    rejections=rejections,
                    avoid_titles=avoid_titles,
                )
                exercise = check_exercise(
                    draft,
                    exercise_id=new_exercise_id(),
                    topic=topic,
                    difficulty=level,
                    practises=(focus_error,) if focus_error else (),
                )
                prove(exercise, self._execute)
            except LLMUnavailable as exc:
                if exc.reason != "invalid_output":
                    log.info("model unavailable (%s): exercise from the bank", exc.reason)
                    self.stats.served("bank", exc.reason)
                    return Generation(None, tuple(attempts), exc.reason)
                attempts.append(self._reject(number, Reason.SCHEMA, str(exc), topic))
                continue
            except Rejected as exc:
                attempts.append(self._reject(number, exc.reason, exc.detail, topic))
                continue
            attempts.append(Attempt(None))
            self.stats.attempt("accepted")
            self.stats.served("generated")
            log.info(
                "generated exercise accepted",
                extra={"exercise": exercise.exercise_id, "attempt": number, "topic": topic.slug},
            )
            return Generation(exercise, tuple(attempts), None)
        log.warning(
            "every generated exercise was rejected: exercise from the bank",
            extra={"attempts": len(attempts), "topic": topic.slug},
        )
        self.stats.served("bank", "rejected")
        return Generation(None, tuple(attempts), "rejected")

    def _reject(self, number: int, reason: str, detail: str, topic: Topic) -> Attempt:
        self.stats.attempt(reason)
        log.warning(
            "generated exercise rejected",
            extra={
                "attempt": number,
                "reason": reason,
                "detail": detail[:300],
                "topic": topic.slug,
            },
        )
        return Attempt(reason, detail)

    def questions(self, *, topic: Topic, level: Level, count: int) -> list[QuizQuestion]:
        """Up to `count` checked questions (fewer when some are rejected); raises
        LLMUnavailable when the model gives nothing usable."""
        drafts = self._author.questions(topic=topic, level=level, count=count)
        accepted: list[QuizQuestion] = []
        seen: set[tuple[str, str]] = set()
        for draft in drafts:
            if len(accepted) == count:
                break
            key = (" ".join(draft.prompt.split()), draft.code.strip())
            if key in seen:
                self.stats.question(Reason.DUPLICATE)
                continue
            seen.add(key)
            try:
                checked = check_question(
                    draft,
                    question_id=f"{GENERATED_QUESTION_PREFIX}{len(accepted) + 1}",
                    topic=topic,
                    level=level,
                    execute=self._execute,
                )
            except Rejected as exc:
                self.stats.question(exc.reason)
                log.warning(
                    "generated quiz question rejected",
                    extra={"reason": exc.reason, "detail": exc.detail[:300]},
                )
                continue
            if checked.claim_matched is not None:
                CLAIMS.labels(str(checked.claim_matched).lower()).inc()
            self.stats.question("accepted")
            accepted.append(checked.question)
        return accepted
