"""Run untrusted generated code in an isolated subprocess, and report the isolation achieved.

Layers, strongest first (probed once per process; see :func:`probe_isolation`):

``namespaces``
    The program gets new mount, network and PID namespaces: no network (only a downed
    loopback), a private size-capped tmpfs as ``/tmp`` (cwd, HOME and TMPDIR; it vanishes with the
    namespace), empty tmpfs over ``/var/tmp`` and ``/dev/shm``, a ``/proc`` that shows only its own
    processes, and teardown of the namespace kills every process in it. As root the program also
    runs under a fresh unprivileged uid with ``no_new_privs``, so file permissions and the process
    limit apply to it alone.
``process``
    Where namespaces are refused: a fresh temporary directory as cwd/HOME/TMPDIR (removed after), a
    dropped uid when running as root, a new session, and a sweep that kills every process left
    with the run's uid or marker. No network isolation; without root, no protection of the files
    and processes of the user running pytest.

Always: an interpreter that no other program has touched, stdin from /dev/null, an allow-listed
environment (no CI tokens), limits on CPU time, address space, processes, file size and open files,
no core dumps, a wall-clock watchdog, capped stdout/stderr, and a verdict that rests on a per-run
nonce written back by the harness after the program ran to its end, never on the exit code alone.
At the process level that interpreter is a fresh ``python -I -S`` per program. At the namespace
level it is a fork of a pristine one: a ``python -I -S`` fork server that never runs a program
itself (one per run in flight, kept for later runs) forks each program straight into its new
namespaces, which saves the interpreter's start-up (see ``_harness.py`` and ``bench/sandbox.py``).
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_ftmodel._stack import SessionStack
from pytest_ftmodel.errors import FTModelError

_HARNESS = str(Path(__file__).with_name("_harness.py"))
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_UID_BASE = 2_000_000_000  # far above any real account; one fresh uid per concurrent run
_uid_counter = itertools.count()
_uid_lock = threading.Lock()
# how a run that hit the CPU-time limit ends: the signal itself, or `unshare` passing it on
_CPU_KILLED = (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL)


class SandboxUnavailable(FTModelError, RuntimeError):
    """Strict isolation was asked for and this machine cannot provide it."""


@dataclass(frozen=True)
class Isolation:
    """What was in force for a run."""

    level: str  # "namespaces" or "process"
    network: bool  # network namespace: no network
    pid_namespace: bool
    private_tmp: bool
    uid_dropped: bool
    forked: bool = False  # each program in a fork of a pristine interpreter, not a fresh exec
    note: str = ""

    def __str__(self) -> str:
        parts = [self.level]
        parts.append("no network" if self.network else "network reachable")
        if self.pid_namespace:
            parts.append("own PID namespace")
        parts.append("private /tmp" if self.private_tmp else "shared /tmp")
        parts.append("unprivileged uid" if self.uid_dropped else "same uid as pytest")
        parts.append("forked from a pristine interpreter" if self.forked else "fresh interpreter")
        return ", ".join(parts) + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class SandboxResult:
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    isolation: Isolation
    run_id: str = ""  # the marker in the run's environment, to find its processes
    uid: int | None = None  # the run's own uid, when it had one

    @property
    def passed(self) -> bool:
        return self.status == "passed"


_isolation: SessionStack[str] = SessionStack("auto")


def default_isolation() -> str:
    """The isolation asked for by the running pytest session (``--sandbox``), else "auto"."""
    return _isolation.current()


push_isolation, pop_isolation = _isolation.push, _isolation.pop


_probe_lock = threading.Lock()
_probed: dict[bool, Isolation] = {}


_harness_lock = threading.Lock()
_harness_path: list[str] = []


def _harness() -> str:
    """The harness, compiled once per machine and interpreter: a script is otherwise recompiled on
    every run, about a millisecond each (see bench/sandbox.py). Falls back to the source."""
    with _harness_lock:
        if _harness_path:
            return _harness_path[0]
        import hashlib
        import py_compile

        from pytest_ftmodel.model import cache_root

        source = Path(_HARNESS)
        tag = hashlib.sha1(source.read_bytes() + sys.version.encode()).hexdigest()[:12]
        target = cache_root() / "sandbox" / f"harness-{tag}.pyc"
        try:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                py_compile.compile(str(source), cfile=str(tmp), doraise=True)
                os.replace(tmp, target)
            chosen = str(target)
        except (OSError, py_compile.PyCompileError):
            chosen = _HARNESS
        _harness_path.append(chosen)
        return chosen


def _as_root() -> bool:
    return os.geteuid() == 0


def probe_isolation() -> Isolation:
    """The strongest level this machine allows, found once per process by running a canary in it."""
    as_root = _as_root()
    with _probe_lock:
        if as_root in _probed:
            return _probed[as_root]
        level = Isolation("namespaces", network=True, pid_namespace=True, private_tmp=True, uid_dropped=as_root, forked=True)
        canary = _run(
            "import os\nassert os.getpid() == 1\n", level,
            timeout=10.0, memory_mb=512, max_processes=8, file_size_mb=1, open_files=64, max_output=4096,
        )
        if canary.status != "passed":
            level = Isolation(
                "process", network=False, pid_namespace=False, private_tmp=False, uid_dropped=as_root,
                note="namespaces refused on this machine",
            )
        _probed[as_root] = level
        return level


# ---- the fork servers (namespace level) -------------------------------------------------------


def _zygote_command(as_root: bool) -> list[str]:
    """A fork server. Without root it first gets a user namespace of its own, and a PID namespace so
    that it may give each child a fresh one below it."""
    prefix = [] if as_root else ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]
    return [*prefix, sys.executable, "-I", "-S", _harness(), "zygote"]


class _Zygote:
    """A pristine ``python -I -S`` fork server (``_harness.serve``), serving one run at a time."""

    def __init__(self, as_root: bool) -> None:
        self.as_root = as_root
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [*_zygote_command(as_root), f"socket={theirs.fileno()}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=_environment("/tmp", "zygote"),
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        if self.receive(10.0) != b"ready":
            self.close()
            raise OSError("the sandbox fork server did not start")

    def receive(self, timeout: float) -> bytes | None:
        """The next message; None if none came within ``timeout`` seconds, b"" once the server is gone."""
        if not select.select([self.sock], [], [], max(timeout, 0.0))[0]:
            return None
        try:
            return self.sock.recv(256)
        except OSError:
            return b""

    def send(self, message: bytes, fds: tuple[int, ...] = ()) -> bool:
        try:
            if fds:
                socket.send_fds(self.sock, [message], list(fds))
            else:
                self.sock.send(message)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """End the server (it exits when its socket closes, and its running child with it)."""
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygote_lock = threading.Lock()
_idle_zygotes: list[_Zygote] = []


def _take_zygote(as_root: bool) -> _Zygote:
    """An idle fork server of this kind, else a new one."""
    while True:
        with _zygote_lock:
            idle = next((z for z in _idle_zygotes if z.as_root == as_root), None)
            if idle is not None:
                _idle_zygotes.remove(idle)
        if idle is None:
            return _Zygote(as_root)  # outside the lock: other runs need not wait for its start-up
        if idle.proc.poll() is None:
            return idle
        idle.close()


def _give_back_zygote(zygote: _Zygote) -> None:
    with _zygote_lock:
        _idle_zygotes.append(zygote)


def _close_idle_zygotes() -> None:
    with _zygote_lock:
        idle = _idle_zygotes[:]
        _idle_zygotes.clear()
    for zygote in idle:
        zygote.close()


def _forget_zygotes_after_fork() -> None:
    """A forked copy of this process must not talk to its parent's servers (their sockets are shared)."""
    global _zygote_lock
    _zygote_lock = threading.Lock()
    _idle_zygotes.clear()


