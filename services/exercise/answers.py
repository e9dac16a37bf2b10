"""What the exercise agent's answers look like on the student's other screens
(learning.responses): a generated exercise or quiz, a graded submission or quiz, each
as a short Markdown summary naming the resource that holds all of it. Each is sent
while the call that made it is served, so the kit puts that call's tenant in the
event's `StudentRef.tenant`."""

from __future__ import annotations

from learnflow.common.v1 import common_pb2
from learnflow.exercise.v1 import exercise_pb2, quiz_pb2

from services.kit.curriculum import BY_TOPIC
from services.kit.responses import LearningResponses


class ExerciseAnswers:
    def __init__(self, responses: LearningResponses) -> None:
        self._responses = responses

    def exercise(self, student_id: str, cohort: str, exercise: exercise_pb2.Exercise) -> None:
        self._responses.answer(
            student_id, exercise_markdown(exercise), resource=exercise.name, cohort=cohort
        )

    def submission(
        self, student_id: str, cohort: str, submission: exercise_pb2.Submission, title: str
    ) -> None:
        self._responses.answer(
            student_id,
            submission_markdown(submission, title),
            resource=submission.name,
            cohort=cohort,
        )

    def quiz(self, student_id: str, cohort: str, quiz: quiz_pb2.Quiz) -> None:
        self._responses.answer(student_id, quiz_markdown(quiz), resource=quiz.name, cohort=cohort)


def _topic(topic: common_pb2.Topic.ValueType) -> str:
    entry = BY_TOPIC.get(topic)
    return entry.display_name if entry is not None else "Python"


def exercise_markdown(exercise: exercise_pb2.Exercise) -> str:
    parts = [f"## Try this: {exercise.title}", exercise.statement.strip()]
    if exercise.starter_code.strip():
        parts.append(f"```python\n{exercise.starter_code.rstrip()}\n```")
    return "\n\n".join(p for p in parts if p)


def submission_markdown(submission: exercise_pb2.Submission, title: str) -> str:
    heading = f"## Submission graded: {title}" if title else "## Submission graded"
    if submission.precheck_message:
        return f"{heading}\n\nNot run: {submission.precheck_message.strip()}"
    passed, total = submission.tests_passed, submission.tests_total
    verdict = "all tests pass" if total and passed == total else f"{passed} of {total} tests pass"
    return f"{heading}\n\n**{round(submission.score * 100)}%**: {verdict}."


def quiz_markdown(quiz: quiz_pb2.Quiz) -> str:
    topic = _topic(quiz.topic)
    if quiz.state == quiz_pb2.Quiz.STATE_GRADED:
        correct = sum(1 for r in quiz.results if r.correct)
        return (
            f"## Quiz graded: {topic}\n\n**{round(quiz.score * 100)}%**: "
            f"{correct} of {len(quiz.results)} answers correct."
        )
    count = len(quiz.questions)
    return f"## Quiz: {topic}\n\n{count} question{'s' if count != 1 else ''} to answer."
