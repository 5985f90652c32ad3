"""run_sandboxed(): verdicts that never rest on the exit code, and a battery of hostile programs.

Each hostile program prints a marker proving its attack was attempted, carries its own safety bound
(beyond the sandbox's limits, so a broken sandbox cannot take the machine down), and must leave the
test session alive, no process behind, and nothing outside its temporary directory changed.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pytest_ftmodel.sandbox import _UID_BASE, SandboxUnavailable, _alive, probe_isolation, processes_of, run_sandboxed

LEVEL = probe_isolation()
TIMEOUT = 2.0


def leftover_processes(result) -> list[int]:
    """Live processes of this run (its uid, or its marker); other sessions' runs are not ours."""
    return [pid for pid in processes_of(result.uid, result.run_id) if _alive(pid)]


OUTSIDE = [Path.home(), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path.cwd()]


def snapshot() -> dict[str, set[str]]:
    """What a sandboxed program could have left outside its directory. As root, the entries owned by
    a sandbox uid (precise, and blind to other sessions' temporary files); else the whole listing."""
    out = {}
    for d in OUTSIDE:
        try:
            entries = list(d.iterdir())
        except OSError:
            entries = []
        if os.geteuid() == 0:
            # process-level runs' own scratch folders are made by the parent (and checked below)
            out[str(d)] = {p.name for p in entries if _owner(p) >= _UID_BASE and not p.name.startswith("ftmodel-sandbox-")}
        else:
            out[str(d)] = {p.name for p in entries if not p.name.startswith("pytest-of")}
    return out


def _owner(path: Path) -> int:
    try:
        return path.lstat().st_uid
    except OSError:
        return -1


@pytest.fixture
def contained():
    """Runs a hostile program and checks the aftermath."""

    def run(program: str, marker: str, **kwargs):
        before = snapshot()
        result = run_sandboxed(program, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)
        assert f"ATTEMPT {marker}" in result.stdout, (result.status, result.stdout[:200], result.stderr[-500:])
        assert result.run_id and leftover_processes(result) == []
        if result.isolation.private_tmp:
            assert snapshot() == before
        return result

    return run


def attempt(name: str, body: str) -> str:
    return f"import os, sys, time\nprint('ATTEMPT {name}', flush=True)\n{body}\n"


# ---- verdicts ---------------------------------------------------------------------------------


def test_a_correct_program_passes_and_reports_isolation() -> None:
    result = run_sandboxed("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n")
    assert (result.status, result.returncode, result.stdout) == ("passed", 0, "ok\n")
    assert result.isolation == LEVEL and result.duration < 5


def test_a_failing_assert_fails_with_its_traceback() -> None:
    result = run_sandboxed("assert 1 + 1 == 3, 'arithmetic'\n")
    assert result.status == "failed" and "AssertionError: arithmetic" in result.stderr


def test_the_standard_library_is_importable() -> None:
    program = "import math, collections.abc, json, re, heapq, itertools, functools, decimal, fractions, typing\nassert math.isqrt(17) == 4\n"
    assert run_sandboxed(program).status == "passed"


def test_unknown_isolation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown isolation 'none'"):
        run_sandboxed("pass", isolation="none")


def test_strict_refuses_below_namespaces_or_runs_in_them() -> None:
    if LEVEL.level == "namespaces":
        result = run_sandboxed("pass", isolation="strict")
        assert result.passed and result.isolation.network and result.isolation.pid_namespace
    else:
        with pytest.raises(SandboxUnavailable, match="strict sandbox isolation asked for"):
            run_sandboxed("pass", isolation="strict")


def test_the_isolation_level_is_what_the_machine_allows() -> None:
    assert LEVEL.level in ("namespaces", "process")
    if os.geteuid() == 0:
        assert LEVEL.uid_dropped
    text = str(LEVEL)
    assert text.startswith(LEVEL.level) and ("no network" in text) == LEVEL.network
    assert LEVEL.forked == (LEVEL.level == "namespaces") == ("forked from a pristine interpreter" in text)


# ---- the hostile battery ----------------------------------------------------------------------


def test_sys_exit_before_the_asserts_fails(contained) -> None:
    r = contained(attempt("exit", "sys.exit(0)\nassert False, 'never reached'"), "exit")
    assert r.status == "failed" and r.returncode == 0  # the exit code alone would have said "passed"


def test_os_exit_fails(contained) -> None:
    r = contained(attempt("os_exit", "os._exit(0)\nassert False"), "os_exit")
    assert r.status == "failed" and r.returncode == 0


def test_atexit_exit_after_a_failing_assert_fails(contained) -> None:
    r = contained(attempt("atexit", "import atexit\natexit.register(lambda: os._exit(0))\nassert 1 == 2"), "atexit")
    assert r.status == "failed" and r.returncode == 0 and "AssertionError" in r.stderr


