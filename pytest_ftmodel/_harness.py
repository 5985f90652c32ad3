"""Runs inside the sandbox: set up, drop privileges, run the program, and prove it ran to its end.

Started by :mod:`pytest_ftmodel.sandbox` as ``python -I -S _harness.py key=value ...``; it imports
as little as it can (json alone would cost more than the interpreter's start-up).
The program arrives on one pipe and the per-run nonce on another; the nonce goes back on the result
pipe only after the program's code has run to its end, so an early ``sys.exit(0)``, ``os._exit(0)``
or an ``atexit`` trick never reads as a pass. (A program that deliberately digs the nonce out of this
interpreter's memory can forge its own pass; the isolation layers still contain what it can do.)
"""

import os
import resource
import sys


def _libc(name):
    """A libc function through _ctypes itself: the ctypes package costs 2.5 ms to import per run."""
    import _ctypes

    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = c_int

    class Lib:
        _handle = _ctypes.dlopen(None)

    return Func((name, Lib()))


def _mount(source, target, fstype, options):
    import _ctypes

    if _libc("mount")(source.encode(), target.encode(), fstype.encode(), 0, options.encode()) != 0:
        raise OSError(_ctypes.get_errno(), f"mount {fstype} on {target}")


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
        cfg[key] = None if cfg[key] == "none" else int(cfg[key])
    return cfg


def main():
    cfg = _config(sys.argv[1:])
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


if __name__ == "__main__":
    main()
