"""The model layer every agent shares: the official `openai` client against any
OpenAI-compatible endpoint, prompt templates kept as files, structured output validated
before use, streaming, a circuit breaker, and token/latency metrics.

Agents never depend on it answering: every call either returns something usable or
raises `LLMUnavailable`, and the agent falls back to its offline engine. Without
`OPENAI_API_KEY` nothing is called at all (the run command's default).

Breaker: a call that fails at the transport (timeout, connection, 429 or 5xx after the
client's own retries, an unreadable body) counts as a failure; after
`LLM_BREAKER_FAILURES` consecutive ones (5) the circuit opens and calls fall back at
once; after `LLM_BREAKER_RESET_SECONDS` a single probe goes through (half-open) while
other calls keep falling back; its success closes the circuit, its failure re-opens it.
An answer that arrives but fails the caller's schema is the model's content, not the
provider's health: it is refused (`invalid_output`) without tripping the breaker.

Fair share: one user may have at most `LLM_CALLS_PER_USER` (2) model calls in flight at
once, counted on the runtime's `Limiter` (Redis: across every service and replica),
keyed by the subject of the token of the call being served; calls made outside an RPC
(batch jobs) are not counted. Over the limit the call is not made and raises
LLMUnavailable("user_limit"): the agent answers from its offline engine, as it does for
every other reason the model cannot answer. That is chosen over RESOURCE_EXHAUSTED
because what the limit protects is the shared model (its quota, rate limits and cost,
which one user's flood would spend for everyone): falling back protects it just as well
while the over-limit student still gets a correct, plainer answer at once, whereas a
refusal would fail a request the mesh can serve, and would break the contract every
agent is built on (the model is never required). Refusals with RESOURCE_EXHAUSTED /
HTTP 429 are for what has no offline answer: running code (the sandbox) and streams.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import jinja2
import openai
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError

from services.kit.breaker import BreakerState, CircuitBreaker
from services.kit.config import Settings
from services.kit.consent import ModelUse
from services.kit.interceptors import maybe_current_call
from services.kit.limits import Limiter

log = logging.getLogger("learnflow.llm")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

REQUESTS = Counter(
    "learnflow_llm_requests",
    "Model calls by agent and outcome (ok, or why the agent fell back).",
    ["agent", "outcome"],
)
TOKENS = Counter("learnflow_llm_tokens", "Tokens reported by the provider.", ["agent", "kind"])
LATENCY = Histogram(
    "learnflow_llm_latency_seconds",
    "Whole-call latency of successful model calls.",
    ["agent", "call"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60),
)
FIRST_TOKEN = Histogram(
    "learnflow_llm_first_token_seconds",
    "Time to the first streamed content.",
    ["agent"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
BREAKER_STATE = Gauge(
    "learnflow_llm_breaker_open", "1 while the model circuit is open or half-open."
)


# Time kept back from the caller's deadline for the offline answer after a model
# failure, and the least worth spending on a model call at all.
FALLBACK_RESERVE_SECONDS = 1.0
MIN_MODEL_SECONDS = 0.5


class LLMUnavailable(Exception):  # noqa: N818 - a state the caller falls back on
    """The model gave nothing usable; `reason` says why (a metric label)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class _ProviderError(Exception):
    """Internal: a failure that counts toward the breaker."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    system: str
    user: str

    def messages(self) -> list[ChatCompletionMessageParam]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]


class PromptTemplates:
    """Jinja2 prompt files in one directory: `<name>.system.j2` and `<name>.user.j2`.

    A variable the template uses but the caller did not pass is an error, not an
    empty string: a silently blank prompt is the worst kind of bug to find.
    """

    def __init__(self, directory: Path) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - prompts are plain text for a model, not HTML
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.names = sorted(
            p.name.removesuffix(".system.j2") for p in directory.glob("*.system.j2")
        )
        for name in self.names:
            if not (directory / f"{name}.user.j2").is_file():
                raise FileNotFoundError(f"prompt {name!r} has no {name}.user.j2 in {directory}")

    def render(self, name: str, **variables: Any) -> Prompt:
        system = self._env.get_template(f"{name}.system.j2").render(**variables)
        user = self._env.get_template(f"{name}.user.j2").render(**variables)
        return Prompt(name=name, system=system.strip(), user=user.strip())


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_structured(content: str, output: type[M]) -> M:
    """The model's text as `output`, or LLMUnavailable('invalid_output').

    Tolerates a Markdown fence around the JSON (some compatible servers add one even
    when asked for a JSON schema); anything else that is not the schema is refused.
    """
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return output.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise LLMUnavailable("invalid_output", f"{where}: {first['msg']}") from None


class LLM:
    """One per process, shared by its agents (the breaker is about the provider).

    `model_use`: whether the current call's students consent to model use
    (services/kit/consent.py); without it the call is answered offline.
    `limiter`: where the per-user limit on calls in flight is counted (the runtime's;
    None: no per-user limit)."""

    def __init__(
        self, settings: Settings, limiter: Limiter | None = None, *, model_use: ModelUse
    ) -> None:
        self.model = settings.openai_model
        self._model_use = model_use
        self._timeout = settings.openai_timeout_seconds
        self._limiter = limiter
        self._calls_per_user = settings.llm_calls_per_user
        self._client: openai.OpenAI | None = None
        if settings.openai_api_key:
            self._client = openai.OpenAI(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url or None,
                timeout=settings.openai_timeout_seconds,
                max_retries=settings.openai_max_retries,
            )
        self._breaker = CircuitBreaker(
            failures=settings.llm_breaker_failures,
            reset_seconds=settings.llm_breaker_reset_seconds,
        )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def breaker_state(self) -> BreakerState:
        return self._breaker.state

    # -- calls -------------------------------------------------------------------------

    def structured(
        self, prompt: Prompt, output: type[M], *, agent: str, max_tokens: int = 2048
    ) -> M:
        """A JSON answer validated against `output` (a pydantic model)."""
        response_format: Any = {
            "type": "json_schema",
            "json_schema": {"name": output.__name__, "schema": output.model_json_schema()},
        }
        content = self._complete(prompt, agent, "structured", max_tokens, response_format)
        try:
            result = parse_structured(content, output)
        except LLMUnavailable as exc:
            REQUESTS.labels(agent, exc.reason).inc()
            log.warning(
                "model answer refused",
                extra={"agent": agent, "prompt": prompt.name, "reason": str(exc)},
            )
            raise
        REQUESTS.labels(agent, "ok").inc()
        return result

    def text(self, prompt: Prompt, *, agent: str, max_tokens: int = 1024) -> str:
        content = self._complete(prompt, agent, "text", max_tokens, None)
        REQUESTS.labels(agent, "ok").inc()
        return content

    def stream(self, prompt: Prompt, *, agent: str, max_tokens: int = 1024) -> Iterator[str]:
        """Content pieces as the model produces them. LLMUnavailable before the first
        piece means nothing was said (fall back); during the stream, the caller has
        shown part of an answer and decides how to finish it."""
        client = self._require_client(agent)
        self._require_consent(agent)
        timeout = self._request_timeout(agent)
        with self._user_share(agent):
            yield from self._stream(client, prompt, agent, max_tokens, timeout)

    def _stream(
        self, client: openai.OpenAI, prompt: Prompt, agent: str, max_tokens: int, timeout: float
    ) -> Iterator[str]:
        started = time.perf_counter()
        finished = False

        def take(chunk: Any) -> str:
            # A stream is complete only when the model says why it stopped: a server
            # that just closes the connection has cut the answer short.
            nonlocal finished
            self._record_usage(agent, chunk)
            if not getattr(chunk, "choices", None):
                return ""
            choice = chunk.choices[0]
            if choice.finish_reason is not None:
                finished = True
            return choice.delta.content or "" if choice.delta else ""

        def open_stream() -> tuple[Any, Iterator[Any], str]:
            # The breaker judges the provider on getting the stream going: the first
            # content (or the end) arrives, or the call failed.
            stream = client.chat.completions.create(
                model=self.model,
                messages=prompt.messages(),
                max_completion_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout,
            )
            chunks = iter(stream)
            for chunk in chunks:
                piece = take(chunk)
                if piece:
                    return stream, chunks, piece
            stream.close()
            if not finished:
                raise _ProviderError("truncated", "the stream ended before the answer did")
            return stream, chunks, ""

        stream, chunks, first = self._guarded(agent, lambda: _provider_call(open_stream))
        FIRST_TOKEN.labels(agent).observe(time.perf_counter() - started)
        try:
            if first:
                yield first
            for chunk in chunks:
                piece = take(chunk)
                if piece:
                    yield piece
            if not finished:
                raise _ProviderError("truncated", "the stream ended before the answer did")
        except (_ProviderError, openai.OpenAIError, httpx2.HTTPError, ValueError) as exc:
            failure = exc if isinstance(exc, _ProviderError) else _classify(exc)
            self._record_failure(failure)
            self._log_failure(agent, failure.reason, exc)
            raise LLMUnavailable(failure.reason, str(exc)) from None
        finally:
            stream.close()
        LATENCY.labels(agent, "stream").observe(time.perf_counter() - started)
        REQUESTS.labels(agent, "ok").inc()

    # -- internals ---------------------------------------------------------------------

    def _request_timeout(self, agent: str) -> float:
        """The configured timeout, cut to what is left of the gRPC call being served:
        a slow model must leave the agent time to fall back, not fail the request."""
        call = maybe_current_call()
        remaining = call.time_remaining() if call is not None else None
        if remaining is None:
            return self._timeout
        budget = remaining - FALLBACK_RESERVE_SECONDS
        if budget <= MIN_MODEL_SECONDS:
            REQUESTS.labels(agent, "no_time_left").inc()
            raise LLMUnavailable("no_time_left", f"{remaining:.2f}s left in the call")
        return min(self._timeout, budget)

    def _user_share(self, agent: str) -> AbstractContextManager[object]:
        """A lease on one of the current user's LLM_CALLS_PER_USER model calls (nothing
        is counted without a limiter or a user: a call made outside an RPC)."""
        call = maybe_current_call()
        if self._limiter is None or call is None or call.principal is None:
            return contextlib.nullcontext()
        lease = self._limiter.acquire(f"llm:{call.principal.user_key}", self._calls_per_user)
        if lease is None:
            REQUESTS.labels(agent, "user_limit").inc()
            log.info(
                "model calls per user reached; answering offline",
                extra={"agent": agent, "limit": self._calls_per_user},
            )
            raise LLMUnavailable(
                "user_limit", f"{self._calls_per_user} model calls already in flight"
            )
        return lease

    def _require_client(self, agent: str) -> openai.OpenAI:
        if self._client is None:
            REQUESTS.labels(agent, "no_api_key").inc()
            raise LLMUnavailable("no_api_key")
        return self._client

    def _require_consent(self, agent: str) -> None:
        if not self._model_use(maybe_current_call()):
            REQUESTS.labels(agent, "no_consent").inc()
            raise LLMUnavailable("no_consent", "the student has not consented to model use")

    def _complete(
        self, prompt: Prompt, agent: str, call: str, max_tokens: int, response_format: Any
    ) -> str:
        client = self._require_client(agent)
        self._require_consent(agent)
        timeout = self._request_timeout(agent)
        share = self._user_share(agent)
        started = time.perf_counter()

        def create() -> str:
            extra: dict[str, Any] = {}
            if response_format is not None:
                extra["response_format"] = response_format
            completion = client.chat.completions.create(
                model=self.model,
                messages=prompt.messages(),
                max_completion_tokens=max_tokens,
                timeout=timeout,
                **extra,
            )
            self._record_usage(agent, completion)
            content: str | None = (
                completion.choices[0].message.content if completion.choices else None
            )
            if content is None:
                raise _ProviderError("malformed", "no message content in the completion")
            return content

        with share:
            content = self._guarded(agent, lambda: _provider_call(create))
        LATENCY.labels(agent, call).observe(time.perf_counter() - started)
        return content

    def _guarded(self, agent: str, call: Callable[[], T]) -> T:
        """Run `call` through the breaker; every failure becomes LLMUnavailable."""
        if not self._breaker.try_acquire():
            REQUESTS.labels(agent, "circuit_open").inc()
            raise LLMUnavailable("circuit_open")
        try:
            result = call()
        except _ProviderError as exc:
            self._record_failure(exc)
            self._log_failure(agent, exc.reason, exc)
            raise LLMUnavailable(exc.reason, str(exc)) from None
        except BaseException:
            self._breaker.release_probe()
            raise
        self._breaker.record_success()
        BREAKER_STATE.set(0)
        return result

    def _record_failure(self, failure: _ProviderError) -> None:
        del failure  # every provider failure counts the same
        self._breaker.record_failure()
        BREAKER_STATE.set(0 if self._breaker.state == BreakerState.CLOSED else 1)

    def _log_failure(self, agent: str, reason: str, exc: BaseException) -> None:
        REQUESTS.labels(agent, reason).inc()
        log.warning(
            "model call failed; falling back",
            extra={
                "agent": agent,
                "reason": reason,
                "detail": str(exc)[:200],
                "breaker": str(self._breaker.state),
            },
        )

    def _record_usage(self, agent: str, response: Any) -> None:
        usage = getattr(response, "usage", None)
        if usage is None:
            return
        TOKENS.labels(agent, "prompt").inc(getattr(usage, "prompt_tokens", 0) or 0)
        TOKENS.labels(agent, "completion").inc(getattr(usage, "completion_tokens", 0) or 0)


def _provider_call(call: Callable[[], T]) -> T:
    """Turn the client's exceptions into _ProviderError with a reason."""
    try:
        return call()
    except _ProviderError:
        raise
    except (openai.OpenAIError, httpx2.HTTPError, ValueError) as exc:
        raise _classify(exc) from exc


def _classify(exc: BaseException) -> _ProviderError:
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        reason = "timeout"
    elif isinstance(exc, openai.RateLimitError):
        reason = "rate_limited"
    elif isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        reason = "connection"
    elif isinstance(exc, openai.APIStatusError):
        reason = "server_error" if exc.status_code >= 500 else f"http_{exc.status_code}"
    elif isinstance(exc, json.JSONDecodeError | ValueError | openai.APIResponseValidationError):
        reason = "malformed"
    else:
        reason = "provider_error"
    return _ProviderError(reason, str(exc))
