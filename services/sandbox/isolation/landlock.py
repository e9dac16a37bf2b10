"""The fallback isolation where namespaces are unavailable (a stock Kubernetes pod, whose
RuntimeDefault seccomp profile blocks user namespaces): Landlock + seccomp + rlimits.

The launcher (launcher.py), before it runs the program: lowers its CPU priority (nice),
sets the rlimits, arranges to die
with the service, sets no_new_privs, restricts itself with Landlock and loads the seccomp
deny-list. The program then:

- reads only the system's read-only paths (READ_ONLY_PATHS) and its own scratch
  directory, writes only the scratch directory (a fresh one per run, deleted after) and
  /dev/null: no service code, keys, /proc (so no other process's environ or memory maps),
  /sys, /home, /root, /var, /run;
- has no network: Landlock denies TCP bind/connect and seccomp denies socket() for every
  family (a pathname Unix socket is not covered by Landlock ABI <= 7);
- cannot signal, ptrace or reach the abstract sockets of anything outside its own
  Landlock domain (scoped signals need ABI 6, Linux 6.12: MIN_ABI);
- cannot create processes (seccomp denies fork, vfork and clone without CLONE_THREAD):
  there is no pid namespace, and RLIMIT_NPROC counts every process of the host uid,
  which here is the service's own (or, for a root service, shared by every concurrent
  sandbox). Without a per-sandbox process count, no processes at all is the safe choice:
  no fork bomb, orphan or daemon can exist, and killing the one process ends the run.

Known gaps compared with bubblewrap (the attack suite states each one):

- subprocess and os.system fail with PermissionError instead of running contained;
- threads count against no per-sandbox limit: RLIMIT_AS bounds them (8 MiB stacks), and
  the host watchdog kills the run above max_processes threads (polling, so briefly more);
- the scratch size cap is the host watchdog's too (polling: a fast writer may overshoot
  by what it writes in one poll interval; RLIMIT_FSIZE caps each file);
- the program shares the host's pid space: it cannot see /proc, but kill(pid, 0)
  answers EPERM for a live process outside the sandbox and ESRCH for none, so pids can
  be probed; uname() shows the host's name and kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import (
    DEFAULT_NICE,
    IsolationMode,
    IsolationUnavailable,
    Launch,
    RunResult,
    default_run_as,
    execute,
    launcher_argv,
    memfd_with,
    sandbox_env,
    system_python,
)
from services.sandbox.isolation.seccomp import SeccompUnavailableError, deny_list_bpf

MIN_ABI = 6  # scoped signals: without them the program could signal the service
SYS_LANDLOCK_CREATE_RULESET = 444
LANDLOCK_CREATE_RULESET_VERSION = 1
READ_ONLY_PATHS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/localtime",
)
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
MAX_SCRATCH_ENTRIES = 2048
WATCHDOG_SECONDS = 0.02


@functools.cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version: int = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(version, 0)


class LandlockIsolation:
    mode = IsolationMode.LANDLOCK
    _confined = True

    def __init__(
        self,
        python: str | None = None,
        run_as: tuple[int, int] | None = None,
        scratch_root: str | None = None,
        read_only_paths: Sequence[str] = READ_ONLY_PATHS,
        nice: int = DEFAULT_NICE,
    ) -> None:
        self._nice = nice
        self._python = python or system_python()
        self._run_as = run_as if run_as is not None else default_run_as()
        # Must be traversable by the sandbox's uid (the default, /tmp, is).
        self._scratch_root = scratch_root or tempfile.gettempdir()
        paths = [p for p in read_only_paths if os.path.exists(p)]
        prefix = str(Path(self._python).resolve().parent.parent)
        if not any(prefix == p or prefix.startswith(p.rstrip("/") + "/") for p in paths):
            paths.append(prefix)  # an interpreter outside /usr still needs its stdlib
        if any(":" in p for p in paths):
            raise IsolationUnavailable("read-only paths must not contain ':'")
        self._read_only = ":".join(paths)
        self._seccomp = b""
        if self._confined:
            abi = landlock_abi()
            if abi < MIN_ABI:
                raise IsolationUnavailable(
                    f"Landlock ABI {abi} < {MIN_ABI} (needs Linux >= 6.12 with Landlock enabled)"
                )
            try:
                self._seccomp = deny_list_bpf(no_network=True, no_processes=True)
            except SeccompUnavailableError as exc:
                raise IsolationUnavailable(str(exc)) from exc

    def run(self, code: str, stdin: str, limits: Limits) -> RunResult:
        scratch = tempfile.mkdtemp(prefix="learnflow-sandbox-", dir=self._scratch_root)
        try:
            main = os.path.join(scratch, "main.py")
            with open(main, "w", encoding="utf-8") as handle:
                handle.write(code)
            if self._run_as is not None:
                os.chown(scratch, *self._run_as)
                os.chown(main, *self._run_as)
            return self._execute(scratch, main, stdin, limits)
        finally:
            remove_tree(scratch)

    def _execute(self, scratch: str, main: str, stdin: str, limits: Limits) -> RunResult:
        status_read, status_write = os.pipe()
        pass_fds: tuple[int, ...] = (status_write,)
        extra = {"scratch": scratch}
        if self._confined:
            seccomp_fd = memfd_with("seccomp", self._seccomp)
            pass_fds += (seccomp_fd,)
            extra.update(
                landlock="1",
                landlock_abi_min=str(MIN_ABI),
                parent=str(os.getpid()),
                seccomp=str(seccomp_fd),
                ro=self._read_only,
                dev=":".join(DEVICES),
            )
        argv = launcher_argv(
            self._python,
            main,
            status_write,
            limits,
            nproc=not self._confined,
            extra=extra,
            nice=self._nice,
        )
        launch = Launch(
            argv=argv,
            env=sandbox_env(scratch),
            status_fd=status_read,
            pass_fds=pass_fds,
            run_as=self._run_as,
            cwd=scratch,
            watchdog=_watchdog(scratch, limits, allowance=os.stat(main).st_blocks * 512),
            poll_seconds=WATCHDOG_SECONDS,
        )
        return execute(launch, stdin, limits, self.mode)


class UnsafeNoneIsolation(LandlockIsolation):
    """No isolation: rlimits, an empty environment, a scratch directory and the wall
    clock only. Dev-only (detect(allow_unsafe=True) logs it loudly); the program can read
    whatever the service's uid can and reach the network."""

    mode = IsolationMode.UNSAFE_NONE
    _confined = False


