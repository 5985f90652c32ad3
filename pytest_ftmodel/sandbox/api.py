"""The public API: run one program, or judge a candidate against tests in another process, and
say how it ended. Orchestrates one run: pipes, start, collect, verdict, sweep."""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from pytest_ftmodel.sandbox import forkserver, isolation, uids
from pytest_ftmodel.sandbox.isolation import Isolation, SandboxUnavailable
from pytest_ftmodel.escaping import visible
from pytest_ftmodel.sandbox.plain import encode

LEFT_BEHIND = 125  # harness.LEFT_BEHIND: the process level's supervisor killed leftover descendants

# how a run that hit the CPU-time limit ends: the signal itself, or `unshare` passing it on
_CPU_KILLED = (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL)
# what could drive a terminal or hide text is shown as escapes: the one rule every surface uses
escape_controls = visible


@dataclass(frozen=True)
class SandboxResult:
    status: str
    returncode: int | None
    stdout: str  # control characters escaped (see escape_controls)
    stderr: str
    duration: float
    isolation: Isolation
    run_id: str = ""  # the marker in the run's environment, to find its processes
    uid: int | None = None  # the run's own uid, when it had one (the split judge's is uid + 1)
    verdict: str = "in-process"  # "split": tests in a process of their own; "in-process": one program
    cpu_seconds: float | None = None  # CPU the run's processes used, all together (namespace level)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _check_isolation(choice: str) -> Isolation:
    if choice not in ("auto", "strict", "process"):
        raise ValueError(f"unknown isolation {choice!r}: use 'auto', 'strict' or 'process'")
    best = isolation.probe_isolation()
    if choice == "strict" and best.level != "namespaces":
        raise SandboxUnavailable(
            f"strict sandbox isolation asked for, but this machine allows only: {best}; "
            "run where unshare works (root or unprivileged user namespaces), or use --sandbox=auto"
        )
    if choice == "strict" and not best.seccomp:
        raise SandboxUnavailable(
            f"strict sandbox isolation asked for, but this machine runs programs without the system-call filter: {best}; "
            "install libseccomp (libseccomp2) and pyseccomp (a dependency on Linux: pip install pyseccomp), "
            "or use --sandbox=auto"
        )
    if choice == "process" and best.level != "process":
        return isolation.process_level(best.uid_dropped, "namespaces not used (isolation='process')")
    return best


