"""The kit's side of an export: stored rows as JSON records (the mesh-wide export runs
in tests/integration/test_erasure.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal

from learnflow.debug.v1 import debug_pb2

from services.kit.export import export_name, table_records


def test_rows_become_json_with_messages_decoded_and_withheld_columns_left_out() -> None:
    diagnosis = debug_pb2.Diagnosis(code="print(1/0)", topic=3)  # type: ignore[arg-type]
    rows = {
        "diagnoses": [
            {
                "tenant": "school-a",
                "student_id": "alice",
                "message": diagnosis.SerializeToString(),
                "raw": b"\x00\xff",
                "score": Decimal("0.5"),
                "created_at": datetime(2026, 12, 4, 9, 30, tzinfo=UTC),
                "answer_key": "secret",
            }
        ],
        "empty": [],
    }
    records = table_records(
        rows,
        messages={"diagnoses.message": debug_pb2.Diagnosis.FromString},
        withheld=("diagnoses.answer_key",),
    )
    (row,) = records["diagnoses"]
    assert row == {
        "student_id": "alice",
        "message": {"code": "print(1/0)", "topic": "TOPIC_FUNCTIONS"},  # enums by name
        "raw": base64.b64encode(b"\x00\xff").decode(),
        "score": 0.5,
        "created_at": "2026-12-04T09:30:00+00:00",
    }
    assert records["empty"] == []
    json.dumps(records)  # all of it serialisable


def test_an_exports_name_is_under_its_student() -> None:
    assert export_name("alice", "e1") == "students/alice/exports/e1"