atexit.register(_close_idle_zygotes)
os.register_at_fork(after_in_child=_forget_zygotes_after_fork)


class _Forked:
    """One run's child, forked by a fork server; it stays unreaped until :meth:`release`."""

    def __init__(self, zygote: _Zygote) -> None:
        self.zygote = zygote
        self.returncode: int | None = None
        self.lost = False  # the server ended during the run

    def _take(self, timeout: float) -> None:
        if self.returncode is None and not self.lost:
            message = self.zygote.receive(timeout)
            if message is None:
                return
            if message.startswith(b"exit "):
                self.returncode = int(message[5:])
            else:
                self.lost = True

    def finished(self) -> bool:
        self._take(0.0)
        return self.returncode is not None or self.lost

    def kill(self) -> None:
        if not self.finished():
            self.zygote.send(b"kill")  # the server kills PID 1; the PID namespace goes with it

    def wait(self, timeout: float) -> int | None:
        self._take(timeout)
        return self.returncode

    def release(self) -> None:
        if self.returncode is not None and self.zygote.send(b"done"):
            _give_back_zygote(self.zygote)
        else:
            self.zygote.close()


def _harness_args(config: dict[str, object]) -> list[str]:
    """A run's settings as the harness reads them (``key=value``, None as ``none``)."""
    return [f"{k}={'none' if v is None else v}" for k, v in config.items()]


