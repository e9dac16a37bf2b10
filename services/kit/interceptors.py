"""The server interceptor every LearnFlow server runs.

Per call (`CallSteps`, shared by both server models): a request id (taken from
`x-request-id` or made), token verification (health and reflection exempt), the
caller's principal in a context variable for handlers, a deadline check, admission of
streams, domain exceptions mapped to google.rpc.Status with details, one
structured log line (request id, method, code, latency) and, for every authenticated
call, its audit record (handed off the request path: services/kit/audit.py).

The wrapped handler is built once per method and cached: grpc calls
`intercept_service` for every RPC, and rebuilding handlers each time costs more than
the work it wraps on a trivial call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.admission import StreamGate
from services.kit.auth import TENANT_METADATA, Principal, TokenVerifier
from services.kit.errors import (
    DeadlineExceeded,
    FieldViolation,
    Internal,
    InvalidArgument,
    LearnFlowError,
    NotImplementedYet,
    ResourceExhausted,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    grpc_code,
)
from services.kit.roster import Roster

log = logging.getLogger("learnflow.rpc")

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler may need about the current call, beyond its request message."""

    method: str
    request_id: str
    principal: Principal | None
    grpc_context: grpc.ServicerContext
    authorization: str | None
    # W3C trace context of the inbound call, carried on to events this call publishes.
    traceparent: str | None = None
    # The request message (None for a client stream): whom the call is about
    # (services/kit/consent.py asks before a model call).
    request: Any = None

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("this method needs a bearer token")
        return self.principal

    def time_remaining(self) -> float | None:
        remaining: float | None = self.grpc_context.time_remaining()
        return remaining


_current: ContextVar[CallContext | None] = ContextVar("learnflow_call", default=None)


def current_call() -> CallContext:
    """The context of the RPC being handled on this thread."""
    call = _current.get()
    if call is None:
        raise RuntimeError("current_call() used outside an RPC handler")
    return call


def current_principal() -> Principal:
    return current_call().require_principal()


def maybe_current_call() -> CallContext | None:
    return _current.get()


def use_call(call: CallContext) -> None:
    """Make `call` the current call in this context (an asyncio task's, after the call
    was identified on a worker thread)."""
    _current.set(call)


class CallOutcome:
    """What one call's log line (and audit record) says: its context once known, and
    its code; the verified caller, even when acting as it was refused; its metadata;
    the connection's address for its audit record."""

    __slots__ = ("call", "caller", "code", "metadata", "peer")

    def __init__(self) -> None:
        self.call: CallContext | None = None
        self.code = "OK"
        self.caller: Principal | None = None
        self.metadata: dict[str, str] | None = None
        self.peer = ""


class CallRecorder(Protocol):
    """The audit trail's side of the call steps (services/kit/audit.py): called once
    per call of a non-exempt method when its outcome is known; cheap, never raises."""

    def record(self, method: str, request: Any, outcome: CallOutcome, started: float) -> None: ...


