"""Calls from inside a handler carry the caller's token, request id and deadline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc

from services.concepts.main import build as build_concepts
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.clients import _ClientCallDetails, propagated_details, service_channel
from services.kit.config import Settings
from services.kit.errors import DeadlineExceeded
from services.kit.interceptors import CallContext, _current
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from tests.conftest import MintToken


class _Inbound:
    """The inbound call's remaining time, as grpc's ServicerContext reports it."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.fixture(scope="module")
def downstream(settings: Settings, mint_token: MintToken) -> Iterator[str]:
    server = LearnFlowServer(
        SERVICES_BY_NAME["concepts"], build_concepts(Runtime(settings)), settings, port=0
    )
    yield f"127.0.0.1:{server.start()}"
    server.stop(grace=0.5)


def _inside_call(token: str, remaining: float | None, request_id: str = "req-in") -> Any:
    context = CallContext(
        method="/caller/Method",
        request_id=request_id,
        principal=None,
        grpc_context=cast(grpc.ServicerContext, _Inbound(remaining)),
        authorization=f"Bearer {token}",
    )
    return _current.set(context)


def test_token_and_request_id_are_forwarded(
    downstream: str, mint_token: MintToken, caplog: pytest.LogCaptureFixture
) -> None:
    reset = _inside_call(mint_token("alice"), remaining=5.0, request_id="req-forwarded")
    try:
        with caplog.at_level(logging.INFO, logger="learnflow.rpc"):
            stub = concepts_pb2_grpc.ConceptsServiceStub(service_channel(downstream))
            reply = stub.ListTopics(concepts_pb2.ListTopicsRequest(page_size=1))
    finally:
        _current.reset(reset)
    assert len(reply.topics) == 1  # authenticated with the caller's token
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "req-forwarded"]
    assert logged and logged[0].principal == "alice"  # type: ignore[attr-defined]


def test_outgoing_timeout_is_capped_by_the_incoming_deadline(mint_token: MintToken) -> None:
    details = _ClientCallDetails("/x.Y/Z", 30.0, [], None, None, None)
    reset = _inside_call(mint_token("alice"), remaining=0.25)
    try:
        capped = propagated_details(details)
        unbounded = propagated_details(details._replace(timeout=None))
    finally:
        _current.reset(reset)
    assert capped.timeout == pytest.approx(0.25)
    assert unbounded.timeout == pytest.approx(0.25)


def test_no_call_is_made_once_the_incoming_deadline_has_passed(
    downstream: str, mint_token: MintToken
) -> None:
    reset = _inside_call(mint_token("alice"), remaining=0.0)
    try:
        stub = concepts_pb2_grpc.ConceptsServiceStub(service_channel(downstream))
        with pytest.raises(DeadlineExceeded, match="passed before calling"):
            stub.ListTopics(concepts_pb2.ListTopicsRequest(), timeout=30)
    finally:
        _current.reset(reset)


def test_outside_a_call_nothing_is_forwarded(downstream: str) -> None:
    stub = concepts_pb2_grpc.ConceptsServiceStub(service_channel(downstream))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListTopics(concepts_pb2.ListTopicsRequest())
    # No caller token to forward: the downstream service refuses, it does not hang.
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_unreachable_dependency_is_unavailable_not_internal(
    settings: Settings, mint_token: MintToken
) -> None:
    """A handler whose downstream call fails answers UNAVAILABLE (retry later), with the
    DEPENDENCY_UNAVAILABLE reason, rather than a generic INTERNAL error."""
    from learnflow.concepts.v1 import concepts_pb2_grpc as stubs

    from services.kit.server import ServiceParts
    from tests.conftest import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens here

    class Forwarding(stubs.ConceptsServiceServicer):
        def ListTopics(self, request: Any, context: Any) -> Any:
            return stubs.ConceptsServiceStub(service_channel(dead)).ListTopics(request, timeout=1)

    parts = ServiceParts(
        register=lambda server: stubs.add_ConceptsServiceServicer_to_server(
            Forwarding(),  # type: ignore[abstract]  # only ListTopics is used
            server,
        )
    )
    server = LearnFlowServer(SERVICES_BY_NAME["concepts"], parts, settings, port=0)
    port = server.start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            stubs.ConceptsServiceStub(channel).ListTopics(
                concepts_pb2.ListTopicsRequest(),
                metadata=[("authorization", f"Bearer {mint_token('alice')}")],
                timeout=10,
            )
    finally:
        server.stop(grace=0.5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "a dependency is unavailable" in (caught.value.details() or "")