def test_infinite_loop_times_out(contained) -> None:
    r = contained(attempt("loop", "end = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass"), "loop")
    assert r.status == "timeout" and r.duration < TIMEOUT + 3


def test_busy_loop_ignoring_sigalrm_times_out(contained) -> None:
    body = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(1)\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass"
    r = contained(attempt("alarm", body), "alarm")
    assert r.status == "timeout"


def test_sleep_forever_times_out(contained) -> None:
    r = contained(attempt("sleep", "time.sleep(600)"), "sleep")
    assert r.status == "timeout" and r.duration < TIMEOUT + 3


def test_fork_bomb_is_stopped_by_the_process_limit(contained) -> None:
    body = (
        "n = 0\nend = time.monotonic() + 5\n"
        "try:\n"
        "    while n < 3000 and time.monotonic() < end:\n"
        "        if os.fork() == 0:\n            time.sleep(20)\n            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n    print('stopped after', n, e.__class__.__name__, flush=True)\n"
        "assert n >= 3000, n"
    )
    r = contained(attempt("forkbomb", body), "forkbomb", max_processes=32)
    assert r.status == "failed" and "stopped after" in r.stdout
    assert int(r.stdout.split("stopped after")[1].split()[0]) < 32


def test_setsid_grandchild_sleeper_is_killed(contained) -> None:
    body = "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\nprint('child left behind', flush=True)"
    r = contained(attempt("setsid", body), "setsid")
    assert "child left behind" in r.stdout
    # inside a PID namespace the teardown kills it; without one the sweep must and says so
    assert r.status == ("passed" if LEVEL.pid_namespace else "error")


def test_posix_spawn_grandchild_is_killed(contained) -> None:
    body = "pid = os.posix_spawn('/bin/sleep', ['/bin/sleep', '60'], {})\nprint('spawned', pid, flush=True)"
    r = contained(attempt("spawn", body), "spawn")
    assert "spawned" in r.stdout
    assert r.status == ("passed" if LEVEL.pid_namespace else "error")


def test_allocating_8_gib_hits_the_memory_limit(contained) -> None:
    r = contained(attempt("alloc", "block = bytearray(8 << 30)\nprint('allocated', flush=True)"), "alloc", memory_mb=512)
    assert r.status == "memory" and "allocated" not in r.stdout


def test_unbounded_stdout_is_capped(contained) -> None:
    body = "chunk = 'x' * 65536\nfor _ in range(32768):  # at most 2 GiB\n    sys.stdout.write(chunk)"
    r = contained(attempt("flood", body), "flood", max_output=4096)
    assert r.status in ("failed", "timeout") and len(r.stdout) <= 4096


def test_an_input_loop_reads_nothing(contained) -> None:
    body = "for _ in range(10**6):\n    input()"
    r = contained(attempt("input", body), "input")
    assert r.status == "failed" and "EOFError" in r.stderr and r.duration < TIMEOUT


def test_environment_secrets_do_not_reach_the_program(contained, monkeypatch) -> None:
    monkeypatch.setenv("FTMODEL_TEST_SECRET", "s3cr3t-token")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-s3cr3t")
    body = (
        f"print(dict(os.environ), flush=True)\n"
        f"for pid in (os.getppid(), {os.getpid()}):\n"
        "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read(), flush=True)\n"
        "    except OSError as e:\n        print('refused', pid, e.__class__.__name__, flush=True)"
    )
    r = contained(attempt("secrets", body), "secrets")
    assert "s3cr3t" not in r.stdout and "refused" in r.stdout


def test_writing_outside_the_temporary_directory(contained, tmp_path) -> None:
    token = os.urandom(4).hex()
    targets = [tmp_path / f"pwned-{token}", Path.home() / f"pwned-{token}", Path(f"/var/tmp/pwned-{token}"), Path(f"/dev/shm/pwned-{token}"), Path(f"/etc/pwned-{token}")]
    body = f"for path in {[str(t) for t in targets]!r}:\n    try:\n        open(path, 'w').write('x')\n        print('wrote', path, flush=True)\n    except OSError as e:\n        print('refused', path, e.__class__.__name__, flush=True)"
    r = contained(attempt("write", body), "write")
    try:
        for target in targets[:2] + targets[4:]:
            assert not target.exists()  # the test's own folder, pytest's HOME, /etc: never
        if LEVEL.private_tmp:
            assert not any(t.exists() for t in targets)
        else:  # the documented lower level: world-writable places are reachable
            assert not r.isolation.private_tmp
    finally:
        for t in targets[2:4]:
            t.unlink(missing_ok=True)


