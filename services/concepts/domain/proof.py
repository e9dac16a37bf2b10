"""Examples are proven: every example is run before it is shown, its output is the
real stdout of that run, and an example that fails is dropped (with the reason logged),
never shown.

A run goes through an `Execute` callable (the sandbox service in production, the
sandbox isolation directly in tests). Results are cached in-process by a hash of the
code, so each curated example runs once per process, however often it is shown.
Only deterministic outcomes are cached: a success, or a program that ran and failed.
A timeout, a memory kill or a sandbox that could not be reached may be the machine's
fault rather than the code's, so those are tried again next time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.concepts.domain.content import Example

log = logging.getLogger("learnflow.concepts.proof")

MAX_OUTPUT_CHARS = 4000  # longer output is not an example, it is a wall of text


@dataclass(frozen=True, slots=True)
class Run:
    """What one run of an example returned."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    memory_exceeded: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.memory_exceeded


# code -> Run; raises (any exception) when the sandbox itself could not run it.
Execute = Callable[[str], Run]


@dataclass(frozen=True, slots=True)
class ProvenExample:
    code: str
    caption: str
    output: str  # the real stdout


@dataclass(frozen=True, slots=True)
class Rejected:
    caption: str
    code_hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    output: str | None  # None: failed
    reason: str
    cacheable: bool


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


class ExampleProver:
    """Runs examples (once per distinct code, thread-safe) and keeps those that work."""

    def __init__(self, execute: Execute, *, cache_size: int = 4096) -> None:
        self._execute = execute
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Outcome] = OrderedDict()
        self._running: dict[str, threading.Event] = {}
        self.runs = 0  # sandbox runs made (how well the cache works)

    def prove(
        self, examples: Sequence[Example], *, limit: int | None = None
    ) -> tuple[list[ProvenExample], list[Rejected]]:
        """The examples that ran successfully, in order (at most `limit`), and why the
        others were dropped. Examples after the limit is reached are not run."""
        proven: list[ProvenExample] = []
        rejected: list[Rejected] = []
        for example in examples:
            if limit is not None and len(proven) >= limit:
                break
            outcome = self._outcome(example.code)
            if outcome.output is None:
                item = Rejected(example.caption, code_hash(example.code), outcome.reason)
                log.warning(
                    "example dropped: %s",
                    outcome.reason,
                    extra={"caption": item.caption, "code_hash": item.code_hash},
                )
                rejected.append(item)
            else:
                proven.append(ProvenExample(example.code, example.caption, outcome.output))
        return proven, rejected

    def _outcome(self, code: str) -> _Outcome:
        key = hashlib.sha256(code.encode()).hexdigest()
        while True:
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    return cached
                waiting = self._running.get(key)
                if waiting is None:
                    mine = self._running[key] = threading.Event()
                    break
            waiting.wait()  # the same code is running for another request: share it
        try:
            outcome = self._run(code)
        finally:
            with self._lock:
                del self._running[key]
            mine.set()
        if outcome.cacheable:
            with self._lock:
                self._cache[key] = outcome
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return outcome

    def _run(self, code: str) -> _Outcome:
        # The sandbox reports a syntax error as a precheck, not as a failed run: check here.
        try:
            compile(code, "<example>", "exec")
        except (SyntaxError, ValueError) as exc:
            return _Outcome(None, f"does not compile: {exc}", cacheable=True)
        try:
            with self._lock:
                self.runs += 1
            run = self._execute(code)
        except Exception as exc:  # any sandbox failure drops the example, for now
            return _Outcome(None, f"sandbox unavailable: {exc}", cacheable=False)
        failure = _failure(run)
        if failure is not None:
            reason, cacheable = failure
            return _Outcome(None, reason, cacheable)
        return _Outcome(run.stdout, "", cacheable=True)


def _failure(run: Run) -> tuple[str, bool] | None:
    """Why a run does not prove its example, and whether that is worth remembering."""
    if run.timed_out:
        return "timed out", False
    if run.memory_exceeded:
        return "ran out of memory", False
    if run.exit_code != 0:
        return f"exit code {run.exit_code}: {_last_line(run.stderr) or 'no error message'}", True
    if len(run.stdout) > MAX_OUTPUT_CHARS:
        return f"printed more than {MAX_OUTPUT_CHARS} characters", True
    return None