def _source_error(text: str, what: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{what} is not valid text: {exc.reason} at position {exc.start} ({text[exc.start:exc.end]!a}); fix the text or drop the character"
    return None


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
    limit on files/processes hit), "timeout" (its CPU time, or its wall clock less the time it waited
    for a CPU: see WALL_FACTOR), "memory" (the address-space
    limit), "error" (the sandbox itself could not run it, the text is not valid, or a process
    outlived the run). ``isolation``: "auto" (strongest available), "strict" (refuse to run below
    namespaces, or without the system-call filter) or "process" (skip the namespace layer).
    ``verdict`` is "in-process".
    """
    level = _check_isolation(isolation)
    return _run(
        program, level, mode="inprocess", judge=b"", timeout=timeout, memory_mb=memory_mb,
        max_processes=max_processes, file_size_mb=file_size_mb, open_files=open_files, max_output=max_output,
    )


def run_split(
    candidate: str,
    tests: str,
    names: Sequence[str],
    *,
    preamble: str = "",
    timeout: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 32,
    file_size_mb: int = 16,
    open_files: int = 256,
    max_output: int = 64 * 1024,
    isolation: str = "auto",
) -> SandboxResult:
    """Judge ``candidate`` (a module's source) by ``tests`` run in a separate process.

    The tests see each of ``names`` as a function that calls the candidate's function of that name
    in the candidate's own sandboxed process, with plain data both ways (None, bool, int, float,
    complex, str, bytes, list, tuple, dict, set, frozenset; builtin exceptions by type and message;
    mutated list/dict/set arguments copied back). Anything else fails the sample with its reason.
    ``preamble`` (e.g. a HumanEval prompt, for helpers its tests use) runs before the tests, in
    the tests' process. ``verdict`` is "split"; statuses as :func:`run_sandboxed`.
    """
    level = _check_isolation(isolation)
    for text, what in ((tests, "the tests"), (preamble, "the preamble"), *((n, "a name") for n in names)):
        problem = _source_error(text, what)
        if problem:
            return SandboxResult("error", None, "", f"[sandbox] {problem}", 0.0, level, verdict="split")
    judge = encode((tuple(names), preamble, tests))
    return _run(
        candidate, level, mode="split", judge=judge, timeout=timeout, memory_mb=memory_mb,
        max_processes=max_processes, file_size_mb=file_size_mb, open_files=open_files, max_output=max_output,
    )


# A run is judged on the time the machine gave it, never on how busy the machine was: each of its
# processes may use ``timeout`` seconds of CPU (RLIMIT_CPU, whole seconds: the kernel's granularity),
# and ``timeout`` seconds (plus WALL_GRACE) of wall clock not counting the time it waited for a CPU
# (the scheduler's run delay, /proc/PID/schedstat), with WALL_FACTOR times its timeout of wall
# clock as a backstop (the only limit where the kernel keeps no run delay).
# A program that loops is stopped by its CPU limit, one that sleeps or waits on a lock after its
# timeout, and a correct program that a busy machine starves has its time all the same.
WALL_FACTOR = 10.0
CPU_SPENT = 0.9  # a run stopped having used this share of its CPU time ran out of CPU, not of patience
# the wall clock's allowance over the CPU time: a program that computes all along reaches its CPU
# limit first (start-up and the fork of its processes take wall clock too), and is stopped by it
WALL_GRACE = 0.25


def _wall_clock_note(why: str, timeout: float) -> str:
    """What a run stopped by the wall clock is told (no measured figure in it: results stay the same
    from run to run; r.cpu_seconds and r.duration have those)."""
    if why == "cap":
        return (
            f"\n[sandbox] stopped at its wall-clock cap ({WALL_FACTOR * timeout:g} s, {WALL_FACTOR:g} times its "
            f"timeout) before it had used its {timeout:g} s of CPU time: the machine is too busy"
        )
    return (
        f"\n[sandbox] stopped after {timeout * (1 + WALL_GRACE):g} s of wall clock (not counting the time it waited for a CPU) "
        f"without using its {timeout:g} s of CPU time: the program waited (sleep, input, a lock)"
    )


def processes_of(uid: int | None, marker: str) -> list[int]:
    """Processes left by a run: those with its uids (root mode), or carrying its marker."""
    found = []
    needle = f"FTMODEL_SANDBOX_RUN={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if uid is not None:
                if os.stat(f"/proc/{entry}").st_uid in (uid, uid + 1):
                    found.append(int(entry))
            else:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read():
                        found.append(int(entry))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
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
        left = [p for p in processes_of(uid, marker) if p != os.getpid() and alive(p)]
        if not left or time.monotonic() >= until:
            break
        time.sleep(0.02)  # namespace teardown and parent-death signals land asynchronously
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    until = time.monotonic() + 2.0
    while any(alive(p) for p in left) and time.monotonic() < until:
        time.sleep(0.01)  # SIGKILL is delivered asynchronously; return once they are gone
    return len(left)


def _run(
    program: str,
    level: Isolation,
    *,
    mode: str,
    judge: bytes,
    timeout: float,
    memory_mb: int,
    max_processes: int,
    file_size_mb: int,
    open_files: int,
    max_output: int,
) -> SandboxResult:
    """One run: CPU and wall-clock limits from ``timeout`` (see WALL_FACTOR)."""
    verdict = "split" if mode == "split" else "in-process"
    marker = secrets.token_hex(8)
    problem = _source_error(program, "the program")
    if problem:
        return SandboxResult("error", None, "", f"[sandbox] {problem}", 0.0, level, marker, None, verdict)
    try:
        uid = uids.fresh_pair() if level.uid_dropped else None
    except OSError as exc:
        return SandboxResult("error", None, "", f"[sandbox] no fresh uid for the run: {exc}", 0.0, level, marker, None, verdict)
    source = program.encode("utf-8")
    nonce = secrets.token_bytes(16)
    from pytest_ftmodel.sandbox.kernel import seccomp_filter

    bpf = seccomp_filter()[0] if level.seccomp else None
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
    shm_mb = max(min(memory_mb // 8, 64), 1)
    config: dict[str, object] = {
        "namespaces": int(level.level == "namespaces"),
        "mode": mode,
        "workdir": workdir,
        "uid": uid,
        "tmpfs_mb": tmpfs_mb,
        "shm_mb": shm_mb,
        "cpu_seconds": max(1, int(timeout + 0.999)),
        "memory_mb": memory_mb,
        "file_size_mb": file_size_mb,
        "open_files": open_files,
        "processes": max_processes,
        "seccomp": bpf,
    }
    group = groups = None
    if level.cgroup:
        from pytest_ftmodel.sandbox.kernel import cgroups

        groups = cgroups()[0]
        if groups is not None:
            try:  # the run's processes together: its memory limit plus its /tmp and /dev/shm caps
                group = groups.create(memory_mb + tmpfs_mb + shm_mb, max_processes + 2)
            except OSError as exc:
                if scratch:
                    shutil.rmtree(scratch, ignore_errors=True)
                return SandboxResult("error", None, "", f"[sandbox] could not make the run's cgroup: {exc}", 0.0, level, marker, uid, verdict)
    pipes = [os.pipe() for _ in range(5)]  # stdout, stderr, program, judge, result
    (out_r, out_w), (err_r, err_w), (program_r, program_w), (judge_r, judge_w), (result_r, result_w) = pipes
    ends: tuple[int, ...] = (out_w, err_w, program_r, judge_r, result_w)  # the child's
    start = time.monotonic()
    child: forkserver.Forked | forkserver.Spawned
    try:
        if group is not None:
            ends += tuple(group.open_procs())  # the run's PID 1 joins its cgroup through these
        child = forkserver.fork(config, marker, ends) if level.forked else forkserver.spawn(config, marker, ends, workdir)
    except OSError as exc:
        for fd in (out_r, err_r, program_w, judge_w, result_r):
            os.close(fd)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if group is not None and groups is not None:
            groups.release(group)
        return SandboxResult("error", None, "", f"[sandbox] could not start: {exc}", 0.0, level, marker, uid, verdict)
    finally:
        for fd in ends:
            os.close(fd)
    began = time.monotonic()  # the run's clock starts once it exists: a fork server's start is not its time
    _write_all(program_w, source)
    _write_all(judge_w, nonce + judge)

    out, err, result, timed_out, why = _collect(child, out_r, err_r, result_r, began, timeout, max_output)
    child.kill()
    returncode = child.wait(5.0)
    child.release()
    # in a PID namespace the kernel has killed every process of the run before the server saw PID 1
    # end; a server that ended during the run saw nothing, so then we look
    survivors = _sweep(uid, marker) if not level.pid_namespace or child.lost else 0
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
        if uid is not None:
            uids.remove_leftovers(uid)
    out_of_memory = False
    if group is not None and groups is not None:
        out_of_memory = group.oom_killed()
        groups.release(group)
    duration = time.monotonic() - start

    stderr = err.decode("utf-8", "replace")
    if child.lost:
        status = "error"
        stderr += "\n[sandbox] the sandbox's fork server ended during the run"
    elif survivors:
        status = "error"
        stderr += f"\n[sandbox] {survivors} process(es) outlived the run and were killed"
    elif not level.forked and returncode == LEFT_BEHIND:  # the process level's supervisor killed some
        status = "error"
    elif out_of_memory and result != nonce:  # the kernel killed one of its processes: the run's memory was spent
        status = "memory"
        stderr += "\n[sandbox] the run's processes together reached its memory limit"
    elif timed_out or (returncode in _CPU_KILLED and result != nonce):
        status = "timeout"
        if why:
            stderr += _wall_clock_note(why, timeout)
    elif result == b"memory":
        status = "memory"
    elif result == nonce and returncode == 0:
        status = "passed"
    else:
        status = "failed"
    return SandboxResult(
        status, returncode, escape_controls(out.decode("utf-8", "replace")), escape_controls(stderr), duration,
        level, marker, uid, verdict, child.cpu_seconds,
    )


def _write_all(fd: int, data: bytes) -> None:
    """Feed a pipe; from a thread when it may not fit the pipe, so a child that never reads cannot block us."""
    if len(data) <= 4096:  # PIPE_BUF: fits an empty pipe at once
        try:
            if data:
                os.write(fd, data)
        except OSError:
            pass  # the child ended before reading: its result says why
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
    child: forkserver.Forked | forkserver.Spawned, out_fd: int, err_fd: int, result_fd: int, start: float, timeout: float, cap: int
) -> tuple[bytes, bytes, bytes, bool, str]:
    """Read stdout/stderr (the first ``cap`` bytes of each) and the result pipe; closes all three.

    Stops at EOF of all three, shortly after the process exited (a grandchild that holds the pipes
    open must not stretch the run), or when the run is out of time: ``timeout`` seconds of wall clock
    past the time its processes waited for a CPU ("wall"), or the backstop, WALL_FACTOR times that
    ("cap"). Then the fourth item is True, and the fifth says why: "wall" or "cap" where it had not
    used its CPU time, "" where it had (stopped as its CPU limit would have).
    """
    buffers = {out_fd: bytearray(), err_fd: bytearray(), result_fd: bytearray()}
    limits = {out_fd: cap, err_fd: cap, result_fd: 64}
    closed: set[int] = set()
    sel = selectors.DefaultSelector()
    backstop = start + WALL_FACTOR * timeout
    patience = timeout * (1 + WALL_GRACE)
    deadline = min(start + patience, backstop)
    try:
        for fd in buffers:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        timed_out = ""
        ending = stopped = False
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                if ending:
                    break
                used = child.usage()  # unknown (None): only the backstop stops it
                deadline = backstop if used is None else min(start + patience + used[0], backstop)
                if now >= deadline:
                    # a run that had used its CPU time was stopped as its CPU limit would have: no note
                    spent = used is not None and used[1] >= CPU_SPENT * timeout
                    timed_out = "" if spent else "cap" if deadline == backstop else "wall"
                    stopped = True
                    break
            if not ending and child.finished():
                ending, deadline = True, min(deadline, now + 0.25)
            for key, _ in sel.select(timeout=max(min(deadline - now, 0.05), 0.0)):
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
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), bytes(buffers[result_fd]), stopped, timed_out