def test_the_network_is_unreachable(contained) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept() -> None:
        end = time.monotonic() + TIMEOUT + 2
        while time.monotonic() < end:
            try:
                conn, _ = server.accept()
                accepted.append(conn.recv(16))
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    body = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hello')\n    print('connected', flush=True)\nexcept OSError as e:\n    print('no network', e.__class__.__name__, flush=True)"
    r = contained(attempt("network", body), "network")
    thread.join()
    server.close()
    if LEVEL.network:
        assert "no network" in r.stdout and accepted == []
    else:
        assert not r.isolation.network  # the documented lower level


def test_killing_the_parent_fails(contained) -> None:
    body = (
        "import signal\n"
        f"for pid in (os.getppid(), {os.getpid()}):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n        print('sent', pid, flush=True)\n"
        "    except OSError as e:\n        print('refused', pid, e.__class__.__name__, flush=True)"
    )
    contained(attempt("kill", body), "kill")
    os.kill(os.getpid(), 0)  # still here


def test_file_descriptor_exhaustion_hits_the_limit(contained) -> None:
    body = "fds = []\ntry:\n    while len(fds) < 100000:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\nexcept OSError:\n    print('opened', len(fds), flush=True)\nassert len(fds) >= 100000"
    r = contained(attempt("fds", body), "fds", open_files=64)
    assert r.status == "failed" and int(r.stdout.split("opened")[1].split()[0]) < 64


def test_filling_the_disk_hits_the_file_size_limit(contained) -> None:
    body = "with open('fill.bin', 'wb') as fh:\n    for _ in range(2048):  # at most 2 GiB\n        fh.write(b'x' * (1 << 20))\nprint('filled', flush=True)"
    r = contained(attempt("disk", body), "disk", file_size_mb=8)
    assert r.status == "failed" and "filled" not in r.stdout


def test_thread_bomb_hits_the_process_limit(contained) -> None:
    body = "import threading\nthreads = []\ntry:\n    while len(threads) < 5000:\n        t = threading.Thread(target=time.sleep, args=(20,), daemon=True)\n        t.start()\n        threads.append(t)\nexcept RuntimeError:\n    print('started', len(threads), flush=True)\nassert len(threads) >= 5000"
    r = contained(attempt("threads", body), "threads", max_processes=32)
    assert r.status == "failed" and int(r.stdout.split("started")[1].split()[0]) < 32


def test_deep_recursion_is_contained(contained) -> None:
    body = "sys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)"
    r = contained(attempt("recursion", body), "recursion", memory_mb=256)
    # Python 3.11+ frames live on the heap: memory or the clock ends it, a C-stack overflow crashes it
    assert r.status in ("failed", "memory", "timeout")


def test_reading_root_only_files_is_refused(contained) -> None:
    if os.geteuid() != 0:
        pytest.skip("the uid drop needs root")
    r = contained(attempt("shadow", "print(open('/etc/shadow').read()[:20])"), "shadow")
    assert r.status == "failed" and "PermissionError" in r.stderr


def test_the_canary_passes(contained) -> None:
    body = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\nassert [fib(i) for i in range(8)] == [0, 1, 1, 2, 3, 5, 8, 13]"
    assert contained(attempt("canary", body), "canary").status == "passed"


@pytest.mark.parametrize("isolation", ["process"])
def test_the_process_level_still_holds_the_core_limits(contained, isolation) -> None:
    assert contained(attempt("exit", "sys.exit(0)"), "exit", isolation=isolation).status == "failed"
    assert contained(attempt("alloc", "bytearray(8 << 30)"), "alloc", isolation=isolation, memory_mb=512).status == "memory"
    r = contained(attempt("setsid", "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)"), "setsid", isolation=isolation)
    assert r.status == "error" and "outlived the run" in r.stderr
    if r.uid is not None:  # its scratch folder is gone
        assert not [p for p in Path(tempfile.gettempdir()).glob("ftmodel-sandbox-*") if _owner(p) == r.uid]
    assert contained(attempt("canary", "assert sum(range(5)) == 10"), "canary", isolation=isolation).status == "passed"


def test_no_descriptor_leads_back_out_of_the_sandbox(contained) -> None:
    body = (
        "import stat\n"
        "for name in sorted(os.listdir('/proc/self/fd'), key=int):\n"
        "    try:\n        mode = os.stat(f'/proc/self/fd/{name}').st_mode\n    except OSError:\n        continue\n"
        "    print('fd', name, 'socket' if stat.S_ISSOCK(mode) else 'pipe' if stat.S_ISFIFO(mode) else 'other', flush=True)"
    )
    r = contained(attempt("descriptors", body), "descriptors")
    kinds = dict(line.split()[1:] for line in r.stdout.splitlines() if line.startswith("fd "))
    assert r.status == "passed" and kinds["1"] == kinds["2"] == "pipe"
    assert "socket" not in kinds.values()  # nothing reaches the fork server (or anything else)


# ---- the fork server (namespace level) --------------------------------------------------------


