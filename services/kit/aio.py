"""The asyncio server model (docs/adr/0003), for services whose streams are many and
mostly idle (notify's live updates).

- `EventLoopThread`: an event loop on its own thread, with a bounded pool of worker
  threads as its default executor. The process stays synchronous (other servers,
  consumers, the CLI); this server's loop is one more thread.
- `AsyncServerInterceptor`: the same per-call steps as the thread-pool server
  (`CallSteps`). A plain-function handler (every unary method) runs whole on a worker
  thread, with the steps before it, so the stores and adapters stay synchronous; a
  coroutine or async-generator handler (a stream) runs on the loop, and only its
  blocking steps (token check, roster, stream lease) go to a worker.
- `LoopHealth`: the asyncio health servicer, driven from the kit's monitor thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from services.kit.interceptors import (
    EXEMPT_PREFIXES,
    CallOutcome,
    CallSteps,
    WrappedHandlers,
    use_call,
)

T = TypeVar("T")
STOP_SECONDS = 10.0


class EventLoopThread:
    def __init__(self, name: str, workers: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.executor = futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"{name}-rpc"
        )
        # asyncio.to_thread and the unary handlers share this bounded pool.
        self.loop.set_default_executor(self.executor)
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop from another thread; its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_SECONDS)
        if not self._thread.is_alive():
            self.loop.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


class LoopHealth:
    """grpc.health.v1 on the asyncio server, with the thread-pool servicer's `set` and
    `enter_graceful_shutdown`, callable from any thread but the loop's."""

    def __init__(self, loop_thread: EventLoopThread) -> None:
        self._loop_thread = loop_thread
        self.servicer = AsyncHealthServicer()

    def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        if self._loop_thread.loop.is_closed():
            return  # the monitor's last round, after the server stopped
        self._loop_thread.run(self.servicer.set(service, status), STOP_SECONDS)

    def enter_graceful_shutdown(self) -> None:
        self._loop_thread.run(self.servicer.enter_graceful_shutdown(), STOP_SECONDS)


class AsyncServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, steps: CallSteps) -> None:
        self._steps = steps
        self._handlers = WrappedHandlers(self._unary, self._streaming)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            wrapped = self._handlers.wrap(method, await continuation(handler_call_details))
        return wrapped

    async def _enter(
        self,
        method: str,
        exempt: bool,
        context: grpc.aio.ServicerContext,
        outcome: CallOutcome,
        request: Any = None,
    ) -> None:
        """The steps before a handler on the loop: checking a token (and recording the
        roster) may block, so it runs on a worker; the call is then current here too."""
        if exempt:
            self._steps.enter(method, exempt, context, outcome, request)
        else:
            await asyncio.to_thread(self._steps.enter, method, exempt, context, outcome, request)
            if outcome.call is not None:
                use_call(outcome.call)  # a worker's copy of the context does not flow back

    async def _fail(
        self,
        method: str,
        exc: Exception,
        context: grpc.aio.ServicerContext,
        outcome: CallOutcome,
    ) -> None:
        status = self._steps.failure(method, exc, outcome)
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _unary(self, method: str, handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
        steps = self._steps
        exempt = method.startswith(EXEMPT_PREFIXES)
        audit = steps.audited(exempt)
        behaviour = handler.unary_unary or handler.stream_unary
        on_loop = inspect.iscoroutinefunction(behaviour)

        def on_worker(request: Any, context: grpc.aio.ServicerContext, outcome: CallOutcome) -> Any:
            steps.enter(method, exempt, context, outcome, request)
            steps.check_request(request)
            return behaviour(request, context)

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            outcome = CallOutcome()
            try:
                if not on_loop:
                    return await asyncio.to_thread(on_worker, request, context, outcome)
                await self._enter(method, exempt, context, outcome, request)
                steps.check_request(request)
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                outcome.code = _abort_code(context)
                raise
            except Exception as exc:
                await self._fail(method, exc, context, outcome)
            finally:
                steps.log_call(method, outcome, started)
                if audit is not None:  # a queue append: fine on the loop
                    audit.record(method, request, outcome, started)

        return handle

    def _streaming(self, method: str, handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
        exempt = method.startswith(EXEMPT_PREFIXES)
        behaviour = handler.unary_stream or handler.stream_stream
        if inspect.isasyncgenfunction(behaviour):
            return self._yielding(method, exempt, behaviour)
        if inspect.iscoroutinefunction(behaviour):
            return self._writing(method, exempt, behaviour)
        raise TypeError(f"{method}: a stream on the asyncio server must be async")

    async def _admit(
        self,
        method: str,
        exempt: bool,
        request: Any,
        context: grpc.aio.ServicerContext,
        outcome: CallOutcome,
    ) -> Callable[[], None]:
        """The steps before a stream, then its place in the stream lane; how to give the
        place back."""
        await self._enter(method, exempt, context, outcome, request)
        self._steps.check_request(request)
        gate = self._steps.gate
        if gate is None:
            return _nothing
        principal = outcome.call.principal if outcome.call else None
        ticket = await asyncio.to_thread(gate.acquire, principal)
        return ticket.release

    @contextlib.asynccontextmanager
    async def _stream_call(
        self, method: str, exempt: bool, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """One stream's steps around its body: admission before, the outcome, error
        mapping and the log line after, and its place in the lane given back."""
        started = time.perf_counter()
        outcome = CallOutcome()
        audit = self._steps.audited(exempt)
        release = _nothing
        try:
            release = await self._admit(method, exempt, request, context, outcome)
            yield
        except grpc.aio.AbortError:
            outcome.code = _abort_code(context)
            raise
        except asyncio.CancelledError:
            outcome.code = "CANCELLED"
            raise
        except Exception as exc:
            await self._fail(method, exc, context, outcome)
        finally:
            release()
            self._steps.log_call(method, outcome, started)
            if audit is not None:
                audit.record(method, request, outcome, started)

    def _yielding(
        self, method: str, exempt: bool, behaviour: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._stream_call(method, exempt, request, context):
                async for response in behaviour(request, context):
                    yield response

        return handle

    def _writing(
        self, method: str, exempt: bool, behaviour: Callable[..., Awaitable[None]]
    ) -> Callable[..., Awaitable[None]]:
        # A stream that writes with `context.write` (the asyncio health Watch).
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> None:
            async with self._stream_call(method, exempt, request, context):
                await behaviour(request, context)

        return handle


def _nothing() -> None:
    pass


def _abort_code(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
