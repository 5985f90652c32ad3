"""Starting a run's processes: the pool of fork servers (namespace level) and a fresh interpreter
per program (process level). Both start the harness from its source held in this process's
memory, handed over on a pipe and compiled in memory (``python -I -S -c``): nothing on disk that a
program could have written is ever executed, and no cache file exists to be tampered with."""

from __future__ import annotations

import atexit
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pytest_ftmodel.sandbox import isolation

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_HERE = Path(__file__).parent
# read once, at import, from the installed package: the codec first, then the harness that uses it
HARNESS_SOURCE = (_HERE / "plain.py").read_text() + "\n" + (_HERE / "harness.py").read_text()


# what ``-c`` runs: the harness's source, read from the pipe whose number comes first in argv
_BOOTSTRAP = (
    "import os, sys\nfd = int(sys.argv.pop(1))\n"
    "source = b''.join(iter(lambda: os.read(fd, 1 << 16), b''))\nos.close(fd)\n"
    "exec(compile(source, '<sandbox>', 'exec'))\n"
)


def harness_command() -> tuple[list[str], int]:
    """The command that starts the harness, and the pipe it reads its source from (close it after
    the start). The source fits a pipe's buffer, so it is written before the child starts."""
    read_end, write_end = os.pipe()
    try:
        data = HARNESS_SOURCE.encode()
        written = 0
        while written < len(data):
            written += os.write(write_end, data[written:])
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, str(read_end)], read_end


def environment(workdir: str, marker: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"})
    env.update({v: "1" for v in _THREAD_VARS})
    env["FTMODEL_SANDBOX_RUN"] = marker
    return env


def harness_args(config: dict[str, object]) -> list[str]:
    """A run's settings as the harness reads them (``key=value``, None as ``none``)."""
    return [f"{k}={'none' if v is None else v}" for k, v in config.items()]


# ---- the fork servers (namespace level) -------------------------------------------------------


def _zygote_command(as_root: bool) -> tuple[list[str], int]:
    """A fork server. Without root it first gets a user namespace of its own, and a PID namespace so
    that it may give each child a fresh one below it."""
    prefix = [] if as_root else ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]
    command, source_fd = harness_command()
    return [*prefix, *command, "zygote", f"own_proc={int(not as_root)}"], source_fd


