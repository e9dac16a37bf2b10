"""The shared model layer through the real `openai` client against the scripted
OpenAI-compatible server: structured output, streaming, failures, the breaker."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from services.kit.auth import Principal, Role
from services.kit.breaker import BreakerState
from services.kit.config import Settings
from services.kit.interceptors import CallContext, _current
from services.kit.limits import InProcessLimiter
from services.kit.llm import LLM, LLMUnavailable, Prompt, PromptTemplates
from services.kit.runtime import Runtime
from tests.conftest import every_student_consents, wait_for
from tests.support.openai_server import (
    ScriptedOpenAI,
    broken_stream,
    json_reply,
    malformed_reply,
    stall,
    status_reply,
    stream_reply,
    text_reply,
)

PROMPT = Prompt(name="t", system="You are a tutor.", user="Explain loops.")


class Answer(BaseModel):
    title: str
    steps: list[str]


def breaker_of(llm: LLM) -> BreakerState:
    # A call, not the property: mypy would narrow the property across assertions.
    return llm.breaker_state


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unavailable_reason(call: object) -> str:
    with pytest.raises(LLMUnavailable) as caught:
        if callable(call):
            result = call()
            if not isinstance(result, str | BaseModel):
                list(result)  # a stream
    return caught.value.reason


def test_structured_output_is_validated_and_usage_counted(
    llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    tokens_before = metric("learnflow_llm_tokens_total", agent="concepts", kind="completion")
    openai_server.enqueue(json_reply({"title": "Loops", "steps": ["for", "while"]}))

    answer = llm.structured(PROMPT, Answer, agent="concepts")

    assert answer == Answer(title="Loops", steps=["for", "while"])
    sent = openai_server.requests[-1]
    assert sent["model"] == "test-model"
    assert sent["messages"][0] == {"role": "system", "content": "You are a tutor."}
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["title", "steps"]
    assert metric("learnflow_llm_tokens_total", agent="concepts", kind="completion") > tokens_before


def test_fenced_json_is_accepted(llm: LLM, openai_server: ScriptedOpenAI) -> None:
    openai_server.enqueue(text_reply('```json\n{"title": "x", "steps": []}\n```'))
    assert llm.structured(PROMPT, Answer, agent="t").title == "x"


def test_wrong_shape_is_refused_without_tripping_the_breaker(
    llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    for _ in range(6):
        openai_server.enqueue(json_reply({"title": 3}))
        assert unavailable_reason(lambda: llm.structured(PROMPT, Answer, agent="t")) == (
            "invalid_output"
        )
    openai_server.enqueue(text_reply("not json at all"))
    assert unavailable_reason(lambda: llm.structured(PROMPT, Answer, agent="t")) == (
        "invalid_output"
    )
    assert breaker_of(llm) == BreakerState.CLOSED
    assert len(openai_server.requests) == 7


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (status_reply(500), "server_error"),
        (status_reply(503), "server_error"),
        (status_reply(429), "rate_limited"),
        (malformed_reply(), "malformed"),
    ],
)
def test_provider_failures_raise_with_a_reason(
    llm: LLM, openai_server: ScriptedOpenAI, reply: object, reason: str
) -> None:
    openai_server.enqueue(reply)  # type: ignore[arg-type]
    assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == reason


def test_timeout(llm_settings: Settings, openai_server: ScriptedOpenAI) -> None:
    llm = LLM(
        llm_settings.model_copy(update={"openai_timeout_seconds": 0.3}),
        model_use=every_student_consents,
    )
    openai_server.enqueue(stall(1.5))  # answers after 1.5 s: only a timeout fails the call
    assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "timeout"


def test_client_retries_transient_errors(
    llm_settings: Settings, openai_server: ScriptedOpenAI
) -> None:
    llm = LLM(
        llm_settings.model_copy(update={"openai_max_retries": 1}), model_use=every_student_consents
    )
    openai_server.enqueue(status_reply(500), text_reply("second time lucky"))
    assert llm.text(PROMPT, agent="t") == "second time lucky"
    assert len(openai_server.requests) == 2


def test_without_a_key_nothing_is_called(settings: Settings, openai_server: ScriptedOpenAI) -> None:
    llm = LLM(settings, model_use=every_student_consents)
    assert not llm.enabled
    assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "no_api_key"
    assert openai_server.requests == []


def test_breaker_opens_after_five_failures_then_probes_and_closes(
    llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(*[status_reply(500)] * 5)
    for _ in range(5):
        assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "server_error"
    assert breaker_of(llm) == BreakerState.OPEN

    # Open: fall back at once, the provider is not bothered.
    assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "circuit_open"
    assert len(openai_server.requests) == 5

    time.sleep(0.55)  # llm_breaker_reset_seconds = 0.5
    assert breaker_of(llm) == BreakerState.HALF_OPEN
    openai_server.enqueue(text_reply("back"))
    assert llm.text(PROMPT, agent="t") == "back"
    assert breaker_of(llm) == BreakerState.CLOSED
    assert len(openai_server.requests) == 6


def test_failed_probe_reopens(llm: LLM, openai_server: ScriptedOpenAI) -> None:
    openai_server.enqueue(*[status_reply(502)] * 6)
    for _ in range(5):
        unavailable_reason(lambda: llm.text(PROMPT, agent="t"))
    time.sleep(0.55)
    assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "server_error"
    assert breaker_of(llm) == BreakerState.OPEN
    assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "circuit_open"
    assert len(openai_server.requests) == 6


def test_half_open_sends_a_single_probe(llm: LLM, openai_server: ScriptedOpenAI) -> None:
    openai_server.enqueue(*[status_reply(500)] * 5)
    for _ in range(5):
        unavailable_reason(lambda: llm.text(PROMPT, agent="t"))
    time.sleep(0.55)
    openai_server.enqueue(stall(1.0))  # a slow but successful probe
    outcomes: list[str] = []

    def call() -> None:
        try:
            outcomes.append(llm.text(PROMPT, agent="t"))
        except LLMUnavailable as exc:
            outcomes.append(exc.reason)

    probe = threading.Thread(target=call)
    probe.start()
    wait_for(lambda: len(openai_server.requests) == 6 or None, 5, "the probe to reach the server")
    others = [threading.Thread(target=call) for _ in range(3)]
    for t in others:
        t.start()
    for t in [probe, *others]:
        t.join()
    assert sorted(outcomes) == ["circuit_open"] * 3 + ["too late"]
    assert len(openai_server.requests) == 6
    assert breaker_of(llm) == BreakerState.CLOSED


def test_stream_yields_pieces_in_order(llm: LLM, openai_server: ScriptedOpenAI) -> None:
    openai_server.enqueue(stream_reply(["A for ", "loop ", "repeats."]))
    assert list(llm.stream(PROMPT, agent="triage")) == ["A for ", "loop ", "repeats."]
    assert openai_server.requests[-1]["stream"] is True


def test_stream_that_fails_to_start_raises_before_any_piece(
    llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(status_reply(500))
    pieces: list[str] = []
    with pytest.raises(LLMUnavailable) as caught:
        for piece in llm.stream(PROMPT, agent="t"):
            pieces.append(piece)
    assert caught.value.reason == "server_error"
    assert pieces == []


def test_stream_broken_midway_raises_after_what_was_said(
    llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    openai_server.enqueue(broken_stream(["first ", "second "]))
    pieces: list[str] = []
    with pytest.raises(LLMUnavailable):
        for piece in llm.stream(PROMPT, agent="t"):
            pieces.append(piece)
    assert pieces == ["first ", "second "]


def test_prompt_templates_render_and_refuse_missing_variables(tmp_path: Path) -> None:
    (tmp_path / "explain.system.j2").write_text("You teach {{ level }} students.\n")
    (tmp_path / "explain.user.j2").write_text(
        "Explain {{ topic }}.{% if question %} They asked: {{ question }}{% endif %}\n"
    )
    templates = PromptTemplates(tmp_path)
    assert templates.names == ["explain"]
    prompt = templates.render("explain", level="beginner", topic="loops", question="")
    assert prompt == Prompt("explain", "You teach beginner students.", "Explain loops.")
    with pytest.raises(Exception, match="topic"):
        templates.render("explain", level="beginner", question="")

    (tmp_path / "orphan.system.j2").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"orphan\.user\.j2"):
        PromptTemplates(tmp_path)


class _Inbound:
    """The gRPC call being served, as far as its remaining time goes."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def test_model_is_not_called_without_time_to_fall_back(
    llm: LLM, openai_server: ScriptedOpenAI
) -> None:
    call = CallContext(
        method="/learnflow.test/Method",
        request_id="r1",
        principal=None,
        grpc_context=cast(grpc.ServicerContext, _Inbound(1.2)),
        authorization=None,
    )
    token = _current.set(call)
    try:
        assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "no_time_left"
    finally:
        _current.reset(token)
    assert openai_server.requests == []
    assert breaker_of(llm) == BreakerState.CLOSED