class CallSteps:
    """The per-call steps every LearnFlow server runs, whichever server model carries
    them (this module's interceptor for the thread-pool server; services/kit/aio.py's
    for the asyncio one)."""

    def __init__(
        self,
        verifier: TokenVerifier | None,
        gate: StreamGate | None = None,
        roster: Roster | None = None,
        audit: CallRecorder | None = None,
    ) -> None:
        # verifier None: authentication disabled (only for servers that hold no data).
        self.verifier = verifier
        # audit: where each authenticated call is recorded (None: not recorded).
        self.audit = audit
        # roster: where a student's cohort is learnt from their own token (services that
        # keep student data); None: not recorded by this server.
        self.roster = roster
        # gate None: streams are not admitted separately (test servers without streams).
        self.gate = gate

    def enter(
        self,
        method: str,
        exempt: bool,
        context: Any,
        outcome: CallOutcome,
        request: Any = None,
    ) -> CallContext:
        """Identify the call (request id, principal) and set it as the current call;
        raises Unauthenticated or DeadlineExceeded."""
        metadata = dict(context.invocation_metadata() or ())
        outcome.metadata = metadata
        if not exempt and self.audit is not None:
            # Read while the call is live: an asyncio call's context must not be asked
            # once it has ended (grpc.aio crashes the process on it).
            outcome.peer = context.peer() or ""
        request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex
        authorization = metadata.get("authorization")
        traceparent = metadata.get("traceparent")
        call = CallContext(method, request_id, None, context, authorization, traceparent, request)
        outcome.call = call  # so a failure below still logs with the request id
        _current.set(call)
        if not exempt and self.verifier is not None:
            verified = self.verifier.verify(authorization)
            outcome.caller = verified  # audited even if acting in another tenant is refused
            principal = verified.acting_in(metadata.get(TENANT_METADATA))
            call = CallContext(
                method, request_id, principal, context, authorization, traceparent, request
            )
            outcome.call = call
            _current.set(call)
            if self.roster is not None:
                self._observe(principal)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("deadline exceeded before the call started")
        return call

    def audited(self, exempt: bool) -> CallRecorder | None:
        """Who records a method's calls (None: nobody; health and reflection are exempt)."""
        return None if exempt else self.audit

    def _observe(self, principal: Principal) -> None:
        assert self.roster is not None
        try:
            self.roster.observe(principal)
        except Exception as exc:  # the call itself does not depend on it; retried next call
            log.warning(
                "roster not updated", extra={"student": principal.subject, "error": str(exc)}
            )

    @staticmethod
    def check_request(request: Any) -> None:
        """Bytes that are not the method's message, and text no store can hold (NUL),
        are the caller's mistake: INVALID_ARGUMENT naming the field, before any handler."""
        if isinstance(request, _Undecodable):
            raise InvalidArgument(
                [FieldViolation("request", f"is not a valid {request.expected}: {request.error}")]
            )
        if isinstance(request, Message):
            bad = nul_fields(request)
            if bad:
                raise InvalidArgument(
                    FieldViolation(path, "must not contain NUL (U+0000) characters") for path in bad
                )

    @staticmethod
    def failure(method: str, exc: BaseException, outcome: CallOutcome) -> grpc.Status:
        """The status a failed call answers with (google.rpc.Status details in its
        trailers, `retry-after` when the caller may retry); records its code."""
        call = outcome.call
        request_id = call.request_id if call else "-"
        if isinstance(exc, LearnFlowError):
            error = exc
        elif isinstance(exc, grpc.RpcError):
            error = _downstream(method, exc)
        elif isinstance(exc, NotImplementedError):
            # The generated base servicer raises this for RPCs a service does not implement yet.
            error = NotImplementedYet(
                f"{method} is not implemented yet", metadata={"method": method}
            )
        else:
            log.exception("unhandled error", extra={"request_id": request_id, "method": method})
            error = Internal(
                f"internal error (request id {request_id})", metadata={"request_id": request_id}
            )
        status = error.to_status()
        outcome.code = grpc_code(status).name
        wire = rpc_status.to_status(status)
        retry_after = error.retry_after_header() if isinstance(error, ResourceExhausted) else None
        if retry_after is not None:
            wire = _Status(
                wire.code, wire.details, (*wire.trailing_metadata, ("retry-after", retry_after))
            )
        return wire

    @staticmethod
    def log_call(method: str, outcome: CallOutcome, started: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        call = outcome.call
        log.info(
            "rpc",
            extra={
                "request_id": call.request_id if call else "-",
                "method": method,
                "code": outcome.code,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "principal": call.principal.subject if call and call.principal else None,
            },
        )


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """The call steps on the thread-pool server: each call runs on its own thread."""

    def __init__(self, steps: CallSteps) -> None:
        self._steps = steps
        self._handlers = WrappedHandlers(self._unary, self._streaming)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            wrapped = self._handlers.wrap(method, continuation(handler_call_details))
        return wrapped

    def _unary(self, method: str, handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
        steps = self._steps
        exempt = method.startswith(EXEMPT_PREFIXES)
        audit = steps.audited(exempt)
        behaviour = handler.unary_unary or handler.stream_unary

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            outcome = CallOutcome()
            try:
                steps.enter(method, exempt, context, outcome, request)
                steps.check_request(request)
                return behaviour(request, context)
            except Exception as exc:
                if _is_abort(exc):
                    outcome.code = _abort_code(context)
                    raise
                context.abort_with_status(steps.failure(method, exc, outcome))
                raise  # unreachable: abort_with_status raises
            finally:
                steps.log_call(method, outcome, started)
                if audit is not None:
                    audit.record(method, request, outcome, started)
                _current.set(None)

        return handle

    def _streaming(
        self, method: str, handler: grpc.RpcMethodHandler
    ) -> Callable[..., Iterator[Any]]:
        steps = self._steps
        exempt = method.startswith(EXEMPT_PREFIXES)
        audit = steps.audited(exempt)
        behaviour = handler.unary_stream or handler.stream_stream

        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            outcome = CallOutcome()
            try:
                call = steps.enter(method, exempt, context, outcome, request)
                steps.check_request(request)
                if steps.gate is None:
                    yield from behaviour(request, context)
                else:
                    with steps.gate.admit(call.principal):
                        yield from behaviour(request, context)
            except Exception as exc:
                if _is_abort(exc):
                    outcome.code = _abort_code(context)
                    raise
                context.abort_with_status(steps.failure(method, exc, outcome))
                raise
            except GeneratorExit:  # the caller went away (or the server stopped) mid-stream
                outcome.code = "CANCELLED"
                raise
            finally:
                steps.log_call(method, outcome, started)
                if audit is not None:
                    audit.record(method, request, outcome, started)
                _current.set(None)

        return handle


HandlerMaker = Callable[[str, grpc.RpcMethodHandler], Callable[..., Any]]


class WrappedHandlers:
    """Each method's handler wrapped once, with the behaviour `unary` or `streaming`
    makes for it. Only methods the server really has are kept: caching every unknown
    path a caller makes up would grow memory without bound."""

    def __init__(self, unary: HandlerMaker, streaming: HandlerMaker) -> None:
        self._unary = unary
        self._streaming = streaming
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def get(self, method: str) -> grpc.RpcMethodHandler | None:
        return self._wrapped.get(method)

    def __len__(self) -> int:
        return len(self._wrapped)

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler | None
    ) -> grpc.RpcMethodHandler | None:
        """The wrapped handler (kept for next time); None for a method the server lacks."""
        if handler is None:
            return None
        wrapped = rewrap(
            handler,
            lambda: self._unary(method, handler),
            lambda: self._streaming(method, handler),
        )
        self._wrapped[method] = wrapped
        return wrapped


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[], Callable[..., Any]],
    streaming: Callable[[], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour replaced by what `unary()` or `streaming()` makes
    (whichever its response kind needs); requests of unary-request methods are parsed
    tolerantly."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming(),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary(),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        streaming(),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@dataclass(frozen=True, slots=True)
class _Status(grpc.Status):  # type: ignore[misc]
    """A status with extra trailing metadata (grpc.Status is an interface)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _Undecodable:
    """What a request deserializer gives for bytes that do not parse: the handler then
    answers INVALID_ARGUMENT instead of grpc's own INTERNAL "Exception deserializing"."""

    __slots__ = ("error", "expected")

    def __init__(self, expected: str, error: str) -> None:
        self.expected = expected
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    expected = owner.__name__ if isinstance(owner, type) else "request message"

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or a message/recursion limit
            return _Undecodable(expected, type(exc).__name__)

    return parse


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of every string field (nested, repeated, map) holding a NUL character."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            found.extend(f"{path}[{k!r}]" for k in value if isinstance(k, str) and "\x00" in k)
            items = [(f"{path}[{k!r}]", v) for k, v in value.items()]
        elif field.is_repeated:
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(path, value)]
        for item_path, item in items:
            if isinstance(item, Message):
                found.extend(nul_fields(item, f"{item_path}."))
            elif isinstance(item, str) and "\x00" in item:
                found.append(item_path)
    return found


