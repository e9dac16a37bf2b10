"""In-sandbox launcher: sets the limits, confines itself, then runs the student's program.

The host runs it as `python3 -I -S -u -B -c <this source> key=value...` with the system
interpreter, so it may import the standard library only (never the project). It runs the
program in the same interpreter after confining itself, instead of exec'ing a second
python3: that would double the start-up cost of every run (~10 ms).

Steps, in order:
0. A lower CPU priority (nice +SANDBOX_NICE, relative to the service): first, so the rest
   of the start-up, the program and everything it starts run below the services; in the
   bubblewrap mode this process is the namespace's init, so the whole tree inherits it.
   RLIMIT_NICE 0 (below) and no CAP_SYS_NICE keep any of them from raising it back.
1. rlimits (RLIMIT_AS, CPU, NPROC, FSIZE, NOFILE, CORE): set here, inside the sandbox,
   because bubblewrap has no rlimit options and RLIMIT_NPROC must be counted inside the
   sandbox's user namespace (a count set on bwrap itself would include every other
   sandbox of the same host uid).
2. Landlock mode only: die with the parent, no_new_privs, a Landlock ruleset (read-only
   system paths, read-write scratch, no TCP, signals and abstract sockets scoped to the
   sandbox) and the seccomp deny-list BPF received from the host on a file descriptor.
3. "R" on the status pipe: the host knows the sandbox is in place (no "R" means the
   sandbox failed to start, which is the service's fault, not the student's).
4. The program runs as __main__; then "X<code>" on the status pipe, so the host can tell
   sys.exit(139) from a segfault (bubblewrap reports both as exit status 139).

In the bubblewrap mode this process is the pid namespace's init (--as-pid-1).

Every import here is paid on every run: keep them few and lazy.
"""

# No `from __future__ import annotations` and `posix` rather than `os`: each import costs
# every run (os alone ~1.3 ms), and posix is already loaded at interpreter start.
import posix
import resource
import sys

STATUS_READY = b"R"
# This module stops being __main__ when the program starts: keep it alive while it runs.
_LAUNCHER_MODULE = sys.modules[__name__]

_RLIMITS = {
    "as": resource.RLIMIT_AS,
    "nproc": resource.RLIMIT_NPROC,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
}

# Landlock (linux/landlock.h). The syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_MAKE_CHAR = 1 << 6
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2


def main() -> None:
    opts: dict[str, str] = {}
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        opts[key] = value
    if "nice" in opts:
        posix.nice(int(opts["nice"]))
    status = int(opts["status"])
    posix.set_inheritable(status, False)  # the program's own children must not hold it
    set_rlimits(opts)
    if "landlock" in opts:
        confine(opts)
    posix.write(status, STATUS_READY)
    code = run_program(opts["main"])
    try:  # noqa: SIM105 - contextlib is one more import on every run
        posix.write(status, b"X%d\n" % code)
    except OSError:
        pass  # the program closed or replaced the status descriptor: the host copes
    raise SystemExit(code)


