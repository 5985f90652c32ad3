"""Kernel filters and per-run resource groups: the system-call filter (libseccomp) and cgroups.

The filter is built here, in the parent, with libseccomp (the ``pyseccomp`` bindings), and exported
as BPF; the harness loads those bytes with one ``prctl`` in each program's process, so the sandbox
never imports ctypes or libseccomp itself. Where libseccomp cannot be had, :func:`seccomp_filter`
returns None and the isolation says so.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import os
import tempfile
import threading
import time

# System calls an evaluation program never needs: debugging other processes, the mount family,
# namespaces, kernel keyrings, eBPF, perf, userfaultfd, kexec and modules, file handles, memory
# outside every file-size and tmpfs cap (memfd, SysV IPC, which also outlives a process-level run), io_uring.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsmount",
    "fspick", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "name_to_handle_at",
    "open_by_handle_at", "memfd_create", "memfd_secret", "shmget", "msgget", "semget", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "settimeofday",
    "clock_settime", "adjtimex", "iopl", "ioperm", "lookup_dcookie", "vhangup", "sethostname", "setdomainname",
    # channels between concurrent runs, and windows on the host, through files every run sees (the
    # read-only stdlib): whole-file locks, and watches on what other runs and the host open
    "flock", "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark",
)
_NAMESPACE_FLAGS = 0x7E020000  # every CLONE_NEW* flag
# fcntl's record locks (POSIX and open-file-description), leases and directory notices: the same
# channels as flock and inotify. F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW,
# F_SETLEASE, F_GETLEASE, F_NOTIFY (the same numbers on every 64-bit architecture)
FCNTL_DENIED = (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)
AF_UNIX = 1  # the one socket family a program gets: vsock and netlink reach past the network namespace

_lock = threading.Lock()
_cached: list[tuple[str | None, str]] = []


def seccomp_filter() -> tuple[str | None, str]:
    """(the filter's BPF as hex, or None; a note for the isolation text), built once per process."""
    with _lock:
        if not _cached:
            _cached.append(_build())
        return _cached[0]


def _build() -> tuple[str | None, str]:
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # the package, or libseccomp.so.2 itself
        return None, f"no system-call filter: libseccomp bindings unavailable ({exc.__class__.__name__}: pip install pyseccomp)"
    try:
        rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for name in DENIED:
            try:
                rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
            except (RuntimeError, ValueError, OSError):
                continue  # a call this kernel or libseccomp does not know
        for flag in _flags(_NAMESPACE_FLAGS):
            rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags cannot be inspected: libc falls back to clone
        for command in FCNTL_DENIED:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), "fcntl", seccomp.Arg(1, seccomp.EQ, command))
        for call in ("socket", "socketpair"):
            rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), call, seccomp.Arg(0, seccomp.NE, AF_UNIX))
        with tempfile.TemporaryFile() as fh:
            rules.export_bpf(fh)
            fh.seek(0)
            code = fh.read()
    except (RuntimeError, ValueError, OSError) as exc:
        return None, f"no system-call filter: libseccomp failed ({exc})"
    return code.hex(), "seccomp filter"


def _flags(mask: int) -> list[int]:
    return [1 << bit for bit in range(32) if mask & (1 << bit)]


# ---- a cgroup per run ---------------------------------------------------------------------------
#
# Each run gets a cgroup of its own under one per process (``ftmodel-PID``), itself under the
# cgroup this process is in, so the limits of whatever runs us still hold. cgroup v2 where our
# cgroup can delegate memory and pids to children; else cgroup v1's memory, pids (and cpu, where
# mounted) hierarchies, which root in a container usually can write. The run's PID 1 joins before
# anything of the program runs, by writing "0" to the ``cgroup.procs`` descriptors handed to it: the
# fork server's minimal root has no /sys, and nothing else of the hierarchy is reachable from inside.

