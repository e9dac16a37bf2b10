"""Isolation modes, the result of a run, mode detection, and the host side of every run.

The host side is the same for every mode: spawn the sandbox with an empty environment and
no inherited descriptors, feed stdin from a sealed memfd, read stdout and stderr
incrementally up to the cap, enforce the wall clock, kill the whole tree when a limit is
hit, then reap the sandbox with wait4 (exit status and CPU time of everything it ran).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import functools
import logging
import math
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.sandbox.domain.limits import Limits

log = logging.getLogger("learnflow.sandbox")

# The uid/gid the sandbox runs as on the host when the service runs as root: never root
# (capabilities; RLIMIT_NPROC is not enforced for uid 0). A non-root service cannot
# change uid: its sandboxes run as its own uid (in bubblewrap, mapped to 65534 inside).
NOBODY = 65534
MAX_OPEN_FILES = 64
PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")
# -I: ignore PYTHON* variables and user site; -S: no site (2-3 ms, no system
# dist-packages); -u: unbuffered, so output printed before a timeout or crash is kept;
# -B: no .pyc writes; -X utf8: the same text encoding whatever the locale.
PYTHON_FLAGS = ("-I", "-S", "-u", "-B", "-X", "utf8")
STDERR_TAIL_BYTES = 4096
# After the sandbox exits, how long to keep reading pipes still held open by a straggler.
DRAIN_GRACE_SECONDS = 0.5
# After a mode's own tree kill, how long before the spawned process is killed directly.
KILL_GRACE_SECONDS = 1.0
# Niceness added to every sandbox process (SANDBOX_NICE): student programs yield the CPU
# to the services, so a spinning program slows other students' requests far less.
DEFAULT_NICE = 10


class IsolationMode(enum.Enum):
    BUBBLEWRAP = "bubblewrap"
    LANDLOCK = "landlock"
    UNSAFE_NONE = "unsafe_none"


class IsolationUnavailable(RuntimeError):  # noqa: N818 - named by the brief's interface
    """No isolation mode can run code on this host (or the requested one cannot)."""


class SandboxStartError(RuntimeError):
    """The sandbox itself failed to start a run: the service's fault, not the program's."""


@dataclass(frozen=True, slots=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int  # 128 + signal when killed by a signal (the shell convention)
    signal: int  # 0, or the signal that ended the program
    wall_seconds: float
    cpu_seconds: float  # user + system of every process of the run
    timed_out: bool  # wall limit (killed by the host) or CPU limit (SIGXCPU/SIGKILL)
    memory_exceeded: bool  # MemoryError / ENOMEM under RLIMIT_AS
    output_truncated: bool  # stdout or stderr passed max_output_bytes: run stopped there
    mode: IsolationMode


class Isolation(Protocol):
    mode: IsolationMode

    def run(self, code: str, stdin: str, limits: Limits) -> RunResult:
        """Run `code` as a Python program with `stdin`; timeouts and crashes are results."""
        ...


def detect(allow_unsafe: bool = False, nice: int = DEFAULT_NICE) -> Isolation:
    """The strongest isolation that works here: bubblewrap if a trial run succeeds, else
    Landlock + seccomp if the kernel supports it, else (only with allow_unsafe, a dev-only
    setting) no isolation at all. Raises IsolationUnavailable otherwise. Every mode runs
    its programs `nice` steps below the service's CPU priority."""
    from services.sandbox.isolation.bubblewrap import BubblewrapIsolation
    from services.sandbox.isolation.landlock import LandlockIsolation, UnsafeNoneIsolation

    reasons: list[str] = []
    factories: tuple[type[BubblewrapIsolation | LandlockIsolation], ...] = (
        BubblewrapIsolation,
        LandlockIsolation,
    )
    for factory in factories:
        try:
            isolation: Isolation = factory(nice=nice)
            self_test(isolation)
        except (IsolationUnavailable, SandboxStartError, OSError) as exc:
            name = getattr(getattr(factory, "mode", None), "value", repr(factory))
            reasons.append(f"{name}: {exc}")
            log.warning("sandbox isolation unavailable: %s", reasons[-1])
            continue
        log.info("sandbox isolation: %s", isolation.mode.value)
        return isolation
    if allow_unsafe:
        log.critical(
            "SANDBOX RUNS UNTRUSTED CODE WITHOUT ISOLATION (dev-only setting). "
            "Never enable this where real students submit code. Unavailable: %s",
            "; ".join(reasons),
        )
        return UnsafeNoneIsolation(nice=nice)
    raise IsolationUnavailable("no sandbox isolation available: " + "; ".join(reasons))


