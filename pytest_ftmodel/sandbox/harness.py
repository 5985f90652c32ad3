"""Runs inside the sandbox: set up, drop privileges, run the program, judge it, report how it ended.

Never run from a file: the parent hands this source (with ``plain.py``'s prepended) to a
``python -I -S -c`` bootstrap on a pipe, so nothing on disk that a program could have written is
ever executed. It starts in one of two ways, importing as little as it can (json alone would cost
more than the interpreter's start-up):

``key=value ...``
    runs one program and exits (the process level).
``zygote socket=FD``
    a fork server for the namespace level. It never runs a program itself. At start it moves into
    a mount namespace of its own whose root is a read-only minimal tree (the system's ``/usr`` and
    the interpreter's prefix, bound read-only, on an empty tmpfs; see :func:`_minimal_root`). For each
    request it forks a child into a fresh PID namespace; the child enters fresh mount, network,
    IPC and UTS namespaces (a host name of its own), mounts its private ``/tmp``, ``/dev/shm`` and ``/proc``, and runs one program.

Two ways to judge a program:

``mode=split``
    The program is only the candidate's module. After the mounts, PID 1 forks the candidate: it
    drops every privilege, runs the module, and then answers calls on a pipe, in plain data only
    (``plain.py``). Only then does PID 1 read the tests and the per-run nonce, drop to a uid of its
    own, make itself undumpable (no ptrace, no ``/proc/1/mem``), and run the tests, which call the
    candidate through proxies. The nonce goes back only after the tests ran to their end: nothing
    in the candidate's process ever held it, and nothing the candidate does reaches the tests.
``mode=inprocess``
    Program and tests are one program, run in one process. After it ran to its end, the kernel
    moves the nonce from its pipe to the result pipe (``splice``): the nonce never enters the
    process's memory, so no frame, traceback or object holds it, and an early exit is a failure.
    But a program that tampers with its own tests (or finds and splices those pipes itself) can
    forge this verdict: it is the fallback where tests need the candidate's objects, and results
    say which way they were judged.
"""

import os
import sys

try:
    encode, decode, NotPlain  # noqa: B018 - prepended from plain.py inside the sandbox
except NameError:
    from pytest_ftmodel.sandbox.plain import NotPlain, decode, encode


_FUNCS: dict = {}  # name -> libc function


def _ctypes_kinds():
    import _ctypes

    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class c_void_p(_ctypes._SimpleCData):
        _type_ = "P"

    class c_char(_ctypes._SimpleCData):
        _type_ = "c"

    return _ctypes, c_int, c_void_p, c_char


def _libc(name):
    """A libc function through _ctypes itself: the ctypes package costs 2.5 ms to import per run."""
    if name in _FUNCS:
        return _FUNCS[name]
    _ctypes, c_int, _, _ = _ctypes_kinds()

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


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_MOVE, MS_REC, MS_PRIVATE = 0x2000, 0x4000, 0x40000
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWUTS = 0x4000000
HOSTNAME = b"sandbox"  # the run's own UTS namespace: the host's name stays out of sight
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def _mount(source, target, fstype, flags, options):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _call("mount", enc(source), enc(target), enc(fstype), flags, enc(options))


# ---- the fork server's minimal root -------------------------------------------------------------


def _bind_sources():
    """What programs see of the host: ``/usr`` (the system's libraries and tools), the interpreter's
    prefix when it lives elsewhere, a virtual environment's ``bin`` and ``pyvenv.cfg``, and ``/lib*``
    where they are real directories, not links."""
    wanted = ["/usr"]
    for top in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.isdir(top) and not os.path.islink(top):
            wanted.append(top)
    for prefix in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))):
        real = os.path.realpath(prefix)
        if os.path.isdir(real) and real != "/":
            wanted.append(real)
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        # a virtual environment (-S leaves sys.prefix at the base): its bin/ and pyvenv.cfg only,
        # so its interpreter runs as here, and its site-packages (nothing a program needs) stay out
        wanted += [os.path.join(venv, "bin"), os.path.join(venv, "pyvenv.cfg")]
    chosen = []
    for path in sorted(set(wanted), key=len):
        if not any(path == c or path.startswith(c + "/") for c in chosen):
            chosen.append(path)
    return chosen


