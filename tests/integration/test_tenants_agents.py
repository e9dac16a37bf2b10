"""Schools are tenants in the agents (debug, review, triage), through the running mesh:
student "alice" of school-a and student "alice" of school-b, each in a cohort "c1" of
their own school, are two students. A diagnosis and a code review alice makes in
school-a are read by school-a's teacher of c1 and by an operator naming school-a, never
by school-b's alice, school-b's teacher of c1 or school-b's admin. Struggle windows and
triage's cached student context are per school too, and the events name the school.

The codes, and why (from the servicers: debug/servicer.py, review/servicer.py):

- Get by name: NOT_FOUND for a caller who may read students/alice *in their own school*
  (alice herself; the teacher of the c1 she is in there; the admin of the whole school).
  `Roster.require_readable` passes, in the caller's school, and the store looks in that
  school only, where no diagnosis or review has that id. Nothing says it exists
  elsewhere.
- List of that student's resources: OK, and school-a's resources are not on the page
  (the caller lists students/alice of school-b; school-b's alice made none here).
- PERMISSION_DENIED, for Get and List alike and before any lookup, where the caller may
  not read that student id in their own school at all: school-b's teacher of c1 and a
  student only school-a knows (school-b's roster has no such student in their c1),
  exactly as for a student of another cohort inside one school. And for anyone but an
  operator who names another school (x-learnflow-tenant), refused before the handler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from confluent_kafka import Consumer
from learnflow.common.v1 import common_pb2
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.events.v1 import events_pb2
from learnflow.review.v1 import review_pb2, review_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.auth import TENANT_METADATA
from services.kit.bus import decode_headers
from services.kit.config import Settings
from tests.conftest import MintToken
from tests.integration.test_struggle import StruggleWatch

pytestmark = pytest.mark.integration

A, B = "school-a", "school-b"
STUDENT, COHORT = "alice", "c1"
CODE_REVIEWED = "learnflow.events.v1.CodeReviewed"
KEY_ERROR_CODE = 'ages = {"amy": 31}\nprint(ages["bob"])\n'
KEY_ERROR_TRACEBACK = """Traceback (most recent call last):
  File "main.py", line 2, in <module>
    print(ages["bob"])
          ~~~~^^^^^^^
KeyError: 'bob'
"""
CLEAN = "def add(a, b):\n    return a + b\n"
Metadata = list[tuple[str, str]]
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED


def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def debug(channels: dict[str, grpc.Channel]) -> debug_pb2_grpc.DebugServiceStub:
    return debug_pb2_grpc.DebugServiceStub(channels["debug"])


@pytest.fixture(scope="module")
def reviews(channels: dict[str, grpc.Channel]) -> review_pb2_grpc.ReviewServiceStub:
    return review_pb2_grpc.ReviewServiceStub(channels["review"])


@pytest.fixture(scope="module")
def triage(channels: dict[str, grpc.Channel]) -> triage_pb2_grpc.TriageServiceStub:
    return triage_pb2_grpc.TriageServiceStub(channels["triage"])


def code_of(method: Callable[..., Any], request: Any, metadata: Metadata) -> grpc.StatusCode:
    """The status code of a call to `method` (OK when it answers)."""
    try:
        method(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return OK


def diagnose(
    debug: debug_pb2_grpc.DebugServiceStub, metadata: Metadata, student: str
) -> debug_pb2.Diagnosis:
    made: debug_pb2.Diagnosis = debug.CreateDiagnosis(
        debug_pb2.CreateDiagnosisRequest(
            parent=f"students/{student}",
            diagnosis=debug_pb2.Diagnosis(code=KEY_ERROR_CODE, traceback=KEY_ERROR_TRACEBACK),
        ),
        metadata=metadata,
        timeout=30,
    )
    return made


def review(
    reviews: review_pb2_grpc.ReviewServiceStub, metadata: Metadata, student: str
) -> review_pb2.CodeReview:
    made: review_pb2.CodeReview = reviews.CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{student}",
            code_review=review_pb2.CodeReview(code=CLEAN, topic=common_pb2.TOPIC_FUNCTIONS),
        ),
        metadata=metadata,
        timeout=30,
    )
    return made


@dataclass(frozen=True)
class Work:
    """What school-a's alice (and carol, a student school-b has never seen) made."""

    diagnosis: debug_pb2.Diagnosis
    review: review_pb2.CodeReview
    carols_diagnosis: debug_pb2.Diagnosis
    carols_review: review_pb2.CodeReview
    carol: str


