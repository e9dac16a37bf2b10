"""StreamUpdates on the running mesh: a teacher's SSE stream through Envoy shows an alert
arrive and change; a student's stream shows their own answers and nobody else's;
resuming with a cursor delivers what was missed once and in order; two notify replicas,
each a process of its own, share one update log and store each alert once; idle
streams get heartbeats. All in the development tenant (cursors count each tenant's own
log); tenants apart: test_tenants_notify.py."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from learnflow.common.v1 import common_pb2
from learnflow.debug.v1 import debug_pb2_grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc
from learnflow.review.v1 import review_pb2, review_pb2_grpc

from services.kit.auth import DEV_TENANT, TENANT_METADATA
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.notify.convert import decode_update
from services.notify.hub import Hub
from services.notify.main import MIGRATIONS
from services.notify.updates import UpdateLog
from tests.conftest import MintToken, bearer
from tests.integration.processes import start_service, stop_service
from tests.integration.test_alerts import (
    INDEX_ERROR_CODE,
    INDEX_ERROR_TRACEBACK,
    alerts_about,
    struggle_event,
    uid,
)
from tests.integration.test_debug import diagnose
from tests.integration.test_mastery import Events

pytestmark = pytest.mark.integration

Alert = notify_pb2.Alert
Update = notify_pb2.Update
WAIT = 45.0


class GrpcStream:
    """A StreamUpdates call read on a thread into a queue, until closed."""

    def __init__(
        self,
        port: int,
        token: str,
        subscriber: str,
        cursor: str = "",
        *,
        acting_in: str | None = None,
    ) -> None:
        """`acting_in`: the tenant an operator names (x-learnflow-tenant)."""
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = notify_pb2_grpc.NotifyServiceStub(self._channel)
        metadata = bearer(token)
        if acting_in is not None:
            metadata.append((TENANT_METADATA, acting_in))
        self.call = stub.StreamUpdates(
            notify_pb2.StreamUpdatesRequest(subscriber=subscriber, cursor=cursor),
            metadata=metadata,
        )
        self.received: queue.Queue[Update] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for update in self.call:
                self.received.put(update)
        except grpc.RpcError as exc:
            self.error = exc

    def next(self, timeout: float = WAIT) -> Update:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no update within {timeout}s (error: {self.error!r})")

    def next_update(self, timeout: float = WAIT) -> Update:
        """The next update that is not a heartbeat."""
        deadline = time.monotonic() + timeout
        while True:
            update = self.next(max(0.1, deadline - time.monotonic()))
            if update.WhichOneof("payload") != "heartbeat":
                return update

    def drain(self, seconds: float) -> list[Update]:
        """Every update (heartbeats left out) arriving within `seconds`."""
        found: list[Update] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                update = self.received.get(timeout=left)
            except queue.Empty:
                break
            if update.WhichOneof("payload") != "heartbeat":
                found.append(update)
        return found

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)
        self._channel.close()


class SseStream:
    """A StreamUpdates call through Envoy as server-sent events, read on a thread."""

    def __init__(self, gateway_url: str, token: str, subscriber: str) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: int | None = None
        self.content_type = ""
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=gateway_url, headers={"authorization": f"Bearer {token}"}, timeout=None
        )
        self._path = f"/v1/{subscriber}/updates:stream"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._client.stream("GET", self._path) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("data:"):
                        self.events.put(json.loads(line[len("data:") :]))
        except httpx.HTTPError:
            return

    def next_matching(
        self, accept: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if accept(event):
                return event
        pytest.fail(f"no matching event within {timeout}s")

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(5)


@pytest.fixture
def streams() -> Iterator[list[GrpcStream | SseStream]]:
    opened: list[GrpcStream | SseStream] = []
    yield opened
    for stream in opened:
        stream.close()


def open_grpc(
    opened: list[GrpcStream | SseStream],
    port: int,
    token: str,
    subscriber: str,
    cursor: str = "",
    *,
    acting_in: str | None = None,
) -> GrpcStream:
    stream = GrpcStream(port, token, subscriber, cursor, acting_in=acting_in)
    opened.append(stream)
    first = stream.next()  # the first heartbeat: subscribed, at this position
    assert first.WhichOneof("payload") == "heartbeat" and first.cursor
    return stream


def enrol(notify_port: int, token: str, student: str) -> None:
    """The roster learns a student's cohort from their own token: any call will do."""
    with grpc.insecure_channel(f"127.0.0.1:{notify_port}") as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            alerts_about(stub, token, student)


