"""Fair share in the sandbox, through a real sandbox gRPC server (limits counted on the
real Redis) and a real Envoy in front of it.

Regressions of the issue:
- with every slot busy, a program whose call has no deadline (every JSON and gRPC-Web
  call: Envoy sends none) answered 500 INTERNAL (OverflowError: a wait of grpc's "no
  deadline" overflowed time_t); now it waits at most SANDBOX_MAX_WAIT_SECONDS and is
  refused with RESOURCE_EXHAUSTED, a RetryInfo and `retry-after` (HTTP 429 via Envoy);
- one student's programs took every slot; now a student has one running, one more may
  wait briefly for it, and the rest are refused (RATE_LIMITED) while others run.

The server here is small on purpose (2 slots, short waits) so the tests are quick; the
loops ask for short wall limits. No timing is asserted beyond "refused at once" versus
"after a wait", with wide margins.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from google.protobuf.duration_pb2 import Duration
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc
from learnflow.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

from services.gateway.runner import Gateway
from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.sandbox.main import build
from tests.conftest import MintToken, free_port
from tests.support.rich_errors import refusal

pytestmark = pytest.mark.integration

LOOP = "while True:\n    pass\n"
MAX_WAIT = 1.5  # SANDBOX_MAX_WAIT_SECONDS of the server under test
USER_WAIT = 1.0  # SANDBOX_USER_WAIT_SECONDS


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def request(code: str, wall: float = 0.0) -> sandbox_pb2.ExecuteCodeRequest:
    limits = sandbox_pb2.ResourceLimits(wall_time=seconds(wall)) if wall else None
    return sandbox_pb2.ExecuteCodeRequest(code=code, limits=limits)


@pytest.fixture(scope="module")
def sandbox_port(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    small = settings.model_copy(
        update={
            "sandbox_workers": 2,
            "sandbox_queue_size": 8,
            "sandbox_max_wait_seconds": MAX_WAIT,
            "sandbox_user_wait_seconds": USER_WAIT,
            "sandbox_runs_per_user": 1,
            "sandbox_runs_per_staff": 2,
        }
    )
    runtime = Runtime(small, run_dir=tmp_path_factory.mktemp("fair-share"))
    server = LearnFlowServer(SERVICES_BY_NAME["sandbox"], build(runtime), small, port=0)
    server.start()
    yield server.port
    server.stop(grace=1.0)
    runtime.close()


@pytest.fixture(scope="module")
def stub(sandbox_port: int) -> Iterator[sandbox_pb2_grpc.SandboxServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{sandbox_port}") as channel:
        yield sandbox_pb2_grpc.SandboxServiceStub(channel)


@pytest.fixture(scope="module")
def gateway_url(
    settings: Settings, sandbox_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    gateway = Gateway(
        settings,
        listen_port=free_port(),
        admin_port=free_port(),
        ports={"sandbox": sandbox_port},
        run_dir=tmp_path_factory.mktemp("fair-share-gateway"),
    )
    gateway.start()
    yield gateway.url
    gateway.stop()


@pytest.fixture(scope="module")
def pool() -> Iterator[futures.ThreadPoolExecutor]:
    with futures.ThreadPoolExecutor(8) as threads:
        yield threads


@pytest.fixture
def student(mint_token: MintToken) -> Callable[[], list[tuple[str, str]]]:
    """A new student's call metadata each time (limits are per subject, on shared Redis)."""

    def new(role: str = "student") -> list[tuple[str, str]]:
        token = mint_token(f"fair-{uuid.uuid4().hex[:10]}", role, ("c1",))
        return [("authorization", f"Bearer {token}")]

    return new


def start_loops(
    pool: futures.ThreadPoolExecutor,
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    callers: list[list[tuple[str, str]]],
    wall: float,
) -> list[futures.Future[sandbox_pb2.ExecuteCodeResponse]]:
    loops = [
        pool.submit(stub.ExecuteCode, request(LOOP, wall), metadata=who, timeout=30)
        for who in callers
    ]
    time.sleep(0.8)  # every loop has its slot (a sandbox starts in ~25 ms)
    return loops


def json_detail(body: dict[str, Any], type_name: str) -> dict[str, Any]:
    for item in body["details"]:
        if item["@type"] == f"type.googleapis.com/{type_name}":
            return item  # type: ignore[no-any-return]
    raise AssertionError(f"no {type_name} in {body['details']}")


