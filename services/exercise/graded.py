"""Graded work: a submission graded in the sandbox, a quiz graded against its answers.
Each is stored and then announced on progress.events (ExerciseGraded, QuizGraded), so
the mastery engine's completion and quiz components move, and on learning.responses,
so the student's other screens show the grade.

Everything happens in the tenant the call acts in: the work is stored there, and the
events name it (`StudentRef.tenant`), so every consumer scopes what it does by it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.events.v1 import events_pb2
from learnflow.exercise.v1 import exercise_pb2, quiz_pb2

from services.exercise.answers import ExerciseAnswers
from services.exercise.domain.bank import QuizQuestion
from services.exercise.domain.grading import Grade
from services.exercise.domain.quizzes import Answer
from services.exercise.engine import ExerciseEngine, Precheck
from services.exercise.store import ExerciseStore
from services.kit.bus import PROGRESS_EVENTS, Publisher
from services.kit.errors import FailedPrecondition


def now() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return ts


class GradedWork:
    def __init__(
        self,
        engine: ExerciseEngine,
        store: ExerciseStore,
        publisher: Publisher,
        answers: ExerciseAnswers,
    ) -> None:
        self._engine = engine
        self._store = store
        self._publisher = publisher
        self._answers = answers

    def submit(
        self,
        *,
        tenant: str,
        student_id: str,
        cohort: str,
        exercise_id: str,
        code: str,
        request_id: str,
    ) -> exercise_pb2.Submission:
        """Grade, store and announce a submission of `student_id` of `tenant`; a retried
        request id gets the first result back (and announces nothing again)."""
        if request_id:
            earlier = self._store.find_by_request(tenant, student_id, request_id)
            if earlier is not None:
                return exercise_pb2.Submission.FromString(earlier)
        exercise = self._engine.exercise_to_submit(tenant, student_id, exercise_id)
        graded = self._engine.grade(exercise, code)
        submission_id = uuid.uuid4().hex[:16]
        message = exercise_pb2.Submission(
            name=f"students/{student_id}/submissions/{submission_id}",
            exercise=f"exercises/{exercise_id}",
            code=code,
            create_time=now(),
        )
        if isinstance(graded, Precheck):
            message.precheck_message = graded.message
            tests_total, passed = len(exercise.tests), 0
        else:
            message.score = graded.score
            message.tests_passed = graded.tests_passed
            message.tests_total = graded.tests_total
            message.results.extend(_results(graded))
            tests_total, passed = graded.tests_total, graded.tests_passed
        message.tests_total = tests_total
        stored = self._store.add_submission(
            tenant,
            student_id=student_id,
            submission_id=submission_id,
            exercise_id=exercise_id,
            cohort=cohort,
            passed=tests_total > 0 and passed == tests_total,
            request_id=request_id or None,
            message=message.SerializeToString(),
        )
        saved = exercise_pb2.Submission.FromString(stored)
        if saved.name == message.name:  # not a retry answered by an earlier submission
            self._publisher.publish(
                PROGRESS_EVENTS,
                events_pb2.ExerciseGraded(
                    student=_student_ref(tenant, cohort, student_id),
                    topic=int(exercise.topic),  # type: ignore[arg-type]
                    exercise_id=exercise_id,
                    submission=message.name,
                    score=message.score,
                    tests_passed=message.tests_passed,
                    tests_total=message.tests_total,
                    difficulty=int(exercise.difficulty),  # type: ignore[arg-type]
                    occur_time=message.create_time,
                ),
                key=student_id,
                event_id=message.name,  # a stable id: a re-publish is the same event
            )
            self._answers.submission(student_id, cohort, saved, exercise.title)
        return saved

    def grade_quiz(
        self,
        tenant: str,
        student_id: str,
        quiz: quiz_pb2.Quiz,
        answers: dict[str, Answer],
        *,
        cohort: str,
        generated: Sequence[QuizQuestion],
        given: Sequence[quiz_pb2.Answer],
    ) -> quiz_pb2.Quiz:
        """Grade an open quiz of `student_id` of `tenant` once, store and announce it."""
        asked = [q.question_id for q in quiz.questions]
        quiz_id = quiz.name.rsplit("/", 1)[-1]
        result = self._engine.grade_quiz(asked, answers, generated)
        quiz.state = quiz_pb2.Quiz.STATE_GRADED
        quiz.answers.extend(given)
        quiz.results.extend(
            quiz_pb2.QuestionResult(
                question_id=r.question_id,
                correct=r.correct,
                correct_answer=r.correct_answer,
                explanation=r.explanation,
            )
            for r in result.results
        )
        quiz.score = result.score
        quiz.grade_time.CopyFrom(now())
        if not self._store.grade_quiz(tenant, student_id, quiz_id, quiz.SerializeToString()):
            raise FailedPrecondition(f"{quiz.name} is already graded")
        self._publisher.publish(
            PROGRESS_EVENTS,
            events_pb2.QuizGraded(
                student=_student_ref(tenant, cohort, student_id),
                topic=quiz.topic,
                quiz=quiz.name,
                score=result.score,
                correct_count=result.correct,
                question_count=result.total,
                occur_time=quiz.grade_time,
            ),
            key=student_id,
            event_id=quiz.name,
        )
        self._answers.quiz(student_id, cohort, quiz)
        return quiz


def _results(graded: Grade) -> list[exercise_pb2.TestResult]:
    results = []
    for r in graded.results:
        duration = Duration()
        duration.FromNanoseconds(int(r.duration_seconds * 1e9))
        results.append(
            exercise_pb2.TestResult(
                test_id=r.test_id,
                hidden=r.hidden,
                outcome=int(r.outcome),  # type: ignore[arg-type]
                call=r.call,
                expected=r.expected,
                actual=r.actual,
                output=r.output,
                duration=duration,
            )
        )
    return results


def _student_ref(tenant: str, cohort: str, student_id: str) -> events_pb2.StudentRef:
    """Who the graded work is by: the student of `tenant` (consumers scope by it and
    dead-letter an event without one) and the cohort it counts towards."""
    return events_pb2.StudentRef(student_id=student_id, cohort=cohort, tenant=tenant)
