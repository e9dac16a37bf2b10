"""The kit's server, through real gRPC calls: health, reflection, authentication, rich
errors, logging, pagination, dependency-driven health and graceful shutdown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc

from services.concepts.main import build as build_concepts
from services.kit import devtokens
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer, ServiceParts, not_implemented_parts
from tests.conftest import MintToken, free_port

CONCEPTS = SERVICES_BY_NAME["concepts"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def concepts_port(settings: Settings, mint_token: MintToken) -> Iterator[int]:
    server = LearnFlowServer(CONCEPTS, build_concepts(Runtime(settings)), settings, port=0)
    port = server.start()
    yield port
    server.stop(grace=0.5)


@pytest.fixture(scope="module")
def channel(concepts_port: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{concepts_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> concepts_pb2_grpc.ConceptsServiceStub:
    return concepts_pb2_grpc.ConceptsServiceStub(channel)


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def error_details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None, "error carries no google.rpc.Status"
    info, fields = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return info, fields


def test_health_serving_without_token(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "learnflow.concepts.v1.ConceptsService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services_without_token(channel: grpc.Channel) -> None:
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"learnflow.concepts.v1.ConceptsService", "grpc.health.v1.Health"} <= services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


def test_missing_token_is_unauthenticated(stub: concepts_pb2_grpc.ConceptsServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListTopics(concepts_pb2.ListTopicsRequest(), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = error_details(caught.value)
    assert (info.reason, info.domain) == ("TOKEN_MISSING", "learnflow.dev")


@pytest.mark.parametrize(
    "kind",
    ["expired", "foreign_key", "wrong_audience", "wrong_issuer", "no_exp", "alg_none", "bad_role"],
)
def test_bad_tokens_are_rejected(
    kind: str, stub: concepts_pb2_grpc.ConceptsServiceStub, dev_key_dir: Path, settings: Settings
) -> None:
    if kind == "bad_role":
        claims = devtokens.build_claims("alice", "student", settings=settings)
        claims["role"] = "superuser"
        token = devtokens.encode_claims(claims, key_dir=dev_key_dir)
    else:
        token = devtokens.bad_token(kind, "alice", key_dir=dev_key_dir, settings=settings)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListTopics(concepts_pb2.ListTopicsRequest(), metadata=auth(token), timeout=2)
    if kind == "wrong_audience":  # a genuine token for another app: 403, as at Envoy
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(caught.value)[0].reason == "ACCESS_DENIED"
        return
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = error_details(caught.value)
    assert info.reason == "TOKEN_INVALID"


def test_list_topics_pages_through_the_curriculum(
    stub: concepts_pb2_grpc.ConceptsServiceStub, mint_token: MintToken
) -> None:
    metadata = auth(mint_token("alice"))
    names, token = [], ""
    while True:
        page = stub.ListTopics(
            concepts_pb2.ListTopicsRequest(page_size=5, page_token=token),
            metadata=metadata,
            timeout=2,
        )
        assert len(page.topics) <= 5
        names += [t.name for t in page.topics]
        token = page.next_page_token
        if not token:
            break
    assert names[0] == "topics/variables-and-types"
    assert len(names) == len(set(names)) == 13
    functions = stub.GetTopic(
        concepts_pb2.GetTopicRequest(name="topics/functions"), metadata=metadata, timeout=2
    )
    assert functions.display_name == "Functions"
    assert list(functions.prerequisites) == [2]  # control flow


def test_invalid_fields_are_named(
    stub: concepts_pb2_grpc.ConceptsServiceStub, mint_token: MintToken
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListTopics(
            concepts_pb2.ListTopicsRequest(page_size=-1, page_token="not-a-token"),
            metadata=auth(mint_token("alice")),
            timeout=2,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = error_details(caught.value)
    assert info.reason == "INVALID_FIELDS"
    assert sorted(fields) == ["page_size", "page_token"]


def test_missing_topic_is_not_found(
    stub: concepts_pb2_grpc.ConceptsServiceStub, mint_token: MintToken
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTopic(
            concepts_pb2.GetTopicRequest(name="topics/quantum-python"),
            metadata=auth(mint_token("alice")),
            timeout=2,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = error_details(caught.value)
    assert info.reason == "RESOURCE_NOT_FOUND"
    assert info.metadata["name"] == "topics/quantum-python"


def test_unimplemented_rpc_names_itself(settings: Settings, mint_token: MintToken) -> None:
    # A contract served before its service is written answers UNIMPLEMENTED by name.
    parts = not_implemented_parts(
        (
            concepts_pb2_grpc.add_ConceptsServiceServicer_to_server,
            concepts_pb2_grpc.ConceptsServiceServicer,
        ),
    )
    server = LearnFlowServer(CONCEPTS, parts, settings, port=0)
    port = server.start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as placeholder,
            pytest.raises(grpc.RpcError) as caught,
        ):
            concepts_pb2_grpc.ConceptsServiceStub(placeholder).ExplainConcept(
                concepts_pb2.ExplainConceptRequest(student="students/alice"),
                metadata=auth(mint_token("alice")),
                timeout=2,
            )
    finally:
        server.stop(grace=0.5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ConceptsService/ExplainConcept is not implemented yet" in (caught.value.details() or "")
    info, _ = error_details(caught.value)
    assert info.reason == "NOT_IMPLEMENTED"


def test_every_call_is_logged_with_request_id(
    stub: concepts_pb2_grpc.ConceptsServiceStub,
    mint_token: MintToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="learnflow.rpc"):
        stub.ListTopics(
            concepts_pb2.ListTopicsRequest(),
            metadata=[*auth(mint_token("alice")), ("x-request-id", "req-123")],
            timeout=2,
        )
        with pytest.raises(grpc.RpcError):
            stub.GetTopic(
                concepts_pb2.GetTopicRequest(name="bad"), metadata=auth(mint_token("alice"))
            )
    records = [r for r in caplog.records if r.name == "learnflow.rpc"]
    ok = next(r for r in records if getattr(r, "request_id", "") == "req-123")
    assert ok.method == "/learnflow.concepts.v1.ConceptsService/ListTopics"  # type: ignore[attr-defined]
    assert ok.code == "OK" and ok.latency_ms >= 0  # type: ignore[attr-defined]
    assert ok.principal == "alice"  # type: ignore[attr-defined]
    failed = next(r for r in records if r.method.endswith("/GetTopic"))  # type: ignore[attr-defined]
    assert failed.code == "INVALID_ARGUMENT"  # type: ignore[attr-defined]


def test_health_follows_dependencies(settings: Settings, mint_token: MintToken) -> None:
    database_up = threading.Event()
    database_up.set()

    def check_database() -> None:
        if not database_up.is_set():
            raise ConnectionError("database unreachable")

    base = build_concepts(Runtime(settings))
    parts = ServiceParts(register=base.register, checks={"postgres": check_database})
    server = LearnFlowServer(CONCEPTS, parts, settings, port=0)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)

            def status() -> int:
                request = health_pb2.HealthCheckRequest(
                    service="learnflow.concepts.v1.ConceptsService"
                )
                reply: health_pb2.HealthCheckResponse = health.Check(request, timeout=2)
                return int(reply.status)

            assert status() == health_pb2.HealthCheckResponse.SERVING
            database_up.clear()
            assert server.refresh_health() is False
            assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
            database_up.set()
            assert server.refresh_health() is True
            assert status() == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace=0.5)


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "concepts"],
        cwd=REPO,
        env={**os.environ, "LOG_LEVEL": "INFO", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_drains_gracefully(settings: Settings, mint_token: MintToken) -> None:
    port = free_port()
    process = _serve({"GRPC_PORT": str(port), "JWKS_PATH": str(settings.jwks_path)})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            grpc.channel_ready_future(ch).result(timeout=20)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            # Load balancers are told first: the Watch stream sees NOT_SERVING.
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read() if process.stderr else ""
    assert '"message": "shutdown requested"' in stderr
    assert '"message": "stopped"' in stderr


def test_bad_configuration_names_the_variable() -> None:
    process = _serve({"GRPC_MAX_WORKERS": "lots", "DATABASE_URL": "mysql://x"})
    assert process.wait(timeout=20) == 2
    stderr = process.stderr.read() if process.stderr else ""
    assert "GRPC_MAX_WORKERS" in stderr
    assert "DATABASE_URL: Value error, must be a postgresql:// URL" in stderr
