"""The debug agent on the running mesh: diagnoses from a traceback or by running the
code in the sandbox, the hint ladder's order enforced over gRPC and through Envoy,
struggle announced once per episode on Kafka, and triage routing debugging to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from confluent_kafka import Consumer
from google.protobuf import field_mask_pb2
from learnflow.common.v1 import common_pb2
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc
from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.triage.v1 import triage_pb2, triage_pb2_grpc

from services.kit.auth import DEV_TENANT
from services.kit.bus import decode_headers
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from tests.conftest import MintToken, bearer, free_port, wait_for
from tests.integration.test_struggle import StruggleWatch
from tests.support.openai_server import ScriptedOpenAI, json_reply, status_reply

pytestmark = pytest.mark.integration

KEY_ERROR_CODE = 'ages = {"amy": 31}\nprint(ages["bob"])\n'
KEY_ERROR_TRACEBACK = """Traceback (most recent call last):
  File "main.py", line 2, in <module>
    print(ages["bob"])
          ~~~~^^^^^^^
KeyError: 'bob'
"""
DIVIDE_CODE = "def mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([]))\n"
LEVEL = debug_pb2.HintLevel


@pytest.fixture(scope="module")
def debug(mesh: dict[str, int]) -> Iterator[debug_pb2_grpc.DebugServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh['debug']}")
    yield debug_pb2_grpc.DebugServiceStub(channel)
    channel.close()


def new_student() -> str:
    return f"dbg-{uuid.uuid4().hex[:8]}"


def diagnose(
    stub: debug_pb2_grpc.DebugServiceStub, token: str, student: str, code: str, traceback: str = ""
) -> debug_pb2.Diagnosis:
    reply: debug_pb2.Diagnosis = stub.CreateDiagnosis(
        debug_pb2.CreateDiagnosisRequest(
            parent=f"students/{student}",
            diagnosis=debug_pb2.Diagnosis(code=code, traceback=traceback),
        ),
        metadata=bearer(token),
        timeout=30,
    )
    return reply


def test_traceback_is_parsed_and_only_the_general_hint_is_shown(
    debug: debug_pb2_grpc.DebugServiceStub, mint_token: MintToken
) -> None:
    student = new_student()
    diagnosis = diagnose(debug, mint_token(student), student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    assert diagnosis.name.startswith(f"students/{student}/diagnoses/")
    assert (diagnosis.error.error_type, diagnosis.error.span.line) == ("KeyError", 2)
    assert diagnosis.error.message == "'bob'"
    assert diagnosis.error.source_line.strip() == 'print(ages["bob"])'
    assert diagnosis.topic == common_pb2.TOPIC_COLLECTIONS
    assert [h.level for h in diagnosis.hints] == [LEVEL.HINT_LEVEL_GENERAL]
    assert diagnosis.hints[0].text and not diagnosis.hints[0].fixed_code
    assert diagnosis.hints[0].HasField("reveal_time")
    assert not diagnosis.no_error


def test_the_ladder_goes_in_order_and_stops_after_the_solution(
    debug: debug_pb2_grpc.DebugServiceStub, mint_token: MintToken
) -> None:
    student = new_student()
    token = mint_token(student)
    diagnosis = diagnose(debug, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    reveal = debug_pb2.RevealNextHintRequest(name=diagnosis.name)
    second = debug.RevealNextHint(reveal, metadata=bearer(token), timeout=10)
    assert [h.level for h in second.hints] == [
        LEVEL.HINT_LEVEL_GENERAL,
        LEVEL.HINT_LEVEL_SPECIFIC,
    ]
    third = debug.RevealNextHint(reveal, metadata=bearer(token), timeout=10)
    assert [h.level for h in third.hints][-1] == LEVEL.HINT_LEVEL_SOLUTION
    assert third.hints[2].text
    with pytest.raises(grpc.RpcError) as caught:
        debug.RevealNextHint(reveal, metadata=bearer(token), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    again = debug.GetDiagnosis(
        debug_pb2.GetDiagnosisRequest(name=diagnosis.name), metadata=bearer(token), timeout=10
    )
    assert len(again.hints) == 3


def test_code_without_a_traceback_is_run_in_the_sandbox(
    debug: debug_pb2_grpc.DebugServiceStub, mint_token: MintToken
) -> None:
    student = new_student()
    token = mint_token(student)
    crashed = diagnose(debug, token, student, DIVIDE_CODE)
    assert crashed.error.error_type == "ZeroDivisionError"
    assert crashed.error.span.line == 2
    assert crashed.error.function == "mean"

    broken = diagnose(debug, token, student, "for i in range(3)\n    print(i)\n")
    assert (broken.error.error_type, broken.error.span.line) == ("SyntaxError", 1)

    fine = diagnose(debug, token, student, "print('hello')\n")
    assert fine.no_error and not fine.hints
    with pytest.raises(grpc.RpcError) as caught:
        debug.RevealNextHint(
            debug_pb2.RevealNextHintRequest(name=fine.name), metadata=bearer(token), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_access_and_bad_input(
    debug: debug_pb2_grpc.DebugServiceStub, mint_token: MintToken
) -> None:
    student = new_student()
    own = mint_token(student, "student", ("c-dbg",))
    diagnosis = diagnose(debug, own, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    get = debug_pb2.GetDiagnosisRequest(name=diagnosis.name)
    reveal = debug_pb2.RevealNextHintRequest(name=diagnosis.name)
    for stranger in (mint_token("someone-else"), mint_token("t-x", "teacher", ("c-other",))):
        for call, request in ((debug.GetDiagnosis, get), (debug.RevealNextHint, reveal)):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, metadata=bearer(stranger), timeout=10)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    teacher = mint_token("t-dbg", "teacher", ("c-dbg",))
    assert debug.GetDiagnosis(get, metadata=bearer(teacher), timeout=10).name == diagnosis.name
    with pytest.raises(grpc.RpcError) as caught:  # a teacher sees hints, never asks for them
        debug.RevealNextHint(reveal, metadata=bearer(teacher), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = debug.ListDiagnoses(
        debug_pb2.ListDiagnosesRequest(parent=f"students/{student}"),
        metadata=bearer(teacher),
        timeout=10,
    )
    assert [d.name for d in listed.diagnoses] == [diagnosis.name]

    with pytest.raises(grpc.RpcError) as caught:
        debug.CreateDiagnosis(
            debug_pb2.CreateDiagnosisRequest(
                parent=f"students/{student}",
                diagnosis=debug_pb2.Diagnosis(
                    code="", traceback="x" * (16 * 1024 + 1), exercise="nope"
                ),
            ),
            metadata=bearer(own),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    for field in ("diagnosis.code", "diagnosis.traceback", "diagnosis.exercise"):
        assert field in details


def test_repeated_error_is_announced_once_per_episode(
    debug: debug_pb2_grpc.DebugServiceStub, mint_token: MintToken, settings: Settings
) -> None:
    assert settings.kafka_bootstrap_servers
    watch = StruggleWatch(settings.kafka_bootstrap_servers)
    student = new_student()
    token = mint_token(student, "student", ("c-str",))
    try:
        flags = [
            diagnose(debug, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK).struggle_detected
            for _ in range(6)
        ]
        # A different error type is a different window.
        other = diagnose(debug, token, student, DIVIDE_CODE)
        found = watch.collect(student, at_least=1)
    finally:
        watch.close()
    assert flags == [False, False, False, True, True, True]  # "more than 3 times"
    assert not other.struggle_detected
    assert len(found) == 1, [e for _, e in found]
    headers, event = found[0]
    assert event.kind == events_pb2.StruggleDetected.KIND_REPEATED_ERROR
    assert event.error_type == "KeyError"
    assert event.topic == common_pb2.TOPIC_COLLECTIONS
    assert event.occurrence_count == 4
    assert len(event.evidence_ids) == 4
    assert (event.student.cohort, event.student.tenant) == ("c-str", DEV_TENANT)
    assert event.episode_id and headers["ce_id"] == f"struggle-{event.episode_id}"
    assert headers["ce_source"] == "//learnflow.dev/debug"


def test_hint_depth_is_published_with_the_progress_events(
    debug: debug_pb2_grpc.DebugServiceStub, mint_token: MintToken, settings: Settings
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"hints-{uuid.uuid4().hex}",
            "auto.offset.reset": "latest",  # the topic holds every test's events
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["progress.events"])
    wait_for(
        lambda: consumer.assignment() or (consumer.poll(0.2) and None) or None, 30, "assignment"
    )
    student = new_student()
    token = mint_token(student)
    diagnosis = diagnose(debug, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    debug.RevealNextHint(
        debug_pb2.RevealNextHintRequest(name=diagnosis.name), metadata=bearer(token), timeout=10
    )
    levels: dict[int, str] = {}

    def both_levels() -> dict[int, str] | None:
        for msg in consumer.consume(500, 0.5):
            if not msg.error() and msg.key() == student.encode():
                headers = decode_headers(msg.headers())
                event = events_pb2.HintRevealed.FromString(msg.value() or b"")
                assert event.diagnosis == diagnosis.name and event.error_type == "KeyError"
                assert event.student.tenant == DEV_TENANT
                levels[event.hint_level] = headers["ce_id"]
        return levels if len(levels) == 2 else None

    try:
        wait_for(both_levels, 30, "two HintRevealed events")
    finally:
        consumer.close()
    assert levels == {1: f"{diagnosis.name}/hints/1", 2: f"{diagnosis.name}/hints/2"}


# -- through Envoy ---------------------------------------------------------------------


def test_ladder_through_envoy(gateway_url: str, mint_token: MintToken) -> None:
    student = new_student()
    auth = {"authorization": f"Bearer {mint_token(student)}"}
    with httpx.Client(base_url=gateway_url, timeout=30, headers=auth) as client:
        created = client.post(
            f"/v1/students/{student}/diagnoses",
            json={"code": KEY_ERROR_CODE, "traceback": KEY_ERROR_TRACEBACK},
        )
        assert created.status_code == 200, created.text
        body: dict[str, Any] = created.json()
        assert body["error"]["errorType"] == "KeyError"
        assert [h["level"] for h in body["hints"]] == ["HINT_LEVEL_GENERAL"]
        levels = []
        for _ in range(2):
            revealed = client.post(f"/v1/{body['name']}:revealNextHint", json={})
            assert revealed.status_code == 200, revealed.text
            levels.append(revealed.json()["hints"][-1]["level"])
        assert levels == ["HINT_LEVEL_SPECIFIC", "HINT_LEVEL_SOLUTION"]
        done = client.post(f"/v1/{body['name']}:revealNextHint", json={})
        assert done.status_code == 400, done.text  # FAILED_PRECONDITION
        assert done.json()["code"] == 9


# -- triage ----------------------------------------------------------------------------


def test_triage_routes_code_with_a_traceback_to_the_debugger(
    mesh: dict[str, int], mint_token: MintToken
) -> None:
    student = new_student()
    token = mint_token(student)
    with grpc.insecure_channel(f"127.0.0.1:{mesh['triage']}") as channel:
        triage = triage_pb2_grpc.TriageServiceStub(channel)
        replies = list(
            triage.Ask(
                triage_pb2.AskRequest(
                    student=f"students/{student}",
                    question="why doesnt this work",
                    code=KEY_ERROR_CODE,
                    traceback=KEY_ERROR_TRACEBACK,
                ),
                metadata=bearer(token),
                timeout=30,
            )
        )
        assert replies[0].classification.intent == triage_pb2.INTENT_DEBUG
        text = "".join(r.chunk.text for r in replies[1:])
        assert {r.chunk.agent for r in replies[1:]} == {"debug"}
        assert "KeyError on line 2" in text and "next hint" in text
        context = triage.GetStudentContext(
            triage_pb2.GetStudentContextRequest(name=f"students/{student}/context"),
            metadata=bearer(token),
            timeout=10,
        )
    assert [(e.error_type, e.occurrence_count) for e in context.recent_errors] == [("KeyError", 1)]


def test_a_struggling_student_is_offered_a_targeted_exercise(
    mesh: dict[str, int], mint_token: MintToken
) -> None:
    student = new_student()
    token = mint_token(student)
    ask = triage_pb2.AskRequest(
        student=f"students/{student}",
        question="still broken",
        code=KEY_ERROR_CODE,
        traceback=KEY_ERROR_TRACEBACK,
    )
    with grpc.insecure_channel(f"127.0.0.1:{mesh['triage']}") as channel:
        triage = triage_pb2_grpc.TriageServiceStub(channel)
        answers = [
            "".join(r.chunk.text for r in triage.Ask(ask, metadata=bearer(token), timeout=30))
            for _ in range(4)
        ]
    assert not any("keeps coming back" in a for a in answers[:3])
    assert "**KeyError** keeps coming back" in answers[3]
    assert "exercises/" in answers[3]


# -- with a model ----------------------------------------------------------------------


@pytest.fixture
def debug_with_model(
    llm_settings: Settings,
    mesh: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
    model_use_granted: None,
) -> Iterator[debug_pb2_grpc.DebugServiceStub]:
    """A second debug server configured with the scripted model, on the mesh's parts."""
    spec = next(s for s in SERVICES if s.name == "debug")
    runtime = Runtime(llm_settings, run_dir=tmp_path_factory.mktemp("debug-llm"))
    port = free_port()
    server = LearnFlowServer(spec, builder("debug")(runtime), llm_settings, port=port)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield debug_pb2_grpc.DebugServiceStub(channel)
    channel.close()
    server.stop(grace=1.0)
    runtime.close()