@dataclass(frozen=True)
class Reads:
    """One caller's view of alice's work: the codes of Get and List, and what the Lists
    held."""

    get_diagnosis: grpc.StatusCode
    list_diagnoses: grpc.StatusCode
    listed_diagnoses: list[str]
    get_review: grpc.StatusCode
    list_reviews: grpc.StatusCode
    listed_reviews: list[str]


def reads(
    debug: debug_pb2_grpc.DebugServiceStub,
    reviews: review_pb2_grpc.ReviewServiceStub,
    metadata: Metadata,
    diagnosis: str,
    code_review: str,
    student: str = STUDENT,
) -> Reads:
    listed: dict[str, list[str]] = {"diagnoses": [], "reviews": []}

    def list_diagnoses(request: Any, metadata: Metadata, timeout: float) -> None:
        page = debug.ListDiagnoses(request, metadata=metadata, timeout=timeout)
        listed["diagnoses"] = [d.name for d in page.diagnoses]

    def list_reviews(request: Any, metadata: Metadata, timeout: float) -> None:
        page = reviews.ListCodeReviews(request, metadata=metadata, timeout=timeout)
        listed["reviews"] = [r.name for r in page.code_reviews]

    parent = f"students/{student}"
    return Reads(
        get_diagnosis=code_of(
            debug.GetDiagnosis, debug_pb2.GetDiagnosisRequest(name=diagnosis), metadata
        ),
        list_diagnoses=code_of(
            list_diagnoses,
            debug_pb2.ListDiagnosesRequest(parent=parent, page_size=100),
            metadata,
        ),
        listed_diagnoses=listed["diagnoses"],
        get_review=code_of(
            reviews.GetCodeReview, review_pb2.GetCodeReviewRequest(name=code_review), metadata
        ),
        list_reviews=code_of(
            list_reviews,
            review_pb2.ListCodeReviewsRequest(parent=parent, page_size=100),
            metadata,
        ),
        listed_reviews=listed["reviews"],
    )


@pytest.fixture(scope="module")
def work(
    debug: debug_pb2_grpc.DebugServiceStub,
    reviews: review_pb2_grpc.ReviewServiceStub,
    mint_token: MintToken,
) -> Work:
    alice_a = bearer(mint_token(STUDENT, "student", [COHORT], tenant=A))
    carol = f"carol-{uuid.uuid4().hex[:8]}"  # a student of school-a only
    carol_a = bearer(mint_token(carol, "student", [COHORT], tenant=A))
    made = Work(
        diagnosis=diagnose(debug, alice_a, STUDENT),
        review=review(reviews, alice_a, STUDENT),
        carols_diagnosis=diagnose(debug, carol_a, carol),
        carols_review=review(reviews, carol_a, carol),
        carol=carol,
    )
    # alice of school-b, the same id in the same-named cohort, calls once (a read, so
    # she makes nothing): that puts her on school-b's roster, in school-b's c1.
    alice_b = bearer(mint_token(STUDENT, "student", [COHORT], tenant=B))
    debug.ListDiagnoses(
        debug_pb2.ListDiagnosesRequest(parent=f"students/{STUDENT}"), metadata=alice_b, timeout=10
    )
    return made


