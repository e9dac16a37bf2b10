"""Routes a classified request to the agent that owns the answer and renders what it
says as Markdown pieces for the stream.

The agents are called over gRPC with the caller's token and deadline (kit clients), so
each one authorises the same student and none outlives the request. Rendering is plain
text work: the pieces are paragraphs, code fences kept whole, so a browser can show
the answer as it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from learnflow.common.v1 import common_pb2
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc
from learnflow.triage.v1 import triage_pb2

from services.kit.curriculum import CURRICULUM
from services.kit.llm import LLM, LLMUnavailable, PromptTemplates
from services.kit.responses import RELAYED_METADATA, LearningResponses

log = logging.getLogger("learnflow.triage.answers")

Intent = triage_pb2.Intent
AGENT_TIMEOUT_SECONDS = 30.0  # an explanation may wait on the model and the sandbox
TOPIC_NAMES = {entry.topic: entry.display_name for entry in CURRICULUM}
BAND_NAMES = {
    common_pb2.MASTERY_BAND_RED: "red: needs support",
    common_pb2.MASTERY_BAND_YELLOW: "yellow: developing",
    common_pb2.MASTERY_BAND_GREEN: "green: proficient",
    common_pb2.MASTERY_BAND_BLUE: "blue: mastered",
}


@dataclass(frozen=True)
class AgentStubs:
    concepts: concepts_pb2_grpc.ConceptsServiceStub
    debug: debug_pb2_grpc.DebugServiceStub
    review: review_pb2_grpc.ReviewServiceStub
    exercise: exercise_pb2_grpc.ExerciseServiceStub
    mastery: mastery_pb2_grpc.MasteryServiceStub


@dataclass(frozen=True)
class Answer:
    agent: str
    pieces: Iterator[str]


def live(
    answer: Answer,
    responses: LearningResponses,
    *,
    student_id: str,
    request_id: str,
    tenant: str,
) -> Generator[triage_pb2.AnswerChunk, None, None]:
    """The answer's chunks for the Ask stream, each published on learning.responses
    (same request id, sequence and agent) as it is given, so the student's other
    screens show it live. An agent failing midway (or the caller leaving) still ends
    the live answer that began, with a note, before the error reaches the caller.
    `tenant` is the student's, named on every chunk: the last one may be published when
    the stream is closed, outside the call's context."""
    sequence = 0

    def publish(text: str, *, final: bool) -> None:
        responses.chunk(
            student_id,
            text=text,
            request_id=request_id,
            sequence=sequence,
            final=final,
            agent=answer.agent,
            tenant=tenant,
        )

    try:
        for piece in answer.pieces:
            publish(piece, final=False)
            chunk = triage_pb2.AnswerChunk(sequence=sequence, text=piece, agent=answer.agent)
            sequence += 1  # before the yield: a caller leaving there ends at the next one
            yield chunk
    except (Exception, GeneratorExit):  # the agent failed, or the caller went away
        if sequence:  # an answer the other screens began to show: end it
            publish("\n\n*The answer was interrupted; please ask again.*", final=True)
        raise
    publish("", final=True)
    yield triage_pb2.AnswerChunk(sequence=sequence, final=True, agent=answer.agent)


