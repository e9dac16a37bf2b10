"""Alerts on the running mesh: a student's repeated error becomes an alert their teacher
works through (gRPC and Envoy JSON), access by cohort and role, one alert per episode
and per event, poison to the DLQ, and two teachers racing on one etag. Everything here
is in the development tenant ("dev", the default of `mint_token`); the events this
module produces name it (`student.tenant`). Tenants apart: test_tenants_notify.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import TypeVar

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.common.v1 import common_pb2
from learnflow.debug.v1 import debug_pb2_grpc
from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2_grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.auth import DEV_TENANT
from services.kit.config import Settings
from tests.conftest import MintToken, bearer, wait_for
from tests.integration.test_debug import diagnose
from tests.integration.test_mastery import (
    Events,
    evidence_total,
    exercise,
    mastery_when,
    quiz,
    stamp,
)
from tests.support.dead_letters import dead_letters

pytestmark = pytest.mark.integration

INDEX_ERROR_CODE = "xs = [1, 2, 3]\nprint(xs[3])\n"
INDEX_ERROR_TRACEBACK = """Traceback (most recent call last):
  File "main.py", line 2, in <module>
    print(xs[3])
          ~~^^^
IndexError: list index out of range
"""
Alert = notify_pb2.Alert
M = TypeVar("M", bound=Message)


@pytest.fixture(scope="module")
def notify(mesh: dict[str, int]) -> Iterator[notify_pb2_grpc.NotifyServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh['notify']}") as channel:
        yield notify_pb2_grpc.NotifyServiceStub(channel)


@pytest.fixture(scope="module")
def debug(mesh: dict[str, int]) -> Iterator[debug_pb2_grpc.DebugServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh['debug']}") as channel:
        yield debug_pb2_grpc.DebugServiceStub(channel)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def alerts_about(
    stub: notify_pb2_grpc.NotifyServiceStub,
    token: str,
    student: str,
    parent: str = "cohorts/-",
    **filters: object,
) -> list[notify_pb2.Alert]:
    reply = stub.ListAlerts(
        notify_pb2.ListAlertsRequest(parent=parent, student=f"students/{student}", **filters),  # type: ignore[arg-type]
        metadata=bearer(token),
        timeout=10,
    )
    return list(reply.alerts)


def wait_for_alert(
    stub: notify_pb2_grpc.NotifyServiceStub,
    token: str,
    student: str,
    settle: float = 0.0,
) -> list[notify_pb2.Alert]:
    found = wait_for(lambda: alerts_about(stub, token, student) or None, 45, f"{student}'s alert")
    if settle:
        time.sleep(settle)  # a duplicate would show up meanwhile
        found = alerts_about(stub, token, student)
    return found


def in_tenant(message: M, tenant: str = DEV_TENANT) -> M:
    """`message` with its `student.tenant` set (every consumer dead-letters events
    without one)."""
    message.student.tenant = tenant  # type: ignore[attr-defined]
    return message


def struggle_event(
    student: str,
    cohort: str,
    episode: str,
    count: int = 4,
    *,
    tenant: str = DEV_TENANT,
    error_type: str = "KeyError",
) -> events_pb2.StruggleDetected:
    return events_pb2.StruggleDetected(
        student=events_pb2.StudentRef(student_id=student, cohort=cohort, tenant=tenant),
        kind=events_pb2.StruggleDetected.KIND_REPEATED_ERROR,
        topic=common_pb2.TOPIC_COLLECTIONS,
        error_type=error_type,
        occurrence_count=count,
        episode_id=episode,
        detect_time=stamp(),
        evidence_ids=[f"students/{student}/diagnoses/d{i}" for i in range(count)],
    )


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    return error.code()


def test_a_repeated_error_reaches_the_teacher_who_works_it_through(
    debug: debug_pb2_grpc.DebugServiceStub,
    notify: notify_pb2_grpc.NotifyServiceStub,
    mint_token: MintToken,
    gateway_url: str,
) -> None:
    cohort, student = uid("c-alert"), uid("stu")
    own = mint_token(student, "student", (cohort,))
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    for _ in range(4):  # "more than 3 times in 10 minutes"
        diagnose(debug, own, student, INDEX_ERROR_CODE, INDEX_ERROR_TRACEBACK)

    (alert,) = wait_for_alert(notify, teacher, student, settle=2.0)
    assert alert.name.startswith(f"cohorts/{cohort}/alerts/")
    assert alert.cohort == f"cohorts/{cohort}"
    assert alert.student == f"students/{student}"
    assert alert.kind == Alert.KIND_REPEATED_ERROR
    assert alert.state == Alert.STATE_OPEN
    assert alert.severity == Alert.SEVERITY_MEDIUM
    assert "IndexError 4 times in 10 minutes" in alert.title
    assert alert.creator == "//learnflow.dev/debug"
    assert alert.episode_id and alert.etag
    kinds = [e.type for e in alert.evidence]
    assert kinds == [notify_pb2.Evidence.TYPE_STRUGGLE] + [notify_pb2.Evidence.TYPE_DIAGNOSIS] * 4
    assert alert.evidence[0].value == 4 and alert.evidence[0].HasField("occur_time")
    assert all(e.resource.startswith(f"students/{student}/diagnoses/") for e in alert.evidence[1:])

    # The same through Envoy as JSON.
    http = httpx.Client(
        base_url=gateway_url, headers={"authorization": f"Bearer {teacher}"}, timeout=30
    )
    listed = http.get(f"/v1/cohorts/{cohort}/alerts", params={"student": f"students/{student}"})
    assert listed.status_code == 200, listed.text
    (shown,) = listed.json()["alerts"]
    assert shown["name"] == alert.name and shown["kind"] == "KIND_REPEATED_ERROR"
    assert shown["evidence"][0]["type"] == "TYPE_STRUGGLE"
    got = http.get(f"/v1/{alert.name}")
    assert got.status_code == 200 and got.json()["etag"] == alert.etag

    # Acknowledge over JSON with the etag, resolve over gRPC with a note.
    acked = http.post(f"/v1/{alert.name}:acknowledge", json={"etag": alert.etag})
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "STATE_ACKNOWLEDGED"
    stale = http.post(f"/v1/{alert.name}:resolve", json={"etag": alert.etag})
    assert stale.status_code == 409, stale.text  # ABORTED: the etag changed
    resolved = notify.ResolveAlert(
        notify_pb2.ResolveAlertRequest(
            name=alert.name, resolution_note="Went over list indexing.", etag=acked.json()["etag"]
        ),
        metadata=bearer(teacher),
        timeout=10,
    )
    assert resolved.state == Alert.STATE_RESOLVED
    assert resolved.resolution_note == "Went over list indexing."
    assert resolved.acknowledged_by and resolved.resolved_by
    assert resolved.HasField("acknowledge_time") and resolved.HasField("resolve_time")

    # Resolving twice is an illegal transition.
    with pytest.raises(grpc.RpcError) as caught:
        notify.ResolveAlert(
            notify_pb2.ResolveAlertRequest(name=alert.name), metadata=bearer(teacher), timeout=10
        )
    assert code_of(caught.value) == grpc.StatusCode.FAILED_PRECONDITION

    # Filtered by state it shows resolved, and no longer open.
    done = alerts_about(notify, teacher, student, state=Alert.STATE_RESOLVED)
    assert [a.name for a in done] == [alert.name]
    assert alerts_about(notify, teacher, student, state=Alert.STATE_OPEN) == []
    by_json = http.get(
        "/v1/cohorts/-/alerts",
        params={"student": f"students/{student}", "state": "STATE_RESOLVED"},
    )
    assert [a["name"] for a in by_json.json()["alerts"]] == [alert.name]


def test_other_cohorts_and_students_see_nothing(
    notify: notify_pb2_grpc.NotifyServiceStub,
    events: Events,
    mint_token: MintToken,
    gateway_url: str,
) -> None:
    cohort, student = uid("c-own"), uid("stu")
    events.send(
        struggle_event(student, cohort, uuid.uuid4().hex), student, topic="struggle.detected"
    )
    events.flush()
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    (alert,) = wait_for_alert(notify, teacher, student)

    stranger = mint_token(uid("teach"), "teacher", (uid("c-other"),))
    assert alerts_about(notify, stranger, student) == []  # cohorts/-: only their own cohorts
    for call in (
        lambda: notify.GetAlert(
            notify_pb2.GetAlertRequest(name=alert.name), metadata=bearer(stranger), timeout=10
        ),
        lambda: alerts_about(notify, stranger, student, parent=f"cohorts/{cohort}"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert code_of(caught.value) == grpc.StatusCode.PERMISSION_DENIED

    own = mint_token(student, "student", (cohort,))
    for call in (
        lambda: alerts_about(notify, own, student),
        lambda: notify.GetAlert(
            notify_pb2.GetAlertRequest(name=alert.name), metadata=bearer(own), timeout=10
        ),
        lambda: notify.AcknowledgeAlert(
            notify_pb2.AcknowledgeAlertRequest(name=alert.name), metadata=bearer(own), timeout=10
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert code_of(caught.value) == grpc.StatusCode.PERMISSION_DENIED
    denied = httpx.get(
        f"{gateway_url}/v1/{alert.name}", headers={"authorization": f"Bearer {own}"}, timeout=30
    )
    assert denied.status_code == 403

    admin = mint_token(uid("admin"), "admin")
    assert [a.name for a in alerts_about(notify, admin, student)] == [alert.name]


def test_one_alert_per_event_and_per_episode(
    notify: notify_pb2_grpc.NotifyServiceStub, events: Events, mint_token: MintToken
) -> None:
    cohort, student = uid("c-dup"), uid("stu")
    first = struggle_event(student, cohort, uuid.uuid4().hex)
    event_id = events.send(first, student, topic="struggle.detected")
    events.send(first, student, event_id=event_id, topic="struggle.detected")  # redelivered
    events.flush()
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    (alert,) = wait_for_alert(notify, teacher, student, settle=2.0)
    assert len(alert.evidence) == 5  # the detection and its 4 diagnoses, once

    # A later burst of the same error while the alert is open: the same episode for the
    # teacher, so its evidence joins the open alert.
    later = struggle_event(student, cohort, uuid.uuid4().hex, count=9)
    events.send(later, student, topic="struggle.detected")
    events.flush()
    grown = wait_for(
        lambda: next(
            (a for a in alerts_about(notify, teacher, student) if len(a.evidence) > 5), None
        ),
        30,
        "the evidence added",
    )
    assert grown.name == alert.name and grown.etag != alert.etag
    assert len(grown.evidence) == 1 + 4 + 1 + 5  # d0-d3 known; d4-d8 new
    assert grown.severity == Alert.SEVERITY_HIGH
    assert len(alerts_about(notify, teacher, student)) == 1


def test_poison_goes_to_the_dlq_and_later_events_still_make_alerts(
    notify: notify_pb2_grpc.NotifyServiceStub,
    events: Events,
    mint_token: MintToken,
    settings: Settings,
) -> None:
    cohort, student = uid("c-poison"), uid("stu")
    good = struggle_event(student, cohort, uuid.uuid4().hex)
    undecodable = events.send(good, student, topic="struggle.detected", value=b"\xff\x00 nope")
    no_kind = struggle_event(student, cohort, uuid.uuid4().hex)
    no_kind.kind = events_pb2.StruggleDetected.KIND_UNSPECIFIED
    nonsense = events.send(no_kind, student, topic="struggle.detected")
    events.send(good, student, topic="struggle.detected")
    events.flush()
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    (alert,) = wait_for_alert(notify, teacher, student)
    assert alert.kind == Alert.KIND_REPEATED_ERROR

    assert settings.kafka_bootstrap_servers
    # Other consumers of the topic dead-letter poison too: keep notify's.
    found = dead_letters(
        settings.kafka_bootstrap_servers,
        "struggle.detected.dlq",
        {undecodable, nonsense},
        group=settings.notify_consumer_group,
    )
    assert set(found) == {undecodable, nonsense}
    assert found[undecodable]["dlq_error_class"] == "DecodeFailureError"
    assert "unknown kind" in found[nonsense]["dlq_error_message"]
    for headers in found.values():
        assert headers["dlq_original_topic"] == "struggle.detected"
        assert headers["dlq_consumer_group"] == settings.notify_consumer_group


def test_two_teachers_acknowledging_with_one_etag_one_wins(
    notify: notify_pb2_grpc.NotifyServiceStub, mint_token: MintToken
) -> None:
    cohort, student = uid("c-race"), uid("stu")
    mint_student = mint_token(student, "student", (cohort,))
    teachers = [mint_token(uid("teach"), "teacher", (cohort,)) for _ in range(2)]
    # The roster learns the student's cohort from their own token (any call will do).
    with pytest.raises(grpc.RpcError):
        alerts_about(notify, mint_student, student)
    made = notify.CreateAlert(
        notify_pb2.CreateAlertRequest(
            parent=f"cohorts/{cohort}",
            alert=Alert(
                student=f"students/{student}",
                kind=Alert.KIND_INTERVENTION,
                title="Has not submitted anything this week",
                detail="Check in after class.",
            ),
        ),
        metadata=bearer(teachers[0]),
        timeout=10,
    )
    assert made.kind == Alert.KIND_INTERVENTION and made.state == Alert.STATE_OPEN
    assert made.cohort == f"cohorts/{cohort}" and made.severity == Alert.SEVERITY_MEDIUM
    assert made.evidence[0].type == notify_pb2.Evidence.TYPE_NOTE

    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def acknowledge(token: str) -> None:
        barrier.wait()
        try:
            outcomes.append(
                notify.AcknowledgeAlert(
                    notify_pb2.AcknowledgeAlertRequest(name=made.name, etag=made.etag),
                    metadata=bearer(token),
                    timeout=10,
                )
            )
        except grpc.RpcError as exc:
            outcomes.append(code_of(exc))

    threads = [threading.Thread(target=acknowledge, args=(t,)) for t in teachers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [o for o in outcomes if isinstance(o, notify_pb2.Alert)]
    assert len(won) == 1 and won[0].state == Alert.STATE_ACKNOWLEDGED
    assert [o for o in outcomes if not isinstance(o, notify_pb2.Alert)] == [grpc.StatusCode.ABORTED]


def test_falling_from_yellow_into_red_alerts_once_per_score(
    notify: notify_pb2_grpc.NotifyServiceStub,
    mesh: dict[str, int],
    events: Events,
    mint_token: MintToken,
) -> None:
    """Through the mastery engine: yellow on 5 pieces of evidence, then red on 12."""
    cohort, student = uid("c-fall"), uid("stu")
    for n in range(3):
        events.send(
            in_tenant(exercise(student, 1.0, exercise_id=f"functions-00{n + 1}", cohort=cohort)),
            student,
        )
    for _ in range(2):
        events.send(in_tenant(quiz(student, 1.0, cohort=cohort)), student)
    events.flush()
    own = mint_token(student, "student", (cohort,))
    with grpc.insecure_channel(f"127.0.0.1:{mesh['mastery']}") as channel:
        mastery = mastery_pb2_grpc.MasteryServiceStub(channel)
        first = mastery_when(mastery, own, student, lambda m: evidence_total(m) == 5)
        assert first.band == common_pb2.MASTERY_BAND_YELLOW
        for n in range(3):
            events.send(
                in_tenant(
                    exercise(student, 0.0, exercise_id=f"functions-00{n + 4}", cohort=cohort)
                ),
                student,
            )
        for _ in range(4):
            events.send(in_tenant(quiz(student, 0.0, cohort=cohort)), student)
        events.flush()
        fallen = mastery_when(mastery, own, student, lambda m: evidence_total(m) == 12)
        assert fallen.band == common_pb2.MASTERY_BAND_RED

    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    wait_for(
        lambda: len(alerts_about(notify, teacher, student)) >= 2 or None,
        30,
        "two falling-behind alerts",
    )
    time.sleep(1.0)
    found = alerts_about(notify, teacher, student, order_by="severity desc")
    assert [a.kind for a in found] == [Alert.KIND_FALLING_BEHIND] * 2
    overall, functions = found  # overall is the more severe
    assert overall.severity == Alert.SEVERITY_HIGH and "overall mastery" in overall.title
    assert "functions" in functions.title
    (evidence,) = overall.evidence
    assert evidence.type == notify_pb2.Evidence.TYPE_MASTERY_CHANGE
    assert evidence.previous_value > 0.4 >= evidence.value
    assert evidence.resource == f"students/{student}/mastery"


def test_consumer_health(mesh: dict[str, int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mesh['notify']}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("learnflow.notify.consumer", "learnflow.notify.updates"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_flagging_by_hand_is_checked_field_by_field_and_by_cohort(
    notify: notify_pb2_grpc.NotifyServiceStub, mint_token: MintToken
) -> None:
    cohort, student = uid("c-flag"), uid("stu")
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    with pytest.raises(grpc.RpcError) as caught:
        notify.CreateAlert(
            notify_pb2.CreateAlertRequest(
                parent="cohorts/-",
                alert=Alert(kind=Alert.KIND_REPEATED_ERROR, title="two\nlines"),
            ),
            metadata=bearer(teacher),
            timeout=10,
        )
    assert code_of(caught.value) == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("parent", "alert.student", "alert.kind", "alert.title"):
        assert field in (caught.value.details() or "")

    # The roster puts the student in another cohort: this teacher may not flag them.
    with pytest.raises(grpc.RpcError):
        alerts_about(notify, mint_token(student, "student", (uid("c-else"),)), student)
    with pytest.raises(grpc.RpcError) as caught:
        notify.CreateAlert(
            notify_pb2.CreateAlertRequest(
                parent=f"cohorts/{cohort}",
                alert=Alert(
                    student=f"students/{student}", kind=Alert.KIND_INTERVENTION, title="Absent"
                ),
            ),
            metadata=bearer(teacher),
            timeout=10,
        )
    assert code_of(caught.value) == grpc.StatusCode.PERMISSION_DENIED