def test_school_b_never_reads_school_as_diagnosis_or_review(
    debug: debug_pb2_grpc.DebugServiceStub,
    reviews: review_pb2_grpc.ReviewServiceStub,
    work: Work,
    mint_token: MintToken,
) -> None:
    outsiders = {
        "school-b's alice": bearer(mint_token(STUDENT, "student", [COHORT], tenant=B)),
        "school-b's teacher of c1": bearer(mint_token("tess", "teacher", [COHORT], tenant=B)),
        "school-b's admin": bearer(mint_token("root", "admin", tenant=B)),
    }
    for who, metadata in outsiders.items():
        seen = reads(debug, reviews, metadata, work.diagnosis.name, work.review.name)
        # NOT_FOUND, not PERMISSION_DENIED: each of them may read students/alice of
        # school-b, and school-b has no diagnosis or review of that name.
        assert (seen.get_diagnosis, seen.get_review) == (NOT_FOUND, NOT_FOUND), who
        # Listing students/alice of school-b is allowed, and school-a's work is not there.
        assert (seen.list_diagnoses, seen.list_reviews) == (OK, OK), who
        assert work.diagnosis.name not in seen.listed_diagnoses, who
        assert work.review.name not in seen.listed_reviews, who

    # Nor may school-b's alice ask for the next hint of school-a's diagnosis: she may act
    # as students/alice of school-b, who has no such diagnosis.
    reveal = debug_pb2.RevealNextHintRequest(name=work.diagnosis.name)
    alice_b = outsiders["school-b's alice"]
    assert code_of(debug.RevealNextHint, reveal, alice_b) == NOT_FOUND

    # carol is a student of school-a only: school-b's roster does not put her in its c1,
    # so school-b's teacher of c1 is refused her (before any lookup, Get and List alike,
    # as for a student of another cohort inside one school) ...
    carol = reads(
        debug,
        reviews,
        outsiders["school-b's teacher of c1"],
        work.carols_diagnosis.name,
        work.carols_review.name,
        student=work.carol,
    )
    assert (carol.get_diagnosis, carol.list_diagnoses) == (DENIED, DENIED)
    assert (carol.get_review, carol.list_reviews) == (DENIED, DENIED)
    # ... while school-b's admin, who reads every student id of school-b, finds nothing.
    carol = reads(
        debug,
        reviews,
        outsiders["school-b's admin"],
        work.carols_diagnosis.name,
        work.carols_review.name,
        student=work.carol,
    )
    assert (carol.get_diagnosis, carol.get_review) == (NOT_FOUND, NOT_FOUND)
    assert (carol.list_diagnoses, carol.listed_diagnoses) == (OK, [])
    assert (carol.list_reviews, carol.listed_reviews) == (OK, [])

    # Naming school-a is an operator's privilege only: school-b's admin and teacher are
    # refused before the handler runs.
    for who in ("school-b's admin", "school-b's teacher of c1"):
        forged = [*outsiders[who], (TENANT_METADATA, A)]
        seen = reads(debug, reviews, forged, work.diagnosis.name, work.review.name)
        assert (seen.get_diagnosis, seen.list_diagnoses) == (DENIED, DENIED), who
        assert (seen.get_review, seen.list_reviews) == (DENIED, DENIED), who