def self_test(isolation: Isolation) -> None:
    """A trial run: raises SandboxStartError unless a trivial program works."""
    result = isolation.run("print(6 * 7)", "", Limits(wall_seconds=10.0))
    if result.stdout != "42\n" or result.exit_code != 0:
        raise SandboxStartError(
            f"{isolation.mode.value} trial run failed: exit {result.exit_code}, "
            f"stdout {result.stdout[:200]!r}, stderr {result.stderr[-500:]!r}"
        )


# --- shared by the modes --------------------------------------------------------------


def system_python() -> str:
    """The system interpreter (never the service's venv: the sandbox must not see it)."""
    for candidate in PYTHON_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise IsolationUnavailable(f"no system python3 among {', '.join(PYTHON_CANDIDATES)}")


def default_run_as() -> tuple[int, int] | None:
    """(uid, gid) to drop to before starting the sandbox: nobody when we are root."""
    return (NOBODY, NOBODY) if os.geteuid() == 0 else None


@functools.cache
def launcher_source() -> str:
    return (Path(__file__).parent / "launcher.py").read_text()


@functools.cache
def launcher_program(python: str) -> str:
    """The `-c` argument that runs the launcher under `python`.

    Compiling the launcher's source costs ~1.5 ms per run; its code object, marshalled
    once by that same interpreter (so the bytecode always matches it), loads in ~0.05 ms.
    """
    compile_it = (
        "import marshal, sys; code = compile(sys.stdin.read(), 'launcher', 'exec', optimize=2);"
        " sys.stdout.write(marshal.dumps(code).hex())"
    )
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", compile_it],
            input=launcher_source(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("launcher not precompiled, compiling it per run: %s", exc)
        return launcher_source()
    return f"import marshal; exec(marshal.loads(bytes.fromhex('{done.stdout.strip()}')))"


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment of a sandbox: nothing inherited from the service."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def launcher_argv(
    python: str,
    main: str,
    status_fd: int,
    limits: Limits,
    *,
    nproc: bool,
    extra: dict[str, str],
    nice: int = 0,
) -> list[str]:
    opts = {
        **({"nice": str(nice)} if nice > 0 else {}),
        "status": str(status_fd),
        "main": main,
        "as": str(limits.memory_bytes),
        "cpu": str(max(1, math.ceil(limits.cpu_seconds))),
        "fsize": str(limits.max_file_bytes),
        "nofile": str(MAX_OPEN_FILES),
        **({"nproc": str(limits.max_processes)} if nproc else {}),
        **extra,
    }
    args = [f"{key}={value}" for key, value in opts.items()]
    return [python, *PYTHON_FLAGS, "-c", launcher_program(python), *args]


