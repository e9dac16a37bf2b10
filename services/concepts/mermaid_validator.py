"""Mermaid diagrams checked by Mermaid's own parser, in one long-lived Node process.

`mermaid/validate.mjs` reads `{id, text}` lines and answers `{id, ok, error}` lines.
This adapter starts it on first use (Node plus Mermaid takes about a second to load),
sends one diagram at a time under a lock, waits at most `call_timeout` for the answer,
and restarts the process when it has died or hung. When the validator cannot be used
(no Node, packages not installed, start-up failed, a hang) the answer says
`unavailable` with the reason, distinct from "the parser rejected it", and callers drop
the diagram: nothing is shown unvalidated. After a failed start it waits `retry_after`
seconds before trying again, so a missing Node costs one attempt, not one per request.

Install the packages with `npm ci --prefix services/concepts/mermaid` (package-lock.json
pins every version).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from services.concepts.domain.explain import DiagramCheck

log = logging.getLogger("learnflow.concepts.mermaid")

PACKAGE_DIR = Path(__file__).resolve().parent / "mermaid"
SCRIPT = PACKAGE_DIR / "validate.mjs"
_EOF = None  # put on the reply queue when the process's stdout closes


class _ExitedError(Exception):
    """The validator process went away while answering."""


class MermaidValidator:
    """`validator(text) -> DiagramCheck`; thread-safe; one Node process per instance."""

    def __init__(
        self,
        *,
        script: Path = SCRIPT,
        node: str | None = None,
        call_timeout: float = 5.0,
        start_timeout: float = 30.0,
        retry_after: float = 30.0,
    ) -> None:
        self._script = script
        self._node = node
        self._call_timeout = call_timeout
        self._start_timeout = start_timeout
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._next_id = 0
        self._start_failed_at: float | None = None
        self._start_failure = ""
        self.mermaid_version = ""
        self.starts = 0  # processes started (restarts show here)

    def __call__(self, text: str) -> DiagramCheck:
        with self._lock:
            for attempt in (1, 2):
                unavailable = self._ensure_started()
                if unavailable is not None:
                    return unavailable
                try:
                    return self._ask(text)
                except _ExitedError as exited:
                    # Killed between calls (or by this text): one fresh process tries
                    # again; a text that kills the parser twice is answered unavailable.
                    self._stop()
                    if attempt == 2:
                        return DiagramCheck(False, f"validator exited: {exited}", unavailable=True)
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    # -- the process ------------------------------------------------------------------

    def _ensure_started(self) -> DiagramCheck | None:
        if self._process is not None and self._process.poll() is None:
            return None
        if self._process is not None:
            log.warning("mermaid validator exited (%s); restarting", self._stderr_tail())
            self._stop()
        failed_at = self._start_failed_at
        if failed_at is not None and time.monotonic() - failed_at < self._retry_after:
            return DiagramCheck(False, self._start_failure, unavailable=True)
        problem = self._start()
        if problem is None:
            self._start_failed_at = None
            return None
        self._start_failed_at, self._start_failure = time.monotonic(), problem
        log.error("mermaid validator unavailable: %s", problem)
        return DiagramCheck(False, problem, unavailable=True)

    def _start(self) -> str | None:
        node = self._node or shutil.which("node")
        if node is None:
            return "node is not installed"
        if not (self._script.parent / "node_modules" / "mermaid").is_dir():
            return f"mermaid is not installed: run npm ci --prefix {self._script.parent}"
        self._replies = queue.Queue()
        self._stderr.clear()
        try:
            process = subprocess.Popen(
                [node, str(self._script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self._script.parent,
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        except OSError as exc:
            return f"could not start node: {exc}"
        self._process = process
        self.starts += 1
        assert process.stdout is not None and process.stderr is not None
        threading.Thread(
            target=_pump, args=(process.stdout, self._replies), daemon=True, name="mermaid-out"
        ).start()
        threading.Thread(
            target=_keep_tail, args=(process.stderr, self._stderr), daemon=True, name="mermaid-err"
        ).start()
        deadline = time.monotonic() + self._start_timeout
        while True:
            line = self._next_line(deadline)
            if line is _EOF:
                self._stop()
                return f"validator exited while starting: {self._stderr_tail()}"
            if line == "":
                self._stop()
                return f"validator did not start within {self._start_timeout:.0f}s"
            message = _json(line)
            if message is not None and message.get("ready") is True:
                self.mermaid_version = str(message.get("mermaid", ""))
                log.info("mermaid validator started", extra={"mermaid": self.mermaid_version})
                return None

    def _ask(self, text: str) -> DiagramCheck:
        process = self._process
        assert process is not None and process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        try:
            process.stdin.write(json.dumps({"id": request_id, "text": text}) + "\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _ExitedError(f"{exc}; {self._stderr_tail()}") from None
        deadline = time.monotonic() + self._call_timeout
        while True:
            line = self._next_line(deadline)
            if line is _EOF:
                raise _ExitedError(self._stderr_tail())
            if line == "":
                # A hung parser would hold every later call: kill it, the next call restarts.
                self._stop()
                return DiagramCheck(
                    False,
                    f"validator did not answer within {self._call_timeout:.1f}s",
                    unavailable=True,
                )
            message = _json(line)
            if message is None or message.get("id") != request_id:
                log.warning("mermaid validator: unexpected line %r", line[:200])
                continue
            if message.get("ok") is True:
                return DiagramCheck(True)
            return DiagramCheck(False, str(message.get("error", "rejected by the parser")))

    def _next_line(self, deadline: float) -> str | None:
        """The next stdout line; "" on timeout; _EOF when the process closed stdout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        try:
            return self._replies.get(timeout=remaining)
        except queue.Empty:
            return ""

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("mermaid validator pid %s did not exit after kill", process.pid)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _stderr_tail(self) -> str:
        return " | ".join(self._stderr)[-500:] or "no error output"


def _pump(stream: IO[str], replies: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            replies.put(line.rstrip("\n"))
    except (OSError, ValueError):
        pass  # closed under us by _stop
    replies.put(_EOF)


def _keep_tail(stream: IO[str], tail: collections.deque[str]) -> None:
    try:
        for line in stream:
            if line.strip():
                tail.append(line.strip()[:300])
    except (OSError, ValueError):
        pass


def _json(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