def test_school_as_teacher_and_an_operator_naming_school_a_read_them(
    debug: debug_pb2_grpc.DebugServiceStub,
    reviews: review_pb2_grpc.ReviewServiceStub,
    work: Work,
    mint_token: MintToken,
) -> None:
    operator = bearer(mint_token("ops", "operator", tenant="platform"))
    readers = {
        "school-a's teacher of c1": bearer(mint_token("tess", "teacher", [COHORT], tenant=A)),
        "an operator naming school-a": [*operator, (TENANT_METADATA, A)],
    }
    for who, metadata in readers.items():
        got = debug.GetDiagnosis(
            debug_pb2.GetDiagnosisRequest(name=work.diagnosis.name), metadata=metadata, timeout=10
        )
        assert (got.name, got.error.error_type) == (work.diagnosis.name, "KeyError"), who
        got_review = reviews.GetCodeReview(
            review_pb2.GetCodeReviewRequest(name=work.review.name), metadata=metadata, timeout=10
        )
        assert got_review == work.review, who
        seen = reads(debug, reviews, metadata, work.diagnosis.name, work.review.name)
        assert work.diagnosis.name in seen.listed_diagnoses, who
        assert work.review.name in seen.listed_reviews, who

    # The operator acts in the school it names: in school-b (or its own tenant) alice's
    # school-a work is not found, as for school-b's admin.
    for where in ([*operator, (TENANT_METADATA, B)], operator):
        seen = reads(debug, reviews, where, work.diagnosis.name, work.review.name)
        assert (seen.get_diagnosis, seen.get_review) == (NOT_FOUND, NOT_FOUND)
        assert (seen.list_diagnoses, seen.list_reviews) == (OK, OK)
        assert work.diagnosis.name not in seen.listed_diagnoses
        assert work.review.name not in seen.listed_reviews


def test_a_review_is_announced_with_its_school(
    reviews: review_pb2_grpc.ReviewServiceStub,
    progress_events: Consumer,
    mint_token: MintToken,
) -> None:
    student = f"rev-{uuid.uuid4().hex[:8]}"
    made = {
        tenant: review(
            reviews, bearer(mint_token(student, "student", [COHORT], tenant=tenant)), student
        ).name
        for tenant in (A, B)
    }
    found: dict[str, events_pb2.StudentRef] = {}
    deadline = time.monotonic() + 30
    while len(found) < 2 and time.monotonic() < deadline:
        msg = progress_events.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        if decode_headers(msg.headers()).get("ce_type") != CODE_REVIEWED:
            continue
        event = events_pb2.CodeReviewed.FromString(msg.value() or b"")
        if event.code_review in made.values():
            found[event.code_review] = event.student
    assert {name: (ref.tenant, ref.student_id) for name, ref in found.items()} == {
        made[A]: (A, student),
        made[B]: (B, student),
    }


def test_struggle_windows_and_triage_context_are_per_school(
    debug: debug_pb2_grpc.DebugServiceStub,
    triage: triage_pb2_grpc.TriageServiceStub,
    mint_token: MintToken,
    settings: Settings,
) -> None:
    """The same student id's errors in two schools never add up, the struggle event
    names the school, and triage's cached context of one is never the other's."""
    student = f"dave-{uuid.uuid4().hex[:8]}"
    in_a = bearer(mint_token(student, "student", [COHORT], tenant=A))
    in_b = bearer(mint_token(student, "student", [COHORT], tenant=B))
    assert settings.kafka_bootstrap_servers
    watch = StruggleWatch(settings.kafka_bootstrap_servers)
    try:
        first = [diagnose(debug, in_a, student).struggle_detected for _ in range(3)]
        other = diagnose(debug, in_b, student)  # school-a's three are not school-b's
        fourth = diagnose(debug, in_a, student)
        found = watch.collect(student, at_least=1)
    finally:
        watch.close()
    assert first == [False, False, False]
    assert not other.struggle_detected
    assert fourth.struggle_detected
    assert len(found) == 1, [e for _, e in found]  # school-b's one error is no struggle
    _, event = found[0]
    assert (event.student.tenant, event.student.cohort) == (A, COHORT)
    assert (event.occurrence_count, len(event.evidence_ids)) == (4, 4)

    def recent_errors(metadata: Metadata) -> list[tuple[str, int]]:
        context = triage.GetStudentContext(
            triage_pb2.GetStudentContextRequest(name=f"students/{student}/context"),
            metadata=metadata,
            timeout=10,
        )
        return [(e.error_type, e.occurrence_count) for e in context.recent_errors]

    # school-a's context first (cached), then school-b's: its own, not school-a's.
    assert recent_errors(in_a) == [("KeyError", 4)]
    assert recent_errors(in_b) == [("KeyError", 1)]
    assert recent_errors(in_a) == [("KeyError", 4)]
