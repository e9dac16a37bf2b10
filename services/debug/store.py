"""The debug service's Postgres store (schema `debug`).

Every method acts in one tenant (its first argument): it runs in a transaction scoped to
it (`Database.scoped`), where row-level security shows and accepts that tenant's rows
only, and the rows it writes take that tenant."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from learnflow.debug.v1 import debug_pb2

from services.kit.db import Database
from services.kit.export import Records, table_records


@dataclass(frozen=True, slots=True)
class StoredDiagnosis:
    cohort: str
    message: bytes  # the Diagnosis without hints
    ladder: bytes  # every hint level, revealed or not
    revealed: int


# Every table holding a student's rows: what an erasure deletes.
STUDENT_TABLES = ("diagnoses", "error_occurrences", "struggle_episodes")


class DebugStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def erase_student(self, tenant: str, student_id: str) -> int:
        """Delete everything held of a student (an erasure); how many rows."""
        return self.db.erase_student_rows(tenant, student_id, STUDENT_TABLES)

    def purge(self, tenant: str, before: datetime) -> Mapping[str, int]:
        """Delete the tenant's activity older than `before` (the retention job)."""
        return self.db.purge_rows(
            tenant,
            before,
            {
                "error_occurrences": "occurred_at",
                "struggle_episodes": "detected_at",
                "diagnoses": "created_at",
            },
        )

    def export_student(self, tenant: str, student_id: str) -> Records:
        """Everything held of a student (an export)."""
        return table_records(
            self.db.student_rows(tenant, student_id, STUDENT_TABLES),
            messages={
                "diagnoses.message": debug_pb2.Diagnosis.FromString,
                "diagnoses.ladder": debug_pb2.Diagnosis.FromString,
            },
        )

    def add_diagnosis(
        self,
        tenant: str,
        *,
        student_id: str,
        diagnosis_id: str,
        cohort: str,
        error_type: str,
        topic: int,
        message: bytes,
        ladder: bytes,
        revealed: int,
    ) -> int:
        """Store a diagnosis and, when it found an error, the occurrence (one
        transaction); the occurrence's id, or 0 when there was no error."""
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO diagnoses (student_id, diagnosis_id, cohort, error_type, topic, "
                "  message, ladder, revealed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (student_id, diagnosis_id, cohort, error_type, topic, message, ladder, revealed),
            )
            if not error_type:
                return 0
            row = conn.execute(
                "INSERT INTO error_occurrences (student_id, error_type, topic, diagnosis_id) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (student_id, error_type, topic, diagnosis_id),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def diagnosis(self, tenant: str, student_id: str, diagnosis_id: str) -> StoredDiagnosis | None:
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT cohort, message, ladder, revealed FROM diagnoses "
                "WHERE student_id = %s AND diagnosis_id = %s",
                (student_id, diagnosis_id),
            ).fetchone()
        if row is None:
            return None
        return StoredDiagnosis(row[0], bytes(row[1]), bytes(row[2]), int(row[3]))

    def reveal_next(
        self,
        tenant: str,
        student_id: str,
        diagnosis_id: str,
        available: int,
        stamp: Callable[[bytes, int], bytes],
    ) -> int | None:
        """Reveal one more level (at most `available`) in one transaction, letting
        `stamp(ladder, level)` record when; the revealed count after, or None when the
        diagnosis does not exist. Unchanged when everything was already revealed:
        concurrent requests each get their own level, never the same one twice."""
        with self.db.scoped(tenant) as conn:
            row = conn.execute(
                "SELECT ladder, revealed FROM diagnoses "
                "WHERE student_id = %s AND diagnosis_id = %s FOR UPDATE",
                (student_id, diagnosis_id),
            ).fetchone()
            if row is None:
                return None
            revealed = int(row[1])
            if revealed >= available:
                return revealed
            conn.execute(
                "UPDATE diagnoses SET revealed = %s, ladder = %s "
                "WHERE student_id = %s AND diagnosis_id = %s",
                (revealed + 1, stamp(bytes(row[0]), revealed + 1), student_id, diagnosis_id),
            )
        return revealed + 1

    def occurrences_since(
        self, tenant: str, student_id: str, error_type: str, since: float
    ) -> list[str]:
        """Ids of the diagnoses that met `error_type` since `since` (epoch seconds)."""
        with self.db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT diagnosis_id FROM error_occurrences WHERE student_id = %s "
                "AND error_type = %s AND occurred_at >= to_timestamp(%s) ORDER BY id",
                (student_id, error_type, since),
            ).fetchall()
        return [r[0] for r in rows]

    def list_diagnoses(
        self, tenant: str, student_id: str, offset: int, limit: int
    ) -> tuple[list[StoredDiagnosis], int]:
        """Newest first, and how many there are in all (0 past the end)."""
        with self.db.scoped(tenant) as conn:
            rows = conn.execute(
                "SELECT cohort, message, ladder, revealed, count(*) OVER () FROM diagnoses "
                "WHERE student_id = %(student)s "
                "ORDER BY created_at DESC, diagnosis_id OFFSET %(offset)s LIMIT %(limit)s",
                {"student": student_id, "offset": offset, "limit": limit},
            ).fetchall()
        total = int(rows[0][4]) if rows else 0
        return [StoredDiagnosis(r[0], bytes(r[1]), bytes(r[2]), int(r[3])) for r in rows], total

    def record_episode(
        self,
        tenant: str,
        *,
        episode_id: str,
        student_id: str,
        error_type: str,
        topic: int,
        count: int,
    ) -> None:
        with self.db.scoped(tenant) as conn:
            conn.execute(
                "INSERT INTO struggle_episodes (episode_id, student_id, error_type, topic, "
                "  occurrence_count) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, episode_id) DO NOTHING",
                (episode_id, student_id, error_type, topic, count),
            )