# --- fair share: model calls per user -----------------------------------------------------


@contextlib.contextmanager
def serving(subject: str | None) -> Iterator[None]:
    """As if handling an RPC of `subject` (None: a call without a token)."""
    principal = Principal(subject=subject, role=Role.STUDENT) if subject else None
    token = _current.set(
        CallContext(
            method="/learnflow.test/Method",
            request_id="r-share",
            principal=principal,
            grpc_context=cast(grpc.ServicerContext, _Inbound(None)),
            authorization=None,
        )
    )
    try:
        yield
    finally:
        _current.reset(token)


def _one_call_each(llm_settings: Settings) -> LLM:
    return LLM(
        llm_settings.model_copy(update={"llm_calls_per_user": 1}),
        InProcessLimiter(),
        model_use=every_student_consents,
    )


def test_over_the_per_user_limit_the_agent_falls_back_without_calling(
    llm_settings: Settings, openai_server: ScriptedOpenAI
) -> None:
    llm = _one_call_each(llm_settings)
    openai_server.enqueue(stream_reply(["first ", "second"]), text_reply("for bob"))
    before = metric("learnflow_llm_requests_total", agent="t", outcome="user_limit")
    with serving("alice"):
        stream = llm.stream(PROMPT, agent="t")
        assert next(stream) == "first "  # alice's one call is in flight
        assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "user_limit"
        assert len(openai_server.requests) == 1  # the refused call reached no model
    with serving("bob"):
        assert llm.text(PROMPT, agent="t") == "for bob"  # other users are not affected
    assert list(stream) == ["second"]
    assert metric("learnflow_llm_requests_total", agent="t", outcome="user_limit") == before + 1
    assert breaker_of(llm) == BreakerState.CLOSED  # a user's limit says nothing of the model
    # Alice's call has ended: she may call again.
    openai_server.enqueue(text_reply("again"))
    with serving("alice"):
        assert llm.text(PROMPT, agent="t") == "again"


