"""`learnflow`: run the mesh, serve one service, mint dev tokens, probe health.

learnflow run                     every service + Envoy, embedded defaults
learnflow serve <service>         one service alone (the production shape)
learnflow token --role student --sub alice [--tenant school-a] [--cohorts c1,c2]
learnflow probe <port>            exit 0 only if grpc.health.v1 says SERVING
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from typing import TYPE_CHECKING

from services.kit.catalogue import (
    GATEWAY_ADMIN_PORT,
    GATEWAY_PORT,
    SERVICES,
    SERVICES_BY_NAME,
    ServiceSpec,
)
from services.kit.config import ConfigError, Settings, load_settings
from services.kit.logging import configure_logging
from services.kit.metrics import serve_metrics

if TYPE_CHECKING:
    from services.gateway.runner import Gateway

log = logging.getLogger("learnflow.cli")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"learnflow: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from services.kit.runtime import Runtime
    from services.kit.server import LearnFlowServer, wait_for_termination
    from services.registry import builder

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    spec = SERVICES_BY_NAME[args.service]
    runtime = Runtime(settings)
    server = LearnFlowServer(spec, builder(spec.name)(runtime), settings, audit=runtime.audit)
    server.start()
    serve_metrics(settings)

    def stop() -> None:
        server.stop()
        runtime.close()

    wait_for_termination(stop)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from services.gateway.runner import Gateway
    from services.kit import devtokens
    from services.kit.runtime import Runtime
    from services.kit.server import LearnFlowServer, wait_for_termination
    from services.registry import builder
    from services.retention import RETAINING_SERVICES, RetentionSchedule

    started = time.perf_counter()
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    # The dev JWKS must exist before anything verifies a token; a given JWKS_PATH that
    # exists (an organisation's identity provider) is used as it is.
    if not settings.jwks_path.exists():
        devtokens.ensure_keys(settings=settings)
    runtime = Runtime(settings)
    names = args.services.split(",") if args.services else [s.name for s in SERVICES]
    unknown = [n for n in names if n not in SERVICES_BY_NAME]
    if unknown:
        print(f"learnflow run: unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    specs = [SERVICES_BY_NAME[n] for n in names]
    offset = args.port_offset
    # Services call one another at <SERVICE>_ADDR: point them at this run's ports.
    for spec in specs:
        os.environ.setdefault(spec.address_env, f"localhost:{spec.port + offset}")
    servers = [
        LearnFlowServer(
            spec,
            builder(spec.name)(runtime),
            settings,
            port=spec.port + offset,
            audit=runtime.audit,
        )
        for spec in specs
    ]
    for server in servers:
        server.start()
    serve_metrics(settings)
    gateway = None
    if not args.no_gateway:
        gateway_port = args.gateway_port or GATEWAY_PORT + offset
        gateway = Gateway(
            settings,
            listen_port=gateway_port,
            admin_port=gateway_port + GATEWAY_ADMIN_PORT - GATEWAY_PORT,
            ports={spec.name: spec.port + offset for spec in specs},
        )
        gateway.start()

    # The retention job, in this process, when it runs every service that keeps activity.
    retention = None
    if set(RETAINING_SERVICES) <= set(names):
        retention = RetentionSchedule(runtime, settings.retention_interval_hours * 3600)
        retention.start()

    elapsed = time.perf_counter() - started
    print(
        _banner(specs, runtime.describe(), gateway, offset, elapsed),
        flush=True,
    )

    def stop_all() -> None:
        if retention is not None:
            retention.stop()
        if gateway is not None:
            gateway.stop()
        with futures.ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(lambda s: s.stop(), servers))
        runtime.close()

    wait_for_termination(stop_all)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from services.kit.runtime import Runtime
    from services.kit.server import wait_for_termination
    from services.retention import RetentionSchedule, purge_everything

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime(settings)
    if args.every:
        schedule = RetentionSchedule(runtime, settings.retention_interval_hours * 3600)
        schedule.start()

        def stop() -> None:
            schedule.stop()
            runtime.close()

        wait_for_termination(stop)
        return 0
    try:
        report = purge_everything(runtime)
    finally:
        runtime.close()
    print(json.dumps({service: dict(kinds) for service, kinds in report.items()}, indent=1))
    return 0


def _banner(
    specs: Sequence[ServiceSpec],
    backends: dict[str, str],
    gateway: Gateway | None,
    offset: int,
    seconds: float,
) -> str:
    gateway_port = gateway.listen_port if gateway else GATEWAY_PORT + offset
    concepts_port = SERVICES_BY_NAME["concepts"].port + offset
    lines = [f"LearnFlow is up in {seconds:.1f}s", ""]
    for spec in specs:
        lines.append(f"  {spec.name:<9} grpc  localhost:{spec.port + offset}")
    if gateway:
        lines.append(f"  gateway   http  http://localhost:{gateway_port}  (gRPC, gRPC-Web, JSON)")
    lines.append("")
    lines.append("  backends: " + ", ".join(f"{k}={v}" for k, v in backends.items()))
    lines += [
        "",
        "Try it:",
        "  TOKEN=$(make -s token role=student sub=alice | tail -n1)",
        f"  grpcurl -plaintext localhost:{concepts_port} list",
        f'  grpcurl -plaintext -H "authorization: Bearer $TOKEN" localhost:{concepts_port} '
        "learnflow.concepts.v1.ConceptsService/ListTopics",
        f'  curl -H "authorization: Bearer $TOKEN" http://localhost:{gateway_port}/v1/topics',
        "",
        "Ctrl-C (or SIGTERM) stops everything gracefully.",
    ]
    return "\n".join(lines)


def cmd_token(args: argparse.Namespace) -> int:
    from services.kit import devtokens
    from services.kit.auth import DEV_TENANT

    settings = _settings()
    cohorts = [c for c in (args.cohorts or "").split(",") if c]
    try:
        token = devtokens.mint_token(
            args.sub,
            args.role,
            cohorts,
            ttl_seconds=args.ttl,
            tenant=args.tenant or DEV_TENANT,
            settings=settings,
        )
    except ValueError as exc:
        print(f"learnflow token: {exc}", file=sys.stderr)
        return 2
    print(
        f"# {args.role} {args.sub!r} of tenant {args.tenant or DEV_TENANT!r} "
        f"cohorts={cohorts}; JWKS at {settings.jwks_path}",
        file=sys.stderr,
    )
    print(token)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{args.host}:{args.port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"probe: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="learnflow", description=__doc__.splitlines()[0])
    sub = root.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every service and the Envoy gateway")
    run.add_argument("--services", help="comma-separated subset (default: all)")
    run.add_argument("--no-gateway", action="store_true", help="do not start Envoy")
    run.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="add N to every service port (to run a second mesh beside the first)",
    )
    run.add_argument(
        "--gateway-port",
        type=int,
        default=0,
        help="Envoy's port (default 8080 + offset; its admin port is 1821 above it)",
    )
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=[s.name for s in SERVICES])
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="mint a dev JWT (and write the JWKS)")
    token.add_argument("--role", required=True, choices=["student", "teacher", "admin", "operator"])
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--tenant", default="", help="school or organisation (default: dev)")
    token.add_argument("--cohorts", default="", help="comma-separated cohort ids")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds (default 12 h)")
    token.set_defaults(func=cmd_token)

    purge = sub.add_parser(
        "purge", help="purge activity older than RETENTION_DAYS (the retention job), once"
    )
    purge.add_argument(
        "--every",
        action="store_true",
        help="keep running, every RETENTION_INTERVAL_HOURS (where no scheduler runs it)",
    )
    purge.set_defaults(func=cmd_purge)

    probe = sub.add_parser("probe", help="gRPC health check; exit 0 when SERVING")
    probe.add_argument("port", type=int)
    probe.add_argument("--host", default="localhost")
    probe.add_argument("--service", default="", help="service name (default: whole server)")
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.set_defaults(func=cmd_probe)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    threading.current_thread().name = "main"
    sys.exit(main())
