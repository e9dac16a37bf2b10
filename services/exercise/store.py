"""The exercise service's Postgres store (schema `exercise`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.db import Database


@dataclass(frozen=True, slots=True)
class StoredSubmission:
    cohort: str
    message: bytes


class ExerciseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_submission(
        self,
        *,
        student_id: str,
        submission_id: str,
        exercise_id: str,
        cohort: str,
        passed: bool,
        request_id: str | None,
        message: bytes,
    ) -> bytes:
        """Store a graded submission; with a request id seen before, the first one wins
        and its message is returned."""
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO submissions (student_id, submission_id, exercise_id, cohort, passed, "
                "  request_id, message) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (student_id, request_id) WHERE request_id IS NOT NULL DO NOTHING "
                "RETURNING message",
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

    def find_by_request(self, student_id: str, request_id: str) -> bytes | None:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "SELECT message FROM submissions WHERE student_id = %s AND request_id = %s",
                (student_id, request_id),
            ).fetchone()
        return bytes(row[0]) if row else None

    def submission(self, student_id: str, submission_id: str) -> StoredSubmission | None:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "SELECT cohort, message FROM submissions "
                "WHERE student_id = %s AND submission_id = %s",
                (student_id, submission_id),
            ).fetchone()
        return StoredSubmission(row[0], bytes(row[1])) if row else None

    def submissions(
        self, student_id: str, exercise_id: str | None, offset: int, limit: int
    ) -> tuple[list[bytes], int]:
        with self.db.pool.connection() as conn:
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

    def passed_exercises(self, student_id: str) -> set[str]:
        with self.db.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT exercise_id FROM submissions WHERE student_id = %s AND passed",
                (student_id,),
            ).fetchall()
        return {r[0] for r in rows}

    def add_quiz(self, student_id: str, quiz_id: str, cohort: str, message: bytes) -> None:
        with self.db.pool.connection() as conn:
            conn.execute(
                "INSERT INTO quizzes (student_id, quiz_id, cohort, message) "
                "VALUES (%s, %s, %s, %s)",
                (student_id, quiz_id, cohort, message),
            )

    def quiz(self, student_id: str, quiz_id: str) -> tuple[str, bool, bytes] | None:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "SELECT cohort, graded, message FROM quizzes "
                "WHERE student_id = %s AND quiz_id = %s",
                (student_id, quiz_id),
            ).fetchone()
        return (row[0], bool(row[1]), bytes(row[2])) if row else None

    def grade_quiz(self, student_id: str, quiz_id: str, message: bytes) -> bool:
        """Store the graded quiz, once: False if it was already graded."""
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "UPDATE quizzes SET graded = true, message = %s "
                "WHERE student_id = %s AND quiz_id = %s AND NOT graded RETURNING quiz_id",
                (message, student_id, quiz_id),
            ).fetchone()
        return row is not None
