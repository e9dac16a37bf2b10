"""One roster: a student's resources belong to the student's cohort now, whoever made
them, and every List answers exactly like its Get for the same caller (issue items 10
and 12: a teacher of another cohort listed bob's diagnoses as an empty page; bob's own
teacher was refused his submissions; reviews an admin made for bob were hidden from
bob's teacher)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc

from tests.conftest import MintToken, bearer, wait_for

pytestmark = pytest.mark.integration

CLEAN = "def add(a, b):\n    return a + b\n"


def code_of(call: Callable[[str], object], token: str) -> grpc.StatusCode:
    try:
        call(token)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_list_answers_like_get_for_every_caller(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    cohort, other = f"c-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    bob = f"bob-{uuid.uuid4().hex[:6]}"
    bob_token = mint_token(bob, "student", [cohort])
    admin = mint_token("root", "admin")
    reviews = review_pb2_grpc.ReviewServiceStub(channels["review"])
    debug = debug_pb2_grpc.DebugServiceStub(channels["debug"])
    exercises = exercise_pb2_grpc.ExerciseServiceStub(channels["exercise"])

    # Bob makes a diagnosis and a submission himself; an admin makes a review for him.
    diagnosis = debug.CreateDiagnosis(
        debug_pb2.CreateDiagnosisRequest(
            parent=f"students/{bob}",
            diagnosis=debug_pb2.Diagnosis(code="print(1/0)\n", traceback=""),
        ),
        metadata=bearer(bob_token),
        timeout=30,
    )
    exercise = exercises.ListExercises(
        exercise_pb2.ListExercisesRequest(page_size=1), metadata=bearer(bob_token), timeout=10
    ).exercises[0]
    submission = exercises.CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{bob}",
            submission=exercise_pb2.Submission(exercise=exercise.name, code=CLEAN),
        ),
        metadata=bearer(bob_token),
        timeout=60,
    )
    review = reviews.CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{bob}", code_review=review_pb2.CodeReview(code=CLEAN)
        ),
        metadata=bearer(admin),
        timeout=30,
    )

    callers = {
        "bob": bob_token,
        "alice (same cohort)": mint_token(f"alice-{uuid.uuid4().hex[:6]}", "student", [cohort]),
        "bob's teacher": mint_token("tess", "teacher", [cohort]),
        "another cohort's teacher": mint_token("tom", "teacher", [other]),
        "admin": admin,
    }
    parent = f"students/{bob}"
    pairs = {
        "diagnoses": (
            lambda t: debug.GetDiagnosis(
                debug_pb2.GetDiagnosisRequest(name=diagnosis.name), metadata=bearer(t), timeout=10
            ),
            lambda t: debug.ListDiagnoses(
                debug_pb2.ListDiagnosesRequest(parent=parent), metadata=bearer(t), timeout=10
            ),
        ),
        "reviews": (
            lambda t: reviews.GetCodeReview(
                review_pb2.GetCodeReviewRequest(name=review.name), metadata=bearer(t), timeout=10
            ),
            lambda t: reviews.ListCodeReviews(
                review_pb2.ListCodeReviewsRequest(parent=parent), metadata=bearer(t), timeout=10
            ),
        ),
        "submissions": (
            lambda t: exercises.GetSubmission(
                exercise_pb2.GetSubmissionRequest(name=submission.name),
                metadata=bearer(t),
                timeout=10,
            ),
            lambda t: exercises.ListSubmissions(
                exercise_pb2.ListSubmissionsRequest(parent=parent), metadata=bearer(t), timeout=10
            ),
        ),
    }
    expected = {
        "bob": grpc.StatusCode.OK,
        "alice (same cohort)": grpc.StatusCode.PERMISSION_DENIED,
        "bob's teacher": grpc.StatusCode.OK,
        "another cohort's teacher": grpc.StatusCode.PERMISSION_DENIED,
        "admin": grpc.StatusCode.OK,
    }
    seen = {
        (kind, who): (code_of(get, token), code_of(listing, token))
        for kind, (get, listing) in pairs.items()
        for who, token in callers.items()
    }
    assert seen == {(kind, who): (expected[who],) * 2 for kind in pairs for who in callers}

    # The mastery engine authorises alike (bob's graded submission reached it by event).
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])

    def read_mastery(token: str) -> object:
        request = mastery_pb2.GetMasteryRequest(name=f"students/{bob}/mastery")
        return mastery.GetMastery(request, metadata=bearer(token), timeout=10)

    wait_for(
        lambda: True if code_of(read_mastery, bob_token) is grpc.StatusCode.OK else None,
        what="bob's graded submission to reach the mastery engine",
    )
    assert {who: code_of(read_mastery, token) for who, token in callers.items()} == expected

    # What a caller may list is everything: the admin's review is in the teacher's list.
    teacher = callers["bob's teacher"]
    listed = reviews.ListCodeReviews(
        review_pb2.ListCodeReviewsRequest(parent=parent), metadata=bearer(teacher), timeout=10
    )
    assert [r.name for r in listed.code_reviews] == [review.name]


def test_a_student_who_changes_class_takes_their_work_along(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    first, second = f"c-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    reviews = review_pb2_grpc.ReviewServiceStub(channels["review"])
    made = reviews.CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{carol}", code_review=review_pb2.CodeReview(code=CLEAN)
        ),
        metadata=bearer(mint_token(carol, "student", [first])),
        timeout=30,
    )
    # Carol's identity provider now puts her in the second class; she calls once with it.
    reviews.ListCodeReviews(
        review_pb2.ListCodeReviewsRequest(parent=f"students/{carol}"),
        metadata=bearer(mint_token(carol, "student", [second])),
        timeout=10,
    )

    def read(token: str) -> object:
        request = review_pb2.GetCodeReviewRequest(name=made.name)
        return reviews.GetCodeReview(request, metadata=bearer(token), timeout=10)

    new_teacher = mint_token("nina", "teacher", [second])
    old_teacher = mint_token("olaf", "teacher", [first])
    # The roster's cache is per process and short: the change shows within seconds.
    wait_for(
        lambda: True if code_of(read, new_teacher) is grpc.StatusCode.OK else None,
        15,
        "the new teacher to see carol's review",
    )
    assert code_of(read, old_teacher) is grpc.StatusCode.PERMISSION_DENIED
