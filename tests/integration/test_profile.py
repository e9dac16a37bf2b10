"""GetStudent and UpdateStudent (issue 15) on the mesh: a student's profile, changed by
the student or an admin with field masks and etags; a chosen time zone is the one
their mastery counts days in, whatever their events' devices say."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from tests.conftest import MintToken, bearer, wait_for
from tests.integration.test_mastery import Events, exercise
from tests.support.rich_errors import rich_error

pytestmark = pytest.mark.integration


def update(
    stub: mastery_pb2_grpc.MasteryServiceStub,
    token: str,
    student: mastery_pb2.Student,
    *paths: str,
) -> mastery_pb2.Student:
    updated: mastery_pb2.Student = stub.UpdateStudent(
        mastery_pb2.UpdateStudentRequest(
            student=student, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        ),
        metadata=bearer(token),
        timeout=10,
    )
    return updated


def test_a_student_names_themself_and_chooses_their_time_zone(
    channels: dict[str, grpc.Channel], mint_token: MintToken, events: Events
) -> None:
    tenant = f"profile-{uuid.uuid4().hex[:6]}"
    sid = f"ada-{uuid.uuid4().hex[:6]}"
    token = mint_token(sid, "student", ["c1"], tenant=tenant)
    stub = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    name = f"students/{sid}"
    events.send(exercise(sid, 0.7, tenant=tenant), sid)  # from a device in UTC
    events.flush()

    def with_mastery() -> mastery_pb2.Mastery | None:
        try:
            found: mastery_pb2.Mastery = stub.GetMastery(
                mastery_pb2.GetMasteryRequest(name=f"{name}/mastery"),
                metadata=bearer(token),
                timeout=10,
            )
        except grpc.RpcError:
            return None
        return found

    wait_for(with_mastery, what="the student's mastery")
    profile = stub.GetStudent(mastery_pb2.GetStudentRequest(name=name), metadata=bearer(token))
    assert (profile.cohort, profile.time_zone, profile.display_name) == ("cohorts/c1", "UTC", "")
    assert profile.etag

    named = update(
        stub, token, mastery_pb2.Student(name=name, display_name="Ada L."), "display_name"
    )
    assert named.display_name == "Ada L." and named.etag != profile.etag
    # An update made with the etag read before it is refused.
    stale = mastery_pb2.Student(name=name, display_name="Ada", etag=profile.etag)
    with pytest.raises(grpc.RpcError) as aborted:
        update(stub, token, stale, "display_name")
    assert aborted.value.code() is grpc.StatusCode.ABORTED

    zone = "Pacific/Kiritimati"  # UTC+14: a different day from UTC for half of it
    moved = update(
        stub, token, mastery_pb2.Student(name=name, time_zone=zone, etag=named.etag), "time_zone"
    )
    assert (moved.time_zone, moved.display_name) == (zone, "Ada L.")
    assert (
        stub.GetMastery(
            mastery_pb2.GetMasteryRequest(name=f"{name}/mastery"), metadata=bearer(token)
        ).streak.time_zone
        == zone
    )
    # Their device still says UTC; the chosen zone stays.
    events.send(exercise(sid, 0.9, exercise_id="functions-002", tenant=tenant), sid)
    events.flush()
    wait_for(
        lambda: ((m := with_mastery()) is not None and m.components.completion > 0.75) or None,
        what="the second exercise applied",
    )
    after = stub.GetStudent(mastery_pb2.GetStudentRequest(name=name), metadata=bearer(token))
    assert after.time_zone == zone

    # Their teacher reads the profile and may not change it.
    teacher = mint_token("tess", "teacher", ["c1"], tenant=tenant)
    assert (
        stub.GetStudent(
            mastery_pb2.GetStudentRequest(name=name), metadata=bearer(teacher)
        ).display_name
        == "Ada L."
    )
    with pytest.raises(grpc.RpcError) as denied:
        update(stub, teacher, mastery_pb2.Student(name=name, display_name="X"), "display_name")
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_bad_profile_updates_name_their_fields(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    stub = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    tenant = f"profile-{uuid.uuid4().hex[:6]}"
    admin = mint_token("root", "admin", tenant=tenant)
    bad = mastery_pb2.Student(name="students/kid", time_zone="Mars/Olympus", display_name="a\nb")
    with pytest.raises(grpc.RpcError) as invalid:
        update(stub, admin, bad, "time_zone", "display_name", "cohort")
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(invalid.value) == (
        "INVALID_FIELDS",
        ["student.display_name", "student.time_zone", "update_mask"],
    )
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetStudent(
            mastery_pb2.GetStudentRequest(name="students/nobody"), metadata=bearer(admin)
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
