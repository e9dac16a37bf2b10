"""learning.responses on the real Kafka: every answer an agent gives over gRPC arrives
keyed by the student, with the agent, the student (and their tenant: notify's updates
consumer dead-letters an answer without one), the request id and the text; a whole
answer is one final event naming its resource, an Ask is its chunks in order, and an
answer triage relays from an agent is published once (by triage)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from confluent_kafka import Consumer
from learnflow.common.v1 import common_pb2
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.events.v1 import events_pb2
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc, quiz_pb2, quiz_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.exercise.domain.bank import default_bank
from services.kit.auth import DEV_TENANT
from services.kit.bus import LEARNING_RESPONSES, decode_headers
from services.kit.config import Settings
from tests.conftest import MintToken, wait_for

pytestmark = pytest.mark.integration

BANK = default_bank()
KEY_ERROR_CODE = 'ages = {"amy": 31}\nprint(ages["bob"])\n'
KEY_ERROR_TRACEBACK = """Traceback (most recent call last):
  File "main.py", line 2, in <module>
    print(ages["bob"])
KeyError: 'bob'
"""

Seen = tuple[dict[str, str], events_pb2.LearningResponse]


class ResponseWatch:
    """Reads learning.responses from the end (a fresh group, assigned before any call
    is made), keeping the events keyed by one student."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"responses-{uuid.uuid4().hex}",
                "auto.offset.reset": "latest",  # the topic holds every test's events
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([LEARNING_RESPONSES])
        consumer = self._consumer
        wait_for(
            lambda: consumer.assignment() or (consumer.poll(0.2) and None) or None,
            30,
            "assignment",
        )
        self._seen: list[tuple[str, Seen]] = []

    def collect(self, student: str, *, finals: int = 1, settle: float = 2.0) -> list[Seen]:
        """The student's events once `finals` final ones arrived, plus `settle` seconds
        so that a duplicate would be seen too."""
        deadline = time.monotonic() + 40
        settled_at: float | None = None
        while time.monotonic() < (settled_at or deadline):
            for msg in self._consumer.consume(500, 0.3):
                if msg.error() is None:
                    key = (msg.key() or b"").decode()
                    event = events_pb2.LearningResponse.FromString(msg.value() or b"")
                    self._seen.append((key, (decode_headers(msg.headers()), event)))
            mine = [seen for key, seen in self._seen if key == student]
            if settled_at is None and sum(e.final for _, e in mine) >= finals:
                settled_at = time.monotonic() + settle
        return [seen for key, seen in self._seen if key == student]

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def watch(settings: Settings, mesh: dict[str, int]) -> Iterator[ResponseWatch]:
    assert settings.kafka_bootstrap_servers
    watcher = ResponseWatch(settings.kafka_bootstrap_servers)
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def channel(mesh: dict[str, int]) -> Iterator[dict[str, grpc.Channel]]:
    channels = {
        name: grpc.insecure_channel(f"127.0.0.1:{mesh[name]}")
        for name in ("concepts", "review", "debug", "exercise", "triage")
    }
    yield channels
    for made in channels.values():
        made.close()


def student_and_token(
    mint_token: MintToken, tenant: str = DEV_TENANT
) -> tuple[str, list[tuple[str, str]]]:
    student = f"live-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ["c-live"], tenant=tenant)
    return student, [
        ("authorization", f"Bearer {token}"),
        ("x-request-id", f"req-{uuid.uuid4().hex}"),
    ]


def whole_answer(
    found: list[Seen], student: str, metadata: list[tuple[str, str]], tenant: str = DEV_TENANT
) -> Any:
    """The one event of a whole answer, checked for what every one carries."""
    assert len(found) == 1, [e for _, e in found]
    headers, event = found[0]
    assert headers["ce_type"] == "learnflow.events.v1.LearningResponse"
    assert headers["ce_subject"] == student
    assert event.student.student_id == student
    assert event.student.tenant == tenant
    assert event.request_id == dict(metadata)["x-request-id"]
    assert event.final and event.sequence == 0
    assert event.text.strip() and event.occur_time.seconds > 0
    return event


