"""An identity provider's JWKS endpoint on loopback, controlled by the test.

It serves the public halves of the keys the test names (`serve`), answers an error
status while the test says the IdP is down (`fail`), and counts the requests it got, so
a test can tell exactly how many fetches its verifier (or Envoy) made.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import ec

from services.kit import devtokens

JWKS_PATH = "/.well-known/jwks.json"


class JwksServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body = b'{"keys": []}'
        self._status = 200
        self._cache_control: str | None = None
        self.delay = 0.0
        """Seconds each answer waits first (so concurrent callers overlap one fetch)."""
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    def serve(self, *keys: ec.EllipticCurvePrivateKey, cache_control: str | None = None) -> None:
        """From now on: a JWKS of these keys' public halves (and 200)."""
        document = {"keys": [devtokens.public_jwk(key) for key in keys]}
        with self._lock:
            self._body = json.dumps(document).encode()
            self._status = 200
            self._cache_control = cache_control

    def fail(self, status: int = 503) -> None:
        """From now on: the IdP answers `status` (until the next `serve`)."""
        with self._lock:
            self._status = status

    def count(self) -> int:
        with self._lock:
            return self.requests

    def _answer(self) -> tuple[int, bytes, str | None]:
        with self._lock:
            self.requests += 1
            return self._status, self._body, self._cache_control

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                status, body, cache_control = owner._answer()
                if owner.delay:
                    time.sleep(owner.delay)
                if status != 200:
                    body = b'{"error": "unavailable"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                if cache_control is not None:
                    self.send_header("cache-control", cache_control)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.request_queue_size = 256
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="jwks-server"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """The IdP is gone: its port refuses connections (until `start` again)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
