"""The review service's Postgres store (schema `review`).

Every method acts in one tenant (its first argument): it runs in a transaction scoped to
it (`Database.scoped`), where row-level security shows and accepts that tenant's reviews
only, and the rows it writes take that tenant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from learnflow.review.v1 import review_pb2

from services.kit.db import Database
from services.kit.export import Records, table_records


@dataclass(frozen=True, slots=True)
class StoredReview:
    cohort: str
    message: bytes


# Every table holding a student's rows: what an erasure deletes.
STUDENT_TABLES = ("code_reviews",)


class ReviewStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def erase_student(self, tenant: str, student_id: str) -> int:
        """Delete everything held of a student (an erasure); how many rows."""
        return self.db.erase_student_rows(tenant, student_id, STUDENT_TABLES)

    def purge(self, tenant: str, before: datetime) -> Mapping[str, int]:
        """Delete the tenant's reviews older than `before` (the retention job)."""
        return self.db.purge_rows(tenant, before, {"code_reviews": "create_time"})

    def export_student(self, tenant: str, student_id: str) -> Records:
        """Everything held of a student (an export)."""
        return table_records(
            self.db.student_rows(tenant, student_id, STUDENT_TABLES),
            messages={"code_reviews.message": review_pb2.CodeReview.FromString},
        )

    def add(
        self,
        tenant: str,
        *,
        student_id: str,
        review_id: str,
        cohort: str,
        exercise_id: str | None,
        quality_score: int,
        create_time: datetime,
        message: bytes,
    ) -> None:
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO code_reviews (student_id, review_id, cohort, exercise_id, "
                "  quality_score, create_time, message) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (student_id, review_id, cohort, exercise_id, quality_score, create_time, message),
            )

    def get(self, tenant: str, student_id: str, review_id: str) -> StoredReview | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT cohort, message FROM code_reviews WHERE student_id = %s AND review_id = %s",
                (student_id, review_id),
            ).fetchone()
        return StoredReview(row[0], bytes(row[1])) if row else None

    def list(
        self, tenant: str, student_id: str, offset: int, limit: int
    ) -> tuple[list[bytes], int]:
        """A page of the student's reviews, newest first, and how many there are in all."""
        with self.db.scoped(tenant) as conn:
            total = conn.execute(
                "SELECT count(*) FROM code_reviews WHERE student_id = %s", (student_id,)
            ).fetchone()
            rows = conn.execute(
                "SELECT message FROM code_reviews WHERE student_id = %s "
                "ORDER BY create_time DESC, review_id DESC LIMIT %s OFFSET %s",
                (student_id, limit, offset),
            ).fetchall()
        return [bytes(r[0]) for r in rows], int(total[0]) if total else 0
