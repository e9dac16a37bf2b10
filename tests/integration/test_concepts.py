"""ExplainConcept on the running mesh: examples run by the sandbox service, diagrams
checked by Mermaid, the level from the mastery engine; over gRPC and as JSON through
Envoy, with its access rules and BadRequest field names."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest
from learnflow.common.v1 import common_pb2
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc

from tests.conftest import MintToken, bearer, wait_for
from tests.support.rich_errors import error_of

pytestmark = pytest.mark.integration

LAST_TWICE = "Why does my for loop print the last item twice?"


@pytest.fixture(scope="module")
def concepts(channels: dict[str, grpc.Channel]) -> concepts_pb2_grpc.ConceptsServiceStub:
    return concepts_pb2_grpc.ConceptsServiceStub(channels["concepts"])


def explain(
    stub: concepts_pb2_grpc.ConceptsServiceStub, token: str, **fields: Any
) -> concepts_pb2.Explanation:
    reply: concepts_pb2.Explanation = stub.ExplainConcept(
        concepts_pb2.ExplainConceptRequest(**fields), metadata=bearer(token), timeout=60
    )
    return reply


def test_a_classic_question_is_answered_specifically_with_a_real_run(
    concepts: concepts_pb2_grpc.ConceptsServiceStub, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    answer = explain(
        concepts,
        mint_token(student),
        student=f"students/{student}",
        question=LAST_TWICE,
        include_diagram=True,
    )
    assert answer.topic == common_pb2.TOPIC_CONTROL_FLOW
    assert answer.level == common_pb2.LEVEL_BEGINNER  # no mastery yet
    assert answer.origin == concepts_pb2.Explanation.ORIGIN_CURATED
    assert answer.title == LAST_TWICE
    (example,) = answer.examples
    assert example.output == "apple\nbanana\ncherry\ncherry\n"  # run by the sandbox service
    assert not answer.pitfalls
    assert answer.diagram.mermaid.startswith("flowchart TD")  # parsed by Mermaid first


def test_every_level_of_a_topic_over_grpc(
    concepts: concepts_pb2_grpc.ConceptsServiceStub, mint_token: MintToken
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    token = mint_token(student)
    counts = {}
    for level in (
        common_pb2.LEVEL_BEGINNER,
        common_pb2.LEVEL_INTERMEDIATE,
        common_pb2.LEVEL_ADVANCED,
    ):
        answer = explain(
            concepts,
            token,
            student=f"students/{student}",
            topic=common_pb2.TOPIC_RECURSION,
            level=level,
        )
        assert answer.level == level and answer.body and answer.title
        assert all(e.code and e.output for e in answer.examples)
        assert not answer.HasField("diagram")  # not asked for
        counts[level] = (len(answer.examples), len(answer.pitfalls))
    assert counts[common_pb2.LEVEL_BEGINNER] == (1, 0)
    assert counts[common_pb2.LEVEL_INTERMEDIATE][1] >= 2
    assert counts[common_pb2.LEVEL_ADVANCED][1] >= 3


def test_bad_requests_name_each_field(
    concepts: concepts_pb2_grpc.ConceptsServiceStub, mint_token: MintToken
) -> None:
    token = mint_token("alice")
    code, reason, fields = error_of(
        lambda: explain(
            concepts,
            token,
            student="alice",
            topic=99,
            level=7,
            question="x" * 2001,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELDS")
    assert fields == ["level", "question", "student", "topic"]
    _, _, fields = error_of(lambda: explain(concepts, token, student="students/alice"))
    assert fields == ["topic"]  # neither topic nor question
    _, _, fields = error_of(
        lambda: explain(concepts, token, student="students/alice", question="what's for lunch?")
    )
    assert fields == ["topic"]  # no Python topic in the question
    ok = explain(concepts, token, student="students/alice", question="x" * 1990 + " recursion")
    assert ok.topic == common_pb2.TOPIC_RECURSION  # 2,000 characters is allowed


def test_access_rules(
    concepts: concepts_pb2_grpc.ConceptsServiceStub,
    channels: dict[str, grpc.Channel],
    mint_token: MintToken,
) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    cohort = f"c-{uuid.uuid4().hex[:6]}"
    request: dict[str, Any] = {"student": f"students/{student}", "topic": common_pb2.TOPIC_STRINGS}
    code, reason, _ = error_of(lambda: explain(concepts, mint_token("mallory"), **request))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
    with pytest.raises(grpc.RpcError) as caught:
        concepts.ExplainConcept(concepts_pb2.ExplainConceptRequest(**request), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert explain(concepts, mint_token("root", "admin"), **request).title

    teacher = mint_token("tess", "teacher", [cohort])
    code, _, _ = error_of(lambda: explain(concepts, teacher, **request))
    assert code == grpc.StatusCode.PERMISSION_DENIED  # the mastery engine knows no cohort yet

    # The student's first graded work puts them in the cohort (review -> Kafka -> mastery).
    student_token = mint_token(student, "student", [cohort])
    review_pb2_grpc.ReviewServiceStub(channels["review"]).CreateCodeReview(
        review_pb2.CreateCodeReviewRequest(
            parent=f"students/{student}",
            code_review=review_pb2.CodeReview(code="x = 1\n", topic=common_pb2.TOPIC_STRINGS),
        ),
        metadata=bearer(student_token),
        timeout=30,
    )
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])

    def known() -> mastery_pb2.Mastery | None:
        try:
            found: mastery_pb2.Mastery = mastery.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
                metadata=bearer(student_token),
                timeout=5,
            )
            return found
        except grpc.RpcError:
            return None

    assert wait_for(known, what="the student's mastery").cohort == f"cohorts/{cohort}"
    assert explain(concepts, teacher, **request).topic == common_pb2.TOPIC_STRINGS
    other = mint_token("otto", "teacher", ["c-elsewhere"])
    code, _, _ = error_of(lambda: explain(concepts, other, **request))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_explain_through_envoy_as_json(gateway_url: str, mint_token: MintToken) -> None:
    student = f"stu-{uuid.uuid4().hex[:8]}"
    http = httpx.Client(
        base_url=gateway_url,
        headers={"authorization": f"Bearer {mint_token(student)}"},
        timeout=60,
    )
    made = http.post(
        "/v1/concepts:explain",
        json={
            "student": f"students/{student}",
            "topic": "TOPIC_CLASSES_AND_OBJECTS",
            "level": "LEVEL_INTERMEDIATE",
            "includeDiagram": True,
        },
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["topic"], body["level"], body["origin"]) == (
        "TOPIC_CLASSES_AND_OBJECTS",
        "LEVEL_INTERMEDIATE",
        "ORIGIN_CURATED",
    )
    assert len(body["examples"]) >= 2 and all(e["output"] for e in body["examples"])
    assert body["diagram"]["mermaid"].startswith("classDiagram")
    assert "Leo makes MEOW!" in body["examples"][0]["output"]

    asked = http.post(
        "/v1/concepts:explain", json={"student": f"students/{student}", "question": LAST_TWICE}
    )
    assert asked.status_code == 200
    assert asked.json()["examples"][0]["output"] == "apple\nbanana\ncherry\ncherry\n"

    refused = http.post(
        "/v1/concepts:explain",
        json={"student": f"students/{student}", "question": "y" * 2001},
    )
    assert refused.status_code == 400
    details = refused.json()["details"]
    bad_request = next(d for d in details if d["@type"].endswith("google.rpc.BadRequest"))
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["question"]

    other = http.post(
        "/v1/concepts:explain", json={"student": "students/someone-else", "topic": "TOPIC_FILES"}
    )
    assert other.status_code == 403
    anonymous = httpx.post(
        f"{gateway_url}/v1/concepts:explain",
        json={"student": f"students/{student}", "topic": "TOPIC_FILES"},
        timeout=30,
    )
    assert anonymous.status_code == 401


@pytest.mark.parametrize("through", ["service", "gateway"])
def test_a_huge_topic_name_is_refused_with_a_short_answer(
    mesh: dict[str, int], gateway_url: str, mint_token: MintToken, through: str
) -> None:
    """GetTopic repeated any name back in its NOT_FOUND status: a 100 KB name made a
    trailer Envoy cannot forward (native gRPC callers got UNAVAILABLE) and a direct
    caller's library refused it (RESOURCE_EXHAUSTED). Found by test_robustness.py."""
    port = mesh["concepts"] if through == "service" else httpx.URL(gateway_url).port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = concepts_pb2_grpc.ConceptsServiceStub(channel)
        code, reason, fields = error_of(
            lambda: stub.GetTopic(
                concepts_pb2.GetTopicRequest(name="topics/" + "a" * 100_000),
                metadata=bearer(mint_token("alice")),
                timeout=10,
            )
        )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELDS", ["name"])
