"""The review service on the running mesh: reviews made by the real linter are stored
and read back over gRPC and through Envoy, bad requests name their fields, students
only reach their own reviews, and a review moves the quality component of mastery
(review -> Kafka -> mastery -> GetMastery)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from learnflow.common.v1 import common_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc

from tests.conftest import MintToken, bearer, wait_for
from tests.review.samples import BAD, CLEAN
from tests.support.rich_errors import error_of

pytestmark = pytest.mark.integration

FUNCTIONS = common_pb2.TOPIC_FUNCTIONS


@pytest.fixture(scope="module")
def reviews(mesh: dict[str, int]) -> Iterator[review_pb2_grpc.ReviewServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh['review']}")
    yield review_pb2_grpc.ReviewServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def mastery(mesh: dict[str, int]) -> Iterator[mastery_pb2_grpc.MasteryServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh['mastery']}")
    yield mastery_pb2_grpc.MasteryServiceStub(channel)
    channel.close()


def create(
    stub: review_pb2_grpc.ReviewServiceStub,
    token: str,
    student: str,
    code: str,
    topic: int = FUNCTIONS,
    exercise: str = "",
) -> review_pb2.CodeReview:
    made: review_pb2.CodeReview = stub.CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{student}",
            code_review=review_pb2.CodeReview(code=code, topic=topic, exercise=exercise),  # type: ignore[arg-type]
        ),
        metadata=bearer(token),
        timeout=30,
    )
    return made


def test_create_get_and_list_reviews(
    reviews: review_pb2_grpc.ReviewServiceStub, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-review"])
    bad = create(reviews, token, student, BAD, exercise="exercises/functions-001")

    assert bad.name.startswith(f"students/{student}/codeReviews/")
    assert (bad.code, bad.topic, bad.exercise) == (BAD, FUNCTIONS, "exercises/functions-001")
    found = {(f.rule, f.span.line) for f in bad.findings}
    assert {("F401", 2), ("E722", 11), ("C901", 17), ("F821", 40)} <= found
    undefined = next(f for f in bad.findings if f.rule == "F821")
    assert undefined.category == review_pb2.FINDING_CATEGORY_CORRECTNESS
    assert undefined.severity == review_pb2.SEVERITY_ERROR
    assert 0 < bad.quality_score < 50
    assert bad.metrics.lines_of_code == 34 and bad.metrics.max_cyclomatic_complexity == 12
    assert bad.suggestions and all(
        s.origin == review_pb2.Suggestion.ORIGIN_LINTER and s.before and s.rationale
        for s in bad.suggestions
    )
    assert f"Quality {bad.quality_score}/100" in bad.summary
    assert bad.create_time.seconds > 0

    clean = create(reviews, token, student, CLEAN)
    assert clean.quality_score == 100 and not clean.findings

    got = reviews.GetCodeReview(
        review_pb2.GetCodeReviewRequest(name=bad.name), metadata=bearer(token)
    )
    assert got == bad

    first = reviews.ListCodeReviews(
        review_pb2.ListCodeReviewsRequest(parent=f"students/{student}", page_size=1),
        metadata=bearer(token),
    )
    assert [r.name for r in first.code_reviews] == [clean.name]  # newest first
    assert first.next_page_token
    second = reviews.ListCodeReviews(
        review_pb2.ListCodeReviewsRequest(
            parent=f"students/{student}", page_size=1, page_token=first.next_page_token
        ),
        metadata=bearer(token),
    )
    assert [r.name for r in second.code_reviews] == [bad.name]
    assert second.next_page_token == ""
    listed = second.code_reviews[0]
    assert listed.code == "" and listed.quality_score == bad.quality_score  # listings are light

    missing = f"students/{student}/codeReviews/nosuch"
    code, reason, _ = error_of(
        lambda: reviews.GetCodeReview(
            review_pb2.GetCodeReviewRequest(name=missing), metadata=bearer(token)
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")


def test_code_that_does_not_parse_is_reviewed_not_refused(
    reviews: review_pb2_grpc.ReviewServiceStub, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    review = create(reviews, mint_token(student), student, "def f(:\n    return 1\n")
    assert [(f.rule, f.span.line) for f in review.findings] == [("E999", 1)]
    assert review.quality_score == 0 and "does not parse" in review.summary


def test_bad_requests_name_every_bad_field(
    reviews: review_pb2_grpc.ReviewServiceStub, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student)

    def attempt(parent: str, **fields: Any) -> tuple[grpc.StatusCode, str, list[str]]:
        return error_of(
            lambda: reviews.CreateCodeReview(
                review_pb2.CreateCodeReviewRequest(
                    parent=parent, code_review=review_pb2.CodeReview(**fields)
                ),
                metadata=bearer(token),
                timeout=30,
            )
        )

    invalid = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELDS")
    everything = attempt("teachers/x", code="  ", topic=99, exercise="bank/1")
    assert everything == (
        *invalid,
        ["code_review.code", "code_review.exercise", "code_review.topic", "parent"],
    )
    too_big = "x = 1\n" + "#" * (64 * 1024)
    assert attempt(f"students/{student}", code=too_big) == (*invalid, ["code_review.code"])
    too_long = "x = 1\n" * 2001
    assert attempt(f"students/{student}", code=too_long) == (*invalid, ["code_review.code"])
    # At the limits it is accepted.
    at_limit = create(reviews, token, student, "x = 1\n" * 2000, topic=0)
    assert at_limit.metrics.lines_of_code == 2000


def test_students_reach_only_their_own_reviews(
    reviews: review_pb2_grpc.ReviewServiceStub, mint_token: MintToken
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    cohort = f"c-{uuid.uuid4().hex[:6]}"
    alice_token, bob_token = mint_token(alice, "student", [cohort]), mint_token(bob)
    review = create(reviews, alice_token, alice, CLEAN)
    denied: tuple[grpc.StatusCode, str, list[str]] = (
        grpc.StatusCode.PERMISSION_DENIED,
        "ACCESS_DENIED",
        [],
    )

    assert error_of(lambda: create(reviews, bob_token, alice, CLEAN)) == denied
    assert (
        error_of(
            lambda: reviews.GetCodeReview(
                review_pb2.GetCodeReviewRequest(name=review.name), metadata=bearer(bob_token)
            )
        )
        == denied
    )
    # Refused before any lookup: a made-up review of alice's is refused the same way.
    assert (
        error_of(
            lambda: reviews.GetCodeReview(
                review_pb2.GetCodeReviewRequest(name=f"students/{alice}/codeReviews/x"),
                metadata=bearer(bob_token),
            )
        )
        == denied
    )
    assert (
        error_of(
            lambda: reviews.ListCodeReviews(
                review_pb2.ListCodeReviewsRequest(parent=f"students/{alice}"),
                metadata=bearer(bob_token),
            )
        )
        == denied
    )

    # A teacher reads the reviews made in their cohorts, and nobody else's.
    teacher = mint_token("t-1", "teacher", [cohort])
    other_teacher = mint_token("t-2", "teacher", ["another-class"])
    got = reviews.GetCodeReview(
        review_pb2.GetCodeReviewRequest(name=review.name), metadata=bearer(teacher)
    )
    assert got.name == review.name
    assert (
        error_of(
            lambda: reviews.GetCodeReview(
                review_pb2.GetCodeReviewRequest(name=review.name),
                metadata=bearer(other_teacher),
            )
        )
        == denied
    )
    mine = reviews.ListCodeReviews(
        review_pb2.ListCodeReviewsRequest(parent=f"students/{alice}"), metadata=bearer(teacher)
    )
    assert [r.name for r in mine.code_reviews] == [review.name]
    # The list answers as the Get does: refused, not an empty page.
    assert (
        error_of(
            lambda: reviews.ListCodeReviews(
                review_pb2.ListCodeReviewsRequest(parent=f"students/{alice}"),
                metadata=bearer(other_teacher),
            )
        )
        == denied
    )
    # Teachers read; they do not make reviews that count towards a student's mastery.
    assert error_of(lambda: create(reviews, teacher, alice, CLEAN)) == denied
    # An admin may do both.
    admin = mint_token("root", "admin")
    assert create(reviews, admin, alice, CLEAN).quality_score == 100


def test_a_review_moves_the_quality_component_of_mastery(
    reviews: review_pb2_grpc.ReviewServiceStub,
    mastery: mastery_pb2_grpc.MasteryServiceStub,
    mint_token: MintToken,
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-quality"])
    review = create(reviews, token, student, BAD)

    def quality_evidence() -> mastery_pb2.Mastery | None:
        try:
            m: mastery_pb2.Mastery = mastery.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
                metadata=bearer(token),
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return m if m.evidence.quality.event_count >= 1 else None

    m = wait_for(quality_evidence, what="the review in mastery")
    assert m.evidence.quality.event_count == 1
    (evidence,) = m.evidence.quality.latest
    assert evidence.event_id == review.name  # the event is the review, traceable
    assert evidence.subject == review.name
    assert evidence.source == "//learnflow.dev/review"
    assert evidence.topic == FUNCTIONS
    assert evidence.value == pytest.approx(review.quality_score / 100)
    assert m.components.quality == pytest.approx(review.quality_score / 100)
    assert m.cohort == "cohorts/c-quality"  # the cohort travelled with the event

    # A second, clean review raises the mean.
    create(reviews, token, student, CLEAN)

    def both() -> mastery_pb2.Mastery | None:
        current = quality_evidence()
        return current if current and current.evidence.quality.event_count == 2 else None

    after = wait_for(both, what="the second review in mastery")
    assert after.components.quality == pytest.approx((review.quality_score + 100) / 200)


def test_a_review_through_envoy_as_json(gateway_url: str, mint_token: MintToken) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    http = httpx.Client(
        base_url=gateway_url,
        headers={"authorization": f"Bearer {mint_token(student)}"},
        timeout=30,
    )
    code = "import os\ndef Add(a,b):\n    return a+b\n"
    made = http.post(
        f"/v1/students/{student}/codeReviews", json={"code": code, "topic": "TOPIC_FUNCTIONS"}
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["name"].startswith(f"students/{student}/codeReviews/")
    assert {"F401", "N802", "E231", "E302"} <= {f["rule"] for f in body["findings"]}
    assert 0 < body["qualityScore"] < 100
    assert body["suggestions"][0]["origin"] == "ORIGIN_LINTER"
    listed = http.get(f"/v1/students/{student}/codeReviews").json()
    assert [r["name"] for r in listed["codeReviews"]] == [body["name"]]
    assert http.get(f"/v1/{body['name']}").json()["code"] == code

    refused = http.post(f"/v1/students/{student}/codeReviews", json={"code": ""})
    assert refused.status_code == 400
    details = refused.json()["details"]
    bad_request = next(d for d in details if d["@type"].endswith("google.rpc.BadRequest"))
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["code_review.code"]
