"""Keys from the identity provider through a real Envoy: JWKS_URL set, Envoy renders
`remote_jwks` (services/gateway/envoy_config.py) and the service behind it verifies with
a TokenVerifier on the same URL (services/kit/auth.py). A key the IdP rotates in is
accepted through the gateway without restarting either; one it withdraws is refused.

No mesh: every Envoy cluster points at a probe concepts server that runs the kit's real
interceptor and answers GetTopic with who called. The IdP is a JWKS server on loopback
(tests/support/jwks_server.py) that counts the fetches it gets.

Envoy fetches on its schedule only (`cache_duration`, here CACHE_SECONDS): it has no
refetch for an unknown `kid` (tests/test_gateway_config.py), so a rotated-in key is
accepted within CACHE_SECONDS, and tokens naming unknown keys cost the IdP nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc

from services.gateway.runner import Gateway
from services.kit import devtokens
from services.kit.auth import TokenVerifier, UrlKeySource
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.interceptors import CallSteps, ServerInterceptor, current_principal
from tests.conftest import free_port, wait_for
from tests.support.jwks_server import JwksServer, jwks_server

pytestmark = pytest.mark.integration

CACHE_SECONDS = 2.0
"""Envoy's `cache_duration` and the service's cache: a rotation shows within this."""
ROTATION_WAIT = 3 * CACHE_SECONDS + 10
"""Longest a rotated key may take to be accepted (with room for Envoy's 5 s refetch
after a failed fetch)."""


class WhoAmI(concepts_pb2_grpc.ConceptsServiceServicer):
    """GetTopic answers with the subject of the caller's verified token."""

    def GetTopic(
        self, request: concepts_pb2.GetTopicRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.TopicInfo:
        return concepts_pb2.TopicInfo(name=request.name, description=current_principal().subject)

    def ListTopics(
        self, request: concepts_pb2.ListTopicsRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.ListTopicsResponse:
        raise NotImplementedError  # not needed here

    def ExplainConcept(
        self, request: concepts_pb2.ExplainConceptRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.Explanation:
        raise NotImplementedError  # not needed here


@dataclass
class Stack:
    idp: JwksServer
    settings: Settings
    verifier: TokenVerifier
    gateway: Gateway
    channel: grpc.Channel

    def token(self, key: ec.EllipticCurvePrivateKey, sub: str = "", kid: str | None = None) -> str:
        claims = devtokens.build_claims(
            sub or f"s-{uuid.uuid4().hex[:8]}", "student", ("c1",), settings=self.settings
        )
        return devtokens.encode_claims(claims, signing_key=key, kid=kid)

    def call(self, token: str) -> tuple[grpc.StatusCode, str]:
        """(status, the subject the service saw) of GetTopic through the gateway."""
        stub = concepts_pb2_grpc.ConceptsServiceStub(self.channel)
        try:
            reply = stub.GetTopic(
                concepts_pb2.GetTopicRequest(name="topics/loops"),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, reply.description

    def eventually(self, token: str, code: grpc.StatusCode, what: str) -> float:
        """Seconds until a call with `token` ends with `code` (no restart in between)."""
        started = time.monotonic()
        wait_for(
            lambda: True if self.call(token)[0] == code else None,
            timeout=ROTATION_WAIT,
            what=what,
        )
        return time.monotonic() - started


@pytest.fixture
def key_a() -> ec.EllipticCurvePrivateKey:
    return devtokens.generate_foreign_key()


@pytest.fixture
def key_b() -> ec.EllipticCurvePrivateKey:
    return devtokens.generate_foreign_key()


@pytest.fixture
def stack(
    settings: Settings,
    key_a: ec.EllipticCurvePrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with jwks_server() as idp:
        idp.serve(key_a)
        conf = settings.model_copy(
            update={
                "jwks_url": idp.url,
                "jwks_cache_seconds": CACHE_SECONDS,
                "jwks_refresh_min_seconds": 1.0,
            }
        )
        verifier = TokenVerifier.from_settings(conf)
        assert isinstance(verifier.source, UrlKeySource)
        probe = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            interceptors=[ServerInterceptor(CallSteps(verifier))],
            options=[("grpc.so_reuseport", 0)],
        )
        concepts_pb2_grpc.add_ConceptsServiceServicer_to_server(WhoAmI(), probe)
        probe_port = probe.add_insecure_port("127.0.0.1:0")
        probe.start()
        gateway = Gateway(
            conf,
            listen_port=free_port(),
            admin_port=free_port(),
            ports={spec.name: probe_port for spec in SERVICES},
            run_dir=tmp_path_factory.mktemp("jwks-gateway"),
        )
        gateway.start()
        assert "remote_jwks" in gateway.config_path.read_text()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{gateway.listen_port}") as channel:
                yield Stack(idp, conf, verifier, gateway, channel)
        finally:
            gateway.stop()
            probe.stop(grace=None)


def test_a_token_of_the_idps_key_passes_envoy_and_the_service(
    stack: Stack, key_a: ec.EllipticCurvePrivateKey
) -> None:
    token = stack.token(key_a, sub="ada")
    stack.eventually(token, grpc.StatusCode.OK, "the first JWKS fetch")
    assert stack.call(token) == (grpc.StatusCode.OK, "ada")
    assert stack.idp.count() >= 2  # Envoy and the service each fetched


def test_a_rotated_in_key_is_accepted_without_a_restart(
    stack: Stack, key_a: ec.EllipticCurvePrivateKey, key_b: ec.EllipticCurvePrivateKey
) -> None:
    stack.eventually(stack.token(key_a), grpc.StatusCode.OK, "the first JWKS fetch")
    rotated = stack.token(key_b, sub="bea")
    code, _ = stack.call(rotated)
    assert code == grpc.StatusCode.UNAUTHENTICATED  # Envoy does not know key B yet
    stack.idp.serve(key_a, key_b)  # the IdP rotates key B in
    waited = stack.eventually(rotated, grpc.StatusCode.OK, "key B through the gateway")
    assert waited < ROTATION_WAIT
    assert stack.call(rotated) == (grpc.StatusCode.OK, "bea")  # the service accepted it too
    # Key A's tokens still pass while the IdP publishes it.
    assert stack.call(stack.token(key_a))[0] == grpc.StatusCode.OK


def test_a_withdrawn_key_is_refused_without_a_restart(
    stack: Stack, key_a: ec.EllipticCurvePrivateKey, key_b: ec.EllipticCurvePrivateKey
) -> None:
    old = stack.token(key_a)
    stack.idp.serve(key_a, key_b)
    stack.eventually(old, grpc.StatusCode.OK, "the first JWKS fetch")
    stack.eventually(stack.token(key_b), grpc.StatusCode.OK, "key B")
    stack.idp.serve(key_b)  # key A withdrawn
    stack.eventually(old, grpc.StatusCode.UNAUTHENTICATED, "key A refused")
    assert stack.call(stack.token(key_b))[0] == grpc.StatusCode.OK


def test_unknown_kids_do_not_make_envoy_fetch(
    stack: Stack, key_a: ec.EllipticCurvePrivateKey
) -> None:
    stack.eventually(stack.token(key_a), grpc.StatusCode.OK, "the first JWKS fetch")
    before = stack.idp.count()
    started = time.monotonic()
    for _ in range(200):
        forged = stack.token(devtokens.generate_foreign_key())
        assert stack.call(forged)[0] == grpc.StatusCode.UNAUTHENTICATED
    elapsed = time.monotonic() - started
    # Only the scheduled fetches (Envoy's and the service's, every CACHE_SECONDS) happen:
    # Envoy refuses the tokens before the service sees them, and fetches for none.
    scheduled = 2 * (elapsed / CACHE_SECONDS + 1)
    assert stack.idp.count() - before <= scheduled + 2, (stack.idp.count() - before, elapsed)


def test_envoy_keeps_its_keys_while_the_idp_is_down(
    stack: Stack, key_a: ec.EllipticCurvePrivateKey
) -> None:
    token = stack.token(key_a)
    stack.eventually(token, grpc.StatusCode.OK, "the first JWKS fetch")
    stack.idp.fail(503)
    time.sleep(3 * CACHE_SECONDS)  # several failed refetches, here and at the service
    for _ in range(20):
        assert stack.call(stack.token(key_a))[0] == grpc.StatusCode.OK