def test_an_explanation_is_published(
    channel: dict[str, grpc.Channel], watch: ResponseWatch, mint_token: MintToken
) -> None:
    student, metadata = student_and_token(mint_token)
    explained = concepts_pb2_grpc.ConceptsServiceStub(channel["concepts"]).ExplainConcept(
        concepts_pb2.ExplainConceptRequest(
            student=f"students/{student}", topic=common_pb2.TOPIC_CONTROL_FLOW
        ),
        metadata=metadata,
        timeout=60,
    )
    event = whole_answer(watch.collect(student), student, metadata)
    assert event.agent == "concepts" and event.resource == ""
    assert explained.title in event.text


def test_a_review_is_published(
    channel: dict[str, grpc.Channel], watch: ResponseWatch, mint_token: MintToken
) -> None:
    student, metadata = student_and_token(mint_token)
    review = review_pb2_grpc.ReviewServiceStub(channel["review"]).CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{student}",
            code_review=review_pb2.CodeReview(
                code="import os\ndef Add(a,b):\n    return a+b\n", topic=common_pb2.TOPIC_FUNCTIONS
            ),
        ),
        metadata=metadata,
        timeout=30,
    )
    event = whole_answer(watch.collect(student), student, metadata)
    assert event.agent == "review" and event.resource == review.name
    assert event.student.cohort == "c-live"
    assert f"{review.quality_score}/100" in event.text


def test_a_diagnosis_and_each_hint_are_published(
    channel: dict[str, grpc.Channel], watch: ResponseWatch, mint_token: MintToken
) -> None:
    student, metadata = student_and_token(mint_token)
    debug = debug_pb2_grpc.DebugServiceStub(channel["debug"])
    diagnosis = debug.CreateDiagnosis(
        debug_pb2.CreateDiagnosisRequest(
            parent=f"students/{student}",
            diagnosis=debug_pb2.Diagnosis(code=KEY_ERROR_CODE, traceback=KEY_ERROR_TRACEBACK),
        ),
        metadata=metadata,
        timeout=30,
    )
    event = whole_answer(watch.collect(student), student, metadata)
    assert event.agent == "debug" and event.resource == diagnosis.name
    assert "KeyError" in event.text and diagnosis.hints[0].text.strip() in event.text

    debug.RevealNextHint(
        debug_pb2.RevealNextHintRequest(name=diagnosis.name), metadata=metadata, timeout=30
    )
    found = watch.collect(student, finals=2)
    assert len(found) == 2
    hint = found[1][1]
    assert (hint.agent, hint.resource, hint.final) == ("debug", diagnosis.name, True)
    assert hint.text.startswith("**Hint 2 of 3**")


def test_a_generated_exercise_and_a_graded_submission_are_published(
    channel: dict[str, grpc.Channel], watch: ResponseWatch, mint_token: MintToken
) -> None:
    student, metadata = student_and_token(mint_token)
    exercises = exercise_pb2_grpc.ExerciseServiceStub(channel["exercise"])
    exercise = exercises.GenerateExercise(
        exercise_pb2.GenerateExerciseRequest(
            student=f"students/{student}", topic=common_pb2.TOPIC_CONTROL_FLOW
        ),
        metadata=metadata,
        timeout=60,
    )
    event = whole_answer(watch.collect(student), student, metadata)
    assert event.agent == "exercise" and event.resource == exercise.name
    assert exercise.title in event.text

    item = BANK.exercises[0]
    submission = exercises.CreateSubmission(
        exercise_pb2.CreateSubmissionRequest(
            parent=f"students/{student}",
            submission=exercise_pb2.Submission(
                exercise=f"exercises/{item.exercise_id}", code=item.reference_solution
            ),
        ),
        metadata=metadata,
        timeout=60,
    )
    found = watch.collect(student, finals=2)
    assert len(found) == 2, [e for _, e in found]
    graded = found[1][1]
    assert (graded.agent, graded.resource, graded.final) == ("exercise", submission.name, True)
    assert "100%" in graded.text and "all tests pass" in graded.text


