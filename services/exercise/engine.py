"""The exercise service's use cases: choose or generate an exercise, grade a submission
in the sandbox, generate and grade quizzes, and publish what was graded to
`progress.events`.

Generated exercises (the model is on and a draft passed every check, see
`generator.py`) are stored and found again by id like bank exercises, by any replica.
A generated exercise belongs to the tenant of the student it was generated for (it was
written for them): it is looked up in the tenant the call acts in only, so another
tenant does not find it. Who may see one: the student it was generated for, teachers of
that student's (current) cohort and admins (and operators) of the tenant; only its
student submits to it. (Bank exercises are open to everyone.)

Transport-free: the sandbox, the mastery lookup, the model and storage are passed in."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.exercise.domain.bank import (
    Bank,
    Exercise,
    Level,
    QuizQuestion,
    Topic,
)
from services.exercise.domain.generation import (
    OwnedExercise,
    is_generated,
    topic_for_error,
)
from services.exercise.domain.grading import Execute, Grade, grade, precheck
from services.exercise.domain.quizzes import Answer, QuizGrade, choose_questions, grade_quiz
from services.exercise.generator import ExerciseGenerator
from services.kit.auth import Principal
from services.kit.errors import NotFound, PermissionDenied
from services.kit.llm import LLMUnavailable
from services.kit.roster import Roster

log = logging.getLogger("learnflow.exercise")

MasteryLevel = Callable[[str, Topic], Level | None]
"""The level a student is at on a topic (from the mastery engine), or None if unknown.
It is asked within the call being served, whose token (and an operator's tenant
metadata) the kit's clients carry along, so it reads the tenant the call acts in."""
RECENT_TITLES = 10  # of a student's generated exercises the model is asked not to repeat


class GeneratedExercises(Protocol):
    """Where generated exercises are kept (the Postgres store)."""

    def add_generated(
        self, tenant: str, *, exercise: Exercise, student_id: str, cohort: str, focus_error: str
    ) -> None: ...

    def generated(self, tenant: str, exercise_id: str) -> OwnedExercise | None: ...

    def generated_titles(
        self, tenant: str, student_id: str, topic: Topic, limit: int
    ) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Precheck:
    """Why a submission was not run: a syntax error or an import the exercise forbids."""

    message: str


@dataclass(frozen=True, slots=True)
class NewQuiz:
    quiz_id: str
    level: Level
    questions: tuple[QuizQuestion, ...]  # generated ones first, then the bank's
    generated: tuple[QuizQuestion, ...]  # the generated ones (their answers are stored)


