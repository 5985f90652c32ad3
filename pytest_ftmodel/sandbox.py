"""Run untrusted generated code in an isolated subprocess, and report the isolation achieved.

Layers, strongest first (probed once per process; see :func:`probe_isolation`):

``namespaces``
    ``unshare`` gives the program new mount, network and PID namespaces: no network (only a downed
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

Always: a fresh ``python -I -S`` per program, stdin from /dev/null, an allow-listed environment (no
CI tokens), limits on CPU time, address space, processes, file size and open files, no core dumps,
a wall-clock watchdog, capped stdout/stderr, and a verdict that rests on a per-run nonce written
back by the harness after the program ran to its end, never on the exit code alone.
"""

from __future__ import annotations

import itertools
import os
import secrets
import selectors
import shutil
import signal
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
    note: str = ""

    def __str__(self) -> str:
        parts = [self.level]
        parts.append("no network" if self.network else "network reachable")
        if self.pid_namespace:
            parts.append("own PID namespace")
        parts.append("private /tmp" if self.private_tmp else "shared /tmp")
        parts.append("unprivileged uid" if self.uid_dropped else "same uid as pytest")
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


def _unshare_command(as_root: bool) -> list[str]:
    cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child"]
    if not as_root:
        cmd[1:1] = ["--user", "--map-root-user"]
    return cmd


def probe_isolation() -> Isolation:
    """The strongest level this machine allows, found once per process."""
    as_root = os.geteuid() == 0
    with _probe_lock:
        if as_root in _probed:
            return _probed[as_root]
        level = Isolation("process", network=False, pid_namespace=False, private_tmp=False, uid_dropped=as_root)
        if shutil.which("unshare"):
            try:
                check = "import ctypes; l = ctypes.CDLL(None); assert l.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, b'size=1m') == 0"
                ok = subprocess.run(
                    [*_unshare_command(as_root), sys.executable, "-I", "-S", "-c", check],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                ).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            if ok:
                level = Isolation("namespaces", network=True, pid_namespace=True, private_tmp=True, uid_dropped=as_root)
        if level.level == "process":
            level = Isolation(
                "process", network=False, pid_namespace=False, private_tmp=False, uid_dropped=level.uid_dropped,
                note="namespaces refused on this machine",
            )
        _probed[as_root] = level
        return level


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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
    as_root = os.geteuid() == 0
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

    program_r, program_w = os.pipe()
    nonce_r, nonce_w = os.pipe()
    result_r, result_w = os.pipe()
    config = {
        "namespaces": int(level.level == "namespaces"),
        "workdir": workdir,
        "uid": uid,
        "gid": uid,
        "tmpfs_mb": tmpfs_mb,
        "program_fd": program_r,
        "nonce_fd": nonce_r,
        "result_fd": result_w,
        "cpu_seconds": max(1, int(timeout + 0.999)),
        "memory_mb": memory_mb,
        "file_size_mb": file_size_mb,
        "open_files": open_files,
        "processes": max_processes,
    }
    cmd = [sys.executable, "-I", "-S", _harness(), *(f"{k}={'none' if v is None else v}" for k, v in config.items())]
    if level.level == "namespaces":
        cmd = _unshare_command(as_root) + cmd
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir if scratch else "/",
            env=_environment(workdir, marker),
            pass_fds=(program_r, nonce_r, result_w),
            start_new_session=True,
        )
    except OSError as exc:
        for fd in (program_r, program_w, nonce_r, nonce_w, result_r, result_w):
            os.close(fd)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        return SandboxResult("error", None, "", f"sandbox could not start: {exc}", 0.0, level, marker, uid)
    for fd in (program_r, nonce_r, result_w):
        os.close(fd)
    _write_all(program_w, program.encode("utf-8"))
    _write_all(nonce_w, nonce)

    out, err, verdict, timed_out = _collect(proc, result_r, start + timeout, max_output)
    _kill_group(proc)
    try:
        returncode = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        returncode = None
    survivors = _sweep(uid, marker)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    duration = time.monotonic() - start

    stderr = err.decode("utf-8", "replace")
    if survivors:
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
    proc: subprocess.Popen[bytes], result_fd: int, deadline: float, cap: int
) -> tuple[bytes, bytes, bytes, bool]:
    """Read stdout/stderr (the first ``cap`` bytes of each) and the result pipe.

    Stops at EOF of all three, at the deadline (then ``timed_out``), or shortly after the process
    exited: a grandchild that holds the pipes open must not stretch the run to the deadline.
    """
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): proc.stdout, proc.stderr.fileno(): proc.stderr}
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray(), result_fd: bytearray()}
    limits = {out_fd: cap, err_fd: cap, result_fd: 64}
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
            if proc.poll() is not None and stop_at == deadline:
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
                    if fd in streams:
                        streams[fd].close()  # a flood now gets EPIPE instead of our memory
    finally:
        sel.close()
        os.close(result_fd)
        for stream in streams.values():
            stream.close()
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), bytes(buffers[result_fd]), timed_out
