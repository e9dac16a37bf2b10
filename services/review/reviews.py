"""Making a code review: review the code (offline, plus the model when configured),
store it, tell the mastery engine its quality (progress.events) and the student's
other screens the review (learning.responses). A review is made in the tenant of the
call (the caller's `Principal.tenant`): stored there, and its events name it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.review.v1 import review_pb2

from services.kit.bus import PROGRESS_EVENTS, Publisher
from services.kit.responses import LearningResponses
from services.review.domain.model import Review, Span
from services.review.engine import ReviewEngine
from services.review.store import ReviewStore


class CodeReviews:
    def __init__(
        self,
        engine: ReviewEngine,
        store: ReviewStore,
        publisher: Publisher,
        responses: LearningResponses,
    ) -> None:
        self._engine = engine
        self._store = store
        self._publisher = publisher
        self._responses = responses

    def create(
        self, tenant: str, *, student_id: str, cohort: str, code: str, topic: int, exercise: str
    ) -> review_pb2.CodeReview:
        reviewed = self._engine.review(code, topic)
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        review_id = uuid.uuid4().hex[:16]
        message = review_pb2.CodeReview(
            name=f"students/{student_id}/codeReviews/{review_id}",
            code=code,
            topic=topic,  # type: ignore[arg-type]
            exercise=exercise,
            create_time=now,
        )
        encode(reviewed, message)
        self._store.add(
            tenant,
            student_id=student_id,
            review_id=review_id,
            cohort=cohort,
            exercise_id=exercise.removeprefix("exercises/") or None,
            quality_score=message.quality_score,
            create_time=now.ToDatetime(tzinfo=UTC),
            message=message.SerializeToString(),
        )
        # Mastery is per topic: a review of code on no particular topic is stored and
        # returned, but has no topic's quality component to move.
        if message.topic:
            self._publisher.publish(
                PROGRESS_EVENTS,
                events_pb2.CodeReviewed(
                    student=events_pb2.StudentRef(
                        student_id=student_id, cohort=cohort, tenant=tenant
                    ),
                    topic=message.topic,
                    code_review=message.name,
                    quality_score=message.quality_score,
                    occur_time=message.create_time,
                ),
                key=student_id,
                event_id=message.name,  # stable: a re-publish is the same event
            )
        self._responses.answer(
            student_id, summary_markdown(message), resource=message.name, cohort=cohort
        )
        return message


def summary_markdown(review: review_pb2.CodeReview) -> str:
    """The review for a live screen: the score, the summary and the first findings."""
    parts = [f"## Code review: {review.quality_score}/100", review.summary.strip()]
    shown = review.findings[:3]
    if shown:
        lines = [f"- line {f.span.line}: `{f.rule}` {f.message}" for f in shown]
        if len(review.findings) > len(shown):
            lines.append(f"- …and {len(review.findings) - len(shown)} more")
        parts.append("\n".join(lines))
    return "\n\n".join(p for p in parts if p)


def _span(span: Span) -> common_pb2.SourceSpan:
    return common_pb2.SourceSpan(
        line=span.line, column=span.column, end_line=span.end_line, end_column=span.end_column
    )


def encode(review: Review, into: review_pb2.CodeReview) -> None:
    """The domain review's results on the API message."""
    into.quality_score = review.quality_score
    into.summary = review.summary
    into.findings.extend(
        review_pb2.Finding(
            rule=f.rule,
            category=int(f.category),  # type: ignore[arg-type]
            severity=int(f.severity),  # type: ignore[arg-type]
            message=f.message,
            span=_span(f.span),
        )
        for f in review.findings
    )
    into.suggestions.extend(
        review_pb2.Suggestion(
            title=s.title,
            before=s.before,
            after=s.after,
            rationale=s.rationale,
            span=_span(s.span),
            origin=int(s.origin),  # type: ignore[arg-type]
        )
        for s in review.suggestions
    )
    m = review.metrics
    into.metrics.CopyFrom(
        review_pb2.CodeMetrics(
            lines_of_code=m.lines_of_code,
            max_cyclomatic_complexity=m.max_cyclomatic_complexity,
            mean_cyclomatic_complexity=m.mean_cyclomatic_complexity,
            maintainability_index=m.maintainability_index,
        )
    )