def _watchdog(scratch: str, limits: Limits, allowance: int) -> Callable[[int], str | None]:
    """Checks the Landlock mode can only poll for: thread count and scratch usage.
    `allowance`: what main.py itself occupies (not counted against the program)."""

    def check(pid: int) -> str | None:
        threads = _thread_count(pid)
        if threads > limits.max_processes:
            return f"more than {limits.max_processes} threads"
        used, entries = _usage(scratch, MAX_SCRATCH_ENTRIES)
        if used > limits.scratch_bytes + allowance:
            return f"scratch space limit ({limits.scratch_bytes} bytes) exceeded"
        if entries > MAX_SCRATCH_ENTRIES:
            return f"more than {MAX_SCRATCH_ENTRIES} files in scratch"
        return None

    return check


def _thread_count(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[17])  # num_threads: field 20 of stat, 18th after the command name


def _usage(root: str, max_entries: int) -> tuple[int, int]:
    """Bytes allocated and entries under root; stops counting past max_entries."""
    used, entries, pending = 0, 0, [root]
    while pending and entries <= max_entries:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    used += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except OSError:
            continue
    return used, entries


def remove_tree(path: str) -> None:
    """Delete a scratch directory whatever the program did to its permissions."""

    def make_writable(_func: object, failed: str, _exc: object) -> None:
        parent = os.path.dirname(failed)
        for target in (parent, failed):
            try:
                if not os.path.islink(target):
                    os.chmod(target, 0o700)
            except OSError:
                pass
        if os.path.isdir(failed) and not os.path.islink(failed):
            shutil.rmtree(failed, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(failed)

    shutil.rmtree(path, onerror=make_writable)