def _fork_servers() -> list[int]:
    """This process's sandbox fork servers."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"zygote" in args:
            found.append(int(entry))
    return found


def _run_uids() -> set[int]:
    """The uids of running sandboxed programs (root only: they run under uids from _UID_BASE on)."""
    return {uid for uid in (_owner(Path(f"/proc/{e}")) for e in os.listdir("/proc") if e.isdigit()) if uid >= _UID_BASE}


def test_each_program_starts_from_a_pristine_interpreter() -> None:
    taint = "import sys, builtins, json\nsys.ftmodel_taint = 1\nbuiltins.ftmodel_taint = 1\njson.ftmodel_taint = 1\n"
    look = (
        "import sys\nprint(hasattr(sys, 'ftmodel_taint'), 'ftmodel_taint' in dir(__builtins__), 'json' in sys.modules)\n"
    )
    for _ in range(3):  # one after another: the same fork server serves them all
        assert run_sandboxed(taint).passed
        r = run_sandboxed(look)
        assert (r.status, r.stdout) == ("passed", "False False False\n")


def test_a_forked_interpreter_holds_what_a_fresh_one_holds() -> None:
    if not LEVEL.forked:
        pytest.skip("programs are forked only at the namespace level")
    show = "import sys\nprint(' '.join(sorted(sys.modules)))"
    forked = set(run_sandboxed(show).stdout.split())
    fresh = set(run_sandboxed(show, isolation="process").stdout.split())
    assert "json" not in forked and forked - fresh <= {"_socket", "select"}  # the server's own two


def test_a_fork_server_that_dies_mid_run_makes_the_run_an_error() -> None:
    if not LEVEL.forked:
        pytest.skip("programs are forked only at the namespace level")
    results = []
    thread = threading.Thread(target=lambda: results.append(run_sandboxed("import time\ntime.sleep(30)", timeout=20)))
    thread.start()
    end = time.monotonic() + 5
    while LEVEL.uid_dropped and not _run_uids() and time.monotonic() < end:
        time.sleep(0.01)  # until the program runs under its own uid
    time.sleep(0.2)
    servers = _fork_servers()
    assert servers
    for pid in servers:
        os.kill(pid, 9)
    thread.join(10)
    [r] = results
    assert r.status == "error" and "fork server ended during the run" in r.stderr and r.duration < 5
    assert leftover_processes(r) == []  # the run went with its server
    assert run_sandboxed("pass").passed  # and the next run gets a fresh one


def test_a_dead_idle_fork_server_is_replaced() -> None:
    assert run_sandboxed("pass").passed
    for pid in _fork_servers():
        os.kill(pid, 9)
    time.sleep(0.1)
    r = run_sandboxed("print('after')")
    assert (r.status, r.stdout) == ("passed", "after\n")


def test_without_root_the_fork_server_has_a_user_namespace_of_its_own(monkeypatch) -> None:
    """The path for users without root, run here by pretending (root may make user namespaces too)."""
    from pytest_ftmodel import sandbox

    monkeypatch.setattr(sandbox, "_as_root", lambda: False)
    level = probe_isolation()
    assert not level.uid_dropped
    if level.level != "namespaces":
        assert level.note == "namespaces refused on this machine"
        return
    assert level.forked
    program = (
        "import os, socket\nprint(os.getpid(), os.getuid(), flush=True)\n"
        "os.posix_spawn('/bin/sleep', ['/bin/sleep', '60'], dict(os.environ))\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept OSError as e:\n    print(e.__class__.__name__, e.errno)\n"
    )
    r = run_sandboxed(program)
    assert r.status == "passed" and r.uid is None
    assert r.stdout.split()[:4] == ["1", "0", "OSError", str(errno.ENETUNREACH)]  # not even a loopback
    assert leftover_processes(r) == []  # found by its marker: the sleeper carried it
    sandbox._close_idle_zygotes()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_the_fork_server_waits_kills_and_notices_its_parent_leaving(monkeypatch, pidfd) -> None:
    """The server's wait for one child, in this process (without pidfd_open it polls instead)."""
    import select
    import subprocess

    from pytest_ftmodel import _harness

    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    ours, parent = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ended = subprocess.Popen(["sh", "-c", "sleep 0.2; exit 7"])
    assert _harness._await_child(ours, ended.pid, select) == 7
    assert ended.wait() == 7  # left unreaped for its owner
    killed = subprocess.Popen(["sleep", "30"])
    parent.send(b"kill")
    assert _harness._await_child(ours, killed.pid, select) == -9
    killed.wait()
    orphan = subprocess.Popen(["sleep", "30"])
    parent.close()
    assert _harness._await_child(ours, orphan.pid, select) is None  # the parent is gone
    orphan.kill()
    orphan.wait()
    ours.close()
