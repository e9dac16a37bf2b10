"""ReviewService: decode, authorise on the message, review, store, publish, encode."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.review.v1 import review_pb2, review_pb2_grpc

from services.kit.auth import Role
from services.kit.bus import PROGRESS_EVENTS, Publisher
from services.kit.errors import NotFound, Validator
from services.kit.interceptors import current_principal
from services.kit.names import check_name, parse_name
from services.kit.pagination import next_page_token, parse_page
from services.review.domain.model import Review, Span
from services.review.engine import ReviewEngine
from services.review.store import ReviewStore

MAX_CODE_BYTES = 64 * 1024
MAX_CODE_LINES = 2000
MAX_TOPIC = max(common_pb2.Topic.values())


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


class ReviewServicer(review_pb2_grpc.ReviewServiceServicer):
    def __init__(self, engine: ReviewEngine, store: ReviewStore, publisher: Publisher) -> None:
        self._engine = engine
        self._store = store
        self._publisher = publisher

    def CreateCodeReview(
        self, request: review_pb2.CreateCodeReviewRequest, context: grpc.ServicerContext
    ) -> review_pb2.CodeReview:
        checks = Validator()
        (student_id,) = check_name(checks, request.parent, "students/*", "parent")
        given = request.code_review
        code = given.code
        checks.check(bool(code.strip()), "code_review.code", "is required")
        checks.check(
            len(code.encode()) <= MAX_CODE_BYTES, "code_review.code", "must be at most 64 KiB"
        )
        checks.check(
            len(code.splitlines()) <= MAX_CODE_LINES,
            "code_review.code",
            f"must be at most {MAX_CODE_LINES:,} lines",
        )
        checks.check(
            0 <= given.topic <= MAX_TOPIC, "code_review.topic", "is not a curriculum topic"
        )
        exercise_id = None
        if given.exercise:
            (exercise_id,) = check_name(
                checks, given.exercise, "exercises/*", "code_review.exercise"
            )
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)

        reviewed = self._engine.review(code, int(given.topic))
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        review_id = uuid.uuid4().hex[:16]
        message = review_pb2.CodeReview(
            name=f"students/{student_id}/codeReviews/{review_id}",
            code=code,
            topic=given.topic,
            exercise=given.exercise,
            create_time=now,
        )
        encode(reviewed, message)
        cohort = principal.own_cohort
        self._store.add(
            student_id=student_id,
            review_id=review_id,
            cohort=cohort,
            exercise_id=exercise_id,
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
                    student=events_pb2.StudentRef(student_id=student_id, cohort=cohort),
                    topic=message.topic,
                    code_review=message.name,
                    quality_score=message.quality_score,
                    occur_time=message.create_time,
                ),
                key=student_id,
                event_id=message.name,  # stable: a re-publish is the same event
            )
        return message

    def GetCodeReview(
        self, request: review_pb2.GetCodeReviewRequest, context: grpc.ServicerContext
    ) -> review_pb2.CodeReview:
        student_id, review_id = parse_name(request.name, "students/*/codeReviews/*", "name")
        principal = current_principal()
        if principal.role is Role.STUDENT:
            principal.require_acting_as(student_id)  # before any lookup: nothing leaks
        stored = self._store.get(student_id, review_id)
        if stored is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        principal.require_student(student_id, stored.cohort or None)
        return review_pb2.CodeReview.FromString(stored.message)

    def ListCodeReviews(
        self, request: review_pb2.ListCodeReviewsRequest, context: grpc.ServicerContext
    ) -> review_pb2.ListCodeReviewsResponse:
        (student_id,) = parse_name(request.parent, "students/*", "parent")
        page = parse_page(request.page_size, request.page_token, default=20, maximum=100)
        principal = current_principal()
        cohorts: tuple[str, ...] | None = None
        if principal.role is Role.STUDENT:
            principal.require_acting_as(student_id)
        elif principal.role is Role.TEACHER:
            cohorts = principal.cohorts  # a teacher sees the reviews made in their classes
        messages, total = self._store.list(student_id, cohorts, page.offset, page.size)
        reviews = []
        for raw in messages:
            item = review_pb2.CodeReview.FromString(raw)
            item.ClearField("code")  # listings stay light; GetCodeReview has the code
            reviews.append(item)
        return review_pb2.ListCodeReviewsResponse(
            code_reviews=reviews, next_page_token=next_page_token(page, total)
        )
