"""Renders the Envoy gateway configuration.

One listener serves browsers (JSON, SSE, gRPC-Web) and native gRPC callers. HTTP
filters, in this order:

    cors -> grpc_web -> lua (request limits) -> body_size_limit -> header_mutation
         -> grpc_json_transcoder -> jwt_authn -> router

- request limits come first, before any token check, transcoding or upstream call: the
  URL (414), the request headers (431) and the body (413, counted as it streams and
  refused at once when Content-Length announces too much); see `MAX_URL_BYTES`,
  `MAX_REQUEST_HEADER_BYTES`, `MAX_REQUEST_BODY_BYTES`;
- the transcoder maps every `google.api.http` route of every catalogue service (plus
  google.longrunning.Operations, served by mastery) to its gRPC method, so `jwt_authn`
  after it always sees `/<package>.<Service>/<Method>`, whichever way the caller came;
- `jwt_authn` requires a valid token (issuer, audience, `exp`) for every call; the
  token is forwarded, the services verify it again. The keys: the identity provider's
  JWKS URL when JWKS_URL is set (`remote_jwks`: fetched in the background, the listener
  does not wait; see `_remote_jwks`), else the local JWKS file. Health and reflection
  are not offered through the gateway at all (see `routes`): probes and ops call the
  service ports, where they need no token;
- every unary call reaches its service with a deadline (`grpc-timeout`), also when a
  JSON or gRPC-Web caller sent none; streaming calls have no deadline but an idle
  timeout;
- JSON callers get JSON errors shaped like google.rpc.Status (transcoded upstream
  errors, and Envoy's own local replies through `local_reply_config`), without
  `grpc-status` / `grpc-message` headers; gRPC and gRPC-Web callers keep those.

    python -m services.gateway.envoy_config --out gateway/envoy.yaml --upstream-host-mode compose
    python -m services.gateway.envoy_config --out .run/envoy.yaml --upstream-host-mode local

The run command calls `render(local_params(...))` and starts Envoy itself.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import yaml
from google.protobuf import descriptor_pb2

from services.kit.auth import JWKS_FETCH_TIMEOUT_SECONDS, TENANT_METADATA
from services.kit.catalogue import (
    GATEWAY_ADMIN_PORT,
    GATEWAY_PORT,
    MAX_MESSAGE_BYTES,
    SERVICES,
    ServiceSpec,
)
from services.kit.config import REPO_ROOT, Settings

JsonDict = dict[str, Any]

DESCRIPTOR_SET: Final = REPO_ROOT / "gen" / "learnflow.pb"
"""The descriptor set in the repository: read at render time to find streaming methods."""

COMPOSE_ROOT: Final = Path("/srv/learnflow")
"""Where docker-compose.yml and k8s/gateway.yaml mount the repository files for Envoy."""
COMPOSE_DESCRIPTOR: Final = COMPOSE_ROOT / "gen" / "learnflow.pb"
COMPOSE_JWKS: Final = COMPOSE_ROOT / ".run" / "jwks.json"

# Identity defaults are Settings' (JWT_ISSUER, JWT_AUDIENCE), not the environment's.
DEFAULT_ISSUER: Final = str(Settings.model_fields["jwt_issuer"].default)
DEFAULT_AUDIENCE: Final = str(Settings.model_fields["jwt_audience"].default)
DEFAULT_CORS_ORIGINS: Final = ("http://localhost:3000", "http://localhost:5173")
JWT_PROVIDER: Final = "learnflow"
JWT_PAYLOAD_HEADER: Final = "x-jwt-payload"
JWKS_CLUSTER: Final = "learnflow-jwks"
"""The cluster Envoy fetches a remote JWKS through (not a service: no route leads there)."""
JWKS_FAILED_REFETCH_SECONDS: Final = 5.0
"""After a failed background fetch of the JWKS, Envoy tries again this much later; it
keeps verifying with the keys it has meanwhile."""
SYSTEM_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")
"""The CAs an https JWKS URL's certificate is checked against (Debian and Envoy's images)."""
OPS_PREFIXES: Final = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""gRPC paths of health and reflection: open on the service ports, refused by the gateway."""
OPS_REFUSAL: Final = (
    "health and reflection are not offered through the gateway: call the service port"
)

