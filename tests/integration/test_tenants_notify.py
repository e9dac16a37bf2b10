"""Notify keeps schools (tenants) apart on the running mesh. The same student id
("alice") in the same cohort name ("c1") in school-a and school-b is two students:

- their struggles make two alerts, each listed and streamed to its own school's
  teachers only (a school-b teacher of "c1" never hears school-a's alert, in the time
  school-a's teacher hears it and a while after);
- another school's alert is NOT_FOUND for a teacher of "c1" (see
  test_another_schools_alert_is_not_found for why not PERMISSION_DENIED);
- an operator naming school-b (x-learnflow-tenant) lists and streams school-b's only;
- each alice's own stream carries her own school's answers only;
- an event without a tenant is dead-lettered ("no tenant") by both notify consumers,
  and later events still apply.

The database and broker are shared with every run before this one: each run's events
make alerts of their own (an error type of the run, so an episode of the run), and
every assertion is about this run's event ids, never about counts of everything
listed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from learnflow.common.v1 import common_pb2
from learnflow.events.v1 import events_pb2
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.auth import TENANT_METADATA
from services.kit.bus import LEARNING_RESPONSES, MASTERY_UPDATED, STRUGGLE_DETECTED
from services.kit.config import Settings
from tests.conftest import MintToken, bearer, wait_for
from tests.integration.test_alerts import struggle_event, uid
from tests.integration.test_live_updates import WAIT, GrpcStream, SseStream, enrol, open_grpc
from tests.integration.test_mastery import Events, stamp
from tests.support.dead_letters import dead_letters

pytestmark = pytest.mark.integration

SCHOOL_A, SCHOOL_B = "school-a", "school-b"
SCHOOLS = (SCHOOL_A, SCHOOL_B)
ALICE, C1 = "alice", "c1"
# How long past the moment school-a's teacher heard an alert school-b's stream is
# watched for it too (both streams are on the same replica and hub).
GRACE = 2.0
Alert = notify_pb2.Alert
Update = notify_pb2.Update


@pytest.fixture(scope="module")
def notify(mesh: dict[str, int]) -> Iterator[notify_pb2_grpc.NotifyServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh['notify']}") as channel:
        yield notify_pb2_grpc.NotifyServiceStub(channel)


@pytest.fixture
def streams() -> Iterator[list[GrpcStream | SseStream]]:
    opened: list[GrpcStream | SseStream] = []
    yield opened
    for stream in opened:
        stream.close()


@pytest.fixture(scope="module")
def teachers(mint_token: MintToken) -> dict[str, str]:
    """A teacher of "c1" in each school: tenant -> token."""
    return {t: mint_token(uid(f"teach-{t}"), "teacher", (C1,), tenant=t) for t in SCHOOLS}


@pytest.fixture(scope="module")
def enrolled(mesh: dict[str, int], mint_token: MintToken) -> None:
    """Alice is in "c1" in both schools: the roster learns it from her own tokens (the
    alerts go to her cohort there, whatever other runs did with her)."""
    for tenant in SCHOOLS:
        enrol(mesh["notify"], mint_token(ALICE, "student", (C1,), tenant=tenant), ALICE)


def acting_in(token: str, tenant: str) -> list[tuple[str, str]]:
    return [*bearer(token), (TENANT_METADATA, tenant)]


def event_ids(alert: Alert) -> set[str]:
    return {e.event_id for e in alert.evidence}


def listed(
    stub: notify_pb2_grpc.NotifyServiceStub,
    metadata: list[tuple[str, str]],
    parent: str = "cohorts/-",
) -> list[Alert]:
    reply = stub.ListAlerts(
        notify_pb2.ListAlertsRequest(parent=parent, student=f"students/{ALICE}", page_size=500),
        metadata=metadata,
        timeout=10,
    )
    return list(reply.alerts)


def carrying(alerts: list[Alert], event_id: str) -> list[Alert]:
    """The alerts whose evidence names `event_id`."""
    return [a for a in alerts if event_id in event_ids(a)]


def send_struggle(events: Events, tenant: str, error_type: str) -> str:
    """A struggle of alice in "c1" of `tenant`; its event id."""
    event = struggle_event(ALICE, C1, uuid.uuid4().hex, tenant=tenant, error_type=error_type)
    event_id = events.send(event, ALICE, topic=STRUGGLE_DETECTED)
    events.flush()
    return event_id


def alert_update_of(stream: GrpcStream, event_id: str, timeout: float = WAIT) -> Update:
    """The next update on `stream` that is an alert resting on `event_id` (the streams
    also carry what other tests do in these schools meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no alert of event {event_id} within {timeout}s")
        update = stream.next_update(left)
        if update.HasField("alert") and event_id in event_ids(update.alert):
            return update


@dataclass(frozen=True)
class Made:
    """This run's struggle in each school: event id and the alert it made."""

    event: dict[str, str]
    alert: dict[str, Alert]


@pytest.fixture(scope="module")
def made(
    notify: notify_pb2_grpc.NotifyServiceStub,
    events: Events,
    teachers: dict[str, str],
    enrolled: None,
) -> Made:
    # The same error type in both schools: the same episode key, so two open alerts
    # with one key (one per tenant) must be possible.
    error_type = f"KeyError-{uuid.uuid4().hex[:8]}"
    sent = {tenant: send_struggle(events, tenant, error_type) for tenant in SCHOOLS}

    def alert_of(tenant: str) -> Alert:
        def probe() -> Alert | None:
            found = carrying(listed(notify, bearer(teachers[tenant])), sent[tenant])
            return found[0] if found else None

        return wait_for(probe, WAIT, f"{tenant}'s alert")

    return Made(sent, {tenant: alert_of(tenant) for tenant in SCHOOLS})


def test_each_school_lists_its_own_alice_only(
    notify: notify_pb2_grpc.NotifyServiceStub, teachers: dict[str, str], made: Made
) -> None:
    a, b = made.alert[SCHOOL_A], made.alert[SCHOOL_B]
    assert a.name != b.name
    for alert in (a, b):
        assert alert.name.startswith(f"cohorts/{C1}/alerts/")
        assert (alert.cohort, alert.student) == (f"cohorts/{C1}", f"students/{ALICE}")
        assert alert.kind == Alert.KIND_REPEATED_ERROR and alert.state == Alert.STATE_OPEN
    assert event_ids(a) == {made.event[SCHOOL_A]}  # nothing of school-b's merged in
    assert event_ids(b) == {made.event[SCHOOL_B]}

    for tenant, other in ((SCHOOL_A, SCHOOL_B), (SCHOOL_B, SCHOOL_A)):
        for parent in ("cohorts/-", f"cohorts/{C1}"):
            seen = listed(notify, bearer(teachers[tenant]), parent)
            assert [x.name for x in carrying(seen, made.event[tenant])] == [made.alert[tenant].name]
            assert carrying(seen, made.event[other]) == [], (tenant, parent)
            assert made.alert[other].name not in {x.name for x in seen}


def test_another_schools_alert_is_not_found(
    notify: notify_pb2_grpc.NotifyServiceStub, teachers: dict[str, str], made: Made
) -> None:
    """NOT_FOUND, not PERMISSION_DENIED: school-b's teacher of "c1" may read cohort "c1"
    (their own school's), and in school-b no alert has that name. PERMISSION_DENIED
    would tell them another school has such an alert; NOT_FOUND tells them nothing they
    could not learn by guessing ids. The alert stays as it was."""
    name = made.alert[SCHOOL_A].name
    b_teacher = bearer(teachers[SCHOOL_B])
    calls: list[Callable[[], Alert]] = [
        lambda: notify.GetAlert(
            notify_pb2.GetAlertRequest(name=name), metadata=b_teacher, timeout=10
        ),
        lambda: notify.AcknowledgeAlert(
            notify_pb2.AcknowledgeAlertRequest(name=name), metadata=b_teacher, timeout=10
        ),
        lambda: notify.ResolveAlert(
            notify_pb2.ResolveAlertRequest(name=name), metadata=b_teacher, timeout=10
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
    still = notify.GetAlert(
        notify_pb2.GetAlertRequest(name=name), metadata=bearer(teachers[SCHOOL_A]), timeout=10
    )
    assert still.state == Alert.STATE_OPEN and still.etag == made.alert[SCHOOL_A].etag


def test_a_teacher_may_not_name_another_school(
    notify: notify_pb2_grpc.NotifyServiceStub, teachers: dict[str, str], made: Made
) -> None:
    """Only an operator may act in another tenant than its token's."""
    with pytest.raises(grpc.RpcError) as caught:
        listed(notify, acting_in(teachers[SCHOOL_A], SCHOOL_B))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_operator_acting_in_school_b_lists_school_b_only(
    notify: notify_pb2_grpc.NotifyServiceStub, mint_token: MintToken, made: Made
) -> None:
    operator = mint_token(uid("op"), "operator", tenant="ops")
    seen = listed(notify, acting_in(operator, SCHOOL_B))
    assert [a.name for a in carrying(seen, made.event[SCHOOL_B])] == [made.alert[SCHOOL_B].name]
    assert carrying(seen, made.event[SCHOOL_A]) == []
    assert made.alert[SCHOOL_A].name not in {a.name for a in seen}
    by_cohort = listed(notify, acting_in(operator, SCHOOL_B), f"cohorts/{C1}")
    assert carrying(by_cohort, made.event[SCHOOL_A]) == []
    assert len(carrying(by_cohort, made.event[SCHOOL_B])) == 1
    got = notify.GetAlert(
        notify_pb2.GetAlertRequest(name=made.alert[SCHOOL_B].name),
        metadata=acting_in(operator, SCHOOL_B),
        timeout=10,
    )
    assert got.name == made.alert[SCHOOL_B].name
    # Without naming a tenant the operator acts in its own ("ops"): no school's alice.
    home = listed(notify, bearer(operator))
    assert carrying(home, made.event[SCHOOL_A]) == carrying(home, made.event[SCHOOL_B]) == []


def test_a_school_b_teacher_of_c1_never_hears_school_as_alert(
    mesh: dict[str, int],
    events: Events,
    teachers: dict[str, str],
    mint_token: MintToken,
    enrolled: None,
    streams: list[GrpcStream | SseStream],
) -> None:
    port = mesh["notify"]
    on = {t: open_grpc(streams, port, teachers[t], f"cohorts/{C1}") for t in SCHOOLS}
    operator = mint_token(uid("op"), "operator", tenant="ops")
    on_operator_b = open_grpc(streams, port, operator, "cohorts/-", acting_in=SCHOOL_B)
    error_type = f"KeyError-{uuid.uuid4().hex[:8]}"

    a_event = send_struggle(events, SCHOOL_A, error_type)
    a_update = alert_update_of(on[SCHOOL_A], a_event)  # school-a's teacher hears it ...
    a_name = a_update.alert.name
    for stream in (on[SCHOOL_B], on_operator_b):  # ... and school-b's never do
        heard = stream.drain(GRACE)
        assert [u for u in heard if u.HasField("alert") and u.alert.name == a_name] == []
        assert [u for u in heard if u.HasField("alert") and a_event in event_ids(u.alert)] == []

    b_event = send_struggle(events, SCHOOL_B, error_type)  # the same episode key
    b_update = alert_update_of(on[SCHOOL_B], b_event)
    assert b_update.alert.name != a_name
    assert alert_update_of(on_operator_b, b_event).alert.name == b_update.alert.name
    heard = on[SCHOOL_A].drain(GRACE)
    assert [u for u in heard if u.HasField("alert") and b_event in event_ids(u.alert)] == []
    assert [u for u in heard if u.HasField("alert") and u.alert.name == b_update.alert.name] == []


def test_each_alice_streams_her_own_schools_answers_only(
    mesh: dict[str, int],
    events: Events,
    mint_token: MintToken,
    streams: list[GrpcStream | SseStream],
) -> None:
    port = mesh["notify"]
    own = {
        t: open_grpc(
            streams, port, mint_token(ALICE, "student", (C1,), tenant=t), f"students/{ALICE}"
        )
        for t in SCHOOLS
    }
    run = uuid.uuid4().hex[:8]
    for tenant, other in ((SCHOOL_A, SCHOOL_B), (SCHOOL_B, SCHOOL_A)):
        text = f"An answer for {tenant}'s alice ({run})"
        answer = events_pb2.LearningResponse(
            student=events_pb2.StudentRef(student_id=ALICE, cohort=C1, tenant=tenant),
            agent="concepts",
            text=text,
            final=True,
            occur_time=stamp(),
        )
        events.send(answer, ALICE, topic=LEARNING_RESPONSES)
        events.flush()
        deadline = time.monotonic() + WAIT
        while True:
            update = own[tenant].next_update(max(0.1, deadline - time.monotonic()))
            if update.learning_response.text == text:
                break
        assert update.learning_response.student.tenant == tenant
        heard = own[other].drain(GRACE)
        assert [u for u in heard if u.learning_response.text == text] == []


def test_events_without_a_tenant_are_dead_lettered_and_later_ones_still_apply(
    notify: notify_pb2_grpc.NotifyServiceStub,
    events: Events,
    teachers: dict[str, str],
    settings: Settings,
    enrolled: None,
) -> None:
    error_type = f"KeyError-{uuid.uuid4().hex[:8]}"
    no_tenant = {
        STRUGGLE_DETECTED: events.send(
            struggle_event(ALICE, C1, uuid.uuid4().hex, tenant="", error_type=error_type),
            ALICE,
            topic=STRUGGLE_DETECTED,
        ),
        LEARNING_RESPONSES: events.send(
            events_pb2.LearningResponse(
                student=events_pb2.StudentRef(student_id=ALICE, cohort=C1), text="whose?"
            ),
            ALICE,
            topic=LEARNING_RESPONSES,
        ),
        MASTERY_UPDATED: events.send(
            events_pb2.MasteryUpdated(
                student=events_pb2.StudentRef(student_id=ALICE, cohort=C1),
                previous_band=common_pb2.MASTERY_BAND_YELLOW,
                band=common_pb2.MASTERY_BAND_RED,
                previous_score=0.5,
                score=0.3,
                evidence_count=6,
                update_time=stamp(),  # everything an alert needs, but a tenant
            ),
            ALICE,
            topic=MASTERY_UPDATED,
        ),
    }
    later = send_struggle(events, SCHOOL_A, error_type)  # after them on the same key
    found = wait_for(
        lambda: carrying(listed(notify, bearer(teachers[SCHOOL_A])), later) or None,
        WAIT,
        "the later event's alert",
    )
    assert event_ids(found[0]) == {later}  # nothing of the tenant-less struggle in it

    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    # Which notify consumer reads which topic (mastery.updated: both).
    groups = {
        STRUGGLE_DETECTED: [settings.notify_consumer_group],
        LEARNING_RESPONSES: [settings.notify_updates_consumer_group],
        MASTERY_UPDATED: [settings.notify_consumer_group, settings.notify_updates_consumer_group],
    }
    for topic, event_id in no_tenant.items():
        for group in groups[topic]:
            letters = dead_letters(bootstrap, f"{topic}.dlq", {event_id}, group=group)
            assert set(letters) == {event_id}, (topic, group)
            headers = letters[event_id]
            assert headers["dlq_error_class"] == "PoisonEventError", (topic, group)
            assert "no tenant" in headers["dlq_error_message"], (topic, group)
            assert headers["dlq_original_topic"] == topic
