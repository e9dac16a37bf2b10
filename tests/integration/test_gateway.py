"""The gateway through a real Envoy (rendered by services.gateway.envoy_config) in front of
the running mesh: JSON, gRPC and gRPC-Web callers, JWT rules, errors, CORS.

Fixtures from tests/integration/conftest.py: `gateway_url`, `mint_token`, `dev_key_dir`.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import socket
import struct
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.notify.v1 import notify_pb2

from services.kit import devtokens

pytestmark = pytest.mark.integration

MintToken = Callable[..., str]
ALLOWED_ORIGIN = "http://localhost:5173"
GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin")


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def student_token(mint_token: MintToken) -> str:
    return mint_token("s1", "student", ("c1",))


@pytest.fixture(scope="module")
def auth(student_token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {student_token}"}


@pytest.fixture(scope="module")
def channel(gateway_url: str) -> Iterator[grpc.Channel]:
    port = httpx.URL(gateway_url).port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan


def bad(kind: devtokens.BadTokenKind, key_dir: Path) -> dict[str, str]:
    return {"authorization": f"Bearer {devtokens.bad_token(kind, key_dir=key_dir)}"}


def assert_json_status(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """An HTTP error shaped like google.rpc.Status, and no gRPC headers on it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    for name in GRPC_HEADERS:
        assert name not in response.headers, (name, response.headers)
    return body


def detail(body: dict[str, Any], type_name: str) -> dict[str, Any]:
    for item in body["details"]:
        if item["@type"] == f"type.googleapis.com/{type_name}":
            return item  # type: ignore[no-any-return]
    raise AssertionError(f"no {type_name} in {body['details']}")


# --- JSON callers --------------------------------------------------------------------------


def test_list_topics_with_a_token_is_json(client: httpx.Client, auth: dict[str, str]) -> None:
    response = client.get("/v1/topics", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["topics"], list) and body["topics"]
    assert "nextPageToken" in body  # primitive fields are always printed
    for name in GRPC_HEADERS:
        assert name not in response.headers