# Request limits, enforced by Envoy before anything else looks at the request.
MAX_REQUEST_BODY_BYTES: Final = MAX_MESSAGE_BYTES  # what the services accept
# A response message of the services' largest size rendered as JSON (bytes grow by a
# third in base64, and names and quotes add more).
MAX_RESPONSE_JSON_BYTES: Final = 2 * MAX_MESSAGE_BYTES
"""Largest request body, as it arrives (JSON text, or gRPC frames after gRPC-Web
decoding): the services' own message limit (`MAX_MESSAGE_BYTES`, the kit server's
`grpc.max_receive_message_length`). Beyond it: 413, or RESOURCE_EXHAUSTED for gRPC callers."""
MAX_URL_BYTES: Final = 4096
"""Longest `:path` (path and query). Beyond it: 414."""
MAX_REQUEST_HEADER_BYTES: Final = 6 * 1024
"""Largest request header list, counted the way HTTP/2 and gRPC count metadata: name +
value + 32 per header (RFC 7541 §4.1). Beyond it: 431.

The services refuse more than 8 KiB of metadata (gRPC's default), with a message that
names every header. What reaches them is the caller's headers plus what Envoy adds:
`x-envoy-original-path` (the URL again, when transcoded), `x-jwt-payload` (the token's
claims again), `grpc-timeout`, `x-request-id`, `x-forwarded-*`, about 1 KiB with a
student's token. 6 KiB leaves that room, so whatever passes Envoy fits the services
(tests/integration/test_gateway_limits.py sends the largest request Envoy accepts)."""
HEADER_ENTRY_OVERHEAD: Final = 32
MAX_REQUEST_HEADERS_KB: Final = 16
"""The codec's own cap (HCM `max_request_headers_kb`, Envoy's default is 60): above the
limits above, so that they answer first, with their own status (414 or 431)."""
LIMIT_MESSAGES: Final[Mapping[int, str]] = {
    413: f"request body too large: at most {MAX_REQUEST_BODY_BYTES} bytes",
    414: f"request URL too long: at most {MAX_URL_BYTES} bytes",
    431: (
        f"request headers too large: at most {MAX_REQUEST_HEADER_BYTES} bytes in all, "
        f"counting {HEADER_ENTRY_OVERHEAD} bytes per header"
    ),
}
"""Envoy's answer for each limit, the same whichever part of Envoy noticed it first."""
LIMIT_CODE: Final = 8  # RESOURCE_EXHAUSTED, what gRPC itself answers for oversized calls
STREAM_IDLE_TIMEOUT_SECONDS: Final = 90
"""Streams (and requests) without a byte either way for this long are closed (HCM
`stream_idle_timeout`, and each streaming route's `idle_timeout`). StreamUpdates sends a
heartbeat every 15 s; Ask's longest silence is the agent's answer, which triage waits
for at most 30 s (AGENT_TIMEOUT_SECONDS in services/triage/answers.py)."""

# Local replies (Envoy's own answers) as HTTP status -> google.rpc.Code for JSON callers.
LOCAL_REPLY_CODES: Final[Mapping[int, int]] = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED
    413: LIMIT_CODE,
    414: LIMIT_CODE,
    429: 8,  # RESOURCE_EXHAUSTED
    431: LIMIT_CODE,
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
UNKNOWN_CODE: Final = 2

_TYPE = "type.googleapis.com/envoy.extensions"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where Envoy reaches one service."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class GatewayParams:
    """Everything the rendered configuration depends on."""

    descriptor_path: Path
    """The descriptor set as Envoy sees it (path on Envoy's filesystem)."""
    jwks_path: Path
    """The JWKS as Envoy sees it; read once at start (unused when `jwks_url` is set)."""
    upstreams: Mapping[str, Upstream]
    """One per catalogue service name."""
    listen_address: str = "0.0.0.0"
    listen_port: int = GATEWAY_PORT
    admin_address: str = "127.0.0.1"
    admin_port: int = GATEWAY_ADMIN_PORT
    issuer: str = DEFAULT_ISSUER
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    request_timeout_seconds: int = 60
    """Unary RPCs (agents may call a model); streaming RPCs have no route timeout."""
    connect_timeout_seconds: float = 2.0
    access_log: bool = True
    method_source: Path = DESCRIPTOR_SET
    """Descriptor set read by the renderer (not by Envoy) to find streaming methods."""
    jwks_url: str | None = None
    """The identity provider's JWKS (JWKS_URL): when set, Envoy fetches its keys from it
    instead of reading `jwks_path`."""
    jwks_cache_seconds: float = 300.0
    """How long Envoy keeps a fetched JWKS before fetching it again (JWKS_CACHE_SECONDS)."""
    jwks_ca_file: Path = SYSTEM_CA_BUNDLE
    """CA certificates an https `jwks_url` is verified against (on Envoy's filesystem)."""