TMP_STASH = "/.under-tmp"  # where the interpreter's files from under /tmp wait for each run's /tmp
_UNDER_TMP: list = []  # those paths (the fork server's; its children inherit the list)


def _mount_point(target, directory):
    """An empty directory, or an empty file for a file, to bind onto."""
    if directory:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))


def _read_only_bind(source, target):
    _mount(source, target, None, MS_BIND | MS_REC, None)
    keep = 0
    flags = os.statvfs(target).f_flag  # a remount must keep the flags the kernel locked (user namespaces)
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC)):
        if flags & st:
            keep |= ms
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, None)


def _minimal_root(own_proc):
    """Move this process into a mount namespace whose root holds only read-only binds of what the
    interpreter needs, empty mount points and /dev's harmless nodes (bubblewrap's way: a tmpfs,
    binds into it, ``pivot_root(".", ".")``, the old root detached, the new one made read-only;
    where pivot_root is refused, switch_root's: the new root moved over ``/``, and ``chroot``)."""
    _call("unshare", CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing we mount reaches the host
    base = "/tmp"
    sources = _bind_sources()
    # what lives under /tmp (a virtual environment made there): held open before the new root's
    # tmpfs covers /tmp, bound out of each run's way, and bound again over its private /tmp
    held = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in sources if p.startswith("/tmp/")}
    _mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    try:
        for path in sources:
            source = f"/proc/self/fd/{held[path]}" if path in held else path
            target = base + (TMP_STASH + path if path in held else path)
            _mount_point(target, os.path.isdir(source))
            _read_only_bind(source, target)
    finally:
        for fd in held.values():
            os.close(fd)
    _UNDER_TMP.extend(held)
    for name in os.listdir("/"):  # /bin -> usr/bin and the like
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), f"{base}/{name}")
    for directory in ("tmp", "proc", "dev", "dev/shm"):
        os.makedirs(f"{base}/{directory}", mode=0o755, exist_ok=True)
    if own_proc:
        # In a user namespace the kernel mounts a fresh /proc only where one is already fully
        # visible: ours shows this server's own PID namespace, and each run mounts its own over it.
        _mount("proc", f"{base}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    for node in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists(f"/dev/{node}"):
            os.close(os.open(f"{base}/dev/{node}", os.O_CREAT | os.O_WRONLY, 0o666))
            _mount(f"/dev/{node}", f"{base}/dev/{node}", None, MS_BIND, None)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{base}/dev/{name}")
    os.chdir(base)
    try:
        _call("syscall", _PIVOT_ROOT[os.uname().machine], b".", b".")
        _call("umount2", b".", 2)  # MNT_DETACH: the old root, stacked on the new one, goes
    except (OSError, KeyError):
        # pivot_root refused (an initramfs root cannot be pivoted away from) or unknown here: the
        # switch_root way instead, the new root moved over the old one (which it hides) and chroot'ed
        # into; programs can neither chroot nor mount (no capability, seccomp), so nothing leads back
        _mount(".", "/", None, MS_MOVE, None)
        _call("chroot", b".")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)


# ---- one run's setup ----------------------------------------------------------------------------


