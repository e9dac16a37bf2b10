"""ReviewService: decode, authorise on the message, call the review use case, encode.

Every call acts in the caller's tenant (`Principal.tenant`): a review of another
tenant's student of the same id does not exist here (NOT_FOUND; an empty list)."""

from __future__ import annotations

import grpc
from learnflow.common.v1 import common_pb2
from learnflow.review.v1 import review_pb2, review_pb2_grpc

from services.kit.errors import NotFound, Validator
from services.kit.interceptors import current_principal
from services.kit.names import check_name, parse_name
from services.kit.pagination import next_page_token, parse_page
from services.kit.roster import Roster
from services.review.reviews import CodeReviews
from services.review.store import ReviewStore

MAX_CODE_BYTES = 64 * 1024
MAX_CODE_LINES = 2000
MAX_TOPIC = max(common_pb2.Topic.values())


class ReviewServicer(review_pb2_grpc.ReviewServiceServicer):
    def __init__(self, reviews: CodeReviews, store: ReviewStore, roster: Roster) -> None:
        self._reviews = reviews
        self._store = store
        self._roster = roster

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
        if given.exercise:
            check_name(checks, given.exercise, "exercises/*", "code_review.exercise")
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)

        return self._reviews.create(
            principal.tenant,
            student_id=student_id,
            cohort=self._roster.cohort_for_work(principal, student_id),
            code=code,
            topic=int(given.topic),
            exercise=given.exercise,
        )

    def GetCodeReview(
        self, request: review_pb2.GetCodeReviewRequest, context: grpc.ServicerContext
    ) -> review_pb2.CodeReview:
        student_id, review_id = parse_name(request.name, "students/*/codeReviews/*", "name")
        principal = current_principal()
        # Before any lookup (nothing leaks), and exactly as ListCodeReviews does.
        self._roster.require_readable(principal, student_id)
        stored = self._store.get(principal.tenant, student_id, review_id)
        if stored is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        return review_pb2.CodeReview.FromString(stored.message)

    def ListCodeReviews(
        self, request: review_pb2.ListCodeReviewsRequest, context: grpc.ServicerContext
    ) -> review_pb2.ListCodeReviewsResponse:
        (student_id,) = parse_name(request.parent, "students/*", "parent")
        page = parse_page(request.page_size, request.page_token, default=20, maximum=100)
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        messages, total = self._store.list(principal.tenant, student_id, page.offset, page.size)
        reviews = []
        for raw in messages:
            item = review_pb2.CodeReview.FromString(raw)
            item.ClearField("code")  # listings stay light; GetCodeReview has the code
            reviews.append(item)
        return review_pb2.ListCodeReviewsResponse(
            code_reviews=reviews, next_page_token=next_page_token(page, total)
        )