class Answerer:
    def __init__(self, agents: AgentStubs, llm: LLM, prompts: PromptTemplates) -> None:
        self._agents = agents
        self._llm = llm
        self._prompts = prompts

    def answer(
        self,
        request: triage_pb2.AskRequest,
        classification: triage_pb2.Classification,
        context: triage_pb2.StudentContext,
    ) -> Answer:
        intent = classification.intent
        if intent == Intent.INTENT_REVIEW:
            return Answer("review", self._review(request, classification))
        if intent == Intent.INTENT_EXERCISE:
            return Answer("exercise", self._exercise(request, classification))
        if intent == Intent.INTENT_PROGRESS:
            return Answer("mastery", self._progress(request, context))
        if intent == Intent.INTENT_DEBUG and request.code.strip():
            return Answer("debug", self._debug(request))
        # A debugging question without code: explain the error's topic.
        debugging = intent == Intent.INTENT_DEBUG
        return Answer("concepts", self._concept(request, classification, debugging=debugging))

    # -- per agent ---------------------------------------------------------------------

    def _concept(
        self,
        request: triage_pb2.AskRequest,
        classification: triage_pb2.Classification,
        *,
        debugging: bool,
    ) -> Iterator[str]:
        question = request.question
        if debugging and request.traceback:
            last_line = request.traceback.strip().splitlines()[-1]
            question = f"{question}\n{last_line}"
        try:
            explanation = self._agents.concepts.ExplainConcept(
                concepts_pb2.ExplainConceptRequest(
                    student=request.student, topic=classification.topic, question=question[:2000]
                ),
                timeout=AGENT_TIMEOUT_SECONDS,
                metadata=RELAYED_METADATA,  # this Ask streams and publishes the answer
            )
        except grpc.RpcError as exc:
            if classification.topic or exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            # Neither triage nor the concepts agent could tell what it is about.
            topics = ", ".join(entry.display_name.lower() for entry in CURRICULUM)
            yield (
                "I'm not sure which part of Python this is about. Could you say a bit "
                f"more, or name the topic? I can explain: {topics}."
            )
            return
        yield from paragraphs(render_explanation(explanation))

    def _debug(self, request: triage_pb2.AskRequest) -> Iterator[str]:
        try:
            diagnosis = self._agents.debug.CreateDiagnosis(
                debug_pb2.CreateDiagnosisRequest(
                    parent=request.student,
                    diagnosis=debug_pb2.Diagnosis(code=request.code, traceback=request.traceback),
                ),
                timeout=AGENT_TIMEOUT_SECONDS,
                metadata=RELAYED_METADATA,  # this Ask streams and publishes the answer
            )
        except grpc.RpcError as exc:
            refused = refusal_of_students_input(exc)
            if refused is None:
                raise
            yield f"I can't debug this: {refused}. Could you send a smaller part of it?"
            return
        yield from paragraphs(render_diagnosis(diagnosis))
        if diagnosis.struggle_detected:
            # The same error keeps coming back: practise exactly that, on its topic.
            exercise = self._agents.exercise.GenerateExercise(
                exercise_pb2.GenerateExerciseRequest(
                    student=request.student, focus_error_type=diagnosis.error.error_type
                ),
                timeout=AGENT_TIMEOUT_SECONDS,
                metadata=RELAYED_METADATA,  # this Ask streams and publishes the answer
            )
            yield (
                f"\n\nSince **{diagnosis.error.error_type}** keeps coming back, here is an "
                "exercise that practises avoiding it.\n\n"
            )
            yield from paragraphs(render_exercise(exercise))

    def _review(
        self, request: triage_pb2.AskRequest, classification: triage_pb2.Classification
    ) -> Iterator[str]:
        if not request.code.strip():
            yield (
                "Happy to review your code! Paste it in the `code` field (or in a "
                "```python block) and I'll look at style, complexity and readability."
            )
            return
        try:
            review = self._agents.review.CreateCodeReview(
                review_pb2.CreateCodeReviewRequest(
                    parent=request.student,
                    code_review=review_pb2.CodeReview(
                        code=request.code, topic=classification.topic
                    ),
                ),
                timeout=AGENT_TIMEOUT_SECONDS,
                metadata=RELAYED_METADATA,  # this Ask streams and publishes the answer
            )
        except grpc.RpcError as exc:
            refused = refusal_of_students_input(exc)
            if refused is None:
                raise
            yield f"I can't review this code: {refused}. Could you send a smaller part of it?"
            return
        yield from paragraphs(render_review(review))

    def _exercise(
        self, request: triage_pb2.AskRequest, classification: triage_pb2.Classification
    ) -> Iterator[str]:
        topic = classification.topic or self._weakest_topic(request.student)
        exercise = self._agents.exercise.GenerateExercise(
            exercise_pb2.GenerateExerciseRequest(student=request.student, topic=topic),
            timeout=AGENT_TIMEOUT_SECONDS,
            metadata=RELAYED_METADATA,  # this Ask streams and publishes the answer
        )
        yield from paragraphs(render_exercise(exercise))

    def _progress(
        self, request: triage_pb2.AskRequest, context: triage_pb2.StudentContext
    ) -> Iterator[str]:
        mastery = self._mastery(request.student)
        if mastery is None:
            yield (
                "You haven't got any graded work yet, so there's no mastery to show. "
                "Try an exercise or a quiz and ask me again!"
            )
            return
        facts = render_progress(mastery)
        if self._llm.enabled:
            prompt = self._prompts.render(
                "progress",
                question=request.question,
                facts=facts,
                level=common_pb2.Level.Name(context.level),
            )
            said = False
            try:
                for piece in self._llm.stream(prompt, agent="triage"):
                    said = True
                    yield piece
                return
            except LLMUnavailable as exc:
                if said:
                    # Part of a coaching message is out: finish with the plain facts.
                    yield "\n\n"
                log.info("progress answer offline", extra={"reason": exc.reason})
        yield from paragraphs(facts)

    # -- lookups -------------------------------------------------------------------

    def _mastery(self, student: str) -> mastery_pb2.Mastery | None:
        try:
            mastery: mastery_pb2.Mastery = self._agents.mastery.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"{student}/mastery"),
                timeout=AGENT_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return mastery

    def _weakest_topic(self, student: str) -> common_pb2.Topic.ValueType:
        """Practice where it helps most: the weakest topic with evidence, else the first."""
        mastery = self._mastery(student)
        if mastery is not None and mastery.topics:
            return min(mastery.topics, key=lambda t: t.score).topic
        return CURRICULUM[0].topic


STUDENT_TEXT_FIELDS = ("code", "traceback")
"""Fields an agent's request copies from the student's own Ask (as `<message>.<field>`)."""


