"""What an audit record says a call touched, read generically from sample requests of
several services (services/kit/audit.py): resource names anywhere in the request, and
the students they (or `student`/`student_id` fields) name. New RPCs are covered without
code as long as they name resources the AIP way."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from learnflow.concepts.v1 import concepts_pb2
from learnflow.events.v1 import events_pb2
from learnflow.exercise.v1 import exercise_pb2, quiz_pb2
from learnflow.mastery.v1 import mastery_pb2
from learnflow.notify.v1 import notify_pb2
from learnflow.review.v1 import review_pb2
from learnflow.triage.v1 import triage_pb2

from services.kit.audit import (
    MAX_NAMED,
    Touched,
    client_address,
    is_resource_name,
    student_of,
    touched,
    trace_id,
)

SAMPLES: list[tuple[str, Message, Touched]] = [
    (
        "mastery GetMastery",
        mastery_pb2.GetMasteryRequest(name="students/alice/mastery"),
        Touched(("students/alice/mastery",), ("alice",)),
    ),
    (
        "mastery ListCohortMasteries: the cohort, not its students",
        mastery_pb2.ListCohortMasteriesRequest(cohort="cohorts/c1", page_size=10),
        Touched(("cohorts/c1",), ()),
    ),
    (
        "mastery CompareCohorts: repeated names",
        mastery_pb2.CompareCohortsRequest(cohorts=["cohorts/c1", "cohorts/c2", "cohorts/c1"]),
        Touched(("cohorts/c1", "cohorts/c2"), ()),
    ),
    (
        "mastery UpdateStudent: a nested resource; a time zone is not a name",
        mastery_pb2.UpdateStudentRequest(
            student=mastery_pb2.Student(
                name="students/zed", cohort="cohorts/c2", time_zone="America/Chicago"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["cohort", "time_zone"]),
        ),
        Touched(("students/zed", "cohorts/c2"), ("zed",)),
    ),
    (
        "review CreateCodeReview: code is text, not names",
        review_pb2.CreateCodeReviewRequest(
            parent="students/bob",
            code_review=review_pb2.CodeReview(
                code="path = 'students/eve'\nprint(path)\n", exercise="exercises/e1"
            ),
        ),
        Touched(("students/bob", "exercises/e1"), ("bob",)),
    ),
    (
        "exercise CreateSubmission",
        exercise_pb2.CreateSubmissionRequest(
            parent="students/carol",
            submission=exercise_pb2.Submission(exercise="exercises/e7", code="x = 1"),
            request_id="retry-key-1",
        ),
        Touched(("students/carol", "exercises/e7"), ("carol",)),
    ),
    (
        "exercise GetQuiz",
        quiz_pb2.GetQuizRequest(name="students/dan/quizzes/q1"),
        Touched(("students/dan/quizzes/q1",), ("dan",)),
    ),
    (
        "notify ListAlerts: every cohort, one student",
        notify_pb2.ListAlertsRequest(parent="cohorts/-", student="students/erin"),
        Touched(("cohorts/-", "students/erin"), ("erin",)),
    ),
    (
        "notify StreamUpdates",
        notify_pb2.StreamUpdatesRequest(subscriber="students/finn", cursor="42"),
        Touched(("students/finn",), ("finn",)),
    ),
    (
        "concepts ExplainConcept: free text is not a name",
        concepts_pb2.ExplainConceptRequest(
            student="students/gus", question="what does items/2 mean in a/b?"
        ),
        Touched(("students/gus",), ("gus",)),
    ),
    (
        "concepts GetTopic: a resource but no student",
        concepts_pb2.GetTopicRequest(name="topics/functions"),
        Touched(("topics/functions",), ()),
    ),
    (
        "triage Ask",
        triage_pb2.AskRequest(student="students/hana", question="help", code="a/b"),
        Touched(("students/hana",), ("hana",)),
    ),
    (
        "a bare id in a student_id field",
        events_pb2.StudentRef(student_id="ivy", cohort="c1", tenant="school-a"),
        Touched((), ("ivy",)),
    ),
    (
        "students/- names no student",
        notify_pb2.StreamUpdatesRequest(subscriber="students/-"),
        Touched(("students/-",), ()),
    ),
    ("an empty request", mastery_pb2.GetMasteryRequest(), Touched()),
]


@pytest.mark.parametrize(
    ("request_message", "expected"),
    [(message, expected) for _, message, expected in SAMPLES],
    ids=[what for what, _, _ in SAMPLES],
)
def test_what_sample_requests_touch(request_message: Message, expected: Touched) -> None:
    assert touched(request_message) == expected


def test_anything_but_a_message_touches_nothing() -> None:
    assert touched(iter([mastery_pb2.GetMasteryRequest()])) == Touched()
    assert touched(b"\x00garbage") == Touched()
    assert touched(None) == Touched()


def test_what_is_kept_is_bounded() -> None:
    request = mastery_pb2.CompareCohortsRequest(cohorts=[f"cohorts/c{i}" for i in range(100)])
    assert len(touched(request).resources) == MAX_NAMED
    long_name = "students/" + "x" * 600
    assert touched(mastery_pb2.GetMasteryRequest(name=long_name)) == Touched()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("students/alice", True),
        ("students/alice@example.com|7/mastery", True),
        ("cohorts/c1/alerts/a1", True),
        ("cohorts/c1/summary", True),
        ("operations/abc-1", True),
        ("students", False),
        ("students/", False),
        ("students//mastery", False),
        ("students/a b", False),
        ("students/a\x00b", False),
        ("Students/alice", False),
        ("student/alice", False),  # a collection is plural
        ("and/or", False),
        ("type.googleapis.com/learnflow.x", False),
        ("/students/alice", False),
        ("students/alice/", False),
    ],
)
def test_resource_names(value: str, expected: bool) -> None:
    assert is_resource_name(value) is expected


def test_the_student_a_name_belongs_to() -> None:
    assert student_of("students/alice/quizzes/q1") == "alice"
    assert student_of("students/alice") == "alice"
    assert student_of("students/-") is None
    assert student_of("cohorts/c1") is None


@pytest.mark.parametrize(
    ("traceparent", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),
        ("not a traceparent", ""),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""),
        (None, ""),
        ("", ""),
    ],
)
def test_trace_id(traceparent: str | None, expected: str) -> None:
    assert trace_id(traceparent) == expected


def test_where_a_call_came_from() -> None:
    assert client_address("192.0.2.1", True, "ipv4:10.0.0.2:1") == "192.0.2.1"
    assert client_address("203.0.113.9, 198.51.100.7", False, "x") == "198.51.100.7"
    assert client_address(None, False, "ipv4:10.0.0.2:5000") == "ipv4:10.0.0.2:5000"
    assert client_address("a\x00b", True, "") == "a\ufffdb"