def flag(port: int, teacher: str, cohort: str, student: str, title: str) -> Alert:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        made: Alert = notify_pb2_grpc.NotifyServiceStub(channel).CreateAlert(
            notify_pb2.CreateAlertRequest(
                parent=f"cohorts/{cohort}",
                alert=Alert(
                    student=f"students/{student}", kind=Alert.KIND_INTERVENTION, title=title
                ),
            ),
            metadata=bearer(teacher),
            timeout=10,
        )
    return made


def acknowledge(port: int, teacher: str, name: str) -> Alert:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        done: Alert = notify_pb2_grpc.NotifyServiceStub(channel).AcknowledgeAlert(
            notify_pb2.AcknowledgeAlertRequest(name=name), metadata=bearer(teacher), timeout=10
        )
    return done


def test_a_teacher_watches_an_alert_arrive_and_change_over_sse(
    mesh: dict[str, int],
    mint_token: MintToken,
    gateway_url: str,
    streams: list[GrpcStream | SseStream],
) -> None:
    cohort, student = uid("c-live"), uid("stu")
    own = mint_token(student, "student", (cohort,))
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    sse = SseStream(gateway_url, teacher, f"cohorts/{cohort}")
    streams.append(sse)
    first = sse.next_matching(lambda e: "heartbeat" in e)  # live before anything happens
    assert sse.status == 200 and sse.content_type.startswith("text/event-stream")
    assert first["cursor"]

    with grpc.insecure_channel(f"127.0.0.1:{mesh['debug']}") as channel:
        debug = debug_pb2_grpc.DebugServiceStub(channel)
        for _ in range(4):  # "more than 3 times in 10 minutes"
            diagnose(debug, own, student, INDEX_ERROR_CODE, INDEX_ERROR_TRACEBACK)

    opened = sse.next_matching(lambda e: "alert" in e)["alert"]
    assert opened["student"] == f"students/{student}" and opened["state"] == "STATE_OPEN"
    assert opened["kind"] == "KIND_REPEATED_ERROR" and opened["name"].startswith(
        f"cohorts/{cohort}/"
    )

    http = httpx.Client(
        base_url=gateway_url, headers={"authorization": f"Bearer {teacher}"}, timeout=30
    )
    acked = http.post(f"/v1/{opened['name']}:acknowledge", json={"etag": opened["etag"]})
    assert acked.status_code == 200, acked.text
    seen = sse.next_matching(lambda e: e.get("alert", {}).get("state") == "STATE_ACKNOWLEDGED")
    resolved = http.post(
        f"/v1/{opened['name']}:resolve",
        json={"etag": acked.json()["etag"], "resolutionNote": "Talked it through."},
    )
    assert resolved.status_code == 200, resolved.text
    done = sse.next_matching(lambda e: e.get("alert", {}).get("state") == "STATE_RESOLVED")
    assert done["alert"]["resolutionNote"] == "Talked it through."
    assert int(first["cursor"]) < int(seen["cursor"]) < int(done["cursor"])
    assert done["alert"]["etag"] == resolved.json()["etag"]


