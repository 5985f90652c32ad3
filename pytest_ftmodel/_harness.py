"""Runs inside the sandbox: set up, drop privileges, run the program, and prove it ran to its end.

Started by :mod:`pytest_ftmodel.sandbox` in one of two ways, always as a fresh ``python -I -S``
that imports as little as it can (json alone would cost more than the interpreter's start-up):

``_harness.py key=value ...``
    runs one program and exits (the process level).
``_harness.py zygote socket=FD``
    a fork server for the namespace level. It never runs a program itself. For each request on its
    socket it forks a child into a fresh PID namespace, and the child enters fresh mount and network
    namespaces and runs one program. So every program starts from a copy of an interpreter that no
    other program has touched, without paying for the interpreter's start-up again.

The program arrives on one pipe and the per-run nonce on another; the nonce goes back on the result
pipe only after the program's code has run to its end, so an early ``sys.exit(0)``, ``os._exit(0)``
or an ``atexit`` trick never reads as a pass. (A program that deliberately digs the nonce out of this
interpreter's memory can forge its own pass; the isolation layers still contain what it can do.)
"""

import os
import resource
import sys


_FUNCS: dict = {}  # name -> libc function


def _libc(name):
    """A libc function through _ctypes itself: the ctypes package costs 2.5 ms to import per run."""
    if name in _FUNCS:
        return _FUNCS[name]
    import _ctypes

    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = c_int

    class Lib:
        _handle = _ctypes.dlopen(None)

    _FUNCS[name] = Func((name, Lib()))
    return _FUNCS[name]


def _call(name, *args):
    """Call a libc function that returns 0 on success; raise OSError with its errno otherwise."""
    if _libc(name)(*args) != 0:
        import _ctypes

        raise OSError(_ctypes.get_errno(), f"{name}{args}")


def _mount(source, target, fstype, options):
    _call("mount", source.encode(), target.encode(), fstype.encode(), 0, options.encode())


def _private_mounts(cfg):
    """Inside a fresh mount namespace: private tmpfs for every world-writable place, fresh /proc."""
    MS_REC, MS_PRIVATE = 0x4000, 0x40000
    _libc("mount")(b"none", b"/", None, MS_REC | MS_PRIVATE, None)  # keep our mounts from the host
    uid = cfg["uid"] if cfg["uid"] is not None else 0
    gid = cfg["gid"] if cfg["gid"] is not None else 0
    opts = f"size={cfg['tmpfs_mb']}m,nr_inodes=4096,mode=0700,uid={uid},gid={gid}"
    _mount("tmpfs", "/tmp", "tmpfs", opts)
    for other in ("/var/tmp", "/dev/shm"):
        if os.path.isdir(other):
            try:
                _mount("tmpfs", other, "tmpfs", "size=1m,nr_inodes=16,mode=0500")
            except OSError:
                pass
    _mount("proc", "/proc", "proc", "")  # only this PID namespace's processes are visible


def _limits(cfg):
    soft = {
        resource.RLIMIT_CPU: cfg["cpu_seconds"],
        resource.RLIMIT_AS: cfg["memory_mb"] << 20,
        resource.RLIMIT_FSIZE: cfg["file_size_mb"] << 20,
        resource.RLIMIT_NOFILE: cfg["open_files"],
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: cfg["processes"],
    }
    for which, value in soft.items():
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU first, SIGKILL after
        resource.setrlimit(which, (value, hard))


def _drop_privileges(cfg):
    """Become the run's own unprivileged uid, keeping the standard library importable.

    The interpreter may live where that uid cannot read (under a home directory of mode 700). Directories opened
    before the drop stay reachable as /proc/self/fd/N, which skips the checks on their ancestors.
    """
    if cfg["uid"] is None:
        return
    prctl = _libc("prctl")
    held = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in sys.path if os.path.isdir(p)}
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])
    PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the uid change made /proc/self/fd root's; take it back
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")

    def moved(path):
        for old, fd in held.items():
            if path == old or path.startswith(old + "/"):
                return f"/proc/self/fd/{fd}{path[len(old):]}"
        return path

    sys.path[:] = [moved(p) for p in sys.path]
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [moved(p) for p in search]
    sys.path_importer_cache.clear()


