"""The sandbox's seccomp deny-list, compiled once on the host to a BPF program.

Everything not listed is allowed (a Python program needs hundreds of syscalls); the list
names what a student's program has no business calling: kernel attack surface (bpf,
io_uring, userfaultfd, perf_event_open, keyctl), other processes (ptrace,
process_vm_*, pidfd_getfd), namespaces and mounts (the way out of a container), and the
machine (reboot, swapon, kexec, modules). Denied calls fail with EPERM rather than killing
the process, so a student sees a PermissionError, not a mysterious SIGSYS.

bubblewrap loads the program with `--seccomp FD`; the Landlock launcher loads it with
prctl(PR_SET_SECCOMP). Only the host needs libseccomp (through pyseccomp): the sandboxed
interpreter receives raw BPF bytes.
"""

from __future__ import annotations

import errno
import functools
import tempfile

CLONE_NEWUSER = 0x10000000
CLONE_THREAD = 0x00010000

DENIED = (
    # Other processes' memory and state.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    # Large, often-exploited kernel surfaces.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "modify_ldt",
    "uselib",
    "personality",
    # Namespaces and mounts.
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    # The machine.
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "vhangup",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
)


class SeccompUnavailableError(RuntimeError):
    """libseccomp (through pyseccomp) is missing on the host."""


@functools.cache
def deny_list_bpf(*, no_network: bool, no_processes: bool) -> bytes:
    """The BPF program for the deny-list (cached: it depends only on the two switches).

    no_network: also deny socket() for every family (the Landlock mode has no network
    namespace; socketpair() still works). no_processes: also deny fork, vfork and clone
    without CLONE_THREAD (the Landlock mode cannot count a sandbox's processes, see
    landlock.py); threads stay allowed.
    """
    try:
        import pyseccomp as sc  # type: ignore[import-untyped]  # ctypes over libseccomp.so.2
    except (ImportError, OSError) as exc:
        raise SeccompUnavailableError(f"pyseccomp/libseccomp unavailable: {exc}") from exc

    filt = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)

    def deny(action: int, name: str, *args: object) -> None:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
            return  # not a syscall on this architecture (e.g. modify_ldt off x86)
        filt.add_rule(action, name, *args)

    for name in DENIED:
        deny(eperm, name)
    # clone3 passes its flags in memory, where seccomp cannot look: ENOSYS makes glibc fall
    # back to clone(), whose flags can be checked.
    deny(sc.ERRNO(errno.ENOSYS), "clone3")
    deny(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    if no_processes:
        deny(eperm, "fork")
        deny(eperm, "vfork")
        deny(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    if no_network:
        deny(eperm, "socket")
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        program: bytes = out.read()
    return program
