"""ListEvidence (issue 15) on the mesh: a student's evidence newest first, in pages that
neither repeat nor skip while more arrives, filtered by topic, component and time, read
by those who may read the student; bad filters and made-up tokens are named."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.common.v1 import common_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from services.kit.pagination import position_token
from tests.conftest import MintToken, bearer, wait_for
from tests.integration.test_mastery import Events, exercise, quiz, stamp
from tests.support.rich_errors import rich_error

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def at(message: Message, minutes_ago: int) -> Message:
    """The event, as having occurred `minutes_ago`."""
    message.occur_time.CopyFrom(stamp(NOW - timedelta(minutes=minutes_ago)))  # type: ignore[attr-defined]
    return message


def listed(
    stub: mastery_pb2_grpc.MasteryServiceStub, token: str, request: mastery_pb2.ListEvidenceRequest
) -> list[mastery_pb2.Evidence]:
    """Every page of a listing, followed to its end."""
    found: list[mastery_pb2.Evidence] = []
    request = mastery_pb2.ListEvidenceRequest.FromString(request.SerializeToString())
    while True:
        page = stub.ListEvidence(request, metadata=bearer(token), timeout=10)
        found += page.evidence
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def test_evidence_is_listed_newest_first_in_pages_and_filtered(
    channels: dict[str, grpc.Channel], mint_token: MintToken, events: Events
) -> None:
    tenant = f"evidence-{uuid.uuid4().hex[:6]}"
    student = f"ev-{uuid.uuid4().hex[:6]}"
    token = mint_token(student, "student", ["c1"], tenant=tenant)
    stub = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    sent = [
        at(exercise(student, 0.5, exercise_id=f"ex-{n}", tenant=tenant), minutes_ago=10 * n)
        for n in range(5)
    ] + [
        at(
            quiz(student, 0.8, topic=common_pb2.TOPIC_CONTROL_FLOW, tenant=tenant),
            minutes_ago=5 + 10 * n,
        )
        for n in range(3)
    ]
    for message in sent:
        events.send(message, student)
    events.flush()
    everything = mastery_pb2.ListEvidenceRequest(parent=f"students/{student}", page_size=3)
    wait_for(
        lambda: (
            len(listed(stub, token, mastery_pb2.ListEvidenceRequest(parent=everything.parent))) == 8
            or None
        ),
        what="the student's 8 pieces of evidence",
    )

    paged = listed(stub, token, everything)
    times = [e.occur_time.ToDatetime() for e in paged]
    assert len(paged) == 8 and times == sorted(times, reverse=True)
    assert len({(e.source, e.event_id) for e in paged}) == 8

    # A page, then a newer event, then the next page: nothing repeated, nothing skipped.
    first = stub.ListEvidence(everything, metadata=bearer(token), timeout=10)
    events.send(exercise(student, 0.9, exercise_id="ex-new", tenant=tenant), student)
    events.flush()
    wait_for(
        lambda: (
            len(listed(stub, token, mastery_pb2.ListEvidenceRequest(parent=everything.parent))) == 9
            or None
        ),
        what="the new event",
    )
    rest = listed(
        stub,
        token,
        mastery_pb2.ListEvidenceRequest(
            parent=everything.parent, page_size=3, page_token=first.next_page_token
        ),
    )
    assert [e.event_id for e in [*first.evidence, *rest]] == [e.event_id for e in paged]

    quizzes = listed(
        stub,
        token,
        mastery_pb2.ListEvidenceRequest(
            parent=everything.parent, component=mastery_pb2.COMPONENT_QUIZ
        ),
    )
    assert len(quizzes) == 3 and {e.topic for e in quizzes} == {common_pb2.TOPIC_CONTROL_FLOW}
    window = mastery_pb2.ListEvidenceRequest(
        parent=everything.parent, topic=common_pb2.TOPIC_FUNCTIONS
    )
    window.start_time.CopyFrom(stamp(NOW - timedelta(minutes=25)))
    window.end_time.CopyFrom(stamp(NOW - timedelta(minutes=5)))
    in_window = listed(stub, token, window)
    assert [e.subject for e in in_window] == ["ex-1", "ex-2"]

    # Their teacher reads them; a teacher of another class does not.
    teacher = mint_token("tess", "teacher", ["c1"], tenant=tenant)
    assert len(listed(stub, teacher, mastery_pb2.ListEvidenceRequest(parent=everything.parent)))
    with pytest.raises(grpc.RpcError) as denied:
        stub.ListEvidence(
            everything,
            metadata=bearer(mint_token("tom", "teacher", ["c2"], tenant=tenant)),
            timeout=10,
        )
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_bad_filters_and_made_up_tokens_are_named(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    stub = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    token = mint_token("kid", "student", ["c1"])
    later, earlier = Timestamp(), Timestamp()
    later.FromDatetime(NOW)
    earlier.FromDatetime(NOW - timedelta(hours=1))
    bad = mastery_pb2.ListEvidenceRequest(
        parent="students/kid",
        topic=99,  # type: ignore[arg-type]
        component=7,  # type: ignore[arg-type]
        start_time=later,
        end_time=earlier,
    )
    with pytest.raises(grpc.RpcError) as invalid:
        stub.ListEvidence(bad, metadata=bearer(token), timeout=10)
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(invalid.value) == ("INVALID_FIELDS", ["component", "end_time", "topic"])
    # A token with the right fingerprint but a made-up position.
    filters = f"kid|0|0|{None}|{None}"
    for position in (("yesterday", "s", "e"), ("2026-12-01T00:00:00", "s", "e")):
        made_up = mastery_pb2.ListEvidenceRequest(
            parent="students/kid", page_token=position_token(position, filters)
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListEvidence(made_up, metadata=bearer(token), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, position