def test_a_student_sees_their_own_answers_and_nobody_else_does(
    mesh: dict[str, int],
    mint_token: MintToken,
    gateway_url: str,
    streams: list[GrpcStream | SseStream],
) -> None:
    cohort = uid("c-own")
    alice, bob = uid("alice"), uid("bob")
    alice_token = mint_token(alice, "student", (cohort,))
    bob_token = mint_token(bob, "student", (cohort,))
    outsider = mint_token(uid("teach"), "teacher", (uid("c-else"),))
    port = mesh["notify"]
    mine = open_grpc(streams, port, alice_token, f"students/{alice}")
    theirs = open_grpc(streams, port, bob_token, f"students/{bob}")
    elsewhere = open_grpc(streams, port, outsider, "cohorts/-")

    with grpc.insecure_channel(f"127.0.0.1:{mesh['review']}") as channel:
        review = review_pb2_grpc.ReviewServiceStub(channel).CreateCodeReview(
            review_pb2.CreateCodeReviewRequest(
                parent=f"students/{alice}",
                code_review=review_pb2.CodeReview(
                    code="import os\ndef Add(a,b):\n    return a+b\n",
                    topic=common_pb2.TOPIC_FUNCTIONS,
                ),
            ),
            metadata=bearer(alice_token),
            timeout=30,
        )
    got: dict[str, Update] = {}
    deadline = time.monotonic() + WAIT
    while len(got) < 2 and time.monotonic() < deadline:  # the answer, and mastery moving
        update = mine.next_update(max(0.1, deadline - time.monotonic()))
        got.setdefault(update.WhichOneof("payload") or "", update)
    answer = got["learning_response"].learning_response
    assert answer.student.student_id == alice and answer.agent == "review"
    assert answer.resource == review.name and answer.final
    assert got["mastery_updated"].mastery_updated.student.student_id == alice
    assert int(got["learning_response"].cursor) > 0
    assert got["learning_response"].HasField("create_time")

    assert theirs.drain(3.0) == []
    assert elsewhere.drain(0.5) == []

    for token, subscriber in (
        (alice_token, f"students/{bob}"),
        (alice_token, f"cohorts/{cohort}"),
        (alice_token, "cohorts/-"),
        (outsider, f"students/{alice}"),
        (outsider, f"cohorts/{cohort}"),
    ):
        stream = GrpcStream(port, token, subscriber)
        streams.append(stream)
        stream._thread.join(10)
        assert stream.error is not None, subscriber
        assert stream.error.code() == grpc.StatusCode.PERMISSION_DENIED, subscriber
    denied = httpx.get(
        f"{gateway_url}/v1/students/{bob}/updates:stream",
        headers={"authorization": f"Bearer {alice_token}"},
        timeout=30,
    )
    assert denied.status_code == 403, denied.text
    bad = GrpcStream(port, alice_token, f"students/{alice}", cursor="not-a-cursor")
    streams.append(bad)
    bad._thread.join(10)
    assert bad.error is not None and bad.error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_resuming_with_a_cursor_delivers_what_was_missed_once_and_in_order(
    mesh: dict[str, int], mint_token: MintToken, streams: list[GrpcStream | SseStream]
) -> None:
    cohort, student = uid("c-resume"), uid("stu")
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    port = mesh["notify"]
    enrol(port, mint_token(student, "student", (cohort,)), student)
    first_stream = open_grpc(streams, port, teacher, f"cohorts/{cohort}")
    first = flag(port, teacher, cohort, student, "One")
    received = first_stream.next_update()
    assert received.alert.name == first.name
    first_stream.close()
    streams.remove(first_stream)

    # While disconnected: three changes.
    acknowledge(port, teacher, first.name)
    second = flag(port, teacher, cohort, student, "Two")
    third = flag(port, teacher, cohort, student, "Three")

    again = GrpcStream(port, teacher, f"cohorts/{cohort}", cursor=received.cursor)
    streams.append(again)
    missed = [again.next() for _ in range(4)]
    assert [u.WhichOneof("payload") for u in missed] == ["alert"] * 3 + ["heartbeat"]
    assert [(u.alert.name, u.alert.state) for u in missed[:3]] == [
        (first.name, Alert.STATE_ACKNOWLEDGED),
        (second.name, Alert.STATE_OPEN),
        (third.name, Alert.STATE_OPEN),
    ]
    cursors = [int(u.cursor) for u in missed]
    assert cursors[0] > int(received.cursor) and cursors[:3] == sorted(set(cursors[:3]))
    assert missed[3].cursor == missed[2].cursor  # the heartbeat holds the position

    # Then live, with nothing repeated.
    fourth = flag(port, teacher, cohort, student, "Four")
    live = again.next_update()
    assert live.alert.name == fourth.name and int(live.cursor) > cursors[2]
    assert again.drain(1.5) == []