def finished(loops: list[futures.Future[sandbox_pb2.ExecuteCodeResponse]]) -> None:
    for loop in loops:
        assert loop.result(timeout=30).timed_out


# --- 1: a full sandbox and a call without a deadline -------------------------------------


def test_no_deadline_on_a_full_sandbox_is_resource_exhausted_not_internal(
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    pool: futures.ThreadPoolExecutor,
    student: Callable[[], list[tuple[str, str]]],
) -> None:
    loops = start_loops(pool, stub, [student(), student()], wall=4.0)  # both slots
    with pytest.raises(grpc.RpcError) as caught:
        stub.ExecuteCode(request("print(1)"), metadata=student())  # no deadline
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    reason, delay, header = refusal(caught.value)
    assert reason == "RESOURCE_EXHAUSTED"
    assert 0 < delay <= 4.0  # when the soonest loop reaches its wall limit
    assert header.isdigit() and int(header) >= 1
    # Refused after its bounded wait, while both loops still held the slots.
    assert not any(loop.done() for loop in loops)
    finished(loops)


def test_no_deadline_through_envoy_json_is_429_not_500(
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    gateway_url: str,
    pool: futures.ThreadPoolExecutor,
    student: Callable[[], list[tuple[str, str]]],
) -> None:
    loops = start_loops(pool, stub, [student(), student()], wall=4.0)
    headers = dict(student())
    response = httpx.post(
        f"{gateway_url}/v1/sandbox:executeCode",
        json={"code": "print(1)"},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == 8
    assert json_detail(body, "google.rpc.ErrorInfo")["reason"] == "RESOURCE_EXHAUSTED"
    assert json_detail(body, "google.rpc.RetryInfo")["retryDelay"].endswith("s")
    assert response.headers.get("retry-after", "").isdigit(), response.headers
    finished(loops)
    # With the slots free again, the same call runs.
    ran = httpx.post(
        f"{gateway_url}/v1/sandbox:executeCode",
        json={"code": "print(1)"},
        headers=headers,
        timeout=30,
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["stdout"] == "1\n"


# --- 2: one student's flood -----------------------------------------------------------------


def test_a_students_flood_is_refused_while_others_run(
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    pool: futures.ThreadPoolExecutor,
    student: Callable[[], list[tuple[str, str]]],
) -> None:
    flooder, other = student(), student()
    loops = start_loops(pool, stub, [flooder], wall=4.0)
    # A second program of the flooder waits briefly for their own slot...
    waiting = pool.submit(stub.ExecuteCode, request(LOOP, 4.0), metadata=flooder)
    time.sleep(0.2)
    # ... a third is refused at once (one waiting per running program) ...
    with pytest.raises(grpc.RpcError) as at_once:
        stub.ExecuteCode(request(LOOP, 4.0), metadata=flooder)
    assert not waiting.done()  # refused while the second still waited: at once
    assert at_once.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, delay, header = refusal(at_once.value)
    assert reason == "RATE_LIMITED"
    assert 1.0 < delay <= 4.0  # when the flooder's running loop reaches its wall limit
    assert header.isdigit() and 2 <= int(header) <= 4
    # ... while another student's program runs (the second slot is theirs).
    ran = stub.ExecuteCode(request("print(1)"), metadata=other, timeout=30)
    assert ran.stdout == "1\n"
    # The waiting one gave up after SANDBOX_USER_WAIT_SECONDS, with the same answer.
    with pytest.raises(grpc.RpcError) as after_wait:
        waiting.result(timeout=30)
    assert after_wait.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal(after_wait.value)[0] == "RATE_LIMITED"
    finished(loops)
    # Once the loop has ended, the flooder may run again.
    assert stub.ExecuteCode(request("print(2)"), metadata=flooder, timeout=30).stdout == "2\n"


def test_a_students_second_program_waits_for_the_first_and_runs(
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    pool: futures.ThreadPoolExecutor,
    student: Callable[[], list[tuple[str, str]]],
) -> None:
    # A double-clicked Run: the second waits for the first instead of being refused.
    who = student()
    first = pool.submit(
        stub.ExecuteCode, request("import time; time.sleep(0.3); print(1)"), metadata=who
    )
    time.sleep(0.1)
    second = stub.ExecuteCode(request("print(2)"), metadata=who, timeout=30)
    assert (first.result(timeout=30).stdout, second.stdout) == ("1\n", "2\n")


def test_staff_may_run_two_programs_at_once(
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    pool: futures.ThreadPoolExecutor,
    student: Callable[..., list[tuple[str, str]]],
) -> None:
    teacher = student("teacher")
    loops = start_loops(pool, stub, [teacher], wall=2.0)
    assert stub.ExecuteCode(request("print(1)"), metadata=teacher, timeout=30).stdout == "1\n"
    assert not loops[0].done()  # ran beside the loop, did not wait for it
    finished(loops)


def test_the_limit_is_shared_by_every_replica(
    settings: Settings,
    stub: sandbox_pb2_grpc.SandboxServiceStub,
    pool: futures.ThreadPoolExecutor,
    student: Callable[[], list[tuple[str, str]]],
    tmp_path: Path,
) -> None:
    # A second sandbox server on the same Redis: a student's loop on one replica counts
    # on the other too.
    replica_settings = settings.model_copy(update={"sandbox_user_wait_seconds": 0.0})
    runtime = Runtime(replica_settings, run_dir=tmp_path)
    replica = LearnFlowServer(SERVICES_BY_NAME["sandbox"], build(runtime), replica_settings, port=0)
    replica.start()
    try:
        who = student()
        loops = start_loops(pool, stub, [who], wall=3.0)
        with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
            other_replica = sandbox_pb2_grpc.SandboxServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                other_replica.ExecuteCode(request("print(1)"), metadata=who, timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reason, delay, _ = refusal(caught.value)
        assert reason == "RATE_LIMITED" and delay > 0
        finished(loops)
    finally:
        replica.stop(grace=1.0)
        runtime.close()


def test_a_limit_met_downstream_reaches_the_caller_with_its_retry_hint(
    mesh: dict[str, int],
    pool: futures.ThreadPoolExecutor,
    student: Callable[[], list[tuple[str, str]]],
) -> None:
    # The exercise service grades in the sandbox with the student's token: when the
    # student's own share is taken, the submission is refused as the sandbox refused it
    # (RATE_LIMITED, RetryInfo, retry-after), not as a bare "dependency busy".
    who = student()
    subject = who[0][1].removeprefix("Bearer ")
    with (
        grpc.insecure_channel(f"127.0.0.1:{mesh['sandbox']}") as sandbox_channel,
        grpc.insecure_channel(f"127.0.0.1:{mesh['exercise']}") as exercise_channel,
    ):
        sandbox = sandbox_pb2_grpc.SandboxServiceStub(sandbox_channel)
        exercises = exercise_pb2_grpc.ExerciseServiceStub(exercise_channel)
        first = exercises.ListExercises(
            exercise_pb2.ListExercisesRequest(page_size=1), metadata=who, timeout=10
        ).exercises[0]
        loops = start_loops(pool, sandbox, [who], wall=4.0)
        waiting = pool.submit(sandbox.ExecuteCode, request(LOOP, 4.0), metadata=who)
        time.sleep(0.2)
        student_id = _subject_of(subject)
        with pytest.raises(grpc.RpcError) as caught:
            exercises.CreateSubmission(
                exercise_pb2.CreateSubmissionRequest(
                    parent=f"students/{student_id}",
                    submission=exercise_pb2.Submission(exercise=first.name, code="x = 1\n"),
                ),
                metadata=who,
                timeout=30,
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reason, delay, header = refusal(caught.value)
        assert reason == "RATE_LIMITED"
        assert delay > 0 and header.isdigit() and int(header) >= 1
        # Nothing was graded or stored for the refused submission.
        listed = exercises.ListSubmissions(
            exercise_pb2.ListSubmissionsRequest(parent=f"students/{student_id}"),
            metadata=who,
            timeout=10,
        )
        assert list(listed.submissions) == []
        with pytest.raises(grpc.RpcError):
            waiting.result(timeout=30)
        finished(loops)


def _subject_of(token: str) -> str:
    subject: str = jwt.decode(token, options={"verify_signature": False})["sub"]
    return subject