def _fork(config: dict[str, object], marker: str, ends: tuple[int, ...]) -> _Forked:
    request = "\n".join(_harness_args({**config, "marker": marker}))
    zygote = _take_zygote(_as_root())
    if not zygote.send(request.encode(), ends):  # it ended while idle: one fresh server, once
        zygote.close()
        zygote = _Zygote(_as_root())
        if not zygote.send(request.encode(), ends):
            zygote.close()
            raise OSError("the sandbox fork server is gone")
    reply = zygote.receive(10.0)
    if reply and reply.startswith(b"error "):
        _give_back_zygote(zygote)
        raise OSError(f"the sandbox fork server could not start the run: {reply[6:].decode(errors='replace')}")
    if not reply or not reply.startswith(b"pid "):
        zygote.close()
        raise OSError("the sandbox fork server did not answer")
    return _Forked(zygote)


# ---- a fresh interpreter per run (process level) ------------------------------------------------


class _Spawned:
    """One run's fresh ``python -I -S``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lost = False

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def release(self) -> None:
        pass


def _spawn(config: dict[str, object], marker: str, ends: tuple[int, ...], workdir: str) -> _Spawned:
    out_w, err_w, program_r, nonce_r, result_w = ends
    args = {**config, "program_fd": program_r, "nonce_fd": nonce_r, "result_fd": result_w}
    cmd = [sys.executable, "-I", "-S", _harness(), *_harness_args(args)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=out_w,
        stderr=err_w,
        cwd=workdir,
        env=_environment(workdir, marker),
        pass_fds=(program_r, nonce_r, result_w),
        start_new_session=True,
    )
    return _Spawned(proc)


def _fresh_uid() -> int:
    with _uid_lock:
        return _UID_BASE + (os.getpid() % 100_000) * 1000 + next(_uid_counter) % 1000


def _environment(workdir: str, marker: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"})
    env.update({v: "1" for v in _THREAD_VARS})
    env["FTMODEL_SANDBOX_RUN"] = marker
    return env


def processes_of(uid: int | None, marker: str) -> list[int]:
    """Processes left by a run: those with its uid (root mode), or carrying its marker."""
    found = []
    needle = f"FTMODEL_SANDBOX_RUN={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if uid is not None:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            else:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read():
                        found.append(int(entry))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, awaiting its reaper) is not alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _sweep(uid: int | None, marker: str, grace: float = 1.0) -> int:
    """Kill what the teardown left; returns how many processes outlived it (after ``grace`` s)."""
    until = time.monotonic() + grace
    while True:
        left = [p for p in processes_of(uid, marker) if p != os.getpid() and _alive(p)]
        if not left or time.monotonic() >= until:
            break
        time.sleep(0.02)  # namespace teardown and parent-death signals land asynchronously
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    until = time.monotonic() + 2.0
    while any(_alive(p) for p in left) and time.monotonic() < until:
        time.sleep(0.01)  # SIGKILL is delivered asynchronously; return once they are gone
    return len(left)


def run_sandboxed(
    program: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 32,
    file_size_mb: int = 16,
    open_files: int = 256,
    max_output: int = 64 * 1024,
    isolation: str = "auto",
) -> SandboxResult:
    """Run ``program`` (Python source) in a sandbox and say how it ended.

    ``status``: "passed" (the program ran to its end), "failed" (an exception, an early exit, or a
    limit on files/processes hit), "timeout" (wall clock or CPU time), "memory" (the address-space
    limit), "error" (the sandbox itself could not run it, or a process outlived the run).
    ``isolation``: "auto" (strongest available), "strict" (refuse to run below namespaces) or
    "process" (skip the namespace layer).
    """
    if isolation not in ("auto", "strict", "process"):
        raise ValueError(f"unknown isolation {isolation!r}: use 'auto', 'strict' or 'process'")
    best = probe_isolation()
    if isolation == "strict" and best.level != "namespaces":
        raise SandboxUnavailable(
            f"strict sandbox isolation asked for, but this machine allows only: {best}; "
            "run where unshare works (root or unprivileged user namespaces), or use --sandbox=auto"
        )
    level = best if isolation != "process" else _process_level(best)
    return _run(
        program, level, timeout=timeout, memory_mb=memory_mb, max_processes=max_processes,
        file_size_mb=file_size_mb, open_files=open_files, max_output=max_output,
    )


def _run(
    program: str,
    level: Isolation,
    *,
    timeout: float,
    memory_mb: int,
    max_processes: int,
    file_size_mb: int,
    open_files: int,
    max_output: int,
) -> SandboxResult:
    uid = _fresh_uid() if level.uid_dropped else None
    marker = secrets.token_hex(8)
    nonce = secrets.token_bytes(16)
    scratch = None
    if level.level == "namespaces":
        workdir = "/tmp"
        tmpfs_mb = max(file_size_mb * 2, 32)
    else:
        scratch = tempfile.mkdtemp(prefix="ftmodel-sandbox-")
        if uid is not None:
            os.chown(scratch, uid, uid)
        workdir = scratch
        tmpfs_mb = 0
    config: dict[str, object] = {
        "namespaces": int(level.level == "namespaces"),
        "workdir": workdir,
        "uid": uid,
        "gid": uid,
        "tmpfs_mb": tmpfs_mb,
        "cpu_seconds": max(1, int(timeout + 0.999)),
        "memory_mb": memory_mb,
        "file_size_mb": file_size_mb,
        "open_files": open_files,
        "processes": max_processes,
    }
    pipes = [os.pipe() for _ in range(5)]  # stdout, stderr, program, nonce, result
    (out_r, out_w), (err_r, err_w), (program_r, program_w), (nonce_r, nonce_w), (result_r, result_w) = pipes
    ends = (out_w, err_w, program_r, nonce_r, result_w)  # the child's
    start = time.monotonic()
    child: _Forked | _Spawned
    try:
        child = _fork(config, marker, ends) if level.forked else _spawn(config, marker, ends, workdir)
    except OSError as exc:
        for fd in (out_r, err_r, program_w, nonce_w, result_r):
            os.close(fd)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        return SandboxResult("error", None, "", f"sandbox could not start: {exc}", 0.0, level, marker, uid)
    finally:
        for fd in ends:
            os.close(fd)
    _write_all(program_w, program.encode("utf-8"))
    _write_all(nonce_w, nonce)

    out, err, verdict, timed_out = _collect(child, out_r, err_r, result_r, start + timeout, max_output)
    child.kill()
    returncode = child.wait(5.0)
    child.release()
    survivors = _sweep(uid, marker)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    duration = time.monotonic() - start

    stderr = err.decode("utf-8", "replace")
    if child.lost:
        status = "error"
        stderr += "\n[sandbox] the sandbox's fork server ended during the run"
    elif survivors:
        status = "error"
        stderr += f"\n[sandbox] {survivors} process(es) outlived the run and were killed"
    elif timed_out or (returncode in _CPU_KILLED and verdict != nonce):
        status = "timeout"
    elif verdict == b"memory":
        status = "memory"
    elif verdict == nonce and returncode == 0:
        status = "passed"
    else:
        status = "failed"
    return SandboxResult(status, returncode, out.decode("utf-8", "replace"), stderr, duration, level, marker, uid)


def _process_level(best: Isolation) -> Isolation:
    return Isolation(
        "process", network=False, pid_namespace=False, private_tmp=False, uid_dropped=best.uid_dropped,
        note="namespaces not used (isolation='process')",
    )


def _write_all(fd: int, data: bytes) -> None:
    """Feed a pipe; from a thread when it may not fit the pipe, so a child that never reads cannot block us."""
    if len(data) <= 4096:  # PIPE_BUF: fits an empty pipe at once
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return

    def feed() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass
        finally:
            os.close(fd)

    threading.Thread(target=feed, daemon=True).start()


def _collect(
    child: _Forked | _Spawned, out_fd: int, err_fd: int, result_fd: int, deadline: float, cap: int
) -> tuple[bytes, bytes, bytes, bool]:
    """Read stdout/stderr (the first ``cap`` bytes of each) and the result pipe; closes all three.

    Stops at EOF of all three, at the deadline (then ``timed_out``), or shortly after the process
    exited: a grandchild that holds the pipes open must not stretch the run to the deadline.
    """
    buffers = {out_fd: bytearray(), err_fd: bytearray(), result_fd: bytearray()}
    limits = {out_fd: cap, err_fd: cap, result_fd: 64}
    closed: set[int] = set()
    sel = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out = False
    stop_at = deadline
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= stop_at:
                timed_out = stop_at == deadline
                break
            if stop_at == deadline and child.finished():
                stop_at = min(deadline, now + 0.25)
            for key, _ in sel.select(timeout=min(stop_at - now, 0.05)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                buffers[fd] += chunk[: max(limits[fd] - len(buffers[fd]), 0)]
                if len(buffers[fd]) >= limits[fd]:
                    sel.unregister(fd)
                    if fd != result_fd:
                        os.close(fd)  # a flood now gets EPIPE instead of our memory
                        closed.add(fd)
    finally:
        sel.close()
        for fd in buffers.keys() - closed:
            os.close(fd)
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), bytes(buffers[result_fd]), timed_out