class Zygote:
    """A pristine ``python -I -S`` fork server (``harness.serve``), serving one run at a time."""

    def __init__(self, as_root: bool) -> None:
        self.as_root = as_root
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        source_fd = -1
        try:
            command, source_fd = _zygote_command(as_root)
            self.proc = subprocess.Popen(
                [*command, f"socket={theirs.fileno()}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=environment("/tmp", "zygote"),
                pass_fds=(theirs.fileno(), source_fd),
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            if source_fd >= 0:
                os.close(source_fd)
        self.sock = ours
        greeting = self.receive(10.0)
        if greeting != b"ready":
            self.close()
            why = greeting.decode(errors="replace") if greeting else "no answer"
            raise OSError(f"the sandbox fork server did not start ({why})")

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
_idle_zygotes: list[Zygote] = []


def _take_zygote(as_root: bool) -> Zygote:
    """An idle fork server of this kind, else a new one."""
    while True:
        with _zygote_lock:
            idle = next((z for z in _idle_zygotes if z.as_root == as_root), None)
            if idle is not None:
                _idle_zygotes.remove(idle)
        if idle is None:
            return Zygote(as_root)  # outside the lock: other runs need not wait for its start-up
        if idle.proc.poll() is None:
            return idle
        idle.close()


def _give_back_zygote(zygote: Zygote) -> None:
    with _zygote_lock:
        _idle_zygotes.append(zygote)


def close_idle_zygotes() -> None:
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


atexit.register(close_idle_zygotes)
os.register_at_fork(after_in_child=_forget_zygotes_after_fork)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        return []


def _descendants(pid: int, limit: int = 512) -> list[int]:
    """``pid``'s descendants (host pids), by parentage: a run's processes, whatever they set up."""
    found: list[int] = []
    todo = _children(pid)
    while todo and len(found) < limit:
        child = todo.pop()
        found.append(child)
        todo += _children(child)
    return found


def usage(pids: list[int]) -> tuple[float, float] | None:
    """(the longest time, s, any of ``pids`` has spent runnable but waiting for a CPU (the
    scheduler's run delay), the CPU time they used together); None where the kernel does not say
    (no schedstat) or none is left. Each process's main thread: the figures for deciding a timeout."""
    waited, used, seen = 0.0, 0.0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as fh:
                ran, delay = (int(x) / 1e9 for x in fh.read().split()[:2])
        except (OSError, ValueError):
            continue
        waited, used, seen = max(waited, delay), used + ran, True
    return (waited, used) if seen else None


class Forked:
    """One run's child, forked by a fork server; it stays unreaped until :meth:`release`."""

    def __init__(self, zygote: Zygote) -> None:
        self.zygote = zygote
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None  # the whole run's, every process of it
        self.lost = False  # the server ended during the run

    def _take(self, timeout: float) -> None:
        if self.returncode is None and not self.lost:
            message = self.zygote.receive(timeout)
            if message is None:
                return
            if message.startswith(b"exit "):
                code, cpu = message[5:].split()
                self.returncode, self.cpu_seconds = int(code), float(cpu)
            else:
                self.lost = True

    def finished(self) -> bool:
        self._take(0.0)
        return self.returncode is not None or self.lost

    def usage(self) -> tuple[float, float] | None:
        """How long the run's processes have waited for a CPU, and the CPU they used (see :func:`usage`)."""
        server = self.zygote.proc.pid
        if not self.zygote.as_root:  # `unshare` started the server: its one child
            server = next(iter(_children(server)), server)
        return usage(_descendants(server))

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


def fork(config: dict[str, object], marker: str, ends: tuple[int, ...]) -> Forked:
    request = "\n".join(harness_args({**config, "marker": marker}))
    root = isolation.as_root()
    zygote = _take_zygote(root)
    if not zygote.send(request.encode(), ends):  # it ended while idle: one fresh server, once
        zygote.close()
        zygote = Zygote(root)
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
    return Forked(zygote)


# ---- a fresh interpreter per run (process level) ------------------------------------------------


class Spawned:
    """One run's fresh ``python -I -S``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lost = False
        self.cpu_seconds: float | None = None  # the whole run's: the supervisor reaps every process of it

    def finished(self) -> bool:
        if self.proc.returncode is not None:
            return True
        try:  # without reaping it: its resource use is read when it is reaped, in wait()
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def usage(self) -> tuple[float, float] | None:
        """How long the run's processes (the supervisor's descendants) have waited for a CPU, and the CPU they used."""
        return usage(_descendants(self.proc.pid))

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float) -> int | None:
        until = time.monotonic() + timeout
        while self.proc.returncode is None:
            try:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                return self.proc.wait()
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() >= until:
                return None
            time.sleep(0.002)
        return self.proc.returncode

    def release(self) -> None:
        pass


def spawn(config: dict[str, object], marker: str, ends: tuple[int, ...], workdir: str) -> Spawned:
    out_w, err_w, program_r, judge_r, result_w = ends[:5]
    cgroup_fds = ends[5:]
    args = {**config, "program_fd": program_r, "judge_fd": judge_r, "result_fd": result_w,
            "cgroup_fds": ",".join(map(str, cgroup_fds)) or None}
    command, source_fd = harness_command()
    try:
        proc = subprocess.Popen(
            [*command, *harness_args(args)],
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=workdir,
            env=environment(workdir, marker),
            pass_fds=(program_r, judge_r, result_w, source_fd, *cgroup_fds),
            start_new_session=True,
        )
    finally:
        os.close(source_fd)
    return Spawned(proc)