def memfd_with(name: str, data: bytes) -> int:
    """A sealed, read-only-in-effect memfd holding `data`, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class Launch:
    """What a mode hands to execute(): the command and the descriptors it needs."""

    argv: list[str]
    env: dict[str, str]
    status_fd: int  # read end of the launcher's status pipe (closed by execute)
    pass_fds: tuple[int, ...]  # inherited by the sandbox; closed here once it has started
    run_as: tuple[int, int] | None
    cwd: str | None = None
    # bubblewrap reports a program killed by signal N as exit status 128 + N.
    relays_signals: bool = False
    # Called every poll_seconds while the program runs; a returned string is why to kill.
    watchdog: Callable[[int], str | None] | None = None
    # Kills the whole tree given the spawned pid; None: SIGKILL the pid and its group.
    kill_tree: Callable[[int], None] | None = None
    poll_seconds: float = 0.05
    closed: bool = field(default=False, init=False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for fd in (*self.pass_fds, self.status_fd):
                os.close(fd)


class _Capture:
    """One output stream: keeps the first `cap` bytes and a short tail for diagnosis."""

    def __init__(self, cap: int, tail: int = 0) -> None:
        self.data = bytearray()
        self.cap = cap
        self.overflowed = False
        self.tail = bytearray()
        self.tail_size = tail

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.overflowed = True
            chunk_kept = chunk[: max(room, 0)]
        else:
            chunk_kept = chunk
        self.data += chunk_kept
        if self.tail_size:
            self.tail = (self.tail + chunk)[-self.tail_size :]


def execute(launch: Launch, stdin: str, limits: Limits, mode: IsolationMode) -> RunResult:
    """Run a prepared sandbox command to completion (or to its limits) and report."""
    stdin_data = stdin.encode()
    stdin_fd = memfd_with("stdin", stdin_data) if stdin_data else os.open(os.devnull, os.O_RDONLY)
    user: dict[str, object] = {}
    if launch.run_as is not None:
        user = {"user": launch.run_as[0], "group": launch.run_as[1], "extra_groups": []}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            launch.argv,
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            pass_fds=launch.pass_fds,
            close_fds=True,  # no server socket or file reaches the sandbox
            start_new_session=True,  # its own process group and session, no terminal
            **user,  # type: ignore[call-overload]
        )
    except OSError as exc:
        launch.close()
        raise SandboxStartError(f"cannot start the sandbox: {exc}") from exc
    finally:
        os.close(stdin_fd)
    # The sandbox holds its own copies now; ours would keep the status pipe from closing.
    for fd in launch.pass_fds:
        os.close(fd)
    launch.pass_fds = ()
    try:
        return _Supervisor(proc, launch, limits, mode, started).run()
    finally:
        if proc.returncode is None:  # supervision itself failed: never leave a sandbox behind
            if launch.kill_tree is not None:
                launch.kill_tree(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        launch.close()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


class _Supervisor:
    """Watches one started sandbox: reads its output, enforces the limits, reaps it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        launch: Launch,
        limits: Limits,
        mode: IsolationMode,
        started: float,
    ) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc, self.launch, self.limits, self.mode = proc, launch, limits, mode
        self.started = started
        self.deadline = started + limits.wall_seconds
        self.out = _Capture(limits.max_output_bytes)
        self.err = _Capture(limits.max_output_bytes, tail=STDERR_TAIL_BYTES)
        self.status = bytearray()
        self.streams: dict[int, _Capture | bytearray] = {
            proc.stdout.fileno(): self.out,
            proc.stderr.fileno(): self.err,
            launch.status_fd: self.status,
        }
        self.exited_at: float | None = None
        self.kill_reason = ""
        self.killed_at = 0.0
        self.next_watch = started + launch.poll_seconds
        self.pidfd = -1

    def run(self) -> RunResult:
        self.pidfd = os.pidfd_open(self.proc.pid)
        selector = selectors.DefaultSelector()
        try:
            for fd in (*self.streams, self.pidfd):
                selector.register(fd, selectors.EVENT_READ)
            while self.streams or self.exited_at is None:
                timeout = self._tick(time.monotonic())
                if timeout is None:
                    break  # something outside the sandbox's life holds a pipe: stop reading
                for key, _ in selector.select(timeout):
                    if not self._read(key.fd):
                        selector.unregister(key.fd)
        finally:
            selector.close()
            os.close(self.pidfd)
        return self._result()

    def _tick(self, now: float) -> float | None:
        """Enforce the deadline and the watchdog; how long to wait for events (None: stop)."""
        if self.exited_at is not None:
            drained_by = self.exited_at + DRAIN_GRACE_SECONDS
            return drained_by - now if now < drained_by else None
        if now >= self.deadline:
            self._kill("wall")
        if self.kill_reason:
            if now >= self.killed_at + KILL_GRACE_SECONDS:
                self._kill_directly()  # the mode's own kill did not end it: end it here
            return 0.05
        timeout = self.deadline - now
        if self.launch.watchdog is not None:
            if now >= self.next_watch:
                self.next_watch = now + self.launch.poll_seconds
                why = self.launch.watchdog(self.proc.pid)
                if why:
                    self._kill(why)
            timeout = min(timeout, self.next_watch - now)
        return max(timeout, 0.001)

    def _read(self, fd: int) -> bool:
        """Handle a ready descriptor; False once it is finished with."""
        if fd == self.pidfd:
            self.exited_at = time.monotonic()
            return False
        chunk = os.read(fd, 65536)
        sink = self.streams[fd]
        if not chunk:
            del self.streams[fd]
            return False
        if isinstance(sink, _Capture):
            sink.feed(chunk)
            if sink.overflowed:
                self._kill("output")  # an endless printer is stopped, not drained for 5 s
        elif len(sink) < 64:
            sink += chunk
        return True

    def _kill(self, reason: str) -> None:
        if self.kill_reason:
            return
        self.kill_reason, self.killed_at = reason, time.monotonic()
        if self.launch.kill_tree is not None:
            self.launch.kill_tree(self.proc.pid)
        else:
            self._kill_directly()

    def _kill_directly(self) -> None:
        # Through the pidfd (no pid-reuse race: the process is ours and not yet reaped),
        # then the process group it leads.
        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _result(self) -> RunResult:
        _, wait_status, usage = os.wait4(self.proc.pid, 0)
        wall = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped here, not by Popen
        cpu = usage.ru_utime + usage.ru_stime
        if b"R" not in self.status and self.kill_reason != "wall":
            raise SandboxStartError(
                f"{self.mode.value} sandbox failed to start (status {self.proc.returncode}): "
                + self.err.data[-2000:].decode(errors="replace").strip()
            )
        sig = 0
        if os.WIFSIGNALED(wait_status):
            sig = os.WTERMSIG(wait_status)
            exit_code = 128 + sig
        else:
            exit_code = os.WEXITSTATUS(wait_status)
            marker = _exit_marker(bytes(self.status))
            if self.launch.relays_signals and exit_code > 128 and marker != exit_code:
                sig = exit_code - 128
        # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one (soft + 1 s).
        cpu_killed = sig == signal.SIGKILL and not self.kill_reason
        timed_out = self.kill_reason == "wall" or sig == signal.SIGXCPU
        timed_out = timed_out or (cpu_killed and cpu >= self.limits.cpu_seconds)
        tail = bytes(self.err.tail)
        stderr = self.err.data.decode(errors="replace")
        if self.kill_reason not in ("", "wall", "output"):
            stderr += f"\n[sandbox] stopped: {self.kill_reason}\n"
        return RunResult(
            stdout=self.out.data.decode(errors="replace"),
            stderr=stderr,
            exit_code=exit_code,
            signal=sig,
            wall_seconds=wall,
            cpu_seconds=cpu,
            timed_out=timed_out,
            memory_exceeded=b"MemoryError" in tail or b"Cannot allocate memory" in tail,
            output_truncated=self.out.overflowed or self.err.overflowed,
            mode=self.mode,
        )


def _exit_marker(status: bytes) -> int | None:
    """The exit status the launcher reported ("X<code>"), if it got that far."""
    _, found, rest = status.partition(b"X")
    if not found:
        return None
    digits = rest.split(b"\n", 1)[0]
    return int(digits) if digits.isdigit() else None
