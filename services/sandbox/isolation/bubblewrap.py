"""The primary isolation: bubblewrap (Debian's bwrap, unprivileged user namespaces).

Each run gets new user, pid, network, ipc, uts and cgroup namespaces; a root made of
read-only system directories only (/usr and its merged-/usr symlinks, ld.so.cache,
localtime: no /home, /root, /run, /var, /srv, no service code or keys, no host Unix
sockets), a fresh /proc of its own pid namespace, a minimal read-only /dev, and a
size-capped tmpfs at /tmp as the working directory. The measured pitfalls
are each answered:

- server environment leaking through /proc/1/environ: bwrap itself starts with an empty
  environment (sandbox_env), and /proc shows only the sandbox's own pid namespace;
- writable / and /dev: `--remount-ro /` and `--remount-ro /dev` after the mounts (the
  device nodes null, zero, urandom... stay usable: they are separate bind mounts);
- ptrace of the sandbox init: the seccomp deny-list (ptrace, process_vm_*, ...);
- a zombie per run: without --as-pid-1, bwrap's reaper (pid 1) reports the program's
  exit through an eventfd and the outer bwrap exits WITHOUT reaping it; the orphan becomes
  a zombie of the service wherever the service is its container's pid 1 (measured: one
  per run). With --as-pid-1 the program is the namespace's init and the outer bwrap
  reaps it with waitpid (which also makes wait4 on bwrap report the program's CPU time).
  Orphans inside the sandbox are reaped by the kernel when the namespace ends;
- whole-tree kill: the host SIGKILLs the namespace's init (bwrap's child, the program);
  the kernel then kills every process of the pid namespace, and bwrap reaps its child and
  exits. Killing bwrap instead would orphan its child (--die-with-parent still kills it).
  A program that is pid 1 ignores signals it has no handler for when they come from
  inside the namespace (kill(1, SIGTERM) from a child), and RLIMIT_CPU's SIGXCPU; the
  hard CPU limit's SIGKILL and the host's SIGKILL still end it.

Rlimits and the lower CPU priority (nice) are set inside, by the launcher (see
launcher.py for why): it is the namespace's init, so every process of the run inherits
them.

Known limits of this mode: RLIMIT_AS is per process, so a program that forks may use up
to max_processes x memory_bytes (a cgroup would give a true cap where one is delegated);
the tmpfs caps bytes, not inodes, so a flood of empty files costs kernel memory until
the run ends (bounded by the wall limit); /dev is read-only, so POSIX semaphores
(multiprocessing) are unavailable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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

SCRATCH = "/tmp"  # noqa: S108 - inside the sandbox: its own tmpfs, not the host's /tmp
MAIN = f"{SCRATCH}/main.py"
# Top-level names that merged-/usr systems make symlinks into /usr (others bind them).
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
READ_ONLY_FILES = ("/etc/ld.so.cache", "/etc/localtime")


class BubblewrapIsolation:
    mode = IsolationMode.BUBBLEWRAP

    def __init__(
        self,
        bwrap: str | None = None,
        python: str | None = None,
        run_as: tuple[int, int] | None = None,
        sandbox_id: int = 65534,
        nice: int = DEFAULT_NICE,
    ) -> None:
        self._nice = nice
        found = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        if not os.access(found, os.X_OK):
            raise IsolationUnavailable("bubblewrap (bwrap) is not installed")
        self._bwrap = found
        self._python = python or system_python()
        if not self._python.startswith("/usr/"):
            raise IsolationUnavailable(f"{self._python} is outside /usr, the sandbox's root")
        self._run_as = run_as if run_as is not None else default_run_as()
        try:
            self._seccomp = deny_list_bpf(no_network=False, no_processes=False)
        except SeccompUnavailableError as exc:
            raise IsolationUnavailable(str(exc)) from exc
        self._head = self._static_args(sandbox_id)

    @staticmethod
    def _static_args(sandbox_id: int) -> list[str]:
        args = [
            "--unshare-all",  # user, pid, net (no network at all), ipc, uts, cgroup
            "--unshare-user",  # explicit: --disable-userns requires it
            "--disable-userns",  # no nested user namespaces (seccomp also denies them)
            "--die-with-parent",
            "--new-session",  # no TIOCSTI into a terminal of ours
            "--as-pid-1",  # see the module docstring: no orphaned bwrap reaper per run
            "--cap-drop",
            "ALL",
            # A fixed, unprivileged id inside the namespace: RLIMIT_NPROC counts per
            # (user namespace, uid), i.e. per sandbox.
            "--uid",
            str(sandbox_id),
            "--gid",
            str(sandbox_id),
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for name in ROOT_LINKS:
            path = f"/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in READ_ONLY_FILES:
            args += ["--ro-bind-try", path, path]
        return [*args, "--proc", "/proc", "--dev", "/dev"]

    def run(self, code: str, stdin: str, limits: Limits) -> RunResult:
        source = code.encode()
        code_fd = memfd_with("main.py", source)
        seccomp_fd = memfd_with("seccomp", self._seccomp)
        status_read, status_write = os.pipe()
        argv = [
            self._bwrap,
            *self._head,
            "--size",  # main.py lives there too: the program still gets all of scratch_bytes
            str(limits.scratch_bytes + len(source)),
            "--tmpfs",
            SCRATCH,
            "--file",
            str(code_fd),
            MAIN,
            "--seccomp",
            str(seccomp_fd),
            "--chdir",
            SCRATCH,
            "--remount-ro",
            "/dev",
            "--remount-ro",
            "/",
            "--",
            *launcher_argv(
                self._python, MAIN, status_write, limits, nproc=True, extra={}, nice=self._nice
            ),
        ]
        launch = Launch(
            argv=argv,
            env=sandbox_env(SCRATCH),
            status_fd=status_read,
            pass_fds=(code_fd, seccomp_fd, status_write),
            run_as=self._run_as,
            relays_signals=True,
            kill_tree=kill_namespace,
        )
        return execute(launch, stdin, limits, self.mode)


def kill_namespace(bwrap_pid: int) -> None:
    """SIGKILL the sandbox's pid 1 (bwrap's child): the kernel then kills the rest of the
    pid namespace, and bwrap reaps its child and exits. Before bwrap has a child, kill
    bwrap itself (nothing is orphaned then)."""
    children_file = f"/proc/{bwrap_pid}/task/{bwrap_pid}/children"
    try:
        children = [int(pid) for pid in Path(children_file).read_text().split()]
    except OSError:
        children = []
    killed = False
    for child in children:
        try:
            pidfd = os.pidfd_open(child)
        except ProcessLookupError:
            continue
        try:
            # Still bwrap's child once we hold the pidfd: the pid was not reused.
            if str(child) in Path(children_file).read_text().split():
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed = True
        except OSError:
            pass
        finally:
            os.close(pidfd)
    if not killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bwrap_pid, signal.SIGKILL)  # not reaped yet by us: the pid is still ours
