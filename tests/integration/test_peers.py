"""The kit's typed clients against the real services of the mesh."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import grpc
import pytest

from services.kit.interceptors import CallContext, _current
from services.kit.peers import MasteryClient, SandboxClient
from tests.conftest import MintToken

pytestmark = pytest.mark.integration

STUDENT = f"peers-{uuid.uuid4().hex[:8]}"


class _Inbound:
    def time_remaining(self) -> float | None:
        return 20.0


@pytest.fixture
def inside_a_call(mint_token: MintToken) -> Iterator[None]:
    """As if handling a student's request: their token travels on outgoing calls."""
    token = _current.set(
        CallContext(
            method="/test/Call",
            request_id="peers",
            principal=None,
            grpc_context=cast(grpc.ServicerContext, _Inbound()),
            authorization=f"Bearer {mint_token(STUDENT)}",
        )
    )
    yield
    _current.reset(token)


@pytest.mark.usefixtures("inside_a_call")
def test_sandbox_client_reports_runs_and_refusals(mesh: dict[str, int]) -> None:
    sandbox = SandboxClient(f"127.0.0.1:{mesh['sandbox']}")
    ran = sandbox.run("print(input() * 2)", stdin="ab\n")
    assert (ran.ok, ran.stdout, ran.precheck_failure) == (True, "abab\n", "")
    crashed = sandbox.run("1 / 0")
    assert not crashed.ok and "ZeroDivisionError" in crashed.stderr
    refused = sandbox.run("def f(:\n    pass\n")  # nothing runs: a syntax error
    assert not refused.ok
    assert refused.exit_code != 0 and refused.precheck_failure


@pytest.mark.usefixtures("inside_a_call")
def test_mastery_client_without_evidence_is_none(mesh: dict[str, int]) -> None:
    mastery = MasteryClient(f"127.0.0.1:{mesh['mastery']}")
    assert mastery.get("someone-else") is None  # refused: not the caller
    assert mastery.level(STUDENT) is None  # no evidence yet