@pytest.fixture(scope="module")
def replicas(
    settings: Settings, mesh: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """Two more notify replicas, each a `learnflow serve notify` process of its own, on
    the same database and broker as the mesh (so three replicas share the consumer
    groups and the log); their idle streams beat every half second."""
    started = []
    try:
        for n in range(2):
            log = tmp_path_factory.mktemp(f"replica{n}") / "notify.log"
            process, port = start_service("notify", settings, log, NOTIFY_HEARTBEAT_SECONDS="0.5")
            started.append((process, log, port))
        yield started[0][2], started[1][2]
    finally:
        for process, log, _ in started:
            stop_service(process, log)


def test_two_replicas_share_one_log_and_its_cursors(
    replicas: tuple[int, int],
    mint_token: MintToken,
    streams: list[GrpcStream | SseStream],
) -> None:
    one, two = replicas
    cohort, student = uid("c-replica"), uid("stu")
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    enrol(one, mint_token(student, "student", (cohort,)), student)
    on_two = open_grpc(streams, two, teacher, f"cohorts/{cohort}")
    on_one = open_grpc(streams, one, teacher, "cohorts/-")

    made = flag(one, teacher, cohort, student, "Made on one")  # through replica one ...
    seen_on_two = on_two.next_update()  # ... reaches a subscriber on replica two
    assert seen_on_two.alert.name == made.name
    seen_on_one = on_one.next_update()
    assert seen_on_one.cursor == seen_on_two.cursor  # one log, one cursor
    on_one.close()
    streams.remove(on_one)

    acknowledge(two, teacher, made.name)  # through replica two, while one's stream is gone
    resumed = GrpcStream(two, teacher, "cohorts/-", cursor=seen_on_one.cursor)
    streams.append(resumed)
    update = resumed.next_update()
    assert update.alert.name == made.name and update.alert.state == Alert.STATE_ACKNOWLEDGED
    assert on_two.next_update().cursor == update.cursor


def test_events_consumed_by_two_replica_processes_make_each_alert_once(
    replicas: tuple[int, int],
    settings: Settings,
    mint_token: MintToken,
    streams: list[GrpcStream | SseStream],
) -> None:
    """Struggles of twelve students (each also redelivered) while three replicas share
    the consumer group: each student gets one alert, and a stream on either process
    sees all twelve."""
    one, two = replicas
    cohort = uid("c-once")
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    watching = [open_grpc(streams, port, teacher, f"cohorts/{cohort}") for port in (one, two)]
    assert settings.kafka_bootstrap_servers
    events = Events(settings.kafka_bootstrap_servers)
    students = [uid("stu") for _ in range(12)]
    for student in students:
        event = struggle_event(student, cohort, uuid.uuid4().hex)
        event_id = events.send(event, student, topic="struggle.detected")
        events.send(event, student, event_id=event_id, topic="struggle.detected")
    events.flush()

    for stream in watching:
        opened = {stream.next_update().alert.student for _ in students}
        assert opened == {f"students/{s}" for s in students}
    time.sleep(1.0)  # a second alert for anyone would have been made by now
    with grpc.insecure_channel(f"127.0.0.1:{two}") as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        for student in students:
            assert len(alerts_about(stub, teacher, student, parent=f"cohorts/{cohort}")) == 1


def test_an_idle_stream_gets_heartbeats(
    replicas: tuple[int, int], mint_token: MintToken, streams: list[GrpcStream | SseStream]
) -> None:
    student = uid("stu")
    token = mint_token(student, "student", (uid("c-idle"),))
    stream = open_grpc(streams, replicas[0], token, f"students/{student}")
    beats = [stream.next(5.0) for _ in range(3)]
    assert all(b.WhichOneof("payload") == "heartbeat" for b in beats)
    assert all(b.heartbeat.HasField("send_time") and b.cursor for b in beats)
    sent = [b.heartbeat.send_time.ToDatetime() for b in beats]
    assert sent == sorted(set(sent))  # three separate beats, in order


def test_a_cursor_older_than_the_log_is_refused(
    mesh: dict[str, int],
    runtime: Runtime,
    mint_token: MintToken,
    streams: list[GrpcStream | SseStream],
) -> None:
    cohort, student = uid("c-expired"), uid("stu")
    teacher = mint_token(uid("teach"), "teacher", (cohort,))
    port = mesh["notify"]
    enrol(port, mint_token(student, "student", (cohort,)), student)
    stream = open_grpc(streams, port, teacher, f"cohorts/{cohort}")
    flag(port, teacher, cohort, student, "Soon purged")
    kept = stream.next_update()
    time.sleep(1.5)
    log = UpdateLog(
        runtime.database("notify", MIGRATIONS), Hub(), decode_update, retention=timedelta(seconds=1)
    )
    assert log.purge() >= 1  # what the listeners do with rows older than the window

    for cursor, code in (
        (str(int(kept.cursor) - 1), grpc.StatusCode.FAILED_PRECONDITION),
        (str(log.head(DEV_TENANT) + 1000), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        late = GrpcStream(port, teacher, f"cohorts/{cohort}", cursor=cursor)
        streams.append(late)
        late._thread.join(10)
        assert late.error is not None and late.error.code() == code, cursor
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            assert "no longer kept" in (late.error.details() or "")
    resumed = open_grpc(streams, port, teacher, f"cohorts/{cohort}", cursor=kept.cursor)
    assert resumed.drain(0.5) == []  # the newest purged cursor is still a position