def test_get_topic(client: httpx.Client, auth: dict[str, str]) -> None:
    response = client.get("/v1/topics/functions", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "topics/functions"
    assert "grpc-status" not in response.headers


@pytest.mark.parametrize("role", ["student", "teacher", "admin"])
def test_every_role_may_list_topics(client: httpx.Client, mint_token: MintToken, role: str) -> None:
    token = mint_token("u1", role, ("c1",))
    response = client.get("/v1/topics", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_missing_topic_is_404_with_error_info(client: httpx.Client, auth: dict[str, str]) -> None:
    body = assert_json_status(client.get("/v1/topics/nosuch", headers=auth), 404, 5)
    info = detail(body, "google.rpc.ErrorInfo")
    assert info["reason"] == "RESOURCE_NOT_FOUND"
    assert info["domain"] == "learnflow.dev"


def test_bad_page_size_is_400_with_bad_request(client: httpx.Client, auth: dict[str, str]) -> None:
    body = assert_json_status(client.get("/v1/topics?pageSize=-1", headers=auth), 400, 3)
    violations = detail(body, "google.rpc.BadRequest")["fieldViolations"]
    assert "page_size" in {v["field"] for v in violations}


def test_unimplemented_rpc_is_501(client: httpx.Client, mint_token: MintToken) -> None:
    token = mint_token("s1", "student", ("c1",))
    response = client.get(
        "/v1/students/s1/prediction", headers={"authorization": f"Bearer {token}"}
    )
    body = assert_json_status(response, 501, 12)
    assert detail(body, "google.rpc.ErrorInfo")["reason"] == "NOT_IMPLEMENTED"


def test_an_export_is_started_in_json_and_downloaded_as_a_zip(
    client: httpx.Client, channels: dict[str, grpc.Channel], mint_token: MintToken
) -> None:
    student = f"exp-{uuid.uuid4().hex[:6]}"
    token = mint_token(student, "student", ("c1",))
    auth = {"authorization": f"Bearer {token}"}
    # Diagnoses of hard-to-compress code: an archive over the transcoder's default 1 MiB.
    debug = debug_pb2_grpc.DebugServiceStub(channels["debug"])
    for _ in range(40):
        code = f"# {secrets.token_hex(30_000)}\nprint(1 / 0)\n"
        debug.CreateDiagnosis(
            debug_pb2.CreateDiagnosisRequest(
                parent=f"students/{student}", diagnosis=debug_pb2.Diagnosis(code=code)
            ),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=30,
        )
    started = client.post(f"/v1/students/{student}:export", json={}, headers=auth)
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    deadline = time.monotonic() + 60
    while not (operation := client.get(f"/v1/{name}", headers=auth).json()).get("done"):
        assert time.monotonic() < deadline, operation
        time.sleep(0.2)
    export = operation["response"]
    assert export["@type"].endswith("learnflow.mastery.v1.StudentDataExport")
    download = client.get(f"/v1/{export['name']}:download", headers=auth)
    assert download.status_code == 200, download.text[:300]
    assert download.headers["content-type"] == "application/zip"
    assert len(download.content) > 1024 * 1024
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert len(json.loads(archive.read("debug.json"))["diagnoses"]) == 40
    assert manifest["student"] == f"students/{student}"
    assert {p["service"] for p in manifest["parts"]} == {p["service"] for p in export["parts"]}
    # Someone else's export: the JSON error, not a body.
    other = {"authorization": f"Bearer {mint_token('other', 'student', ('c1',))}"}
    assert_json_status(client.get(f"/v1/{export['name']}:download", headers=other), 403, 7)


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/topics/functions/extra", "/nothing"])
def test_unknown_path_is_404_json(client: httpx.Client, auth: dict[str, str], path: str) -> None:
    assert_json_status(client.get(path, headers=auth), 404, 5)


def test_wrong_http_method_is_404_json(client: httpx.Client, auth: dict[str, str]) -> None:
    assert_json_status(client.delete("/v1/topics", headers=auth), 404, 5)


def test_unknown_query_parameter_is_400_json(client: httpx.Client, auth: dict[str, str]) -> None:
    # Without request validation the request would pass untranscoded.
    body = assert_json_status(client.get("/v1/topics?bogus=1", headers=auth), 400, 3)
    assert "bogus" in body["message"]


def test_malformed_json_body_is_400_json(client: httpx.Client, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/concepts:explain",
        headers={**auth, "content-type": "application/json"},
        content=b'{"student": "students/s1",',
    )
    assert_json_status(response, 400, 3)


# --- tokens --------------------------------------------------------------------------------


def test_no_token_is_401_json(client: httpx.Client) -> None:
    body = assert_json_status(client.get("/v1/topics"), 401, 16)
    assert body["details"] == []


@pytest.mark.parametrize(
    "kind", ["expired", "foreign_key", "alg_none", "no_exp", "wrong_issuer", "not_yet_valid"]
)
def test_bad_token_is_401_json(
    client: httpx.Client, dev_key_dir: Path, kind: devtokens.BadTokenKind
) -> None:
    assert_json_status(client.get("/v1/topics", headers=bad(kind, dev_key_dir)), 401, 16)


@pytest.mark.parametrize("value", ["Bearer", "Bearer not-a-jwt", "Basic czE6cHc="])
def test_malformed_authorization_is_401(client: httpx.Client, value: str) -> None:
    assert_json_status(client.get("/v1/topics", headers={"authorization": value}), 401, 16)


def test_wrong_audience_is_403_json(client: httpx.Client, dev_key_dir: Path) -> None:
    response = client.get("/v1/topics", headers=bad("wrong_audience", dev_key_dir))
    assert_json_status(response, 403, 7)


# jwt_authn runs on the transcoded gRPC path, so REST path tricks cannot skip it.
BYPASS_ATTEMPTS = [
    "/v1/topics/functions?name=topics/strings",  # query parameter overrides the path variable
    "/v1/topics/functions?%6eame=topics/strings",  # ... percent-encoded
    "/v1/topics/functions?name=a&name=topics/strings",  # ... repeated
    "/v1/topics/",  # trailing slash
    "/v1/topics/functions/",
    "/v1/%74opics",  # percent-encoded path
    "/v1/topics/%66unctions",
    "/v1/%74opics/functions",
    "/v1//topics",  # merged slashes
    "/v1/./topics",  # dot segments
    "/v1/x/../topics",
    "/v1/TOPICS",  # case
    "/v1/topics%2Ffunctions",  # escaped slash: rejected outright
    "/learnflow.concepts.v1.ConceptsService/ListTopics",  # gRPC path with JSON
]


@pytest.mark.parametrize("path", BYPASS_ATTEMPTS)
def test_rest_path_tricks_do_not_skip_jwt(client: httpx.Client, path: str) -> None:
    response = client.send(client.build_request("GET", path))  # path sent as written
    assert response.status_code in (400, 401, 404), (path, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "topics" not in response.json()


@pytest.mark.parametrize(
    "path", ["/v1/topics/", "/v1/%74opics", "/v1/./topics", "/v1/topics/functions?name=x"]
)
def test_normalised_paths_still_need_a_token(client: httpx.Client, path: str) -> None:
    # These resolve to a real method, so the answer is the token check, not a 404.
    response = client.send(client.build_request("GET", path))
    assert_json_status(response, 401, 16)


def test_query_parameter_overrides_path_variable(
    client: httpx.Client, auth: dict[str, str]
) -> None:
    # Documents the transcoder: services must authorise on the decoded
    # message, never on the URL.
    response = client.get("/v1/topics/functions?name=topics/nosuch", headers=auth)
    assert_json_status(response, 404, 5)


# --- native gRPC and gRPC-Web ---------------------------------------------------------------


def test_native_grpc_with_token(channel: grpc.Channel, student_token: str) -> None:
    stub = concepts_pb2_grpc.ConceptsServiceStub(channel)
    metadata = [("authorization", f"Bearer {student_token}")]
    reply = stub.ListTopics(concepts_pb2.ListTopicsRequest(), metadata=metadata, timeout=10)
    assert reply.topics
    topic = stub.GetTopic(
        concepts_pb2.GetTopicRequest(name="topics/functions"), metadata=metadata, timeout=10
    )
    assert topic.name == "topics/functions"


def test_native_grpc_errors_keep_grpc_status_and_details(
    channel: grpc.Channel, student_token: str
) -> None:
    stub = concepts_pb2_grpc.ConceptsServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTopic(
            concepts_pb2.GetTopicRequest(name="topics/nosuch"),
            metadata=[("authorization", f"Bearer {student_token}")],
            timeout=10,
        )
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(error)
    assert status is not None
    infos = []
    for item in status.details:
        info = error_details_pb2.ErrorInfo()
        if item.Unpack(info):
            infos.append(info)
    assert [(i.reason, i.domain) for i in infos] == [("RESOURCE_NOT_FOUND", "learnflow.dev")]


@pytest.mark.parametrize("kind", [None, "expired", "foreign_key", "wrong_audience"])
def test_native_grpc_without_a_valid_token_is_refused(
    channel: grpc.Channel, dev_key_dir: Path, kind: devtokens.BadTokenKind | None
) -> None:
    stub = concepts_pb2_grpc.ConceptsServiceStub(channel)
    metadata = [] if kind is None else list(bad(kind, dev_key_dir).items())
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListTopics(concepts_pb2.ListTopicsRequest(), metadata=metadata, timeout=10)
    expected = (
        grpc.StatusCode.PERMISSION_DENIED
        if kind == "wrong_audience"
        else grpc.StatusCode.UNAUTHENTICATED
    )
    assert caught.value.code() == expected


def test_native_grpc_unknown_service_is_refused(channel: grpc.Channel, student_token: str) -> None:
    call = channel.unary_unary(
        "/learnflow.nosuch.v1.Nothing/Get",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", metadata=[("authorization", f"Bearer {student_token}")], timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def _grpc_web_trailers(body: bytes) -> dict[str, str]:
    """Parse the trailer frame (flag 0x80) of a binary gRPC-Web response body."""
    offset = 0
    while offset < len(body):
        flag, length = struct.unpack(">BI", body[offset : offset + 5])
        chunk = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flag & 0x80:
            lines = chunk.decode().strip().split("\r\n")
            return {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return {}


def test_grpc_web_keeps_grpc_status(client: httpx.Client, auth: dict[str, str]) -> None:
    path = "/learnflow.concepts.v1.ConceptsService/GetTopic"
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    ok = client.post(
        path,
        headers={**headers, **auth},
        content=_grpc_web_frame(
            concepts_pb2.GetTopicRequest(name="topics/functions").SerializeToString()
        ),
    )
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("application/grpc-web")
    assert _grpc_web_trailers(ok.content).get("grpc-status") == "0"
    missing = client.post(
        path,
        headers={**headers, **auth},
        content=_grpc_web_frame(
            concepts_pb2.GetTopicRequest(name="topics/nosuch").SerializeToString()
        ),
    )
    status = missing.headers.get("grpc-status") or _grpc_web_trailers(missing.content).get(
        "grpc-status"
    )
    assert status == "5"
    details = missing.headers.get("grpc-status-details-bin")
    assert details, missing.headers
    decoded = base64.b64decode(details + "=" * (-len(details) % 4))
    assert b"RESOURCE_NOT_FOUND" in decoded
    unauthenticated = client.post(path, headers=headers, content=_grpc_web_frame(b""))
    assert unauthenticated.headers.get("grpc-status") == "16"
    assert not unauthenticated.headers["content-type"].startswith("application/json")


def _raw_grpc_call(
    gateway_url: str, path: str, message: bytes, headers: dict[str, str], wait: float
) -> tuple[dict[str, str], str]:
    """One gRPC call over plain HTTP/2, with headers a gRPC library would not let the caller
    send without also enforcing them (grpc-timeout). Returns the trailers and how the
    stream ended: "ended" (trailers), "reset" (RST_STREAM) or "open" (neither in `wait`)."""
    url = httpx.URL(gateway_url)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection((url.host, url.port or 80), timeout=wait) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        request = {
            ":method": "POST",
            ":scheme": "http",
            ":authority": f"{url.host}:{url.port}",
            ":path": path,
            "content-type": "application/grpc",
            "te": "trailers",
            **headers,
        }
        connection.send_headers(stream, list(request.items()))
        connection.send_data(stream, _grpc_web_frame(message), end_stream=True)
        sock.sendall(connection.data_to_send())
        trailers: dict[str, str] = {}
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                return trailers, "reset"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = {_text(k): _text(v) for k, v in event.headers}
                elif isinstance(event, h2.events.StreamEnded):
                    return trailers, "ended"
                elif isinstance(event, h2.events.StreamReset):
                    return trailers, "reset"
            sock.sendall(connection.data_to_send())
    return trailers, "open"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_a_native_stream_ends_at_its_deadline_with_deadline_exceeded(
    gateway_url: str, mint_token: MintToken
) -> None:
    """The service, not Envoy, ends a stream at the caller's deadline: the caller reads
    DEADLINE_EXCEEDED in trailers, never a reset stream (gRPC's INTERNAL), even when its own
    deadline timer has not fired yet. The raw call below enforces no deadline of its own."""
    student = f"deadline-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", ("c1",))
    trailers, ending = _raw_grpc_call(
        gateway_url,
        "/learnflow.notify.v1.NotifyService/StreamUpdates",
        notify_pb2.StreamUpdatesRequest(subscriber=f"students/{student}").SerializeToString(),
        {"grpc-timeout": "1500m", "authorization": f"Bearer {token}"},
        wait=15,
    )
    assert ending == "ended", (ending, trailers)
    assert trailers.get("grpc-status") == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])


def test_health_is_not_offered_through_the_gateway(channel: grpc.Channel) -> None:
    # Probes and ops call the service ports; the gateway refuses health
    # and reflection to anonymous callers (and to token holders: test_gateway_limits.py).
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(
            health_pb2.HealthCheckRequest(service="learnflow.concepts.v1.ConceptsService"),
            metadata=[("x-learnflow-service", "concepts")],
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- CORS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "request_headers"),
    [
        ("/v1/topics", "GET", "authorization"),
        ("/learnflow.concepts.v1.ConceptsService/ListTopics", "POST", "x-grpc-web,content-type"),
    ],
)
def test_cors_preflight_allows_the_frontend(
    client: httpx.Client, path: str, method: str, request_headers: str
) -> None:
    response = client.options(
        path,
        headers={
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": method,
            "access-control-request-headers": request_headers,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    allowed = response.headers["access-control-allow-headers"].lower()
    for name in request_headers.split(","):
        assert name in allowed
    assert method in response.headers["access-control-allow-methods"]


def test_cors_refuses_other_origins(client: httpx.Client) -> None:
    response = client.options(
        "/v1/topics",
        headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_headers_on_responses(client: httpx.Client, auth: dict[str, str]) -> None:
    response = client.get("/v1/topics/nosuch", headers={**auth, "origin": ALLOWED_ORIGIN})
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "grpc-status" in response.headers["access-control-expose-headers"]
