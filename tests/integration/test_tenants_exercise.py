"""Schools are tenants in the exercise service, through the running mesh: student
"alice" of school-a and student "alice" of school-b, each in a cohort "c1" of their
own school, are two students. Alice's submission and quiz in school-a are read by
school-a's teacher of c1 and by an operator naming school-a, never by school-b's alice,
school-b's teacher of c1 or school-b's admin; and the graded work is announced on
progress.events with `student.tenant` "school-a".

Codes, in short (each assertion says why): another school's resource is NOT_FOUND for a
caller allowed to read the student id *in their own school* (the store looks in that
school only, so the name does not exist there, and nothing says it exists elsewhere);
PERMISSION_DENIED where the caller may not read that student id in their own school at
all (decided before any lookup, exactly as inside one school), and for anyone but an
operator naming another school."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from confluent_kafka import Consumer
from learnflow.events.v1 import events_pb2
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc, quiz_pb2, quiz_pb2_grpc

from services.exercise.domain.bank import default_bank
from services.kit.auth import TENANT_METADATA
from services.kit.bus import decode_headers
from tests.conftest import MintToken

pytestmark = pytest.mark.integration

A, B = "school-a", "school-b"
STUDENT, COHORT = "alice", "c1"
ITEM = default_bank().exercises[0]
EXERCISE_GRADED = "learnflow.events.v1.ExerciseGraded"
QUIZ_GRADED = "learnflow.events.v1.QuizGraded"
Metadata = list[tuple[str, str]]


def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def channel(mesh: dict[str, int]) -> Iterator[grpc.Channel]:
    opened = grpc.insecure_channel(f"127.0.0.1:{mesh['exercise']}")
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def exercises(channel: grpc.Channel) -> exercise_pb2_grpc.ExerciseServiceStub:
    return exercise_pb2_grpc.ExerciseServiceStub(channel)


@pytest.fixture(scope="module")
def quizzes(channel: grpc.Channel) -> quiz_pb2_grpc.QuizServiceStub:
    return quiz_pb2_grpc.QuizServiceStub(channel)


def _graded_events(
    consumer: Consumer, event_type: str, wanted: Callable[[Any], bool], count: int
) -> list[Any]:
    """The first `count` events of `event_type` on progress.events that `wanted` picks
    (other tests publish there too), bounded in time."""
    message_class = (
        events_pb2.ExerciseGraded if event_type == EXERCISE_GRADED else events_pb2.QuizGraded
    )
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while len(found) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        if decode_headers(msg.headers()).get("ce_type") != event_type:
            continue
        event = message_class.FromString(msg.value() or b"")
        if wanted(event):
            found.append(event)
    assert len(found) == count, f"read {len(found)} of {count} {event_type} events"
    return found


def _code(method: Callable[..., Any], request: Any, metadata: Metadata) -> grpc.StatusCode:
    """The status code of a call to `method` (OK when it answers)."""
    try:
        method(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def _submit(
    exercises: exercise_pb2_grpc.ExerciseServiceStub, metadata: Metadata, request_id: str
) -> exercise_pb2.Submission:
    reply: exercise_pb2.Submission = exercises.CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{STUDENT}",
            submission=exercise_pb2.Submission(
                exercise=f"exercises/{ITEM.exercise_id}", code=ITEM.reference_solution
            ),
            request_id=request_id,
        ),
        metadata=metadata,
        timeout=60,
    )
    return reply


def test_a_school_a_submission_and_quiz_stay_in_school_a(
    exercises: exercise_pb2_grpc.ExerciseServiceStub,
    quizzes: quiz_pb2_grpc.QuizServiceStub,
    progress_events: Consumer,
    mint_token: MintToken,
) -> None:
    alice_a = bearer(mint_token(STUDENT, "student", [COHORT], tenant=A))
    alice_b = bearer(mint_token(STUDENT, "student", [COHORT], tenant=B))
    request_id = f"r-{uuid.uuid4().hex}"

    # alice of school-a submits and gets a quiz.
    submission = _submit(exercises, alice_a, request_id)
    assert submission.score == 1.0
    quiz = quizzes.GenerateQuiz(
        quiz_pb2.GenerateQuizRequest(
            parent=f"students/{STUDENT}",
            topic=int(ITEM.topic),  # type: ignore[arg-type]
            question_count=2,
        ),
        metadata=alice_a,
        timeout=30,
    )
    # alice of school-b, the same id in the same-named cohort, submits too (which also
    # puts her on school-b's roster, in school-b's c1). The same request id is hers,
    # not a retry of school-a's: she gets a submission of her own.
    theirs = _submit(exercises, alice_b, request_id)
    assert theirs.name != submission.name

    get_submission = exercise_pb2.GetSubmissionRequest(name=submission.name)
    list_submissions = exercise_pb2.ListSubmissionsRequest(
        parent=f"students/{STUDENT}", exercise=f"exercises/{ITEM.exercise_id}", page_size=100
    )
    get_quiz = quiz_pb2.GetQuizRequest(name=quiz.name)

    def listed(metadata: Metadata) -> list[str]:
        reply = exercises.ListSubmissions(list_submissions, metadata=metadata, timeout=10)
        return [s.name for s in reply.submissions]

    # -- school-b never reads it ---------------------------------------------------------
    outsiders = {
        "school-b's alice": alice_b,
        "school-b's teacher of c1": bearer(mint_token("tess", "teacher", [COHORT], tenant=B)),
        "school-b's admin": bearer(mint_token("root", "admin", tenant=B)),
    }
    for who, metadata in outsiders.items():
        # NOT_FOUND, not PERMISSION_DENIED: each of them may read students/alice of
        # school-b (alice herself; the teacher of the c1 she is in; the admin of the
        # whole school), so authorisation passes, and the lookup runs in school-b only,
        # where no submission or quiz has that id. Refusing instead would mean the
        # caller had been checked against school-a's roster, and would tell them the
        # name exists in another school.
        not_found = grpc.StatusCode.NOT_FOUND
        assert _code(exercises.GetSubmission, get_submission, metadata) == not_found, who
        assert _code(quizzes.GetQuiz, get_quiz, metadata) == not_found, who
        # A listing is OK (students/alice of school-b exists) and holds school-b's
        # alice's work only: her submission, never school-a's.
        names = listed(metadata)
        assert submission.name not in names, who
        assert theirs.name in names, who

    # Nor may school-b's alice grade school-a's quiz: NOT_FOUND for the same reason (she
    # may act as students/alice of school-b, who has no such quiz).
    grade = quiz_pb2.GradeQuizRequest(name=quiz.name)
    assert _code(quizzes.GradeQuiz, grade, alice_b) == grpc.StatusCode.NOT_FOUND

    # school-b's admin may not name school-a: PERMISSION_DENIED, since only an operator
    # acts in another tenant than its token's (refused before the handler runs).
    forged = [*outsiders["school-b's admin"], (TENANT_METADATA, A)]
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert _code(exercises.GetSubmission, get_submission, forged) == denied
    assert _code(quizzes.GetQuiz, get_quiz, forged) == denied
    assert _code(exercises.ListSubmissions, list_submissions, forged) == denied

    # -- school-a's teacher of c1 and an operator naming school-a read it ----------------
    operator = bearer(mint_token("ops", "operator", tenant="platform"))
    readers = {
        "school-a's teacher of c1": bearer(mint_token("tess", "teacher", [COHORT], tenant=A)),
        "an operator naming school-a": [*operator, (TENANT_METADATA, A)],
    }
    for who, metadata in readers.items():
        got = exercises.GetSubmission(get_submission, metadata=metadata, timeout=10)
        assert (got.name, got.score) == (submission.name, 1.0), who
        assert quizzes.GetQuiz(get_quiz, metadata=metadata, timeout=10).name == quiz.name, who
        names = listed(metadata)
        assert submission.name in names, who
        assert theirs.name not in names, who

    # The operator naming school-b is in school-b: NOT_FOUND there (an operator sees
    # every student of the tenant it acts in, and school-b has no such submission).
    as_b = [*operator, (TENANT_METADATA, B)]
    assert _code(exercises.GetSubmission, get_submission, as_b) == grpc.StatusCode.NOT_FOUND

    # -- the events name the school ----------------------------------------------------
    graded = _graded_events(
        progress_events,
        EXERCISE_GRADED,
        lambda e: e.submission in (submission.name, theirs.name),
        count=2,
    )
    by_name = {e.submission: e for e in graded}
    mine = by_name[submission.name].student
    assert (mine.student_id, mine.cohort, mine.tenant) == (STUDENT, COHORT, A)
    assert by_name[theirs.name].student.tenant == B

    # alice of school-a grades her quiz (still open: school-b's attempt did nothing).
    quizzes.GradeQuiz(grade, metadata=alice_a, timeout=10)
    (quiz_event,) = _graded_events(
        progress_events, QUIZ_GRADED, lambda e: e.quiz == quiz.name, count=1
    )
    assert (quiz_event.student.student_id, quiz_event.student.tenant) == (STUDENT, A)


def test_a_teacher_of_the_same_named_cohort_elsewhere_is_refused(
    exercises: exercise_pb2_grpc.ExerciseServiceStub, mint_token: MintToken
) -> None:
    # A student school-b has never seen (a fresh id, in school-a's c1 only).
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = bearer(mint_token(student, "student", [COHORT], tenant=A))
    made: exercise_pb2.Submission = exercises.CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{student}",
            submission=exercise_pb2.Submission(
                exercise=f"exercises/{ITEM.exercise_id}", code="def (:\n"
            ),
        ),
        metadata=token,
        timeout=60,
    )
    get = exercise_pb2.GetSubmissionRequest(name=made.name)
    listing = exercise_pb2.ListSubmissionsRequest(parent=f"students/{student}")
    teacher_b = bearer(mint_token("tess", "teacher", [COHORT], tenant=B))
    # PERMISSION_DENIED: school-b's roster has no such student, so she is in none of
    # the teacher's cohorts (a cohort "c1" means school-b's c1 to them); authorisation
    # fails before any lookup, for Get and List alike, as for a student of another
    # cohort inside one school (so nothing about the id can be probed).
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert _code(exercises.GetSubmission, get, teacher_b) == denied
    assert _code(exercises.ListSubmissions, listing, teacher_b) == denied
    # school-b's admin may read any student of school-b, so it is asked and answered
    # in school-b: NOT_FOUND for the submission, an empty listing for the student.
    admin_b = bearer(mint_token("root", "admin", tenant=B))
    assert _code(exercises.GetSubmission, get, admin_b) == grpc.StatusCode.NOT_FOUND
    empty = exercises.ListSubmissions(listing, metadata=admin_b, timeout=10)
    assert list(empty.submissions) == [] and not empty.next_page_token
    # school-a's teacher of c1 reads it.
    teacher_a = bearer(mint_token("tess", "teacher", [COHORT], tenant=A))
    assert exercises.GetSubmission(get, metadata=teacher_a, timeout=10).name == made.name