_MOUNTINFO = "/proc/self/mountinfo"


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _mounts() -> tuple[str | None, dict[str, str]]:
    """(the cgroup2 mount point, {v1 controller: its mount point})."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in _read(_MOUNTINFO).splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        fstype, options, point = fields[sep + 1], fields[sep + 3].split(","), fields[4]
        if fields[3] != "/":
            continue  # a bind of a sub-tree: our own path would not be found in it
        if fstype == "cgroup2" and v2 is None:
            v2 = point
        elif fstype == "cgroup":
            for option in options:
                if option in ("memory", "pids", "cpu"):
                    v1.setdefault(option, point)
    return v2, v1


def _own_paths() -> tuple[str | None, dict[str, str]]:
    """This process's cgroup: (in the v2 hierarchy, {v1 controller: path})."""
    v2, v1 = None, {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        for name in controllers.split(","):
            v1[name] = path
    return v2, v1


class RunCgroup:
    """One run's cgroup (one directory per hierarchy), reused by later runs once it is empty."""

    def __init__(self, version: int, dirs: list[str]) -> None:
        self.version = version
        self.dirs = dirs
        self.ooms_before = 0

    def open_procs(self) -> list[int]:
        """Descriptors the run's PID 1 writes "0" to, to join; the caller closes them."""
        fds: list[int] = []
        try:
            for d in self.dirs:
                fds.append(os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def ooms(self) -> int:
        """How many processes the kernel has killed in this cgroup for its memory, so far."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for d in self.dirs:
            try:
                text = _read(os.path.join(d, name))
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this run for its memory."""
        return self.ooms() > self.ooms_before

    def empty(self, grace: float) -> bool:
        """Whether every process has left (they leave asynchronously as they exit), waiting up to ``grace`` s."""
        until = time.monotonic() + grace
        while True:
            try:
                if not any(_read(os.path.join(d, "cgroup.procs")).strip() for d in self.dirs):
                    return True
            except OSError:
                return False
            if time.monotonic() >= until:
                return False
            time.sleep(0.002)

    def remove(self) -> None:
        for d in self.dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass


class Cgroups:
    """This process's parent cgroup(s), under which each run gets its own."""

    def __init__(self, version: int, parents: dict[str, str]) -> None:
        self.version = version
        self.parents = parents  # controller (or "unified") -> directory
        self.owner = os.getpid()
        self._count = itertools.count()
        self._free: list[RunCgroup] = []  # empty run cgroups: making one and a process's first move
        self._free_lock = threading.Lock()  # into it cost milliseconds, so they are kept for later runs

    def create(self, memory_mb: int, processes: int) -> RunCgroup:
        """A cgroup for one run, limited to ``memory_mb`` MiB (swap none) and ``processes`` tasks."""
        with self._free_lock:
            run = self._free.pop() if self._free else None
        if run is None:
            run = RunCgroup(self.version, [])
            name = f"run-{next(self._count)}"
            try:
                for parent in self.parents.values():
                    os.mkdir(os.path.join(parent, name))
                    run.dirs.append(os.path.join(parent, name))
            except OSError:
                run.remove()
                raise
        try:
            for controller, d in zip(self.parents, run.dirs):
                if self.version == 2:
                    _write(f"{d}/memory.max", str(memory_mb << 20))
                    if os.path.exists(f"{d}/memory.swap.max"):
                        _write(f"{d}/memory.swap.max", "0")
                    _write(f"{d}/pids.max", str(processes))
                elif controller == "memory":
                    _set_v1_memory(d, memory_mb << 20)
                elif controller == "pids":
                    _write(f"{d}/pids.max", str(processes))
            run.ooms_before = run.ooms()
        except OSError:
            run.remove()
            raise
        return run

    def release(self, run: RunCgroup) -> None:
        """After the run: keep its cgroup for the next run once empty, else remove what can be."""
        if run.empty(grace=2.0):
            with self._free_lock:
                self._free.append(run)
        else:
            run.remove()

    def close(self) -> None:
        if os.getpid() != self.owner:
            return  # a forked copy of this process: the cgroups are its parent's
        for parent in self.parents.values():
            _remove_tree(parent)


def _set_v1_memory(d: str, limit: int) -> None:
    """memory and memory+swap to ``limit``, in the order the kernel accepts (memsw >= memory always)."""
    try:
        current = int(_read(f"{d}/memory.limit_in_bytes"))
    except (OSError, ValueError):
        current = 0
    swap = f"{d}/memory.memsw.limit_in_bytes"
    has_swap = os.path.exists(swap)
    if limit < current:
        _write(f"{d}/memory.limit_in_bytes", str(limit))
        if has_swap:
            _write(swap, str(limit))
    else:
        if has_swap:
            _write(swap, str(limit))
        _write(f"{d}/memory.limit_in_bytes", str(limit))


def _remove_tree(parent: str) -> None:
    try:
        children = [e.path for e in os.scandir(parent) if e.is_dir()]
    except OSError:
        return
    for child in children:
        try:
            os.rmdir(child)
        except OSError:
            pass
    try:
        os.rmdir(parent)
    except OSError:
        pass


def _sweep_stale(directory: str) -> None:
    """Remove the empty run cgroups of sessions that ended without removing them."""
    try:
        entries = [e.name for e in os.scandir(directory) if e.is_dir() and e.name.startswith("ftmodel-")]
    except OSError:
        return
    for entry in entries:
        pid = entry[len("ftmodel-"):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_tree(os.path.join(directory, entry))


def _setup_v2(mount: str, own: str) -> tuple[Cgroups | None, str]:
    here = mount + own.rstrip("/")
    try:
        available = _read(f"{here}/cgroup.controllers").split()
    except OSError as exc:
        return None, f"cgroup v2 unreadable ({exc.strerror})"
    if "memory" not in available or "pids" not in available:
        return None, f"cgroup v2 offers {' '.join(available) or 'no controllers'} here, not memory and pids"
    wanted = [c for c in ("memory", "pids", "cpu") if c in available]
    enable = " ".join("+" + c for c in wanted)
    _sweep_stale(here)
    parent = f"{here}/ftmodel-{os.getpid()}"
    try:
        enabled = _read(f"{here}/cgroup.subtree_control").split()
        if not all(c in enabled for c in wanted):
            _write(f"{here}/cgroup.subtree_control", enable)
    except OSError as exc:
        why = "it holds processes (no internal processes in v2)" if exc.errno == errno.EBUSY else exc.strerror
        return None, f"cgroup v2: cannot give our cgroup's children memory and pids controllers: {why}"
    try:
        os.mkdir(parent)
        _write(f"{parent}/cgroup.subtree_control", enable)
    except OSError as exc:
        _remove_tree(parent)
        return None, f"cgroup v2 not delegated to this user ({exc.strerror})"
    return Cgroups(2, {"unified": parent}), ""


def _setup_v1(mounts: dict[str, str], own: dict[str, str]) -> tuple[Cgroups | None, str]:
    if "memory" not in mounts or "pids" not in mounts:
        return None, "no cgroup memory/pids controllers on this machine (neither v2 nor v1)"
    parents: dict[str, str] = {}
    try:
        for controller in ("memory", "pids", "cpu"):
            if controller not in mounts:
                continue
            here = mounts[controller] + own.get(controller, "/").rstrip("/")
            _sweep_stale(here)
            parent = f"{here}/ftmodel-{os.getpid()}"
            os.mkdir(parent)
            parents[controller] = parent
    except OSError as exc:
        for parent in parents.values():
            _remove_tree(parent)
        return None, f"cgroup v1 memory/pids not writable by this user ({exc.strerror})"
    return Cgroups(1, parents), ""


_cgroups: list[tuple[Cgroups | None, str]] = []
NO_CGROUP_WITHOUT_ROOT = "no cgroup without root (none is delegated to users): limits are per process"


def cgroups() -> tuple[Cgroups | None, str]:
    """(this process's run cgroups, or None; why none), found once per process. Only root sets them up:
    without root, no container delegates a hierarchy to the user."""
    with _lock:
        if not _cgroups:
            _cgroups.append(_setup())
            if _cgroups[0][0] is not None:
                atexit.register(_cgroups[0][0].close)
        return _cgroups[0]


def _forget_after_fork() -> None:
    """A forked copy of this process makes cgroups of its own (under its own pid) if it runs anything."""
    global _lock
    _lock = threading.Lock()
    _cgroups.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _setup() -> tuple[Cgroups | None, str]:
    if os.environ.get("FTMODEL_SANDBOX_CGROUPS") == "0":
        return None, "per-run cgroups turned off (FTMODEL_SANDBOX_CGROUPS=0): limits are per process"
    if os.geteuid() != 0:
        return None, NO_CGROUP_WITHOUT_ROOT
    try:
        v2_mount, v1_mounts = _mounts()
        v2_own, v1_own = _own_paths()
    except OSError as exc:
        return None, f"cgroups unreadable ({exc.strerror}): limits are per process"
    notes = []
    if v2_mount is not None and v2_own is not None:
        found, why = _setup_v2(v2_mount, v2_own)
        if found is not None:
            return found, ""
        notes.append(why)
    found, why = _setup_v1(v1_mounts, v1_own)
    if found is not None:
        return found, ""
    notes.append(why)
    return None, "; ".join(notes) + ": limits are per process"