def set_rlimits(opts: dict[str, str]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # No lowering of the nice value (raising priority) without CAP_SYS_NICE.
    resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
    for name, which in _RLIMITS.items():
        if name in opts:
            value = int(opts[name])
            resource.setrlimit(which, (value, value))
    if "cpu" in opts:
        # SIGXCPU at the soft limit (a clean "timed out"), SIGKILL a second later if the
        # program ignores it.
        seconds = int(opts["cpu"])
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


# One linear sequence of kernel calls. Split into functions, it would need ctypes' types at
# module level, an import (~3 ms) the bubblewrap mode never needs.
def confine(opts: dict[str, str]) -> None:  # noqa: PLR0915
    """Landlock + seccomp on this process (and everything it may start)."""
    import ctypes
    import os  # already imported by ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def check(result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    def prctl(option: int, arg: int) -> None:
        zero = ctypes.c_ulong(0)
        check(
            libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero),
            f"prctl({option})",
        )

    # No pid namespace dies with the server here: die with it ourselves, and give up if
    # the server is already gone (the parent changed before the prctl took effect).
    prctl(PR_SET_PDEATHSIG, 9)
    if os.getppid() != int(opts["parent"]):
        os._exit(125)
    prctl(PR_SET_NO_NEW_PRIVS, 1)

    abi = check(
        libc.syscall(
            ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
        ),
        "landlock ABI",
    )
    if abi < int(opts.get("landlock_abi_min", "1")):
        raise OSError(f"Landlock ABI {abi} is below the required {opts['landlock_abi_min']}")

    class RulesetAttr(ctypes.Structure):
        _fields_ = [
            ("handled_access_fs", ctypes.c_uint64),
            ("handled_access_net", ctypes.c_uint64),
            ("scoped", ctypes.c_uint64),
        ]

    class PathBeneathAttr(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    fs_all = (1 << 13) - 1
    fs_all |= FS_REFER if abi >= 2 else 0
    fs_all |= FS_TRUNCATE if abi >= 3 else 0
    fs_all |= FS_IOCTL_DEV if abi >= 5 else 0
    file_rights = fs_all & (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV)
    read_only = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    # Scratch: create, write, rename, delete; no executables, devices, sockets or FIFOs.
    unused = FS_EXECUTE | FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_MAKE_SOCK | FS_MAKE_FIFO
    scratch = fs_all & ~(unused | FS_IOCTL_DEV)
    attr = RulesetAttr(
        fs_all,
        (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
        (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = check(
        libc.syscall(
            ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
            ctypes.byref(attr),
            ctypes.c_size_t(size),
            ctypes.c_uint32(0),
        ),
        "landlock_create_ruleset",
    )
    rules = [(path, read_only) for path in opts.get("ro", "").split(":") if path]
    rules += [(path, FS_READ_FILE | FS_WRITE_FILE) for path in opts.get("dev", "").split(":")]
    rules.append((opts["scratch"], scratch))
    for path, access in rules:
        if not path or not os.path.exists(path):
            continue
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            allowed = access if os.path.isdir(path) else access & file_rights
            beneath = PathBeneathAttr(allowed, fd)
            check(
                libc.syscall(
                    ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                    ctypes.c_int(ruleset),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    ctypes.c_uint32(0),
                ),
                f"landlock_add_rule({path})",
            )
        finally:
            os.close(fd)
    check(
        libc.syscall(
            ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)
        ),
        "landlock_restrict_self",
    )
    os.close(ruleset)

    # The seccomp program comes from the host, compiled by libseccomp (seccomp.py).
    bpf_fd = int(opts["seccomp"])
    program = b""
    while chunk := os.read(bpf_fd, 65536):
        program += chunk
    os.close(bpf_fd)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    check(
        libc.prctl(
            ctypes.c_int(PR_SET_SECCOMP),
            ctypes.c_ulong(SECCOMP_MODE_FILTER),
            ctypes.byref(fprog),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        ),
        "seccomp",
    )


def run_program(path: str) -> int:
    """Run the file at `path` as __main__, as `python3 path` would; return its exit status."""
    import _sitebuiltins
    import builtins

    # -S skips site (2-3 ms, and the system's dist-packages), which also provides exit()
    # and quit(): students use them, so put them back.
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    builtins.help = _sitebuiltins._Helper()

    with open(path, "rb") as source_file:
        source = source_file.read()
    module = type(sys)("__main__")
    module.__dict__.update(__file__=path, __builtins__=builtins, __cached__=None)
    sys.modules["__main__"] = module
    sys.argv[:] = [path]
    try:
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)  # noqa: S102
    except SystemExit as exc:
        return exit_status(exc)
    except BaseException as exc:  # report it the way python3 would
        # Start the traceback at the student's code, not at this launcher.
        tb = exc.__traceback__
        exc.__traceback__ = tb.tb_next if tb is not None else None
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


def exit_status(exc: SystemExit) -> int:
    """The process exit status python3 derives from an uncaught SystemExit."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
