"""Renders the Envoy gateway configuration (DESIGN.md §1, §6, §8).

One listener serves browsers (JSON, SSE, gRPC-Web) and native gRPC callers. HTTP
filters, in this order:

    cors -> grpc_web -> header_mutation -> grpc_json_transcoder -> jwt_authn -> router

- the transcoder maps every `google.api.http` route of every catalogue service (plus
  google.longrunning.Operations, served by mastery) to its gRPC method, so `jwt_authn`
  after it always sees `/<package>.<Service>/<Method>`, whichever way the caller came;
- `jwt_authn` leaves health and reflection open and requires a valid token (local
  JWKS, issuer, audience, `exp`) everywhere else; the token is forwarded, the services
  verify it again;
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
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import yaml
from google.protobuf import descriptor_pb2

from services.kit.catalogue import GATEWAY_ADMIN_PORT, GATEWAY_PORT, SERVICES, ServiceSpec
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
OPEN_PREFIXES: Final = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""gRPC paths that need no token (DESIGN.md §6)."""
SERVICE_HEADER: Final = "x-learnflow-service"
"""Names the service whose health or reflection an ops caller wants through the gateway."""

# Local replies (Envoy's own answers) as HTTP status -> google.rpc.Code for JSON callers.
LOCAL_REPLY_CODES: Final[Mapping[int, int]] = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,  # RESOURCE_EXHAUSTED
    431: 8,  # RESOURCE_EXHAUSTED
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
    """The JWKS as Envoy sees it; read once at start."""
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


def _jwt_filter(params: GatewayParams) -> JsonDict:
    open_rules: list[JsonDict] = [{"match": {"prefix": prefix}} for prefix in OPEN_PREFIXES]
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": f"{_TYPE}.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                JWT_PROVIDER: {
                    "issuer": params.issuer,
                    "audiences": list(params.audiences),
                    "local_jwks": {"filename": str(params.jwks_path)},
                    "forward": True,
                    "forward_payload_header": JWT_PAYLOAD_HEADER,
                    "require_expiration": True,
                    "clock_skew_seconds": 30,
                },
            },
            "rules": [
                *open_rules,
                {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}},
            ],
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
            )
        ),
        "expose_headers": "grpc-status,grpc-message,grpc-status-details-bin",
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
                        # No route timeout: the stream lives as long as the caller wants;
                        # idle streams are bounded by the HCM stream_idle_timeout.
                        "timeout": "0s",
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
                        # Honour a native caller's shorter grpc-timeout (deadline).
                        "max_stream_duration": {"grpc_timeout_header_max": timeout},
                    },
                }
            )
    # Health and reflection of one service (no token): pick it with a header, e.g.
    #   grpcurl -plaintext -H 'x-learnflow-service: concepts' localhost:8080 list
    for spec in SERVICES:
        for prefix in OPEN_PREFIXES:
            result.append(
                {
                    "name": f"ops:{spec.name}:{prefix.strip('/.')}",
                    "match": {
                        "prefix": prefix,
                        "headers": [{"name": SERVICE_HEADER, "string_match": {"exact": spec.name}}],
                    },
                    "route": {"cluster": spec.name, "timeout": "0s"},
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


def _status_body(code: int) -> JsonDict:
    return {
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
        "content_type": "application/json",
    }


def local_reply_config() -> JsonDict:
    mappers: list[JsonDict] = []
    for status, code in LOCAL_REPLY_CODES.items():
        mappers.append(
            {
                "filter": {
                    "and_filter": {
                        "filters": [
                            {
                                "status_code_filter": {
                                    "comparison": {
                                        "op": "EQ",
                                        "value": {"default_value": status, "runtime_key": "_"},
                                    }
                                }
                            },
                            _json_caller_filter(),
                        ]
                    }
                },
                "body_format_override": _status_body(code),
            }
        )
    # Any other local error reply to a JSON caller: UNKNOWN, keeping its HTTP status.
    mappers.append(
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {
                            "status_code_filter": {
                                "comparison": {
                                    "op": "GE",
                                    "value": {"default_value": 400, "runtime_key": "_"},
                                }
                            }
                        },
                        _json_caller_filter(),
                    ]
                }
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
        "stream_idle_timeout": "300s",
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


def build_config(params: GatewayParams) -> JsonDict:
    """The Envoy bootstrap as a dict (what `render` dumps)."""
    _check_params(params)
    clusters = [_cluster(spec, params.upstreams[spec.name], params) for spec in SERVICES]
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
    (or `ports[name]`), JWKS/issuer/audience from `settings` (default: the environment)."""
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
    args = parser.parse_args(argv)
    origins = tuple(o.strip() for o in args.cors_origins.split(",") if o.strip())
    if args.upstream_host_mode == "compose":
        params = replace(
            compose_params(),
            listen_port=args.listen_port,
            admin_port=args.admin_port,
            cors_origins=origins,
        )
    else:
        params = local_params(
            listen_port=args.listen_port, admin_port=args.admin_port, cors_origins=origins
        )
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
