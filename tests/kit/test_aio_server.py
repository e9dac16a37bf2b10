"""The kit's asyncio server model (docs/adr/0003) through real gRPC calls: the same call
steps as the thread-pool server (tokens, rich errors, the stream lane and per-user
limits, anonymous health Watch in its own small lane), unary handlers as plain
functions on worker threads, and a cancelled stream giving its place back at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.notify.v1 import notify_pb2, notify_pb2_grpc

from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.errors import FieldViolation, InvalidArgument
from services.kit.interceptors import current_principal
from services.kit.server import LearnFlowServer, ServiceParts
from tests.conftest import MintToken, wait_for
from tests.support.rich_errors import refusal, rich_error

NOTIFY = SERVICES_BY_NAME["notify"]


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


class _Servicer(notify_pb2_grpc.NotifyServiceServicer):
    """A plain-function unary method and a held async stream."""

    def __init__(self) -> None:
        self.open = 0

    def GetAlert(
        self, request: notify_pb2.GetAlertRequest, context: grpc.aio.ServicerContext
    ) -> notify_pb2.Alert:
        if not request.name:
            raise InvalidArgument([FieldViolation("name", "is required")])
        return notify_pb2.Alert(name=request.name, title=current_principal().subject)

    async def StreamUpdates(
        self, request: notify_pb2.StreamUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notify_pb2.Update]:
        self.open += 1
        try:
            yield notify_pb2.Update(cursor="1")
            await asyncio.sleep(3600)
        finally:
            self.open -= 1


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[LearnFlowServer, _Servicer]]:
    servicer = _Servicer()  # type: ignore[abstract]  # the other RPCs: UNIMPLEMENTED
    parts = ServiceParts(
        register=lambda server: notify_pb2_grpc.add_NotifyServiceServicer_to_server(
            servicer, server
        ),
        asynchronous=True,
        max_streams=4,
    )
    small = settings.model_copy(update={"grpc_streams_per_user": 2, "grpc_anonymous_streams": 2})
    server = LearnFlowServer(NOTIFY, parts, small, port=0)
    server.start()
    yield server, servicer
    server.stop(grace=0.5)


def _stream(channel: grpc.Channel, token: str) -> Iterator[notify_pb2.Update]:
    stream: Iterator[notify_pb2.Update] = notify_pb2_grpc.NotifyServiceStub(channel).StreamUpdates(
        notify_pb2.StreamUpdatesRequest(subscriber="students/x"), metadata=auth(token), timeout=30
    )
    return stream


def test_unary_calls_run_with_the_callers_identity_and_rich_errors(
    served: tuple[LearnFlowServer, _Servicer], mint_token: MintToken
) -> None:
    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = notify_pb2_grpc.NotifyServiceStub(ch)
        alert = stub.GetAlert(
            notify_pb2.GetAlertRequest(name="cohorts/c/alerts/a"),
            metadata=auth(mint_token("tom", "teacher")),
            timeout=10,
        )
        assert alert.title == "tom"  # the principal reached the worker thread
        with pytest.raises(grpc.RpcError) as bad:
            stub.GetAlert(
                notify_pb2.GetAlertRequest(), metadata=auth(mint_token("tom")), timeout=10
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rich_error(bad.value)[1] == ["name"]
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.GetAlert(notify_pb2.GetAlertRequest(name="cohorts/c/alerts/a"), timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as missing:
            stub.ListAlerts(
                notify_pb2.ListAlertsRequest(parent="cohorts/c"),
                metadata=auth(mint_token("tom")),
                timeout=10,
            )
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_streams_keep_to_the_lane_and_a_cancelled_one_gives_its_place_back(
    served: tuple[LearnFlowServer, _Servicer], mint_token: MintToken
) -> None:
    server, servicer = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        alice = mint_token("alice")
        first, second = _stream(ch, alice), _stream(ch, alice)
        assert next(first).cursor == "1" and next(second).cursor == "1"
        with pytest.raises(grpc.RpcError) as third:
            next(_stream(ch, alice))
        assert third.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusal(third.value) == ("RATE_LIMITED", 5.0, "5")

        others = [_stream(ch, mint_token(f"s{i}")) for i in range(2)]
        assert all(next(s).cursor == "1" for s in others)  # the lane (4) is now full
        with pytest.raises(grpc.RpcError) as full:
            next(_stream(ch, mint_token("late")))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rich_error(full.value)[0] == "RESOURCE_EXHAUSTED"

        first.cancel()  # type: ignore[attr-defined]
        wait_for(lambda: True if servicer.open == 3 else None, 10, "the cancelled stream to end")
        assert next(_stream(ch, alice)).cursor == "1"


def test_anonymous_health_watch_has_its_own_small_lane(
    served: tuple[LearnFlowServer, _Servicer],
) -> None:
    server, _ = served
    channels = [grpc.insecure_channel(f"127.0.0.1:{server.port}") for _ in range(4)]
    try:
        watches = [
            health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            for ch in channels
        ]
        held, refused = 0, 0
        for watch in watches:
            try:
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                held += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                refused += 1
        assert (held, refused) == (2, 2)
    finally:
        for ch in channels:
            ch.close()