def _private_mounts(cfg):
    """Inside the run's fresh mount namespace: its own /tmp, /dev/shm and /proc."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    uid = cfg["uid"] if cfg["uid"] is not None else 0
    opts = f"size={cfg['tmpfs_mb']}m,nr_inodes=4096,mode=0700,uid={uid},gid={uid}"
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
    for path in _UNDER_TMP:  # the interpreter's files that lived under the host's /tmp, where they were
        _mount_point(path, os.path.isdir(TMP_STASH + path))
        _read_only_bind(TMP_STASH + path, path)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['shm_mb']}m,nr_inodes=256,mode=0700,uid={uid},gid={uid}")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)  # only this PID namespace's processes


def _limits(cfg, processes=None):
    import resource

    soft = {
        resource.RLIMIT_CPU: cfg["cpu_seconds"],
        resource.RLIMIT_AS: cfg["memory_mb"] << 20,
        resource.RLIMIT_FSIZE: cfg["file_size_mb"] << 20,
        resource.RLIMIT_NOFILE: cfg["open_files"],
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: cfg["processes"] if processes is None else processes,
    }
    for which, value in soft.items():
        # the CPU limit's hard value too: a run's PID 1 (the namespace level) is deaf to SIGXCPU, as
        # init is to every signal it has no handler for, and only the hard limit's SIGKILL stops it
        resource.setrlimit(which, (value, value))


def _write_file(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _drop_privileges(cfg, uid):
    """Lose every capability for good: as root, a uid of the run's own; without root (root only in
    our user namespace), a nested user namespace in which we are an unprivileged id, so nothing
    mounted around us can be unmounted or remounted. Then ``no_new_privs``."""
    prctl = _libc("prctl")
    held = {}
    if not cfg["namespaces"] and uid is not None:
        # a fresh interpreter on the host's tree: the stdlib may sit under a home of mode 700, and
        # directories opened before the drop stay reachable as /proc/self/fd/N
        held = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in sys.path if os.path.isdir(p)}
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        prctl(4, 1 if held else 0, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/self/fd is ours only where we need it
    elif cfg["namespaces"]:
        inner = 1000
        _call("unshare", CLONE_NEWUSER)
        _write_file("/proc/self/setgroups", "deny")
        _write_file("/proc/self/uid_map", f"{inner} 0 1")
        _write_file("/proc/self/gid_map", f"{inner} 0 1")
        os.setresgid(inner, inner, inner)
        os.setresuid(inner, inner, inner)
        _drop_capabilities()  # never uid 0 in this namespace, so the uid change cleared nothing
    if prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if held:

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


def _drop_capabilities():
    """Empty the bounding, ambient, inheritable, permitted and effective capability sets."""
    prctl = _libc("prctl")
    for cap in range(64):
        prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last capability this kernel has)
    prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    _ctypes, _, c_void_p, c_char = _ctypes_kinds()

    class Header(_ctypes.Array):
        _type_ = c_char
        _length_ = 8

    class Data(_ctypes.Array):
        _type_ = c_char
        _length_ = 24

    header = Header.from_buffer_copy((0x20080522).to_bytes(4, sys.byteorder) + b"\0" * 4)  # version 3, this process
    data = Data.from_buffer_copy(b"\0" * 24)  # two words of effective, permitted, inheritable: all empty
    if _libc("capset")(c_void_p(_ctypes.addressof(header)), c_void_p(_ctypes.addressof(data))) != 0:
        raise OSError("capset() failed")


def _system_call_filter(cfg):
    """Load the run's seccomp filter (BPF built by the parent with libseccomp), if it has one."""
    bpf = cfg.get("seccomp")
    if not bpf or bpf == "none":
        return
    code = bytes.fromhex(bpf)
    _ctypes, _, c_void_p, c_char = _ctypes_kinds()

    class Program(_ctypes.Array):
        _type_ = c_char
        _length_ = len(code)

    class Header(_ctypes.Array):
        _type_ = c_char
        _length_ = 16

    program = Program.from_buffer_copy(code)
    header = Header.from_buffer_copy(
        (len(code) // 8).to_bytes(2, sys.byteorder) + b"\0" * 6 + _ctypes.addressof(program).to_bytes(8, sys.byteorder)
    )
    if _libc("prctl")(22, 2, c_void_p(_ctypes.addressof(header)), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError("prctl(PR_SET_SECCOMP) failed")


def _read_fd(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


_INTS = ("uid", "tmpfs_mb", "shm_mb", "program_fd", "judge_fd", "result_fd", "cpu_seconds", "memory_mb",
         "file_size_mb", "open_files", "processes", "namespaces")


def _config(argv):
    cfg = dict(arg.split("=", 1) for arg in argv)
    for key in _INTS:
        if key in cfg:
            cfg[key] = None if cfg[key] == "none" else int(cfg[key])
    return cfg


def _shown(exc, files):
    """``exc`` with only the frames of ``files`` in its traceback: the harness's own never show."""
    kept = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in files:
            kept.append(tb)
        tb = tb.tb_next
    for a, b in zip(kept, kept[1:]):
        a.tb_next = b
    if kept:
        kept[-1].tb_next = None
    return exc.with_traceback(kept[0] if kept else None)


def _report(exc, files):
    """An uncaught exception, printed as the interpreter would, with the program's frames only."""
    try:
        if isinstance(exc, SystemExit):
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        else:
            exc = _shown(exc, files)
            sys.__excepthook__(type(exc), exc, exc.__traceback__)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001, S110 - a broken stdout must not change how the run ends
        pass


def _exit_code(exc):
    if isinstance(exc, SystemExit):
        if exc.code is None:
            return 0
        return exc.code & 0xFF if isinstance(exc.code, int) else 1
    return 1


def _start(cfg, uid, processes=None):
    """The last steps before untrusted code: limits, privileges, system-call filter."""
    _limits(cfg, processes)
    _drop_privileges(cfg, uid)
    _system_call_filter(cfg)


def _run_in_process(cfg, source):
    """Program and tests in this process. Once the program ran to its end, the kernel moves the
    nonce from its pipe to the result pipe (``splice``): it never enters this process's memory."""
    result_fd = cfg["result_fd"]
    _start(cfg, cfg["uid"])
    sys.argv = ["program.py"]
    sys.path.insert(0, cfg["workdir"])
    namespace = {"__name__": "__main__", "__file__": os.path.join(cfg["workdir"], "program.py")}
    try:
        exec(compile(source, "program.py", "exec"), namespace)  # noqa: S102 - the whole point, inside the sandbox
    except MemoryError:
        os.write(result_fd, b"memory")
        os._exit(3)
    except BaseException as exc:  # noqa: BLE001 - ends the process like the interpreter's own top level
        _report(exc, ("program.py",))
        try:
            import atexit

            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001, S110
            pass
        os._exit(_exit_code(exc))
    del namespace
    sys.stdout.flush()
    sys.stderr.flush()
    os.splice(cfg["judge_fd"], result_fd, 16)
    os._exit(0)  # no atexit hook of the program runs after the verdict


# ---- split judging ------------------------------------------------------------------------------


def _send(fd, data):
    view = memoryview(len(data).to_bytes(4, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd, limit):
    """One framed message, or None at end of file; ValueError past ``limit`` bytes."""
    head = b""
    while len(head) < 4:
        chunk = os.read(fd, 4 - len(head))
        if not chunk:
            return None
        head += chunk
    size = int.from_bytes(head, "little")
    if size > limit:
        raise ValueError(f"a message of {size} bytes (limit {limit})")
    parts, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _plain_exception(exc):
    """("raise", name, message) for a builtin exception, else None."""
    import builtins

    kind = type(exc)
    if getattr(builtins, kind.__name__, None) is kind and kind.__module__ == "builtins":
        try:
            message = str(exc)
        except BaseException:  # noqa: BLE001
            message = ""
        if type(message) is not str:
            message = ""
        return ("raise", kind.__name__, message)
    return None


def _serve_candidate(cfg, source, calls_r, replies_w):
    """The candidate: run its module, say whether it loaded, then answer calls until the judge goes."""
    _start(cfg, cfg["uid"])
    sys.argv = ["program.py"]
    sys.path.insert(0, cfg["workdir"])
    namespace = {"__name__": "__main__", "__file__": os.path.join(cfg["workdir"], "program.py")}
    flush = lambda: (sys.stdout.flush(), sys.stderr.flush())  # noqa: E731
    try:
        exec(compile(source, "program.py", "exec"), namespace)  # noqa: S102
        flush()
    except BaseException as exc:  # noqa: BLE001
        _report(exc, ("program.py",))
        what = "exited" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}"
        _send(replies_w, encode(("reject", f"the program {what} before the tests ran")))
        os._exit(1)
    while True:  # no greeting: the first call waits for the module to load, which saves a round trip
        message = _receive(calls_r, 1 << 30)
        if message is None:
            os._exit(0)
        name, args, kwargs = decode(message)
        function = namespace.get(name)
        try:
            if function is None:
                raise NameError(f"name '{name}' is not defined")
            value = function(*args, **kwargs)
            reply = ("return", value, tuple(a if type(a) in (list, dict, set) else None for a in args))
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            reply = ("reject", f"the candidate {'exited' if isinstance(exc, SystemExit) else 'was interrupted'} during a call to {name}")
        except BaseException as exc:  # noqa: BLE001
            reply = _plain_exception(exc) or ("reject", f"{name} raised an exception of type {type(exc).__name__}, not a builtin exception")
        try:
            flush()
            data = encode(reply)
        except NotPlain as exc:
            what = "returned" if reply[0] == "return" else "left"
            data = encode(("reject", f"{name} {what} an object of type {exc.args[0]}: only plain data crosses to the tests"))
        except BaseException as exc:  # noqa: BLE001 - e.g. RecursionError on a self-containing list
            data = encode(("reject", f"{name}'s result could not be copied ({type(exc).__name__})"))
        _send(replies_w, data)


def _reject(reason, result_fd=None, verdict=b""):
    """Fail the sample and end the judge. Nothing raises from here into the tests, which could catch
    it and go on: an output pipe the parent closed on a flood only loses the line."""
    try:
        try:
            sys.stdout.flush()
        finally:
            os.write(2, b"\n[sandbox] failed sample: " + reason.encode("utf-8", "backslashreplace") + b"\n")
    except BaseException:  # noqa: BLE001, S110
        pass
    try:
        if verdict and result_fd is not None:
            os.write(result_fd, verdict)
    finally:
        os._exit(1)


def _copy_back(original, mutated):
    """Mutations the candidate made to an argument, made to the judge's object too."""
    if type(original) is not type(mutated):
        return
    if type(original) is list:
        original[:] = mutated
    elif type(original) in (dict, set):
        original.clear()
        original.update(mutated)


def _proxy(name, calls_w, replies_r, result_fd, called):
    import builtins

    def candidate(*args, **kwargs):
        called[0] = True
        try:
            request = encode((name, args, kwargs))
        except NotPlain as exc:
            _reject(f"the tests passed an object of type {exc.args[0]} to {name}: this problem needs in-process judging")
        try:
            _send(calls_w, request)
        except BrokenPipeError:
            # The candidate's process has ended (or closed its end) before this call: whether it
            # ended before or after the call was written is a race, so neither the reason nor the
            # verdict may depend on it. What it said last (e.g. why its module did not load) is
            # still in the reply pipe, and read as after any call.
            pass
        try:
            message = _receive(replies_r, 1 << 28)
            if message is None:
                _reject(f"the candidate's process ended before answering a call to {name}")
            reply = decode(message)
            kind = reply[0] if type(reply) is tuple and reply else None
        except ValueError as exc:
            _reject(f"the candidate sent a malformed reply to {name} ({exc})")
        if kind == "return" and len(reply) == 3 and type(reply[2]) is tuple and len(reply[2]) == len(args):
            for original, mutated in zip(args, reply[2]):
                _copy_back(original, mutated)
            return reply[1]
        if kind == "raise" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
            exc_type = getattr(builtins, reply[1], None)
            if isinstance(exc_type, type) and issubclass(exc_type, Exception):
                if exc_type is MemoryError:
                    _reject(f"{name} ran out of memory", result_fd, b"memory")
                raise exc_type(reply[2])
            _reject(f"{name} raised {reply[1]}")
        if kind == "reject" and len(reply) == 2 and type(reply[1]) is str:
            _reject(reply[1])
        _reject(f"the candidate sent a malformed reply to {name}")

    candidate.__name__ = candidate.__qualname__ = name
    return candidate


def _judge(cfg, calls_w, replies_r):
    """PID 1 after the candidate is forked: read the tests and the nonce, then run the tests."""
    import _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # no handler: init ignores signals from its namespace
    result_fd = cfg["result_fd"]
    nonce = os.read(cfg["judge_fd"], 16)
    names, preamble, tests = decode(_read_fd(cfg["judge_fd"]))
    judge_uid = None if cfg["uid"] is None else cfg["uid"] + 1
    _start(cfg, judge_uid, processes=1)
    _libc("prctl")(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace, no /proc/1/mem, even by our own uid
    namespace = {"__name__": "__main__"}
    names_called = [False]
    try:
        if preamble:
            exec(compile(preamble, "prompt.py", "exec"), namespace)  # noqa: S102 - the problem's own text
        for name in names:
            namespace[name] = _proxy(name, calls_w, replies_r, result_fd, names_called)
        exec(compile(tests, "tests.py", "exec"), namespace)  # noqa: S102 - the problem's tests
    except BaseException as exc:  # noqa: BLE001
        _report(exc, ("prompt.py", "tests.py"))
        os._exit(_exit_code(exc) or 1)
    sys.stdout.flush()
    sys.stderr.flush()
    if not names_called[0]:  # tests that never called: the program must still have loaded
        os.close(calls_w)
        message = _receive(replies_r, 1 << 16)
        if message is not None:
            _reject(_reason(message, "the program"))
    os.write(result_fd, nonce)
    os._exit(0)


def _reason(message, name):
    try:
        reply = decode(message)
    except ValueError:
        reply = None
    if type(reply) is tuple and len(reply) == 2 and reply[0] == "reject" and type(reply[1]) is str:
        return reply[1]
    return f"the candidate sent a malformed reply to {name}"


def _run_split(cfg, source):
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (cfg["judge_fd"], cfg["result_fd"], calls_w, replies_r):
                os.close(fd)
            _serve_candidate(cfg, source, calls_r, replies_w)
        except BaseException as exc:  # noqa: BLE001
            _report(exc, ())
        os._exit(1)
    os.close(calls_r)
    os.close(replies_w)
    _judge(cfg, calls_w, replies_r)


def _run(cfg):
    """Run the program of this run; exits the process."""
    try:
        if cfg["namespaces"]:
            _private_mounts(cfg)
        os.chdir(cfg["workdir"])
        source = _read_fd(cfg["program_fd"]).decode("utf-8")
        if cfg["mode"] == "split":
            _run_split(cfg, source)
        else:
            _run_in_process(cfg, source)
    except BaseException as exc:  # noqa: BLE001 - the sandbox's own failure
        _report(exc, ())
        os._exit(_exit_code(exc) or 1)


# ---- the process level's supervisor ------------------------------------------------------------

LEFT_BEHIND = 125  # the supervisor's exit code when it had to kill descendants of the program


def _supervise(cfg):
    """Process level: this process only watches, the run happens in a child. As a child subreaper it
    inherits every descendant orphaned on the way (double forks, ``setsid`` daemons, programs
    exec'd with an empty environment), and when the run ends it kills them all: nothing here trusts
    what a descendant's environment says."""
    _join_cgroup(str(cfg.get("cgroup_fds", "none")).split(","))
    _call("prctl", 36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    pid = os.fork()
    if pid == 0:
        _run(cfg)
        os._exit(1)  # never reached
    for fd in (cfg["program_fd"], cfg["judge_fd"], cfg["result_fd"]):
        os.close(fd)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    left = _kill_descendants()
    if left:
        os.write(2, b"\n[sandbox] %d descendant(s) outlived the program and were killed\n" % left)
        os._exit(LEFT_BEHIND)
    os._exit(1 if code == LEFT_BEHIND else code if code >= 0 else 128 - code)


def _kill_descendants():
    """Kill and reap our children (orphans reparented to us included) until none is left."""
    me, killed = os.getpid(), 0
    while True:
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                children.append((int(entry), fields[0] != b"Z"))
        if not children:
            return killed
        for child, running in children:
            if running:
                killed += 1
                try:
                    os.kill(child, 9)
                except OSError:
                    pass
        for child, _ in children:
            try:
                os.waitpid(child, 0)
            except ChildProcessError:
                pass


# ---- the fork server --------------------------------------------------------------------------

_RUN_FDS = 5  # stdout, stderr, program, judge and result pipes, in that order
_CGROUP_FDS = 3  # at most: the run's cgroup.procs in each hierarchy (v1: memory, pids, cpu)


def _join_cgroup(fds):
    """Move this process into the run's cgroup through its ``cgroup.procs`` descriptors (one per
    hierarchy), before anything of the program runs: every process it starts is counted there."""
    for fd in fds:
        if fd and fd != "none":
            os.write(int(fd), b"0")
            os.close(int(fd))


def _child(request, fds, inherited):
    """In the forked child (PID 1 of a fresh PID namespace): become one run's sandbox and run it."""
    for fd in inherited:
        os.close(fd)  # nothing of the server's socket reaches the program
    stdout_w, stderr_w, program_r, judge_r, result_w = fds[:_RUN_FDS]
    try:
        _join_cgroup(fds[_RUN_FDS:])
    except OSError as exc:
        os.write(stderr_w, f"[sandbox] could not join the run's cgroup: {exc}".encode())
        os._exit(1)
    os.dup2(stdout_w, 1)
    os.dup2(stderr_w, 2)
    os.close(stdout_w)
    os.close(stderr_w)
    try:
        PR_SET_PDEATHSIG, SIGKILL = 1, 9
        _call("prctl", PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)  # the server gone: this run goes too
        os.setsid()
        cfg = _config(request.decode("utf-8").split("\n"))
        cfg.update(program_fd=program_r, judge_fd=judge_r, result_fd=result_w)
        os.environ["FTMODEL_SANDBOX_RUN"] = cfg["marker"]  # what the program starts carries it
        _call("unshare", CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        _call("sethostname", HOSTNAME, len(HOSTNAME))
        _call("setdomainname", b"(none)", 6)
    except BaseException as exc:  # noqa: BLE001
        _report(exc, ())
        os._exit(1)
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


def _receive_request(sock, _socket):
    """One request and the descriptors attached to it (socket.recv_fds without the socket module)."""
    request, ancillary, _, _ = sock.recvmsg(1 << 16, _socket.CMSG_LEN(4 * (_RUN_FDS + _CGROUP_FDS)))
    fds = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder, signed=True) for i in range(0, len(data) - 3, 4)]
    return request, fds


def serve(sock_fd, own_proc=False):
    """Fork one child per request until the parent closes the socket.

    Request: the run's ``key=value`` lines, with its five pipe ends attached. Replies: ``pid N`` (or
    ``error ...``), then ``exit CODE CPU`` when the child has ended (it stays unreaped while it runs,
    so its pid cannot be reused while the parent may still ask for a ``kill``), and the parent's
    ``done`` makes the server ready for the next run.
    """
    import _socket  # not socket: its Python layer would leave enum, collections and more imported
    import select

    sock = _socket.socket(fileno=sock_fd)
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    try:
        _minimal_root(own_proc)
        import typing  # noqa: F401 - nearly every generated program imports it: 7 ms saved per run
        sock.send(b"ready")
    except OSError as exc:
        sock.send(f"error {exc}".encode())
        return
    while True:
        try:
            request, fds = _receive_request(sock, _socket)
        except OSError:
            return
        if not request:
            return
        try:
            if not _RUN_FDS <= len(fds) <= _RUN_FDS + _CGROUP_FDS:
                raise OSError(f"expected {_RUN_FDS} descriptors (and the run's cgroups'), got {len(fds)}")
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
        # PID 1 has ended, and with it every process of its namespace (it reaped them): reap it now,
        # with the CPU the whole run used; a kill that crosses this message is moot and ignored
        _, _, usage = os.wait4(pid, 0)
        sock.send(b"exit %d %.4f" % (code, usage.ru_utime + usage.ru_stime))
        message = b"kill"
        while message == b"kill":
            message = sock.recv(64)
        if message != b"done":
            return


def main():
    if sys.argv[1:2] == ["zygote"]:
        cfg = _config(sys.argv[2:])
        serve(int(cfg["socket"]), cfg.get("own_proc") == "1")
        os._exit(0)
    _supervise(_config(sys.argv[1:]))


if __name__ == "__main__":
    main()
