"""The kit server under hostile callers, through real gRPC calls: streams cannot starve
unary calls (docs/adr/0002), one user cannot hold every stream, unknown methods cost
nothing to remember, and undecodable bytes or NUL characters are the caller's error."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.concepts.main import build as build_concepts
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.interceptors import ServerInterceptor
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer, ServiceParts
from tests.conftest import MintToken, free_port, wait_for
from tests.support.rich_errors import refusal, rich_error

CONCEPTS = SERVICES_BY_NAME["concepts"]
TRIAGE = SERVICES_BY_NAME["triage"]


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def concepts_server(settings: Settings, mint_token: MintToken) -> Iterator[LearnFlowServer]:
    # The default worker count is the one the probe froze: 32 pool threads for unary calls.
    server = LearnFlowServer(CONCEPTS, build_concepts(Runtime(settings)), settings, port=0)
    server.start()
    yield server
    server.stop(grace=0.5)


@pytest.fixture(scope="module")
def channel(concepts_server: LearnFlowServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{concepts_server.port}") as ch:
        yield ch


def test_health_watch_streams_cannot_freeze_unary_calls(
    concepts_server: LearnFlowServer, mint_token: MintToken
) -> None:
    # 40 Watch streams on their own connections (as 40 grpcurl processes would be): before
    # the stream lane, 32 of them took every pool thread and every RPC timed out.
    channels = [grpc.insecure_channel(f"127.0.0.1:{concepts_server.port}") for _ in range(40)]
    watches = [
        health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        for ch in channels
    ]
    try:
        refused: list[grpc.RpcError] = []
        open_streams = 0
        for watch in watches:
            try:
                first = next(watch)
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                open_streams += 1
            except grpc.RpcError as exc:
                refused.append(exc)
        limit = concepts_server.settings.grpc_anonymous_streams
        assert open_streams == limit
        assert len(refused) == 40 - limit
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert dict(refused[0].trailing_metadata() or ())["retry-after"] == "5"
        # Unary calls still answer while the streams stay open.
        with grpc.insecure_channel(f"127.0.0.1:{concepts_server.port}") as ch:
            stub = concepts_pb2_grpc.ConceptsServiceStub(ch)
            for _ in range(50):
                reply = stub.ListTopics(
                    concepts_pb2.ListTopicsRequest(), metadata=auth(mint_token("alice")), timeout=5
                )
                assert reply.topics
    finally:
        for watch in watches:
            watch.cancel()
        for ch in channels:
            ch.close()


class _HeldStreams(triage_pb2_grpc.TriageServiceServicer):
    """Ask streams that stay open until the test lets them go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.open = 0
        self._lock = threading.Lock()

    def Ask(
        self, request: triage_pb2.AskRequest, context: grpc.ServicerContext
    ) -> Iterator[triage_pb2.AskResponse]:
        with self._lock:
            self.open += 1
        try:
            yield triage_pb2.AskResponse(chunk=triage_pb2.AnswerChunk(text="held"))
            # As a real stream does, it wakes up to notice a caller that went away.
            while context.is_active() and not self.release.wait(0.1):
                pass
        finally:
            with self._lock:
                self.open -= 1


@pytest.fixture
def held_triage(settings: Settings) -> Iterator[tuple[LearnFlowServer, _HeldStreams]]:
    servicer = _HeldStreams()  # type: ignore[abstract]  # the other RPCs: UNIMPLEMENTED
    parts = ServiceParts(
        register=lambda server: triage_pb2_grpc.add_TriageServiceServicer_to_server(
            servicer, server
        )
    )
    small = settings.model_copy(update={"grpc_max_streams": 6, "grpc_streams_per_user": 2})
    server = LearnFlowServer(TRIAGE, parts, small, port=0)
    server.start()
    yield server, servicer
    servicer.release.set()
    server.stop(grace=0.5)


def _ask(channel: grpc.Channel, token: str) -> Iterator[triage_pb2.AskResponse]:
    stream: Iterator[triage_pb2.AskResponse] = triage_pb2_grpc.TriageServiceStub(channel).Ask(
        triage_pb2.AskRequest(student="students/x", question="q"),
        metadata=auth(token),
        timeout=30,
    )
    return stream


def test_one_user_holds_at_most_their_share_of_streams(
    held_triage: tuple[LearnFlowServer, _HeldStreams], mint_token: MintToken
) -> None:
    server, servicer = held_triage
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        alice = mint_token("alice")
        first, second = _ask(ch, alice), _ask(ch, alice)
        assert next(first).chunk.text == "held" and next(second).chunk.text == "held"
        with pytest.raises(grpc.RpcError) as caught:
            next(_ask(ch, alice))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusal(caught.value) == ("RATE_LIMITED", 5.0, "5")

        # Other users still get theirs, up to the server's lane (6); then the server is full.
        others = [_ask(ch, mint_token(f"s{i}")) for i in range(4)]
        for stream in others:
            assert next(stream).chunk.text == "held"
        with pytest.raises(grpc.RpcError) as full:
            next(_ask(ch, mint_token("late")))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rich_error(full.value)[0] == "RESOURCE_EXHAUSTED"

        # A stream that ends gives its slot back.
        first.cancel()  # type: ignore[attr-defined]
        wait_for(lambda: True if servicer.open == 5 else None, 10, "the cancelled stream to end")
        assert next(_ask(ch, alice)).chunk.text == "held"
        servicer.release.set()


def test_unknown_methods_are_not_remembered(
    concepts_server: LearnFlowServer, channel: grpc.Channel
) -> None:
    interceptor = next(
        i
        for i in concepts_server.server._state.interceptor_pipeline.interceptors
        if isinstance(i, ServerInterceptor)
    )
    before = len(interceptor._handlers)
    for i in range(500):
        call = channel.unary_unary(f"/learnflow.concepts.v1.ConceptsService/Made{i}Up")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert len(interceptor._handlers) == before


def test_undecodable_bytes_are_invalid_argument(
    channel: grpc.Channel, mint_token: MintToken
) -> None:
    call = channel.unary_unary("/learnflow.concepts.v1.ConceptsService/GetTopic")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\xff\xff\xff\xff", metadata=auth(mint_token("alice")), timeout=2)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(caught.value) == ("INVALID_FIELDS", ["request"])
    assert "GetTopicRequest" in (caught.value.details() or "")


def test_nul_characters_are_named_fields(channel: grpc.Channel, mint_token: MintToken) -> None:
    stub = concepts_pb2_grpc.ConceptsServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ExplainConcept(
            concepts_pb2.ExplainConceptRequest(student="students/al\x00ice", question="a\x00b"),
            metadata=auth(mint_token("alice")),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(caught.value) == ("INVALID_FIELDS", ["question", "student"])


def test_a_port_held_for_a_moment_is_bound_once_free(settings: Settings) -> None:
    # The service ports lie in Linux's ephemeral range: an outgoing connection can hold
    # one while the mesh starts. The server waits for it instead of failing `make run`.
    port = free_port()
    holder = socket.socket()
    holder.bind(("0.0.0.0", port))
    holder.listen()
    threading.Timer(1.0, holder.close).start()
    parts = ServiceParts(register=lambda server: None)
    server = LearnFlowServer(
        CONCEPTS, parts, settings.model_copy(update={"grpc_host": "0.0.0.0"}), port=port
    )
    try:
        assert server.start() == port
    finally:
        server.stop(grace=0.1)