class ExerciseEngine:
    def __init__(
        self,
        bank: Bank,
        execute: Execute,
        mastery_level: MasteryLevel,
        *,
        generator: ExerciseGenerator | None = None,
        generated: GeneratedExercises | None = None,
    ) -> None:
        if generator is not None and generated is None:
            raise ValueError("generated exercises need somewhere to be stored")
        self.bank = bank
        self._execute = execute
        self._mastery_level = mastery_level
        self._generator = generator
        self._generated = generated

    @property
    def generator(self) -> ExerciseGenerator | None:
        return self._generator

    # -- finding exercises -------------------------------------------------------------

    def _find(self, tenant: str, exercise_id: str) -> tuple[Exercise, OwnedExercise | None]:
        """A bank exercise (shared by every tenant), or one generated for a student of `tenant`."""
        found = self.bank.exercise(exercise_id)
        if found is not None:
            return found, None
        if is_generated(exercise_id) and self._generated is not None:
            owned = self._generated.generated(tenant, exercise_id)
            if owned is not None:
                return owned.exercise, owned
        raise NotFound(
            f"exercises/{exercise_id} does not exist", metadata={"exercise": exercise_id}
        )

    def exercise(self, tenant: str, exercise_id: str) -> Exercise:
        """A bank exercise or one generated in `tenant`, whoever asks (internal use)."""
        return self._find(tenant, exercise_id)[0]

    def readable_exercise(self, principal: Principal, exercise_id: str, roster: Roster) -> Exercise:
        """What GetExercise shows: any bank exercise; a generated one to its student,
        teachers of the student's cohort now and admins, all of the tenant the call acts
        in (another tenant's generated exercise is not found)."""
        exercise, owned = self._find(principal.tenant, exercise_id)
        if owned is not None:
            roster.require_readable(principal, owned.student_id)
        return exercise

    def exercise_to_submit(self, tenant: str, student_id: str, exercise_id: str) -> Exercise:
        """The exercise a submission by `student_id` of `tenant` is for: a generated
        exercise only takes submissions from the student it was generated for."""
        exercise, owned = self._find(tenant, exercise_id)
        if owned is not None and owned.student_id != student_id:
            raise PermissionDenied(
                f"exercises/{exercise_id} was generated for another student",
                metadata={"exercise": exercise_id},
            )
        return exercise

    # -- choosing and generating -------------------------------------------------------

    def level_for(self, student_id: str, topic: Topic) -> Level:
        return self._mastery_level(student_id, topic) or Level.BEGINNER

    def choose(
        self,
        student_id: str,
        topic: Topic,
        difficulty: Level | None,
        passed: set[str],
        *,
        focus_error: str = "",
    ) -> Exercise:
        """A bank exercise on the topic at the difficulty (from mastery when not given),
        preferring ones the student has not passed yet, then ones whose starter code
        runs into `focus_error`, then nearer difficulties."""
        level = difficulty or self.level_for(student_id, topic)
        candidates = sorted(
            self.bank.list_exercises(topic=topic),
            key=lambda e: (
                e.exercise_id in passed,
                bool(focus_error) and focus_error not in e.practises,
                abs(e.difficulty - level),
                e.exercise_id,
            ),
        )
        if not candidates:
            raise NotFound(f"no exercises on topic {topic.name}")
        return candidates[0]

    def generate(
        self,
        tenant: str,
        student_id: str,
        *,
        cohort: str,
        topic: Topic | None,
        difficulty: Level | None,
        focus_error: str,
        passed: Callable[[], set[str]],
    ) -> Exercise:
        """GenerateExercise: with the model on, a generated exercise that passed every
        check (stored for grading); otherwise, or when generation gives up, a bank one.
        Without a topic, `focus_error` (an exception class name) decides it. A generated
        exercise is stored in `tenant`, the tenant of the student it is for."""
        if topic is None:
            if not focus_error:
                raise ValueError("a topic or a focus error is needed")
            topic = topic_for_error(focus_error)
        level = difficulty or self.level_for(student_id, topic)
        if self._generator is not None and self._generator.enabled:
            assert self._generated is not None
            result = self._generator.exercise(
                topic=topic,
                level=level,
                focus_error=focus_error,
                avoid_titles=self._generated.generated_titles(
                    tenant, student_id, topic, RECENT_TITLES
                ),
            )
            if result.exercise is not None:
                self._generated.add_generated(
                    tenant,
                    exercise=result.exercise,
                    student_id=student_id,
                    cohort=cohort,
                    focus_error=focus_error,
                )
                return result.exercise
        return self.choose(student_id, topic, level, passed(), focus_error=focus_error)

    # -- grading -----------------------------------------------------------------------

    def grade(self, exercise: Exercise, code: str) -> Grade | Precheck:
        # Syntax and imports the exercise does not allow are reported before anything runs.
        failure = precheck(code, exercise.allowed_imports)
        if failure is not None:
            return Precheck(failure)
        return grade(exercise, code, self._execute)

    # -- quizzes -----------------------------------------------------------------------

    def new_quiz(self, student_id: str, topic: Topic, level: Level | None, count: int) -> NewQuiz:
        """Generated questions (checked; predict-the-output answers from real runs) when
        the model is on, filled up from the bank to `count`; else the bank's."""
        chosen_level = level or self.level_for(student_id, topic)
        quiz_id = uuid.uuid4().hex[:16]
        generated: list[QuizQuestion] = []
        if self._generator is not None and self._generator.enabled:
            try:
                generated = self._generator.questions(topic=topic, level=chosen_level, count=count)
            except LLMUnavailable as exc:
                log.info("model unavailable (%s): quiz from the bank", exc.reason)
        from_bank: tuple[QuizQuestion, ...] = ()
        if len(generated) < count:
            from_bank = choose_questions(
                self.bank.questions_for(topic),
                topic,
                chosen_level,
                count - len(generated),
                seed=quiz_id,
            )
        questions = tuple(generated) + from_bank
        if not questions:
            raise NotFound(f"no quiz questions on topic {topic.name}")
        return NewQuiz(quiz_id, chosen_level, questions, tuple(generated))

    def grade_quiz(
        self,
        question_ids: Sequence[str],
        answers: dict[str, Answer],
        generated: Sequence[QuizQuestion] = (),
    ) -> QuizGrade:
        """Grades against the quiz's own generated questions and the bank."""
        own = {q.question_id: q for q in generated}
        questions = [
            q for q in (own.get(i) or self.bank.question(i) for i in question_ids) if q is not None
        ]
        return grade_quiz(questions, answers)
