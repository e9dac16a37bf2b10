"""Consent to analytics and model use (issue 14), through the mastery service on the real
Postgres: what applies (student's choice, else the school's default, else the
platform's), the record of who chose what and when, and who may do which. That model
use is obeyed is tested with an agent and a scripted model in
tests/integration/test_debug.py."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

from tests.conftest import MintToken, bearer

pytestmark = pytest.mark.integration

PLATFORM = mastery_pb2.CONSENT_SOURCE_PLATFORM_DEFAULT
TENANT = mastery_pb2.CONSENT_SOURCE_TENANT_DEFAULT
STUDENT = mastery_pb2.CONSENT_SOURCE_STUDENT


def choose(
    stub: mastery_pb2_grpc.MasteryServiceStub,
    metadata: list[tuple[str, str]],
    student: str,
    **choices: bool,
) -> mastery_pb2.Consent:
    consent = mastery_pb2.Consent(name=f"students/{student}/consent")
    for field, granted in choices.items():
        getattr(consent, field).granted = granted
    updated: mastery_pb2.Consent = stub.UpdateConsent(
        mastery_pb2.UpdateConsentRequest(
            consent=consent, update_mask=field_mask_pb2.FieldMask(paths=list(choices))
        ),
        metadata=metadata,
        timeout=10,
    )
    return updated


def test_what_applies_and_the_record_of_every_choice(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    tenant = f"consent-{uuid.uuid4().hex[:6]}"
    student = f"kid-{uuid.uuid4().hex[:6]}"
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    own = bearer(mint_token(student, "student", ["c1"], tenant=tenant))
    admin = bearer(mint_token("root", "admin", tenant=tenant))
    name = f"students/{student}/consent"

    fresh = mastery.GetConsent(mastery_pb2.GetConsentRequest(name=name), metadata=own, timeout=10)
    assert (fresh.analytics.granted, fresh.analytics.source) == (True, PLATFORM)
    assert (fresh.model_use.granted, fresh.model_use.source) == (False, PLATFORM)
    assert list(fresh.history) == []

    defaults = mastery.UpdateConsentDefaults(
        mastery_pb2.UpdateConsentDefaultsRequest(
            consent_defaults=mastery_pb2.ConsentDefaults(
                name=f"tenants/{tenant}/consentDefaults",
                model_use=mastery_pb2.ConsentDecision(granted=True),
                analytics=mastery_pb2.ConsentDecision(granted=False),  # not in the mask
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["model_use"]),
        ),
        metadata=admin,
        timeout=10,
    )
    assert (defaults.model_use.granted, defaults.model_use.source) == (True, TENANT)
    assert defaults.model_use.recorded_by == "root"
    assert (defaults.analytics.granted, defaults.analytics.source) == (True, PLATFORM)
    school = mastery.GetConsent(mastery_pb2.GetConsentRequest(name=name), metadata=own, timeout=10)
    assert (school.model_use.granted, school.model_use.source) == (True, TENANT)

    mine = choose(mastery, own, student, model_use=False)
    assert (mine.model_use.granted, mine.model_use.source) == (False, STUDENT)
    assert mine.model_use.recorded_by == student
    # An admin records a guardian's choice for the student.
    after = choose(mastery, admin, student, analytics=False)
    assert (after.analytics.granted, after.analytics.source) == (False, STUDENT)
    assert [(r.purpose, r.granted, r.recorded_by) for r in after.history] == [
        (mastery_pb2.CONSENT_PURPOSE_ANALYTICS, False, "root"),
        (mastery_pb2.CONSENT_PURPOSE_MODEL_USE, False, student),
    ]
    assert after.history[0].record_time.ToDatetime() >= after.history[1].record_time.ToDatetime()
    # Their teacher may read it (their student), not change it.
    teacher = bearer(mint_token("tess", "teacher", ["c1"], tenant=tenant))
    read = mastery.GetConsent(
        mastery_pb2.GetConsentRequest(name=name), metadata=teacher, timeout=10
    )
    assert read.model_use.source == STUDENT
    with pytest.raises(grpc.RpcError) as denied:
        choose(mastery, teacher, student, model_use=True)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_only_a_schools_admin_sets_its_defaults_and_bad_masks_are_named(
    channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    tenant = f"consent-{uuid.uuid4().hex[:6]}"
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])
    request = mastery_pb2.UpdateConsentDefaultsRequest(
        consent_defaults=mastery_pb2.ConsentDefaults(
            name=f"tenants/{tenant}/consentDefaults",
            model_use=mastery_pb2.ConsentDecision(granted=True),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["model_use"]),
    )
    for token in (
        mint_token("kid", "student", ["c1"], tenant=tenant),
        mint_token("tess", "teacher", ["c1"], tenant=tenant),
        mint_token("root", "admin", tenant="another-school"),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            mastery.UpdateConsentDefaults(request, metadata=bearer(token), timeout=10)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    admin = bearer(mint_token("root", "admin", tenant=tenant))
    got = mastery.GetConsentDefaults(
        mastery_pb2.GetConsentDefaultsRequest(name=f"tenants/{tenant}/consentDefaults"),
        metadata=admin,
        timeout=10,
    )
    assert (got.model_use.granted, got.model_use.source) == (False, PLATFORM)

    with pytest.raises(grpc.RpcError) as bad:
        mastery.UpdateConsent(
            mastery_pb2.UpdateConsentRequest(
                consent=mastery_pb2.Consent(name="students/kid/consent"),
                update_mask=field_mask_pb2.FieldMask(paths=["model_use", "favourite_colour"]),
            ),
            metadata=admin,
            timeout=10,
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(bad.value)
    assert status is not None
    violations = error_details_pb2.BadRequest()
    assert any(d.Unpack(violations) for d in status.details)
    assert [v.field for v in violations.field_violations] == ["update_mask"]
    assert "favourite_colour" in violations.field_violations[0].description