def _check_params(params: GatewayParams) -> None:
    names = {spec.name for spec in SERVICES}
    missing = sorted(names - set(params.upstreams))
    unknown = sorted(set(params.upstreams) - names)
    if missing or unknown:
        raise ValueError(
            f"upstreams must name every catalogue service: missing {missing}, unknown {unknown}"
        )
    for name, upstream in params.upstreams.items():
        if not upstream.host or not 0 < upstream.port < 65536:
            raise ValueError(f"bad upstream for {name}: {upstream}")
    for port in (params.listen_port, params.admin_port):
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
    if not params.audiences:
        raise ValueError("at least one JWT audience is required")
    if params.request_timeout_seconds <= 0:
        raise ValueError("request_timeout_seconds must be positive")
    for origin in params.cors_origins:
        if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
            raise ValueError(f"CORS origin must look like http(s)://host[:port]: {origin!r}")
    if params.jwks_url is not None:
        _jwks_endpoint(params.jwks_url)
        if params.jwks_cache_seconds < 0.001:
            raise ValueError("jwks_cache_seconds must be at least 1 ms (Envoy's minimum)")


def _jwks_endpoint(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a JWKS URL; ValueError when it is not an http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in JWKS URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the JWKS URL must look like http(s)://host[:port]/path: {url!r}")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def streaming_methods(descriptor_set: Path, full_names: Sequence[str]) -> list[str]:
    """`/<service>/<method>` paths of every streaming method of the named services.

    Raises ValueError when a service is missing from the descriptor set (Envoy would
    refuse to start with it anyway).
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
    for proto_file in files.file:
        for service in proto_file.service:
            full = f"{proto_file.package}.{service.name}" if proto_file.package else service.name
            services[full] = service
    paths: list[str] = []
    for name in full_names:
        if name not in services:
            raise ValueError(f"service {name} is not in {descriptor_set}: run tools/gen.py")
        paths.extend(
            f"/{name}/{method.name}"
            for method in services[name].method
            if method.server_streaming or method.client_streaming
        )
    return paths


def _transcoded_services() -> list[str]:
    return [full for spec in SERVICES for full in spec.full_names]


def _grpc_prefixes(spec: ServiceSpec) -> list[str]:
    """Path prefixes of native gRPC calls for one server: its package, plus extra services."""
    return [f"/{spec.package}.", *(f"/{full}/" for full in spec.extra_full_names)]


def _seconds(value: float) -> str:
    return f"{value:g}s"


# --------------------------------------------------------------------------------------
# HTTP filters
# --------------------------------------------------------------------------------------


def _cors_filter() -> JsonDict:
    return {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": f"{_TYPE}.filters.http.cors.v3.Cors"},
    }


def _grpc_web_filter() -> JsonDict:
    return {
        "name": "envoy.filters.http.grpc_web",
        "typed_config": {"@type": f"{_TYPE}.filters.http.grpc_web.v3.GrpcWeb"},
    }


_REQUEST_LIMITS_LUA: Final = """\
-- Request limits (services/gateway/envoy_config.py). Envoy has no setting for a URL
-- limit, and max_request_headers_kb only bounds what the codec will parse.
function envoy_on_request(handle)
  local headers = handle:headers()
  if #(headers:get(":path") or "") > {max_url} then
    handle:respond({{[":status"] = "414"}}, {url_message})
    return
  end
  local size = 0
  for name, value in pairs(headers) do
    size = size + #name + #value + {overhead}
  end
  if size > {max_headers} then
    handle:respond({{[":status"] = "431"}}, {headers_message})
    return
  end
  local grpc = (headers:get("content-type") or ""):sub(1, 16) == "application/grpc"
  -- gRPC's own headers reach the service as the protocol's: one the service cannot
  -- parse (grpc-encoding: bogus, a garbled grpc-timeout) fails the call INTERNAL, and
  -- a JSON caller's would pass the transcoder untouched. JSON callers speak HTTP, so
  -- theirs go; a gRPC caller's stay only when well-formed.
  local drop = {{}}
  for name, value in pairs(headers) do
    if name:sub(1, 5) == "grpc-" and not (grpc and well_formed(name, value)) then
      drop[#drop + 1] = name
    end
  end
  for _, name in ipairs(drop) do
    headers:remove(name)
  end
  -- Envoy writes a route's deadline into grpc-timeout when it picks the route, and only
  -- for gRPC content. It picked it before grpc_web turned a gRPC-Web call into gRPC:
  -- pick again, so gRPC-Web calls get their deadline like native ones.
  if grpc then
    handle:clearRouteCache()
  end
end

function well_formed(name, value)
  if name == "grpc-timeout" then
    return value:match("^%d%d?%d?%d?%d?%d?%d?%d?[HMSmun]$") ~= nil
  end
  if name == "grpc-encoding" or name == "grpc-accept-encoding" then
    for coding in value:gmatch("[^,%s]+") do
      if coding ~= "identity" and coding ~= "gzip" and coding ~= "deflate" then
        return false
      end
    end
  end
  return true
end
"""


def _request_limits_filter() -> JsonDict:
    """414 for a long URL, 431 for large headers, before any other filter reads them.

    After grpc_web (a gRPC-Web caller then counts as gRPC and gets a gRPC-Web status, and
    the route is picked again for its deadline), before the transcoder (which copies the
    URL into `x-envoy-original-path`). The replies go through `local_reply_config` like
    Envoy's own.
    """
    code = _REQUEST_LIMITS_LUA.format(
        max_url=MAX_URL_BYTES,
        url_message=json.dumps(LIMIT_MESSAGES[414]),  # a valid Lua string literal too
        overhead=HEADER_ENTRY_OVERHEAD,
        max_headers=MAX_REQUEST_HEADER_BYTES,
        headers_message=json.dumps(LIMIT_MESSAGES[431]),
    )
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": code},
        },
    }


def _body_size_limit_filter() -> JsonDict:
    """413 as soon as the body is known to be too large: at once when Content-Length says
    so, else when the bytes counted so far pass the limit. Nothing is buffered for it, and
    it runs before the transcoder, which would otherwise hold a whole JSON body."""
    return {
        "name": "envoy.filters.http.body_size_limit",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.body_size_limit.v3.BodySizeLimit",
            "max_request_bytes": MAX_REQUEST_BODY_BYTES,
        },
    }


def _header_mutation_filter() -> JsonDict:
    # A caller must not be able to pose as a verified payload: jwt_authn sets it later.
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": JWT_PAYLOAD_HEADER}]},
        },
    }


def _transcoder_filter(params: GatewayParams) -> JsonDict:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(params.descriptor_path),
            "services": _transcoded_services(),
            "convert_grpc_status": True,
            # What the transcoder may hold while it converts. Unset, it is the connection's
            # buffer limit (1 MiB): a request body the size filter lets through was once
            # in a while refused with 413 (when it arrived faster than it went upstream),
            # and a JSON answer over 1 MiB would fail with 500, though the services send
            # messages up to 4 MiB. (An HttpBody answer, an export's archive, is passed
            # on as it comes.) A request: what the services accept; an answer: their
            # largest message, as JSON.
            "max_request_body_size": MAX_REQUEST_BODY_BYTES,
            "max_response_body_size": MAX_RESPONSE_JSON_BYTES,
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
            },
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "always_print_enums_as_ints": False,
                "preserve_proto_field_names": False,
                "stream_sse_style_delimited": True,
            },
        },
    }


def _remote_jwks(params: GatewayParams) -> JsonDict:
    """The identity provider's JWKS, fetched by Envoy through `JWKS_CLUSTER`.

    `async_fetch` fetches on the main thread and hands the keys to every worker, again
    every `cache_duration` (minus 5 s); `fast_listener` opens the listener without
    waiting for the first fetch (calls before it fetch on demand). A failed fetch keeps
    the last keys and is tried again after `failed_refetch_duration`, each fetch with
    `retry_policy`'s retries. Envoy ignores the response's Cache-Control, and does not
    fetch again for a token whose `kid` it does not know: a key rotated in is accepted
    once the next scheduled fetch brings it (at most `cache_duration` later), so the
    identity provider should publish a new key that long before signing with it.
    """
    assert params.jwks_url is not None
    return {
        "http_uri": {
            "uri": params.jwks_url,
            "cluster": JWKS_CLUSTER,
            "timeout": _seconds(JWKS_FETCH_TIMEOUT_SECONDS),
        },
        "cache_duration": _seconds(params.jwks_cache_seconds),
        "async_fetch": {
            "fast_listener": True,
            "failed_refetch_duration": _seconds(JWKS_FAILED_REFETCH_SECONDS),
        },
        "retry_policy": {
            "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"},
            "num_retries": 2,
        },
    }


def _jwks_source(params: GatewayParams) -> JsonDict:
    if params.jwks_url is None:
        return {"local_jwks": {"filename": str(params.jwks_path)}}
    return {"remote_jwks": _remote_jwks(params)}


def _jwt_filter(params: GatewayParams) -> JsonDict:
    # One rule: every call needs a valid token, health and reflection included (an
    # anonymous caller learns nothing, not even that they exist); `routes` then refuses
    # those two to token holders as well.
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                JWT_PROVIDER: {
                    "issuer": params.issuer,
                    "audiences": list(params.audiences),
                    **_jwks_source(params),
                    "forward": True,
                    "forward_payload_header": JWT_PAYLOAD_HEADER,
                    "require_expiration": True,
                    "clock_skew_seconds": 30,
                },
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
            "bypass_cors_preflight": True,
        },
    }


def _router_filter() -> JsonDict:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{_TYPE}.filters.http.router.v3.Router"},
    }


def http_filters(params: GatewayParams) -> list[JsonDict]:
    return [
        _cors_filter(),
        _grpc_web_filter(),
        _request_limits_filter(),
        _body_size_limit_filter(),
        _header_mutation_filter(),
        _transcoder_filter(params),
        _jwt_filter(params),
        _router_filter(),
    ]


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------


def _cors_policy(params: GatewayParams) -> JsonDict:
    return {
        "@type": f"{_TYPE}.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": origin} for origin in params.cors_origins],
        "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": ",".join(
            (
                "authorization",
                "content-type",
                "accept",
                "cache-control",
                "last-event-id",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "traceparent",
                "tracestate",
                TENANT_METADATA,
            )
        ),
        # retry-after: services answering RESOURCE_EXHAUSTED say when to retry (the
        # transcoder passes that trailers-only metadata on as a header); a browser's
        # script can only read it when it is exposed.
        "expose_headers": "grpc-status,grpc-message,grpc-status-details-bin,retry-after",
        "max_age": "600",
    }


def _json_route_mutation() -> JsonDict:
    """Per-route header_mutation of REST routes: JSON responses carry no gRPC status headers.

    header_mutation reads its per-route config in decodeHeaders, i.e. on the route the
    incoming REST path selects (before the transcoder rewrites the path), and removes the
    headers on the way back, after the transcoder has turned them into the HTTP status and
    the JSON body. Native gRPC and gRPC-Web calls match a gRPC route, which has no policy.
    """
    removed = ("grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding")
    return {
        "@type": f"{_TYPE}.filters.http.header_mutation.v3.HeaderMutationPerRoute",
        "mutations": {
            "response_mutations": [{"remove": name} for name in removed],
            "response_trailers_mutations": [{"remove": name} for name in removed],
        },
    }


def _unrouted(name: str, match: JsonDict, per_filter: JsonDict | None = None) -> JsonDict:
    """A 404 that still has a route entry (so CORS applies, unlike a direct_response).

    The cluster is named by the `:path` header, which always starts with "/" while no
    cluster name does: the lookup fails and Envoy answers `cluster_not_found_response_code`.
    """
    route: JsonDict = {
        "name": name,
        "match": match,
        "route": {"cluster_header": ":path", "cluster_not_found_response_code": "NOT_FOUND"},
    }
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return route


def routes(params: GatewayParams) -> list[JsonDict]:
    """gRPC paths (streaming methods first, then one prefix per package), ops, then REST.

    Every known REST path is rewritten by the transcoder to its gRPC path (unknown ones
    get a 404/400 from the transcoder itself) and the route is chosen again on that path.
    The catch-all REST route is only what the incoming REST path matches first: it
    carries the JSON header policy and answers 404 to anything routed untranscoded.
    """
    result: list[JsonDict] = []
    for spec in SERVICES:
        for path in streaming_methods(params.method_source, spec.full_names):
            result.append(
                {
                    "name": f"stream:{path.strip('/')}",
                    "match": {"path": path},
                    "route": {
                        "cluster": spec.name,
                        # No route timeout and no default deadline: the stream lives as
                        # long as the caller wants, and dies when idle (heartbeats keep a
                        # live one busy). A native caller's own `grpc-timeout` passes
                        # through to the service, which ends the stream at the deadline
                        # with DEADLINE_EXCEEDED in its trailers. Envoy must not enforce
                        # it too (`max_stream_duration`): once the response has started,
                        # Envoy can only reset the stream, which the caller reads as
                        # INTERNAL whenever Envoy's timer fires before its own.
                        "timeout": "0s",
                        "idle_timeout": _seconds(STREAM_IDLE_TIMEOUT_SECONDS),
                    },
                }
            )
    timeout = _seconds(params.request_timeout_seconds)
    for spec in SERVICES:
        for prefix in _grpc_prefixes(spec):
            result.append(
                {
                    "name": f"grpc:{prefix.strip('/')}",
                    "match": {"prefix": prefix},
                    "route": {
                        "cluster": spec.name,
                        "timeout": timeout,
                        # Every unary call reaches the service with a deadline. Envoy
                        # writes `grpc-timeout` upstream: max_stream_duration when the
                        # caller sent none (JSON and gRPC-Web callers never do), else the
                        # caller's own, capped at the same value. Without
                        # `max_stream_duration` Envoy sent none, and a service waited
                        # forever on a call its caller had long given up.
                        "max_stream_duration": {
                            "max_stream_duration": timeout,
                            "grpc_timeout_header_max": timeout,
                        },
                    },
                }
            )
    # Health and reflection are not offered through the public gateway, to anyone:
    # probes and ops reach the service ports, where both need no token. Through the
    # gateway, Watch streams tie up a service's threads (32 froze one), and reflection
    # lists every internal service (sandbox included) to whoever asks; requiring a token
    # would still hand both to every student. Anonymous callers get 401 from jwt_authn
    # before they get here; token holders get this 404 (UNIMPLEMENTED for gRPC).
    for prefix in OPS_PREFIXES:
        result.append(
            {
                "name": f"refused:{prefix.strip('/.')}",
                "match": {"prefix": prefix},
                "direct_response": {"status": 404, "body": {"inline_string": OPS_REFUSAL}},
            }
        )
    # Unknown gRPC (and gRPC-Web) paths: a gRPC-style 404 (UNIMPLEMENTED), no JSON policy.
    grpc_content = {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
    result.append(_unrouted("grpc-unknown", {"prefix": "/", "headers": [grpc_content]}))
    result.append(
        _unrouted(
            "rest",
            {"prefix": "/"},
            {"envoy.filters.http.header_mutation": _json_route_mutation()},
        )
    )
    return result


# --------------------------------------------------------------------------------------
# Local replies
# --------------------------------------------------------------------------------------


def _json_caller_filter() -> JsonDict:
    """True for JSON callers: not gRPC content, or transcoded (original method recorded)."""
    return {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {"name": "x-envoy-original-method", "present_match": True}
                    }
                },
            ]
        }
    }


def _grpc_caller_filter() -> JsonDict:
    """True for gRPC and gRPC-Web callers (gRPC content, not transcoded): the opposite of
    `_json_caller_filter`."""
    return {
        "and_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {"name": "x-envoy-original-method", "present_match": False}
                    }
                },
            ]
        }
    }


def _status_filter(op: str, status: int) -> JsonDict:
    return {
        "status_code_filter": {
            "comparison": {"op": op, "value": {"default_value": status, "runtime_key": "_"}}
        }
    }


def _status_body(code: int) -> JsonDict:
    return {
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
        "content_type": "application/json",
    }


def _grpc_status_reply(code: int, message: str) -> JsonDict:
    """A local reply rewritten into a complete trailers-only gRPC answer.

    Setting `grpc-status` alone works for native callers only: Envoy treats a gRPC-Web
    call's local reply as plain HTTP, and the grpc_web filter then derives the status
    from the HTTP code (413 gives UNKNOWN), unless the reply already is a gRPC answer
    (200, application/grpc, no body). `grpc-message` needs no percent-encoding here:
    the messages are printable ASCII without `%`.
    """
    headers = {
        "content-type": "application/grpc",
        "grpc-status": str(code),
        "grpc-message": message,
    }
    return {
        "status_code": 200,
        "body": {"inline_string": ""},
        "headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in headers.items()
        ],
    }


def local_reply_config() -> JsonDict:
    """Envoy's own replies: JSON google.rpc.Status for JSON callers; for the request
    limits also a fixed message for everyone, and RESOURCE_EXHAUSTED for gRPC callers
    (Envoy would say UNKNOWN: gRPC maps no 413, 414 or 431)."""
    mappers: list[JsonDict] = []
    for status, code in LOCAL_REPLY_CODES.items():
        message = LIMIT_MESSAGES.get(status)
        json_mapper: JsonDict = {
            "filter": {
                "and_filter": {"filters": [_status_filter("EQ", status), _json_caller_filter()]}
            },
            "body_format_override": _status_body(code),
        }
        if message is None:
            mappers.append(json_mapper)
            continue
        mappers.append({**json_mapper, "body": {"inline_string": message}})
        mappers.append(
            {
                "filter": {
                    "and_filter": {"filters": [_status_filter("EQ", status), _grpc_caller_filter()]}
                },
                **_grpc_status_reply(code, message),
            }
        )
    # Any other local error reply to a JSON caller: UNKNOWN, keeping its HTTP status.
    mappers.append(
        {
            "filter": {
                "and_filter": {"filters": [_status_filter("GE", 400), _json_caller_filter()]}
            },
            "body_format_override": _status_body(UNKNOWN_CODE),
        }
    )
    return {"mappers": mappers}


# --------------------------------------------------------------------------------------
# Listener, clusters, admin
# --------------------------------------------------------------------------------------


def _access_log() -> list[JsonDict]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": f"{_TYPE}.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "method": "%REQ(:METHOD)%",
                        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                        "grpc_path": "%REQ(:PATH)%",
                        "status": "%RESPONSE_CODE%",
                        "grpc_status": "%GRPC_STATUS_NUMBER%",
                        "flags": "%RESPONSE_FLAGS%",
                        "details": "%RESPONSE_CODE_DETAILS%",
                        "upstream": "%UPSTREAM_CLUSTER%",
                        "duration_ms": "%DURATION%",
                        "request_id": "%REQ(X-REQUEST-ID)%",
                        "traceparent": "%REQ(TRACEPARENT)%",
                    }
                },
            },
        }
    ]


def _listener(params: GatewayParams) -> JsonDict:
    hcm: JsonDict = {
        "@type": f"{_TYPE}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "use_remote_address": True,
        "common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"},
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "stream_idle_timeout": _seconds(STREAM_IDLE_TIMEOUT_SECONDS),
        "local_reply_config": local_reply_config(),
        "route_config": {
            "name": "learnflow",
            "virtual_hosts": [
                {
                    "name": "learnflow",
                    "domains": ["*"],
                    "routes": routes(params),
                    "typed_per_filter_config": {"envoy.filters.http.cors": _cors_policy(params)},
                }
            ],
        },
        "http_filters": http_filters(params),
    }
    if params.access_log:
        hcm["access_log"] = _access_log()
    return {
        "name": "gateway",
        "address": {
            "socket_address": {"address": params.listen_address, "port_value": params.listen_port}
        },
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(spec: ServiceSpec, upstream: Upstream, params: GatewayParams) -> JsonDict:
    return {
        "name": spec.name,
        "type": "STATIC" if _is_ip(upstream.host) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _seconds(params.connect_timeout_seconds),
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPE}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": spec.name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": upstream.host,
                                        "port_value": upstream.port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def _jwks_cluster(params: GatewayParams) -> JsonDict:
    """Where Envoy fetches the remote JWKS: the URL's host over HTTP/1.1, with TLS for an
    https URL (the certificate checked against `jwks_ca_file` and the URL's host name)."""
    assert params.jwks_url is not None
    scheme, host, port = _jwks_endpoint(params.jwks_url)
    cluster: JsonDict = {
        "name": JWKS_CLUSTER,
        # One name, resolved again as its DNS answer changes (an IdP behind a CDN).
        "type": "STATIC" if _is_ip(host) else "LOGICAL_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _seconds(params.connect_timeout_seconds),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": JWKS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    if scheme == "https":
        tls: JsonDict = {
            "@type": f"{_TYPE}.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": str(params.jwks_ca_file)},
                    "match_typed_subject_alt_names": [
                        {
                            "san_type": "IP_ADDRESS" if _is_ip(host) else "DNS",
                            "matcher": {"exact": host},
                        }
                    ],
                }
            },
        }
        if not _is_ip(host):
            tls["sni"] = host
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return cluster


def build_config(params: GatewayParams) -> JsonDict:
    """The Envoy bootstrap as a dict (what `render` dumps)."""
    _check_params(params)
    clusters = [_cluster(spec, params.upstreams[spec.name], params) for spec in SERVICES]
    if params.jwks_url is not None:
        clusters.append(_jwks_cluster(params))
    return {
        "admin": {
            "address": {
                "socket_address": {"address": params.admin_address, "port_value": params.admin_port}
            }
        },
        "static_resources": {"listeners": [_listener(params)], "clusters": clusters},
    }


HEADER = """\
# Envoy gateway for LearnFlow, GENERATED by services/gateway/envoy_config.py: do not edit.
# Regenerate: python -m services.gateway.envoy_config --out gateway/envoy.yaml \\
#                 --upstream-host-mode compose
# (tests/test_gateway_config.py fails when this file is stale.)
#
# This rendering is for docker-compose.yml and k8s/gateway.yaml: upstream hosts are the
# service names, and the files Envoy reads are mounted under /srv/learnflow:
#   /srv/learnflow/gen/learnflow.pb   descriptor set (make gen)
#   /srv/learnflow/.run/jwks.json     public keys that tokens are verified against
# The run command renders its own copy with 127.0.0.1 upstreams and .run/ paths.
"""


def render(params: GatewayParams) -> str:
    """The Envoy bootstrap as YAML text."""
    body = yaml.safe_dump(build_config(params), sort_keys=False, default_flow_style=False)
    return HEADER + body


def compose_params() -> GatewayParams:
    """docker-compose / Kubernetes: services by name, files under /srv/learnflow.

    Uses the built-in identity defaults (not the environment) so the committed rendering
    is reproducible.
    """
    return GatewayParams(
        descriptor_path=COMPOSE_DESCRIPTOR,
        jwks_path=COMPOSE_JWKS,
        upstreams={spec.name: Upstream(spec.name, spec.port) for spec in SERVICES},
        issuer=DEFAULT_ISSUER,
        audiences=(DEFAULT_AUDIENCE,),
    )


def local_params(
    *,
    listen_port: int = GATEWAY_PORT,
    admin_port: int = GATEWAY_ADMIN_PORT,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    descriptor_path: Path = DESCRIPTOR_SET,
    jwks_path: Path | None = None,
    settings: Settings | None = None,
    cors_origins: Sequence[str] = DEFAULT_CORS_ORIGINS,
    access_log: bool = True,
) -> GatewayParams:
    """The run command's gateway: every service on `host` at its catalogue port
    (or `ports[name]`), JWKS (file or URL)/issuer/audience from `settings` (default: the
    environment)."""
    conf = settings if settings is not None else Settings()
    port_of = dict(ports or {})
    return GatewayParams(
        descriptor_path=descriptor_path.resolve(),
        jwks_path=(jwks_path if jwks_path is not None else Path(conf.jwks_path)).resolve(),
        upstreams={
            spec.name: Upstream(host, port_of.get(spec.name, spec.port)) for spec in SERVICES
        },
        listen_port=listen_port,
        admin_port=admin_port,
        issuer=conf.jwt_issuer,
        audiences=(conf.jwt_audience,),
        cors_origins=tuple(cors_origins),
        access_log=access_log,
        jwks_url=conf.jwks_url,
        jwks_cache_seconds=conf.jwks_cache_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=None, help="file to write (default stdout)")
    parser.add_argument("--upstream-host-mode", choices=("compose", "local"), default="compose")
    parser.add_argument("--listen-port", type=int, default=GATEWAY_PORT)
    parser.add_argument("--admin-port", type=int, default=GATEWAY_ADMIN_PORT)
    parser.add_argument(
        "--cors-origins",
        default=",".join(DEFAULT_CORS_ORIGINS),
        help="comma-separated allowed browser origins",
    )
    parser.add_argument(
        "--jwks-url",
        default=None,
        help="the identity provider's JWKS URL (compose mode; local mode reads JWKS_URL)",
    )
    args = parser.parse_args(argv)
    origins = tuple(o.strip() for o in args.cors_origins.split(",") if o.strip())
    if args.upstream_host_mode == "compose":
        params = replace(
            compose_params(),
            listen_port=args.listen_port,
            admin_port=args.admin_port,
            cors_origins=origins,
            jwks_url=args.jwks_url or None,
        )
    else:
        params = local_params(
            listen_port=args.listen_port, admin_port=args.admin_port, cors_origins=origins
        )
        if args.jwks_url:
            params = replace(params, jwks_url=args.jwks_url)
    text = render(params)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "GatewayParams",
    "Upstream",
    "build_config",
    "compose_params",
    "local_params",
    "main",
    "render",
]
