"""Robustness against bad inputs, driven by the contract (tests/support/contract_fuzz.py).

For every RPC of every service (discovered from the descriptor set, so new RPCs are
covered without touching this file), generated bad inputs go through Envoy as JSON and
as native gRPC, and straight to each service's port: wrong types, missing and oversized
fields, NUL and odd unicode, malformed names and page tokens, bad enums, undecodable
bytes, no or bad tokens. No answer may be INTERNAL, UNKNOWN or DATA_LOSS, or an HTTP 5xx
(or no answer at all); every service still answers health afterwards.

A failure lists every offending class: method | transport | input kind | status | count
| message (with the server-side exception behind an INTERNAL, the mesh being in this
process) | example inputs. Every answer is also written, one JSON object a line, to
`robustness.jsonl` in the test's temporary directory.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from http import HTTPStatus
from pathlib import Path
from typing import get_args
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kit import devtokens
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from tests.conftest import MintToken
from tests.support.contract_fuzz import (
    GRPC_DIRECT,
    GRPC_ENVOY,
    JSON_ENVOY,
    TRANSPORTS,
    Contract,
    Generator,
    Identity,
    Outcome,
    Plan,
    Runner,
    ServerErrors,
    failure_classes,
    summary,
    to_proto,
)

pytestmark = pytest.mark.integration

WORKERS = 6


@dataclass
class Campaign:
    contract: Contract
    plan: Plan
    outcomes: list[Outcome]
    skipped: dict[str, int]
    seconds: float
    report: Path


def _page_tokens(contract: Contract, generator: Generator, ports: dict[str, int]) -> list[str]:
    """Real page tokens (from list methods asked for one item), to forge look-alikes."""
    tokens = []
    for method in contract.methods:
        spec = contract.messages[method.input_type]
        if spec.field("page_token") is None or spec.field("page_size") is None:
            continue
        if method.server_streaming or method.client_streaming:
            continue
        request = {**generator.base(method), "page_size": 1}
        response_class = contract.message_class(method.output_type)
        with grpc.insecure_channel(f"127.0.0.1:{ports[method.server]}") as channel:
            call = channel.unary_unary(method.path)
            try:
                raw = call(
                    to_proto(contract, method.input_type, request),
                    timeout=10,
                    metadata=[("authorization", generator.authorization(method))],
                )
            except grpc.RpcError:
                continue
        token = getattr(response_class.FromString(raw), "next_page_token", "")
        if token:
            tokens.append(str(token))
    return tokens


@pytest.fixture(scope="module")
def campaign(
    mesh: dict[str, int],
    gateway_url: str,
    mint_token: MintToken,
    dev_key_dir: Path,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Campaign]:
    run = uuid.uuid4().hex[:8]
    student, cohort = f"fz-{run}", f"fzc-{run}"
    identity = Identity(
        student=student,
        cohort=cohort,
        student_auth=f"Bearer {mint_token(student, 'student', (cohort,))}",
        teacher_auth=f"Bearer {mint_token(f'fzt-{run}', 'teacher', (cohort,))}",
        other_student_auth=f"Bearer {mint_token(f'fzo-{run}', 'student', (cohort,))}",
    )
    extra_auth = [
        (
            f"{kind} token",
            "Bearer "
            + devtokens.bad_token(
                kind, student, "student", (cohort,), key_dir=dev_key_dir, settings=settings
            ),
        )
        for kind in get_args(devtokens.BadTokenKind)
    ]
    contract = Contract()
    generator = Generator(contract, identity, extra_auth=extra_auth)
    generator.page_tokens = _page_tokens(contract, generator, mesh)
    plan = generator.plan()
    errors = ServerErrors()
    errors.install()
    gateway = urlsplit(gateway_url)
    runner = Runner(
        (gateway.hostname or "127.0.0.1", gateway.port or 80), mesh, errors, workers=WORKERS
    )
    started = time.monotonic()
    try:
        outcomes = runner.run(plan)
    finally:
        runner.close()
        errors.uninstall()
    seconds = time.monotonic() - started
    report = tmp_path_factory.mktemp("robustness") / "robustness.jsonl"
    with report.open("w", encoding="utf-8") as out:
        for outcome in outcomes:
            out.write(json.dumps(asdict(outcome), ensure_ascii=False) + "\n")
    yield Campaign(contract, plan, outcomes, dict(runner.skipped), seconds, report)


def _assert_no_crash(campaign: Campaign, transport: str) -> None:
    mine = [o for o in campaign.outcomes if o.transport == transport]
    assert mine, f"no input was sent on {transport}"
    classes = failure_classes(mine)
    if classes:
        offending = sum(o.offending for o in mine)
        pytest.fail(
            f"{offending} of {len(mine)} inputs on {transport} crashed a service or the "
            f"gateway, in {len(classes)} classes "
            "(method | transport | kind | status | count | message | e.g.):\n"
            + "\n".join(classes)
            + f"\nevery answer: {campaign.report}",
            pytrace=False,
        )


def test_every_served_rpc_is_discovered_and_exercised(campaign: Campaign) -> None:
    """Discovery comes from the descriptor set: every catalogue service is there, and each
    of its methods got inputs on every transport it has."""
    served = {full for spec in SERVICES for full in spec.full_names}
    assert campaign.contract.services() == served
    tried: dict[str, set[str]] = {}
    for outcome in campaign.outcomes:
        tried.setdefault(outcome.method, set()).add(outcome.transport)
    for method in campaign.contract.methods:
        expected = {GRPC_DIRECT, GRPC_ENVOY} | ({JSON_ENVOY} if method.bindings else set())
        assert tried.get(method.label, set()) >= expected, (method.label, tried.get(method.label))


def test_report(
    campaign: Campaign,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """Says how many inputs were tried, per transport and in all, in every run's output
    (before the verdicts, so it shows even when one of them stops the run)."""
    line = summary(campaign.outcomes, campaign.skipped) + (
        f" in {campaign.seconds:.0f}s; answers in {campaign.report}"
    )
    for transport in TRANSPORTS:
        count = sum(o.transport == transport for o in campaign.outcomes)
        record_property(f"inputs_{transport}", count)
    record_property("inputs_total", len(campaign.outcomes))
    with capsys.disabled():
        print(f"\n{line}")
    assert len(campaign.outcomes) > 0


def test_no_json_input_through_envoy_crashes_anything(campaign: Campaign) -> None:
    _assert_no_crash(campaign, JSON_ENVOY)


def test_no_grpc_input_straight_to_a_service_crashes_it(campaign: Campaign) -> None:
    _assert_no_crash(campaign, GRPC_DIRECT)


def test_no_grpc_input_through_envoy_crashes_anything(campaign: Campaign) -> None:
    _assert_no_crash(campaign, GRPC_ENVOY)


def test_every_service_serves_health_afterwards(
    campaign: Campaign, mesh: dict[str, int], gateway_url: str, mint_token: MintToken
) -> None:
    """grpc.health.v1 on every service's port (where it needs no token) says SERVING for
    the server and each of its services, and the gateway still answers a plain call."""
    problems = []
    for spec in SERVICES:
        with grpc.insecure_channel(f"127.0.0.1:{mesh[spec.name]}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", *spec.full_names):
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                except grpc.RpcError as exc:
                    problems.append(f"{spec.name} {name!r}: {exc.code().name}")
                    continue
                if answer.status != health_pb2.HealthCheckResponse.SERVING:
                    problems.append(f"{spec.name} {name!r}: {answer.status}")
    token = mint_token(f"fz-after-{uuid.uuid4().hex[:8]}", "student")
    response = httpx.get(
        f"{gateway_url}/v1/topics", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    if response.status_code != HTTPStatus.OK:
        problems.append(f"gateway: GET /v1/topics answered {response.status_code}")
    assert not problems, problems
