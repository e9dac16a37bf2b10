"""The exercise service's use cases: choose an exercise, grade a submission in the
sandbox, generate and grade quizzes, and publish what was graded to `progress.events`.

Transport-free: the sandbox, the mastery lookup and the publisher are passed in."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.exercise.domain.bank import (
    Bank,
    Exercise,
    Level,
    QuizQuestion,
    Topic,
)
from services.exercise.domain.grading import Execute, Grade, grade, precheck
from services.exercise.domain.quizzes import Answer, QuizGrade, choose_questions, grade_quiz
from services.kit.auth import Principal, Role
from services.kit.errors import NotFound, PermissionDenied

MasteryLevel = Callable[[str, Topic], Level | None]
"""The level a student is at on a topic (from the mastery engine), or None if unknown."""


@dataclass(frozen=True, slots=True)
class Precheck:
    """Why a submission was not run: a syntax error or an import the exercise forbids."""

    message: str


def require_own(principal: Principal, student_id: str) -> None:
    """Acting as a student (submitting, taking a quiz): that student, or an admin."""
    if principal.role is Role.ADMIN or principal.subject == student_id:
        return
    raise PermissionDenied(
        f"{principal.role.value} {principal.subject!r} may not act as student {student_id!r}",
        metadata={"student": student_id},
    )


def require_readable(principal: Principal, student_id: str, cohort: str) -> None:
    principal.require_student(student_id, cohort or None)


def cohort_of(principal: Principal) -> str:
    """The class a student's activity counts towards (their token's first cohort)."""
    return principal.cohorts[0] if principal.role is Role.STUDENT and principal.cohorts else ""


class ExerciseEngine:
    def __init__(self, bank: Bank, execute: Execute, mastery_level: MasteryLevel) -> None:
        self.bank = bank
        self._execute = execute
        self._mastery_level = mastery_level

    def exercise(self, exercise_id: str) -> Exercise:
        found = self.bank.exercise(exercise_id)
        if found is None:
            raise NotFound(
                f"exercises/{exercise_id} does not exist", metadata={"exercise": exercise_id}
            )
        return found

    def level_for(self, student_id: str, topic: Topic) -> Level:
        return self._mastery_level(student_id, topic) or Level.BEGINNER

    def choose(
        self, student_id: str, topic: Topic, difficulty: Level | None, passed: set[str]
    ) -> Exercise:
        """An exercise on the topic at the difficulty (from mastery when not given),
        preferring ones the student has not passed yet; then nearer difficulties."""
        level = difficulty or self.level_for(student_id, topic)
        candidates = sorted(
            self.bank.list_exercises(topic=topic),
            key=lambda e: (e.exercise_id in passed, abs(e.difficulty - level), e.exercise_id),
        )
        if not candidates:
            raise NotFound(f"no exercises on topic {topic.name}")
        return candidates[0]

    def grade(self, exercise: Exercise, code: str) -> Grade | Precheck:
        # Syntax and imports the exercise does not allow are reported before anything runs.
        failure = precheck(code, exercise.allowed_imports)
        if failure is not None:
            return Precheck(failure)
        return grade(exercise, code, self._execute)

    def new_quiz(
        self, student_id: str, topic: Topic, level: Level | None, count: int
    ) -> tuple[str, Level, tuple[QuizQuestion, ...]]:
        chosen_level = level or self.level_for(student_id, topic)
        quiz_id = uuid.uuid4().hex[:16]
        questions = choose_questions(
            self.bank.questions_for(topic), topic, chosen_level, count, seed=quiz_id
        )
        if not questions:
            raise NotFound(f"no quiz questions on topic {topic.name}")
        return quiz_id, chosen_level, questions

    def grade_quiz(self, question_ids: Sequence[str], answers: dict[str, Answer]) -> QuizGrade:
        questions = [q for q in (self.bank.question(i) for i in question_ids) if q is not None]
        return grade_quiz(questions, answers)
