"""An OpenAI-compatible chat-completions server on loopback, scripted per test.

Agent tests talk to it through the real `openai` client, so everything between the
agent and the wire (retries, timeouts, streaming, JSON parsing) is the production path.
A test queues what the "model" does next; each request takes the next reply, and an
empty queue answers 503 so an unscripted call is visible rather than silently served.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    kind: str  # content | status | stall | malformed | drop_mid_stream
    content: str = ""
    chunks: tuple[str, ...] = ()
    chunk_delay: float = 0.0
    status: int = 200
    seconds: float = 0.0


def text_reply(text: str) -> Reply:
    return Reply("content", content=text)


def json_reply(obj: Any) -> Reply:
    return Reply("content", content=json.dumps(obj))


def stream_reply(chunks: list[str], delay: float = 0.0) -> Reply:
    """Streamed as one delta per chunk when the client asks for a stream (joined
    otherwise), `delay` seconds apart."""
    return Reply("content", content="".join(chunks), chunks=tuple(chunks), chunk_delay=delay)


def status_reply(status: int) -> Reply:
    return Reply("status", status=status)


def stall(seconds: float) -> Reply:
    """Hold the request without answering (the client's timeout should fire first)."""
    return Reply("stall", seconds=seconds)


def malformed_reply() -> Reply:
    """HTTP 200 with a body that is not JSON."""
    return Reply("malformed")


def broken_stream(chunks: list[str]) -> Reply:
    """Streams `chunks`, then drops the connection without finishing."""
    return Reply("drop_mid_stream", chunks=tuple(chunks))


@dataclass
class ScriptedOpenAI:
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    responder: Callable[[dict[str, Any]], Reply] | None = None
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def respond_with(self, responder: Callable[[dict[str, Any]], Reply] | None) -> None:
        """Answer every request from `responder` (after the queue is empty)."""
        self.responder = responder

    def reset(self) -> None:
        with self._lock:
            self.replies.clear()
            self.requests.clear()
            self.responder = None

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self.replies:
                return self.replies.popleft()
        if self.responder is not None:
            return self.responder(body)
        return status_reply(503)


def _usage(body: dict[str, Any], content: str) -> dict[str, int]:
    # Words stand in for tokens: enough for the metrics to be checked against.
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(content.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's
    # algorithm and delayed ACKs add ~40 ms to every non-streamed reply.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        reply = self.server.script.next_reply(body)
        if reply.kind == "status":
            self._json(
                reply.status,
                {"error": {"message": f"scripted {reply.status}", "type": "server_error"}},
            )
        elif reply.kind == "stall":
            time.sleep(reply.seconds)
            self._json(200, self._completion(body, "too late"))
        elif reply.kind == "malformed":
            self._raw(200, b'{"id": "x", "choices": [', "application/json")
        elif body.get("stream"):
            self._stream(body, reply)
        else:
            self._json(200, self._completion(body, reply.content))

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(body, content),
        }

    def _stream(self, body: dict[str, Any], reply: Reply) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        chunks = reply.chunks or (reply.content,)

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", "test"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        event({"role": "assistant", "content": ""})
        for i, chunk in enumerate(chunks):
            if i and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            event({"content": chunk})
        if reply.kind == "drop_mid_stream":
            self.close_connection = True
            return
        event({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", "test"),
                "choices": [],
                "usage": _usage(body, "".join(chunks)),
            }
            self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json")

    def _raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    script: ScriptedOpenAI


def start(script: ScriptedOpenAI) -> _Server:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.script = script
    script.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name="scripted-openai", daemon=True).start()
    return server