def refusal_of_students_input(exc: grpc.RpcError) -> str | None:
    """Why an agent refused the student's own text (INVALID_ARGUMENT naming only the code
    or traceback it was given), in words for the student; None for any other failure.

    An agent may limit what it takes more tightly than triage does (the review agent
    reads at most 2,000 lines): that is an answer for the student, not a failure of
    triage. Anything else the agent refuses is triage's own mistake and stays an error.
    """
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    status = rpc_status.from_call(exc)
    violations: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                field = violation.field.rsplit(".", 1)[-1]
                if field not in STUDENT_TEXT_FIELDS:
                    return None
                violations.append(f"the {field} {violation.description}")
    return "; ".join(violations) or None


# -- rendering -----------------------------------------------------------------------


def paragraphs(markdown: str) -> Iterator[str]:
    """The text in pieces at blank lines outside code fences, each ending its paragraph."""
    piece: list[str] = []
    in_fence = False
    for line in markdown.strip().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if piece:
                yield "\n".join(piece) + "\n\n"
                piece = []
            continue
        piece.append(line)
    if piece:
        yield "\n".join(piece) + "\n"


def render_explanation(explanation: concepts_pb2.Explanation) -> str:
    parts = [f"## {explanation.title}", explanation.body.strip()]
    for example in explanation.examples:
        if example.caption:
            parts.append(f"*{example.caption}*")
        parts.append(f"```python\n{example.code.rstrip()}\n```")
        if example.output:
            parts.append(f"Output:\n```\n{example.output.rstrip()}\n```")
    if explanation.pitfalls:
        parts.append("**Watch out for:**\n" + "\n".join(f"- {p}" for p in explanation.pitfalls))
    if explanation.diagram.mermaid:
        parts.append(f"```mermaid\n{explanation.diagram.mermaid.rstrip()}\n```")
    return "\n\n".join(parts)


def render_diagnosis(diagnosis: debug_pb2.Diagnosis) -> str:
    if diagnosis.no_error:
        return (
            "## No error\n\nYour code ran without raising an error. If it does the wrong "
            "thing, tell me what you expected and what you got."
        )
    error = diagnosis.error
    where = f" on line {error.span.line}" if error.span.line else ""
    parts = [f"## {error.error_type}{where}", f"Python says: *{error.message}*"]
    if error.source_line:
        parts.append(f"```python\n{error.source_line.strip()}\n```")
    parts.extend(hint.text.strip() for hint in diagnosis.hints)
    if diagnosis.struggle_detected:
        parts.append(
            "You've met this error several times in the last few minutes. That happens to "
            "everyone while learning: take the hints one step at a time."
        )
    parts.append(
        f"Stuck? Ask for the next hint on `{diagnosis.name}` (it gets more specific each time)."
    )
    return "\n\n".join(parts)


def render_review(review: review_pb2.CodeReview) -> str:
    parts = [f"## Code review: {review.quality_score}/100", review.summary.strip()]
    if review.findings:
        shown = review.findings[:8]
        lines = [
            f"- line {f.span.line}: `{f.rule}` {f.message}"
            for f in sorted(shown, key=lambda f: (-f.severity, f.span.line))
        ]
        more = len(review.findings) - len(shown)
        if more > 0:
            lines.append(f"- …and {more} more")
        parts.append("**What I found:**\n" + "\n".join(lines))
    for suggestion in review.suggestions[:3]:
        parts.append(f"**{suggestion.title}**: {suggestion.rationale}")
        parts.append(f"```python\n{suggestion.after.rstrip()}\n```")
    return "\n\n".join(p for p in parts if p)


def render_exercise(exercise: exercise_pb2.Exercise) -> str:
    parts = [
        f"## Try this: {exercise.title}",
        exercise.statement.strip(),
        f"```python\n{exercise.starter_code.rstrip()}\n```",
    ]
    if exercise.visible_tests:
        parts.append(
            "**It should pass:**\n"
            + "\n".join(f"- `{t.call}` → `{t.expected}`" for t in exercise.visible_tests)
        )
    parts.append(f"Submit your solution to `{exercise.name}` when you're ready.")
    return "\n\n".join(parts)


def render_progress(mastery: mastery_pb2.Mastery) -> str:
    parts = [
        f"## Your progress: {round(mastery.score * 100)}% "
        f"({BAND_NAMES.get(mastery.band, 'no evidence yet')})"
    ]
    if mastery.streak.current_days:
        parts.append(
            f"You're on a {mastery.streak.current_days}-day streak "
            f"(longest: {mastery.streak.longest_days})."
        )
    if mastery.topics:
        ranked = sorted(mastery.topics, key=lambda t: t.score, reverse=True)
        parts.append(
            "\n".join(
                f"- {TOPIC_NAMES.get(t.topic, 'topic')}: {round(t.score * 100)}%" for t in ranked
            )
        )
        weakest = ranked[-1]
        parts.append(
            f"Next step: practise **{TOPIC_NAMES.get(weakest.topic, 'your weakest topic')}**, "
            "ask me for an exercise on it."
        )
    return "\n\n".join(parts)