GOOD_FIX = 'ages = {"amy": 31}\nprint(ages.get("bob", "unknown"))\n'


def model_hints(general: str, fixed_code: str) -> dict[str, str]:
    return {
        "general": general,
        "specific": "Line 2 asks the dictionary for a key it does not have.",
        "solution": "Use .get() with a default for names that may be missing.",
        "fixed_code": fixed_code,
    }


def reveal_all(
    stub: debug_pb2_grpc.DebugServiceStub, token: str, diagnosis: debug_pb2.Diagnosis
) -> debug_pb2.Diagnosis:
    for _ in range(2):
        diagnosis = stub.RevealNextHint(
            debug_pb2.RevealNextHintRequest(name=diagnosis.name),
            metadata=bearer(token),
            timeout=10,
        )
    return diagnosis


def test_model_hints_are_shown_when_their_fix_works(
    debug_with_model: debug_pb2_grpc.DebugServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    general = "A dictionary lookup failed: look at which keys exist."
    openai_server.enqueue(json_reply(model_hints(general, GOOD_FIX)))
    student = new_student()
    token = mint_token(student)
    diagnosis = diagnose(debug_with_model, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    assert diagnosis.hints[0].text == general
    solution = reveal_all(debug_with_model, token, diagnosis).hints[2]
    assert solution.fixed_code == GOOD_FIX
    assert "KeyError" in openai_server.requests[0]["messages"][1]["content"]


def test_a_students_code_reaches_the_model_only_with_their_consent(
    debug_with_model: debug_pb2_grpc.DebugServiceStub,
    channels: dict[str, grpc.Channel],
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    """The platform's default is no model use; the school's default, then the
    student's own choice, override it."""
    general = "A dictionary lookup failed: look at which keys exist."
    tenant = f"consent-{uuid.uuid4().hex[:6]}"
    student = new_student()
    token = mint_token(student, "student", (), tenant=tenant)
    admin = bearer(mint_token("root", "admin", tenant=tenant))
    mastery = mastery_pb2_grpc.MasteryServiceStub(channels["mastery"])

    def hint_of_diagnosis() -> str:
        openai_server.enqueue(json_reply(model_hints(general, GOOD_FIX)))
        diagnosis = diagnose(debug_with_model, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
        return diagnosis.hints[0].text

    assert hint_of_diagnosis() != general
    assert openai_server.requests == []  # nothing of theirs reached the model
    mastery.UpdateConsentDefaults(
        mastery_pb2.UpdateConsentDefaultsRequest(
            consent_defaults=mastery_pb2.ConsentDefaults(
                name=f"tenants/{tenant}/consentDefaults",
                model_use=mastery_pb2.ConsentDecision(granted=True),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["model_use"]),
        ),
        metadata=admin,
        timeout=10,
    )
    assert hint_of_diagnosis() == general
    assert len(openai_server.requests) == 1
    assert "KeyError" in openai_server.requests[0]["messages"][1]["content"]
    mastery.UpdateConsent(
        mastery_pb2.UpdateConsentRequest(
            consent=mastery_pb2.Consent(
                name=f"students/{student}/consent",
                model_use=mastery_pb2.ConsentDecision(granted=False),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["model_use"]),
        ),
        metadata=bearer(token),
        timeout=10,
    )
    openai_server.reset()
    assert hint_of_diagnosis() != general
    assert openai_server.requests == []


@pytest.mark.parametrize(
    ("general", "fixed_code", "why"),
    [
        ("Check the key.", 'ages = {"amy": 31}\nprint(ages["bobby"])\n', "fix still fails"),
        ("Write print(ages.get('bob', 'unknown')) instead.", GOOD_FIX, "general gives it away"),
        ("Check the key.", 'ages = {"amy": 31\nprint(ages)\n', "fix does not compile"),
    ],
)
def test_model_hints_that_fail_validation_are_replaced_by_offline_ones(
    debug_with_model: debug_pb2_grpc.DebugServiceStub,
    debug: debug_pb2_grpc.DebugServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
    general: str,
    fixed_code: str,
    why: str,
) -> None:
    openai_server.enqueue(json_reply(model_hints(general, fixed_code)))
    student = new_student()
    token = mint_token(student)
    with_model = diagnose(debug_with_model, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    offline = diagnose(debug, token, student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK)
    assert with_model.hints[0].text == offline.hints[0].text, why
    assert reveal_all(debug_with_model, token, with_model).hints[2].fixed_code != fixed_code
    assert len(openai_server.requests) == 1


def test_model_failure_gives_offline_hints(
    debug_with_model: debug_pb2_grpc.DebugServiceStub,
    openai_server: ScriptedOpenAI,
    mint_token: MintToken,
) -> None:
    openai_server.enqueue(status_reply(500))
    student = new_student()
    diagnosis = diagnose(
        debug_with_model, mint_token(student), student, KEY_ERROR_CODE, KEY_ERROR_TRACEBACK
    )
    assert diagnosis.error.error_type == "KeyError" and diagnosis.hints[0].text