def _downstream(method: str, exc: grpc.RpcError) -> LearnFlowError:
    """A call to another service failed: say so with a code the caller can act on."""
    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else ""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{method}: a dependency did not answer in time: {detail}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        # The caller is told what the dependency said: whose limit it was (a student's
        # own fair share or a busy service) and when to try again.
        reason, retry_after = _busy_details(exc)
        busy = TooManyRequests if reason == TooManyRequests.reason else ResourceExhausted
        return busy(f"{method}: {detail}", retry_after=retry_after)
    if code is grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{method}: a dependency is unavailable: {detail}")
    log.error("dependency failed", extra={"method": method, "code": str(code), "detail": detail})
    return Internal(f"{method}: a dependency failed ({code.name if code else 'unknown'})")


def _busy_details(exc: grpc.RpcError) -> tuple[str, float | None]:
    """The ErrorInfo reason and RetryInfo delay a RESOURCE_EXHAUSTED answer carried."""
    reason, retry_after = "", None
    try:
        status = rpc_status.from_call(exc)
    except ValueError:  # a status whose details do not match its code
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, retry_after


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare Exception() after setting the status; let it
    # through so an explicit abort in a handler keeps its own code.
    return type(exc) is Exception and not exc.args


def _abort_code(context: grpc.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