def _read_fd(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


_INTS = ("uid", "gid", "tmpfs_mb", "program_fd", "nonce_fd", "result_fd", "cpu_seconds", "memory_mb",
         "file_size_mb", "open_files", "processes", "namespaces")


def _config(argv):
    cfg = dict(arg.split("=", 1) for arg in argv)
    for key in _INTS:
        if key in cfg:
            cfg[key] = None if cfg[key] == "none" else int(cfg[key])
    return cfg


def _run(cfg):
    """Run the program of this run; exits the process, as `python program.py` would."""
    try:
        if cfg["namespaces"]:
            _private_mounts(cfg)
        os.chdir(cfg["workdir"])
        source = _read_fd(cfg["program_fd"]).decode("utf-8")
        nonce = _read_fd(cfg["nonce_fd"])
        result_fd = cfg["result_fd"]
        _limits(cfg)
        _drop_privileges(cfg)
        sys.argv = ["program.py"]
        sys.path.insert(0, cfg["workdir"])
        namespace = {"__name__": "__main__", "__file__": os.path.join(cfg["workdir"], "program.py")}
        try:
            code = compile(source, "program.py", "exec")
            exec(code, namespace)  # noqa: S102 - the whole point, inside the sandbox
        except MemoryError:
            os.write(result_fd, b"memory")
            os._exit(3)
        del namespace
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(result_fd, nonce)
        os._exit(0)  # no atexit hook of the program runs after the verdict
    except BaseException as exc:  # noqa: BLE001 - ends the process like the interpreter's own top level
        _exit_as_the_interpreter_would(exc)


def _exit_as_the_interpreter_would(exc):
    """An uncaught exception: print it (or a SystemExit's message), run the atexit hooks, exit."""
    status = 1
    try:
        if isinstance(exc, SystemExit):
            if exc.code is None:
                status = 0
            elif isinstance(exc.code, int):
                status = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
        else:
            sys.excepthook(type(exc), exc, exc.__traceback__)
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001, S110 - a broken stdout must not change how the run ends
        pass
    os._exit(status)


# ---- the fork server --------------------------------------------------------------------------

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
_RUN_FDS = 5  # stdout, stderr, program, nonce and result pipes, in that order


def _child(request, fds, inherited):
    """In the forked child (PID 1 of a fresh PID namespace): become one run's sandbox and run it."""
    for fd in inherited:
        os.close(fd)  # nothing of the server's socket reaches the program
    stdout_w, stderr_w, program_r, nonce_r, result_w = fds
    os.dup2(stdout_w, 1)
    os.dup2(stderr_w, 2)
    os.close(stdout_w)
    os.close(stderr_w)
    try:
        PR_SET_PDEATHSIG, SIGKILL = 1, 9
        _call("prctl", PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)  # the server gone: this run goes too
        os.setsid()
        cfg = _config(request.decode("utf-8").split("\n"))
        cfg.update(program_fd=program_r, nonce_fd=nonce_r, result_fd=result_w)
        os.environ["FTMODEL_SANDBOX_RUN"] = cfg["marker"]  # what the program starts carries it
        _call("unshare", CLONE_NEWNS | CLONE_NEWNET)
    except BaseException as exc:  # noqa: BLE001
        _exit_as_the_interpreter_would(exc)
    _run(cfg)


def _status(waited):
    """A waitid() result as subprocess reports it: the exit code, or minus the killing signal."""
    CLD_EXITED = 1
    return waited.si_status if waited.si_code == CLD_EXITED else -waited.si_status


def _await_child(sock, pid, select):
    """Wait for the child to end, killing it when asked: its exit status, or None once the parent is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            waited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            if waited is not None:
                return _status(waited)
            if pidfd is not None:  # readable once the child has ended
                ready = select.select([sock, pidfd], [], [])[0]
            else:
                ready = select.select([sock], [], [], 0.01)[0]
            if sock in ready:
                message = sock.recv(64)
                if not message:
                    return None
                if message == b"kill":
                    os.kill(pid, 9)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _receive(sock, _socket):
    """One request and the descriptors attached to it (socket.recv_fds without the socket module)."""
    request, ancillary, _, _ = sock.recvmsg(1 << 16, _socket.CMSG_LEN(4 * _RUN_FDS))
    fds = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder, signed=True) for i in range(0, len(data) - 3, 4)]
    return request, fds


def serve(sock_fd):
    """Fork one child per request until the parent closes the socket.

    Request: the run's ``key=value`` lines, with its five pipe ends attached. Replies: ``pid N`` (or
    ``error ...``), then ``exit CODE`` when the child has ended (it stays unreaped, so its pid cannot
    be reused while the parent may still ask for a ``kill``), then the parent's ``done`` lets it go.
    """
    import _socket  # not socket: its Python layer would leave enum, collections and more imported
    import select

    sock = _socket.socket(fileno=sock_fd)
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    sock.send(b"ready")
    while True:
        try:
            request, fds = _receive(sock, _socket)
        except OSError:
            return
        if not request:
            return
        try:
            if len(fds) != _RUN_FDS:
                raise OSError(f"expected {_RUN_FDS} descriptors, got {len(fds)}")
            _call("unshare", CLONE_NEWPID)  # the next child is PID 1 of a fresh PID namespace
            try:
                pid = os.fork()
                if pid == 0:
                    _child(request, fds, (sock.fileno(), own_pid_ns))
                    os._exit(1)  # never reached: the child always ends in os._exit
            finally:
                _call("setns", own_pid_ns, CLONE_NEWPID)  # later children need a fresh one of their own
        except OSError as exc:
            sock.send(f"error {exc}".encode())
            continue
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(b"pid %d" % pid)
        code = _await_child(sock, pid, select)
        if code is None:  # the parent is gone: so is this run
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return
        sock.send(b"exit %d" % code)
        message = b"kill"
        while message == b"kill":  # a kill sent as the child ended is moot
            message = sock.recv(64)
        os.waitpid(pid, 0)
        if message != b"done":
            return


def main():
    if sys.argv[1:2] == ["zygote"]:
        serve(int(_config(sys.argv[2:])["socket"]))
        os._exit(0)
    _run(_config(sys.argv[1:]))


if __name__ == "__main__":
    main()
