"""The exercise service's Postgres store (schema `exercise`).

Every row belongs to a tenant (migrations/0003_tenants.sql): each method takes the
tenant the call acts in and runs in `Database.scoped(tenant)`, whose row-level security
shows and accepts that tenant's rows only. Inserts take the tenant from the
transaction's setting (the column's default); the queries also name it, as defence in
depth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from learnflow.exercise.v1 import exercise_pb2, quiz_pb2
from psycopg.types.json import Jsonb

from services.exercise.domain.bank import Exercise, QuizQuestion, Topic
from services.exercise.domain.generation import (
    OwnedExercise,
    exercise_from_json,
    exercise_to_json,
    question_from_json,
    question_to_json,
)
from services.kit.db import Database
from services.kit.export import Records, table_records


@dataclass(frozen=True, slots=True)
class StoredSubmission:
    cohort: str
    message: bytes


@dataclass(frozen=True, slots=True)
class StoredQuiz:
    cohort: str
    graded: bool
    message: bytes
    generated: tuple[QuizQuestion, ...]  # generated questions, answers included


# Every table holding a student's rows: what an erasure deletes.
STUDENT_TABLES = ("submissions", "quizzes", "generated_exercises")


class ExerciseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def erase_student(self, tenant: str, student_id: str) -> int:
        """Delete everything held of a student (an erasure); how many rows."""
        return self.db.erase_student_rows(tenant, student_id, STUDENT_TABLES)

    def purge(self, tenant: str, before: datetime) -> Mapping[str, int]:
        """Delete the tenant's submissions, quizzes and generated exercises older than
        `before` (the retention job; mastery keeps their best scores)."""
        return self.db.purge_rows(
            tenant,
            before,
            {
                "submissions": "created_at",
                "quizzes": "created_at",
                "generated_exercises": "created_at",
            },
        )

    def export_student(self, tenant: str, student_id: str) -> Records:
        """Everything held of a student (an export), but what grading keeps from them:
        a generated exercise's hidden tests and solution, a quiz's answer key."""
        return table_records(
            self.db.student_rows(tenant, student_id, STUDENT_TABLES),
            messages={
                "submissions.message": exercise_pb2.Submission.FromString,
                "quizzes.message": quiz_pb2.Quiz.FromString,
            },
            withheld=("generated_exercises.exercise", "quizzes.generated_questions"),
        )

    def add_submission(
        self,
        tenant: str,
        *,
        student_id: str,
        submission_id: str,
        exercise_id: str,
        cohort: str,
        passed: bool,
        request_id: str | None,
        message: bytes,
    ) -> bytes:
        """Store a graded submission; with a request id the student used before (in
        this tenant), the first one wins and its message is returned."""
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "INSERT INTO submissions (student_id, submission_id, exercise_id, cohort, passed, "
                "  request_id, message) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, student_id, request_id) WHERE request_id IS NOT NULL "
                "DO NOTHING RETURNING message",
                (student_id, submission_id, exercise_id, cohort, passed, request_id, message),
            ).fetchone()
            if row is not None:
                return bytes(row[0])
            first = conn.execute(
                "SELECT message FROM submissions WHERE student_id = %s AND request_id = %s",
                (student_id, request_id),
            ).fetchone()
        assert first is not None
        return bytes(first[0])

    def find_by_request(self, tenant: str, student_id: str, request_id: str) -> bytes | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT message FROM submissions WHERE student_id = %s AND request_id = %s",
                (student_id, request_id),
            ).fetchone()
        return bytes(row[0]) if row else None

    def submission(
        self, tenant: str, student_id: str, submission_id: str
    ) -> StoredSubmission | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT cohort, message FROM submissions "
                "WHERE student_id = %s AND submission_id = %s",
                (student_id, submission_id),
            ).fetchone()
        return StoredSubmission(row[0], bytes(row[1])) if row else None

    def submissions(
        self, tenant: str, student_id: str, exercise_id: str | None, offset: int, limit: int
    ) -> tuple[list[bytes], int]:
        with self.db.scoped(tenant) as conn:
            total = conn.execute(
                "SELECT count(*) FROM submissions WHERE student_id = %s "
                "AND (%s::text IS NULL OR exercise_id = %s)",
                (student_id, exercise_id, exercise_id),
            ).fetchone()
            rows = conn.execute(
                "SELECT message FROM submissions WHERE student_id = %s "
                "AND (%s::text IS NULL OR exercise_id = %s) "
                "ORDER BY created_at DESC, submission_id LIMIT %s OFFSET %s",
                (student_id, exercise_id, exercise_id, limit, offset),
            ).fetchall()
        return [bytes(r[0]) for r in rows], int(total[0]) if total else 0

    def passed_exercises(self, tenant: str, student_id: str) -> set[str]:
        with self.db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT DISTINCT exercise_id FROM submissions WHERE student_id = %s AND passed",
                (student_id,),
            ).fetchall()
        return {r[0] for r in rows}

    def add_quiz(
        self,
        tenant: str,
        student_id: str,
        *,
        quiz_id: str,
        cohort: str,
        message: bytes,
        generated: Sequence[QuizQuestion] = (),
    ) -> None:
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO quizzes (student_id, quiz_id, cohort, message, generated_questions) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    student_id,
                    quiz_id,
                    cohort,
                    message,
                    Jsonb([question_to_json(q) for q in generated]),
                ),
            )

    def quiz(self, tenant: str, student_id: str, quiz_id: str) -> StoredQuiz | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT cohort, graded, message, generated_questions FROM quizzes "
                "WHERE student_id = %s AND quiz_id = %s",
                (student_id, quiz_id),
            ).fetchone()
        if row is None:
            return None
        return StoredQuiz(
            cohort=row[0],
            graded=bool(row[1]),
            message=bytes(row[2]),
            generated=tuple(question_from_json(q) for q in row[3]),
        )

    def grade_quiz(self, tenant: str, student_id: str, quiz_id: str, message: bytes) -> bool:
        """Store the graded quiz, once: False if it was already graded."""
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "UPDATE quizzes SET graded = true, message = %s "
                "WHERE student_id = %s AND quiz_id = %s AND NOT graded "
                "RETURNING quiz_id",
                (message, student_id, quiz_id),
            ).fetchone()
        return row is not None

    # -- generated exercises -------------------------------------------------------------
    # A generated exercise belongs to the tenant of the student it was generated for
    # (it was written for their level and their errors): another tenant does not find it.

    def add_generated(
        self, tenant: str, *, exercise: Exercise, student_id: str, cohort: str, focus_error: str
    ) -> None:
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO generated_exercises (exercise_id, student_id, cohort, topic, "
                "  difficulty, focus_error, exercise) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    exercise.exercise_id,
                    student_id,
                    cohort,
                    int(exercise.topic),
                    int(exercise.difficulty),
                    focus_error,
                    Jsonb(exercise_to_json(exercise)),
                ),
            )

    def generated(self, tenant: str, exercise_id: str) -> OwnedExercise | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT student_id, cohort, exercise FROM generated_exercises "
                "WHERE exercise_id = %s",
                (exercise_id,),
            ).fetchone()
        if row is None:
            return None
        return OwnedExercise(exercise_from_json(row[2]), student_id=row[0], cohort=row[1])

    def generated_titles(self, tenant: str, student_id: str, topic: Topic, limit: int) -> list[str]:
        """Titles of the student's latest generated exercises on the topic (so the
        model can be asked for something new)."""
        with self.db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT exercise->>'title' FROM generated_exercises "
                "WHERE student_id = %s AND topic = %s "
                "ORDER BY created_at DESC LIMIT %s",
                (student_id, int(topic), limit),
            ).fetchall()
        return [r[0] for r in rows]