def test_a_generated_and_a_graded_quiz_are_published(
    channel: dict[str, grpc.Channel], watch: ResponseWatch, mint_token: MintToken
) -> None:
    student, metadata = student_and_token(mint_token)
    quizzes = quiz_pb2_grpc.QuizServiceStub(channel["exercise"])
    quiz = quizzes.GenerateQuiz(
        quiz_pb2.GenerateQuizRequest(
            parent=f"students/{student}", topic=common_pb2.TOPIC_CONTROL_FLOW, question_count=2
        ),
        metadata=metadata,
        timeout=60,
    )
    event = whole_answer(watch.collect(student), student, metadata)
    assert event.agent == "exercise" and event.resource == quiz.name
    assert "2 questions" in event.text

    answers = [quiz_pb2.Answer(question_id=q.question_id, text="?") for q in quiz.questions]
    quizzes.GradeQuiz(
        quiz_pb2.GradeQuizRequest(name=quiz.name, answers=answers), metadata=metadata, timeout=30
    )
    found = watch.collect(student, finals=2)
    assert len(found) == 2, [e for _, e in found]
    graded = found[1][1]
    assert (graded.agent, graded.resource, graded.final) == ("exercise", quiz.name, True)
    assert graded.text.startswith("## Quiz graded")


@pytest.mark.parametrize(
    ("fields", "agent"),
    [
        ({"question": "how do for loops work?"}, "concepts"),
        (
            {
                "question": "please review my code",
                "code": "def Add(a,b):\n    return a+b\n",
                "intent": triage_pb2.INTENT_REVIEW,
            },
            "review",
        ),
    ],
)
def test_an_ask_is_published_chunk_by_chunk_once(
    channel: dict[str, grpc.Channel],
    watch: ResponseWatch,
    mint_token: MintToken,
    fields: dict[str, Any],
    agent: str,
) -> None:
    student, metadata = student_and_token(mint_token)
    replies = list(
        triage_pb2_grpc.TriageServiceStub(channel["triage"]).Ask(
            triage_pb2.AskRequest(student=f"students/{student}", **fields),
            metadata=metadata,
            timeout=60,
        )
    )
    streamed = [r.chunk for r in replies if r.HasField("chunk")]
    seen = watch.collect(student)
    # Only triage's chunks: the agent it asked publishes nothing of its own.
    assert {headers["ce_source"] for headers, _ in seen} == {"//learnflow.dev/triage"}
    found = [event for _, event in seen]
    assert [e.sequence for e in found] == list(range(len(streamed)))
    assert [e.final for e in found] == [False] * (len(streamed) - 1) + [True]
    assert [e.text for e in found] == [c.text for c in streamed]
    assert {e.agent for e in found} == {agent}
    assert {e.request_id for e in found} == {dict(metadata)["x-request-id"]}
    assert all(e.student.student_id == student for e in found)
    assert {e.student.tenant for e in found} == {DEV_TENANT}
    assert "".join(e.text for e in found).strip()


def test_an_answer_names_the_students_tenant(
    channel: dict[str, grpc.Channel], watch: ResponseWatch, mint_token: MintToken
) -> None:
    """A student of school-a: their answers belong to school-a (so notify writes them to
    school-a's log, for school-a's student of that id only)."""
    student, metadata = student_and_token(mint_token, tenant="school-a")
    concepts_pb2_grpc.ConceptsServiceStub(channel["concepts"]).ExplainConcept(
        concepts_pb2.ExplainConceptRequest(
            student=f"students/{student}", topic=common_pb2.TOPIC_CONTROL_FLOW
        ),
        metadata=metadata,
        timeout=60,
    )
    event = whole_answer(watch.collect(student), student, metadata, tenant="school-a")
    assert event.agent == "concepts"