def test_a_failed_call_gives_its_share_back(
    llm_settings: Settings, openai_server: ScriptedOpenAI
) -> None:
    llm = _one_call_each(llm_settings)
    openai_server.enqueue(status_reply(500), json_reply({"title": "x", "steps": []}))
    with serving("carol"):
        assert unavailable_reason(lambda: llm.text(PROMPT, agent="t")) == "server_error"
        assert llm.structured(PROMPT, Answer, agent="t").title == "x"


def test_calls_outside_a_users_request_are_not_counted(
    llm_settings: Settings, openai_server: ScriptedOpenAI
) -> None:
    llm = _one_call_each(llm_settings)
    openai_server.enqueue(stream_reply(["a", "b"]), text_reply("batch"))
    with serving(None):
        stream = llm.stream(PROMPT, agent="t")
        assert next(stream) == "a"
        assert llm.text(PROMPT, agent="t") == "batch"
        assert list(stream) == ["b"]


def test_the_runtime_counts_model_calls_on_its_shared_limiter(
    llm_settings: Settings, openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    # Runtime.llm is wired to Runtime.limiter (Redis when REDIS_URL is set: one count for
    # the user across every service and replica).
    runtime = Runtime(llm_settings.model_copy(update={"llm_calls_per_user": 1}), tmp_path)
    try:
        llm = runtime.llm
        user = f"dave-{uuid.uuid4().hex[:8]}"
        openai_server.enqueue(stream_reply(["x", "y"]))
        with serving(user):
            stream = llm.stream(PROMPT, agent="t")
            assert next(stream) == "x"
            other_service = LLM(
                runtime.settings, runtime.limiter, model_use=every_student_consents
            )  # another agent's client
            assert unavailable_reason(lambda: other_service.text(PROMPT, agent="t")) == (
                "user_limit"
            )
            assert list(stream) == ["y"]
    finally:
        runtime.close()
