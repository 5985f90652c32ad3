"""run_sandboxed(): verdicts that never rest on the exit code, and a battery of hostile programs.

Each hostile program prints a marker proving its attack was attempted, carries its own safety bound
(beyond the sandbox's limits, so a broken sandbox cannot take the machine down), and must leave the
test session alive, no process behind, and nothing outside its temporary directory changed.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pytest_ftmodel.sandbox import UID_BASE, SandboxUnavailable, alive, probe_isolation, processes_of, run_sandboxed, run_split

LEVEL = probe_isolation()
TIMEOUT = 2.0


def leftover_processes(result) -> list[int]:
    """Live processes of this run (its uid, or its marker); other sessions' runs are not ours."""
    return [pid for pid in processes_of(result.uid, result.run_id) if alive(pid)]


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
            out[str(d)] = {p.name for p in entries if _owner(p) >= UID_BASE and not p.name.startswith("ftmodel-sandbox-")}
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


def test_the_system_call_filter_comes_with_a_default_install_and_strict_refuses_to_run_without_it(monkeypatch) -> None:
    """pyseccomp is a dependency on Linux; where it cannot be imported, the run goes on under
    ``auto`` (saying so) and ``strict`` refuses it."""
    import tomllib

    from pytest_ftmodel.sandbox import isolation, kernel

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "pyseccomp>=0.1.2; sys_platform == 'linux'" in project["dependencies"]
    if LEVEL.level != "namespaces" or not LEVEL.seccomp:
        pytest.skip(f"no filtered namespace level here to take the filter from: {LEVEL}")
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as where it is not installed: its import fails
    monkeypatch.setattr(kernel, "_cached", [])
    monkeypatch.setattr(isolation, "_probed", {})
    with pytest.raises(SandboxUnavailable, match=r"strict sandbox isolation asked for, but this machine runs programs "
                       r"without the system-call filter: namespaces, .*no seccomp filter.*pip install pyseccomp"):
        run_sandboxed("pass", isolation="strict")
    r = run_sandboxed("assert sum(range(5)) == 10", isolation="auto")
    assert r.passed and not r.isolation.seccomp and "libseccomp bindings unavailable" in r.isolation.note


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
    from pytest_ftmodel.sandbox.api import WALL_FACTOR

    r = contained(attempt("loop", "end = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass"), "loop")
    assert r.status == "timeout" and r.duration < WALL_FACTOR * TIMEOUT + 3
    # stopped once it had used its CPU time: nothing says it waited
    assert (r.cpu_seconds or 0) >= TIMEOUT * 0.9 and "[sandbox]" not in r.stderr, (r.cpu_seconds, r.stderr)


def test_busy_loop_ignoring_sigalrm_times_out(contained) -> None:
    body = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(1)\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass"
    r = contained(attempt("alarm", body), "alarm")
    assert r.status == "timeout"


def test_sleep_forever_times_out(contained) -> None:
    r = contained(attempt("sleep", "time.sleep(600)"), "sleep", timeout=1.0)
    # it waited: stopped after its timeout of wall clock (time spent waiting for a CPU not counted)
    assert r.status == "timeout" and 1.0 <= r.duration < 4.0, r.duration
    assert r.stderr.endswith(
        "[sandbox] stopped after 1.25 s of wall clock (not counting the time it waited for a CPU) without using its "
        "1 s of CPU time: the program waited (sleep, input, a lock)"
    ), r.stderr


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
    # the minimal root has no /etc at all; a fresh interpreter on the host's tree meets the permissions
    assert r.status == "failed" and ("FileNotFoundError" if LEVEL.minimal_root else "PermissionError") in r.stderr


def test_the_canary_passes(contained) -> None:
    body = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\nassert [fib(i) for i in range(8)] == [0, 1, 1, 2, 3, 5, 8, 13]"
    assert contained(attempt("canary", body), "canary").status == "passed"


@pytest.mark.parametrize("isolation", ["process"])
def test_the_process_level_still_holds_the_core_limits(contained, isolation) -> None:
    assert contained(attempt("exit", "sys.exit(0)"), "exit", isolation=isolation).status == "failed"
    assert contained(attempt("alloc", "bytearray(8 << 30)"), "alloc", isolation=isolation, memory_mb=512).status == "memory"
    r = contained(attempt("setsid", "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)"), "setsid", isolation=isolation)
    assert r.status == "error" and "outlived the program and were killed" in r.stderr
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
    """The uids of running sandboxed programs (root only: they run under uids from UID_BASE on)."""
    return {uid for uid in (_owner(Path(f"/proc/{e}")) for e in os.listdir("/proc") if e.isdigit()) if uid >= UID_BASE}


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
    fresh = set(run_sandboxed("import typing\n" + show, isolation="process").stdout.split())
    # the server's own two, and typing (with what it imports), preloaded because nearly every program imports it
    assert "json" not in forked and "typing" in forked and forked - fresh <= {"_socket", "select"}


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
    from pytest_ftmodel.sandbox import forkserver, isolation

    monkeypatch.setattr(isolation, "as_root", lambda: False)
    level = probe_isolation()
    assert not level.uid_dropped
    if level.level != "namespaces":
        assert level.note.startswith("namespaces refused on this machine")
        return
    assert level.forked
    program = (
        "import os, socket\nprint(os.getpid(), os.getuid(), flush=True)\n"
        "os.posix_spawn('/bin/sleep', ['/bin/sleep', '60'], dict(os.environ))\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept OSError as e:\n    print(e.__class__.__name__, e.errno)\n"
    )
    r = run_sandboxed(program)
    assert r.status == "passed" and r.uid is None
    # PID 1, an unprivileged id of a nested user namespace (not root in it), and not even a loopback
    # (the system-call filter refuses every socket family but AF_UNIX; without it, no route)
    assert r.stdout.split()[:4] == ["1", "1000", "OSError", str(errno.EAFNOSUPPORT if level.seccomp else errno.ENETUNREACH)]
    assert leftover_processes(r) == []  # found by its marker: the sleeper carried it
    forkserver.close_idle_zygotes()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_the_fork_server_waits_kills_and_notices_its_parent_leaving(monkeypatch, pidfd) -> None:
    """The server's wait for one child, in this process (without pidfd_open it polls instead)."""
    import select
    import subprocess

    from pytest_ftmodel.sandbox import harness as _harness

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


# ---- verdicts that cannot be forged: split judging ---------------------------------------------

TOY = {
    "task_id": "toy/add",
    "prompt": "import math\n\ndef add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    "test": (
        "def check(candidate):\n"
        "    assert candidate(2, 3) == 5\n"
        "    assert abs(candidate(-1, 1)) == 0\n"
        "    assert isinstance(candidate(1, 1), int)\n"
        "    assert math.isclose(candidate(0.5, 0.25), 0.75)\n"
    ),
    "entry_point": "add",
}
WRONG = "    return a - b\n"


def judged(completion: str, problem: dict = TOY):
    """A HumanEval-style sample judged as evaluate_code judges it."""
    from pytest_ftmodel.metrics.code import build_job, run_programs

    job = build_job(problem, completion)
    assert job.plan is not None, "the toy problem must split"
    [result] = run_programs([job], timeout=TIMEOUT * 2, workers=1, isolation="auto")
    return result


def test_split_judging_passes_a_correct_answer_and_fails_a_wrong_one() -> None:
    right, wrong = judged("    return a + b\n"), judged(WRONG)
    assert (right.status, right.verdict) == ("passed", "split")
    assert (wrong.status, wrong.verdict) == ("failed", "split") and "AssertionError" in wrong.stderr


HOSTILE_ANSWERS = {
    # each prints its marker from the candidate's process, then tries to pass while wrong
    "eq": "    class Yes(int):\n        def __eq__(self, other):\n            return True\n        __hash__ = int.__hash__\n    return Yes(0)\n",
    "builtins": (
        "    import builtins, math\n    builtins.abs = lambda x: 0\n    builtins.isinstance = lambda *a: True\n"
        "    math.isclose = lambda *a, **k: True\n    builtins.AssertionError = type('Nope', (Exception,), {})\n    return a - b\n"
    ),
    "check": "    return a - b\n\ndef check(candidate):\n    pass\n",
    "exit": "    return a - b\n\nimport sys\nsys.exit(0)\n",
    "atexit": "    return a - b\n\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook": (
        "    return a - b\n\nimport sys, os\n"
        "def forge(*args):\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'x' * 16)\n        except OSError:\n            pass\n    os._exit(0)\n"
        "sys.excepthook = sys.__excepthook__ = forge\n"
    ),
    "frames": (
        "    import sys, gc, os\n    found = []\n    frame = sys._getframe()\n    while frame is not None:\n"
        "        found += [v for v in frame.f_locals.values() if type(v) is bytes and len(v) == 16]\n        frame = frame.f_back\n"
        "    found += [o for o in gc.get_objects() if type(o) is bytes and len(o) == 16]\n"
        "    for fd in range(3, 64):\n        for secret in found:\n            try:\n                os.write(fd, secret)\n            except OSError:\n                pass\n"
        "    print('found', len(found), flush=True)\n    return a - b\n"
    ),
    "generator": "    return (s for s in [a + b])\n",
    "signal_judge": "    import os, signal\n    for pid in (1, 0, -1):\n        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):\n            try:\n                os.kill(pid, sig)\n            except OSError:\n                pass\n    return a + b if False else a - b\n",
    "ptrace_judge": (
        "    import os\n    for path in ('/proc/1/mem', '/proc/1/environ', '/proc/1/fd/3'):\n        try:\n"
        "            open(path, 'rb').read(16)\n            print('opened', path, flush=True)\n        except OSError as e:\n"
        "            print('refused', path, e.__class__.__name__, flush=True)\n    return a - b\n"
    ),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_ANSWERS))
def test_a_hostile_wrong_answer_fails_under_split_judging(attack: str) -> None:
    body = HOSTILE_ANSWERS[attack]
    head = "    return a - b\n\n"
    if body.startswith(head):  # a module-level attack: marked as the module loads
        completion = head + f"print('ATTEMPT {attack}', flush=True)\n" + body[len(head):]
    else:
        completion = f"    print('ATTEMPT {attack}', flush=True)\n" + body
    r = judged(completion)
    assert f"ATTEMPT {attack}" in r.stdout, (r.status, r.stdout, r.stderr)
    assert (r.status, r.verdict) == ("failed", "split"), (r.stdout, r.stderr)
    if attack == "eq":
        assert "returned an object of type Yes" in r.stderr
    if attack == "generator":
        assert "returned an object of type generator" in r.stderr
    if attack == "ptrace_judge":
        assert "opened" not in r.stdout
    if attack == "frames":
        assert "found 0" in r.stdout  # the nonce never was in the candidate's process
    assert leftover_processes(r) == []
    assert judged("    return a + b\n").status == "passed"  # the canary holds after the attack


def test_plain_data_crosses_both_ways_and_mutations_come_back() -> None:
    problem = {
        "task_id": "toy/plain",
        "prompt": "def echo(x, out):\n    \"\"\"Give x back, and append it to out.\"\"\"\n",
        "test": (
            "def check(candidate):\n"
            "    values = [None, True, 3, -2**100, 1.5, float('inf'), 2j, 'é\\ud800', b'\\x00', (1, [2]), {'k': {3}}, frozenset({4})]\n"
            "    for v in values:\n"
            "        out = []\n"
            "        got = candidate(v, out)\n"
            "        assert got == v and type(got) is type(v), (got, v)\n"
            "        assert out == [v]\n"
            "    try:\n"
            "        candidate(ValueError, [])\n"
            "    except ValueError as e:\n"
            "        assert str(e) == 'boom'\n"
            "    else:\n"
            "        raise AssertionError('no exception')\n"
        ),
        "entry_point": "echo",
    }
    completion = "    if x is ValueError:\n        raise ValueError('boom')\n    out.append(x)\n    return x\n"
    from pytest_ftmodel.metrics.code import build_job

    plan = build_job(problem, completion).plan
    # the test passes a class object once: that is not plain data, so this sample fails with the reason
    r = judged(completion, problem)
    assert r.status == "failed" and "the tests passed an object of type type to echo" in r.stderr
    fixed = dict(problem, test=problem["test"].replace("candidate(ValueError, [])", "candidate('raise', [])"))
    r = judged(completion.replace("x is ValueError", "x == 'raise'"), fixed)
    assert (r.status, r.verdict) == ("passed", "split"), r.stderr
    assert plan.names == ("echo",)


BROKEN = "def f(x):\n    return x +\n"  # a candidate that does not compile
# the tests wait until the candidate's process has ended (it is their child) before calling it
AFTER_THE_CANDIDATE_ENDED = (
    "import os, time\n"
    "until = time.monotonic() + 5\n"
    "while os.waitpid(-1, os.WNOHANG) == (0, 0) and time.monotonic() < until:\n"
    "    time.sleep(0.002)\n"
)
LOAD_FAILED = "[sandbox] failed sample: the program raised SyntaxError before the tests ran"


def _last_lines(r, n: int = 2) -> list[str]:
    return [line.strip() for line in r.stderr.splitlines() if line.strip()][-n:]  # as the failure detail shows them


@pytest.mark.parametrize("level", ["auto", "process"])
def test_a_candidate_that_does_not_compile_fails_with_its_syntax_error_even_once_it_has_ended(level: str) -> None:
    # the tests call the candidate only after its process has ended: the reason is its SyntaxError,
    # never the judge's broken pipe
    r = run_split(BROKEN, AFTER_THE_CANDIDATE_ENDED + "assert f(1) == 2\n", ["f"], timeout=TIMEOUT, isolation=level)
    assert (r.status, r.verdict) == ("failed", "split"), r.stderr
    assert _last_lines(r) == ["SyntaxError: invalid syntax", LOAD_FAILED], r.stderr
    assert "BrokenPipe" not in r.stderr and "tests.py" not in r.stderr


def test_tests_that_swallow_exceptions_cannot_pass_a_candidate_that_does_not_compile() -> None:
    swallow = AFTER_THE_CANDIDATE_ENDED + "try:\n    f(1)\nexcept Exception:\n    pass\n"
    r = run_split(BROKEN, swallow, ["f"], timeout=TIMEOUT)
    assert r.status == "failed" and _last_lines(r, 1) == [LOAD_FAILED], r.stderr


def test_a_candidate_that_ends_between_calls_fails_with_the_reason() -> None:
    candidate = (
        "import os, threading, time\n\n"
        "def f(x):\n    threading.Thread(target=lambda: (time.sleep(0.01), os._exit(0))).start()\n    return x + 1\n"
    )
    tests = "assert f(1) == 2\n" + AFTER_THE_CANDIDATE_ENDED + "try:\n    f(2)\nexcept Exception:\n    pass\n"
    r = run_split(candidate, tests, ["f"], timeout=TIMEOUT)
    assert r.status == "failed" and _last_lines(r, 1) == ["[sandbox] failed sample: the candidate's process ended before answering a call to f"], r.stderr


def test_a_rejection_after_an_output_flood_still_ends_the_tests() -> None:
    # the candidate fills stderr past its cap (the parent then closes that pipe), then returns what
    # cannot cross: the judge's rejection must end the run, not raise into tests that catch it
    candidate = (
        "import os\n\ndef f(x):\n    try:\n        os.write(2, b'x' * (1 << 20))\n    except OSError:\n        pass\n"
        "    return object()\n"
    )
    r = run_split(candidate, "try:\n    f(1)\nexcept Exception:\n    pass\n", ["f"], timeout=TIMEOUT)
    assert r.status == "failed", r.stderr[-300:]
    assert "BrokenPipe" not in r.stderr


def test_the_reason_a_candidate_fails_to_load_is_the_same_every_run() -> None:
    # without waiting: the candidate may or may not have ended when the tests first call it
    reasons = {tuple(_last_lines(run_split(BROKEN, "assert f(1) == 2\n" * 200, ["f"], timeout=TIMEOUT))) for _ in range(50)}
    assert reasons == {("SyntaxError: invalid syntax", LOAD_FAILED)}


def test_problems_whose_tests_need_the_candidates_objects_run_in_process() -> None:
    """Decided from the problem's tests (and a HumanEval prompt), never from an answer."""
    from pytest_ftmodel.metrics.code import build_job, build_program
    from pytest_ftmodel.sandbox.split import plan_humaneval, plan_short

    short = {"prompt": "Write a class Counter", "test_code": "c = Counter()\nc.up()\nassert c.n == 1"}
    answer = "class Counter:\n    n = 0\n    def up(self):\n        self.n += 1"
    job = build_job(short, answer)
    assert (job.plan, job.reason) == (None, "its tests call Counter, named as a class")
    assert job.program == build_program(short, answer)
    assert plan_short("assert X == 3") == "its tests use X other than by calling"
    assert plan_short("s = make_stack()\ns.push(1)\nassert s.pop() == 1") == (
        "its tests take attributes of what make_stack returns"
    )
    assert plan_short("assert first(3).real == 3 and last() is None") == "its tests take attributes of what first returns"
    plan = plan_short("assert add(2, 3) == 5")
    assert not isinstance(plan, str) and plan.names == ("add",)
    assert plan_humaneval("class Stack:\n    pass\n", "def check(candidate):\n    assert candidate()\n", "Stack") == (
        "its prompt defines Stack as a class"
    )


def test_an_in_process_program_never_holds_the_nonce() -> None:
    body = (
        "import gc, sys\nfound = [o for o in gc.get_objects() if type(o) is bytes and len(o) == 16]\n"
        "frame = sys._getframe()\nwhile frame is not None:\n"
        "    found += [v for v in frame.f_locals.values() if type(v) is bytes and len(v) == 16]\n    frame = frame.f_back\n"
        "print('found', len(found), flush=True)\n"
        "for fd in range(3, 64):\n    for secret in found:\n        try:\n            os.write(fd, secret)\n        except OSError:\n            pass\n"
        "assert False, 'wrong'\n"
    )
    for level in ("auto", "process"):
        r = run_sandboxed(attempt("nonce", body), isolation=level)
        assert "ATTEMPT nonce" in r.stdout and "found 0" in r.stdout
        assert (r.status, r.verdict) == ("failed", "in-process")


def test_a_failing_programs_traceback_shows_its_own_frames_only() -> None:
    r = run_sandboxed("def f():\n    raise ValueError('bad')\n\nf()\n")
    assert r.status == "failed"
    lines = [line.strip() for line in r.stderr.splitlines()]
    assert lines == [
        "Traceback (most recent call last):",
        'File "program.py", line 4, in <module>',
        'File "program.py", line 2, in f',
        "ValueError: bad",
    ]
    assert "harness" not in r.stderr and "pytest_ftmodel" not in r.stderr


# ---- nothing shared with the host or other runs ---------------------------------------------------


def needs_minimal_root() -> None:
    if not LEVEL.minimal_root:
        pytest.skip("the minimal root is part of the namespace level")


def test_no_host_file_writable_place_or_socket_is_reachable(contained, tmp_path) -> None:
    needs_minimal_root()
    secret = tmp_path / "source.py"
    secret.write_text("TOKEN = 'abc'\n")
    secret.chmod(0o644)  # world-readable, as a checkout usually is
    listener = socket.socket(socket.AF_UNIX)
    sock_path = tmp_path / "host.sock"
    listener.bind(str(sock_path))
    listener.listen(1)
    listener.settimeout(0.1)
    body = (
        "import socket, stat\nwritable, sockets, readable = [], [], []\n"
        "stack = ['/' + top for top in os.listdir('/') if top not in ('proc', 'tmp')]\n"
        "while stack:  # every directory and socket of the whole tree the program sees\n"
        "    path = stack.pop()\n    seen = globals().get('seen', 0) + 1\n"
        "    if path == '/dev/shm' or os.path.islink(path):\n        continue\n"
        "    if os.access(path, os.W_OK) and os.path.isdir(path):\n        writable.append(path)\n"
        "    try:\n        entries = list(os.scandir(path))\n    except OSError:\n        continue\n"
        "    for entry in entries:\n"
        "        if entry.is_dir(follow_symlinks=False):\n            stack.append(entry.path)\n"
        "        elif not entry.is_file(follow_symlinks=False) and not entry.is_symlink():\n"
        "            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):\n                sockets.append(entry.path)\n"
        f"for path in ({str(secret)!r}, '/etc/passwd', '/etc/hostname', {str(Path.cwd() / 'pyproject.toml')!r}):\n"
        "    if os.path.exists(path):\n        readable.append(path)\n"
        # shared host folders: reachable when anything is in them but the way down to the interpreter's
        # own tree, which the sandbox binds with its (empty) parents where it lives there (a venv in a
        # checkout under /var/tmp, say)
        "import sys\ntrees = {f(p) for p in (sys.prefix, sys.base_prefix, sys.executable, *sys.path) if p for f in (os.path.abspath, os.path.realpath)}\n"
        "for path in ('/run/lock', '/var/tmp'):\n"
        "    if os.path.isdir(path) and any(not any(t == os.path.join(path, e) or t.startswith(os.path.join(path, e) + '/') for t in trees) for e in os.listdir(path)):\n"
        "        readable.append(path)\n"
        f"s = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({str(sock_path)!r})\n    s.send(b'hello from the sandbox')\n    print('connected', flush=True)\n"
        "except OSError as e:\n    print('no socket', e.__class__.__name__, flush=True)\n"
        "print('writable', writable, 'sockets', sockets, 'readable', readable, 'seen', seen, flush=True)\n"
    )
    r = contained(attempt("host", body), "host", timeout=20)
    got = []
    try:
        conn, _ = listener.accept()
        got.append(conn.recv(64))
    except OSError:
        pass
    listener.close()
    assert r.status == "passed", r.stderr
    assert "no socket" in r.stdout and got == []
    assert "writable [] sockets [] readable []" in r.stdout
    assert int(r.stdout.split("seen")[1].split()[0]) > 100  # the scan walked the tree it was given
    assert secret.read_text() == "TOKEN = 'abc'\n"


def test_sysv_ipc_and_memfd_are_refused_and_leave_nothing(contained) -> None:
    needs_minimal_root()
    before = Path("/proc/sysvipc/shm").read_text() if Path("/proc/sysvipc/shm").exists() else ""
    body = (
        "import _ctypes\nfrom ctypes import CDLL, get_errno\nlibc = CDLL(None, use_errno=True)\n"
        "print('shmget', libc.shmget(0, 64 << 20, 0o1600), get_errno(), flush=True)\n"
        "print('msgget', libc.msgget(0, 0o1600), get_errno(), flush=True)\n"
        "try:\n    os.memfd_create('hold')\n    print('memfd made', flush=True)\nexcept OSError as e:\n    print('memfd refused', e.errno, flush=True)\n"
    )
    r = contained(attempt("ipc", body), "ipc")
    assert "shmget -1 1" in r.stdout and "msgget -1 1" in r.stdout and "memfd refused 1" in r.stdout
    after = Path("/proc/sysvipc/shm").read_text() if Path("/proc/sysvipc/shm").exists() else ""
    assert after == before


def test_mounts_cannot_be_undone_and_no_capability_is_left(contained) -> None:
    needs_minimal_root()
    body = (
        "from ctypes import CDLL, get_errno\nlibc = CDLL(None, use_errno=True)\n"
        "print('umount', libc.umount2(b'/tmp', 2), get_errno(), flush=True)\n"
        "print('remount', libc.mount(None, b'/', None, 32 | 4096, None), get_errno(), flush=True)\n"
        "print('unshare', libc.unshare(0x10000000 | 0x20000), get_errno(), flush=True)\n"
        "caps = [line for line in open('/proc/self/status') if line.startswith(('CapEff', 'CapPrm', 'NoNewPrivs', 'Seccomp:'))]\n"
        "print(''.join(caps), flush=True)\n"
        "open('/usr/pwned', 'w')\n"
    )
    r = contained(attempt("mounts", body), "mounts")
    assert "umount -1" in r.stdout and "remount -1" in r.stdout and "unshare -1" in r.stdout
    assert "CapEff:\t0000000000000000" in r.stdout and "CapPrm:\t0000000000000000" in r.stdout
    assert "NoNewPrivs:\t1" in r.stdout
    if LEVEL.seccomp:
        assert "Seccomp:\t2" in r.stdout
    assert r.status == "failed" and "Read-only file system" in r.stderr and not Path("/usr/pwned").exists()


# ---- robustness --------------------------------------------------------------------------------


def test_program_text_with_a_lone_surrogate_is_an_error_with_the_reason() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        r = run_sandboxed("x = '\ud800'\n")
        assert r.status == "error" and "surrogates not allowed at position 5" in r.stderr
    from pytest_ftmodel.sandbox import run_split

    r = run_split("def f():\n    return 1\n", "assert f() == '\udfff'", ["f"])
    assert r.status == "error" and "the tests is not valid text" in r.stderr
    assert len(os.listdir("/proc/self/fd")) == before


def test_control_characters_in_output_are_escaped() -> None:
    body = (
        "import sys\nprint('\\x1b[32m1 passed\\x1b[0m\\r', flush=True)\n"
        "sys.stderr.write('\\x1b]52;c;cHduZWQ=\\x07 \\u202e evil \\x9b\\n')\nassert False, '\\x1b[2J'\n"
    )
    r = run_sandboxed(body)
    for text in (r.stdout, r.stderr):
        assert not any(c in text for c in "\x1b\r\x07\x9b\u202e")
    assert "\\x1b[32m1 passed\\x1b[0m\\r" in r.stdout
    assert "\\x1b]52;c;cHduZWQ=\\x07" in r.stderr and "\\u202e" in r.stderr and "AssertionError: \\x1b[2J" in r.stderr


def _children_states() -> list[str]:
    states = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            states.append(fields[0].decode())
    return states


def _our_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("ftmodel-sandbox-*") if _owner(p) in (-1, 0) or _owner(p) >= UID_BASE}


RUNS = int(os.environ.get("FTMODEL_SANDBOX_RUNS", "1000"))


def test_many_runs_leave_no_descriptor_thread_zombie_or_temporary_directory() -> None:
    """1,000 runs of six kinds (about 12 s on 2 busy cores; FTMODEL_SANDBOX_RUNS sets another count)."""
    from concurrent.futures import ThreadPoolExecutor

    from pytest_ftmodel.sandbox import run_split

    run_sandboxed("pass")  # the servers and the probe exist before the count
    with ThreadPoolExecutor(4) as pool:  # the pool's own threads end with it
        list(pool.map(lambda _: run_sandboxed("pass"), range(4)))
    fds, threads, temps = len(os.listdir("/proc/self/fd")), threading.active_count(), _our_temp_dirs()
    kinds = [
        lambda: run_sandboxed("print('ok')"),
        lambda: run_sandboxed("assert False"),
        lambda: run_sandboxed("x = '\ud800'"),
        lambda: run_split("def f(x):\n    return x\n", "assert f(2) == 2", ["f"]),
        lambda: run_split("def f(x):\n    return object()\n", "assert f(2) == 2", ["f"]),
        lambda: run_sandboxed("import os\nos._exit(0)", isolation="process"),
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: kinds[i % len(kinds)]().status, range(RUNS)))
    assert results[: len(kinds)] == ["passed", "failed", "error", "passed", "failed", "failed"]
    assert len(os.listdir("/proc/self/fd")) == fds
    assert threading.active_count() == threads
    assert [s for s in _children_states() if s == "Z"] == []
    assert _our_temp_dirs() == temps


# ---- the path users without root get, run as an unprivileged uid -----------------------------------

from as_nobody import SETPRIV as NOBODY  # noqa: E402 - beside the tests that use it
from as_nobody import interpreter_for_nobody as _interpreter_for_nobody  # noqa: E402


UNPRIVILEGED_SCRIPT = r'''
import os, sys, json
sys.path[:0] = json.loads(sys.argv[1])
from pytest_ftmodel.sandbox import probe_isolation, run_sandboxed, run_split, processes_of, alive
out = {"isolation": str(probe_isolation()), "level": probe_isolation().level, "uid": os.getuid()}
target, outside = sys.argv[2], sys.argv[3]
out["canary"] = run_sandboxed("assert sum(range(5)) == 10").status
out["wrong"] = run_sandboxed("assert sum(range(5)) == 11").status
attack = f"""
import os, ctypes, time
print('ATTEMPT nonroot', flush=True)
libc = ctypes.CDLL(None, use_errno=True)
print('umount', libc.umount2(b'/tmp', 2), 'remount', libc.mount(None, b'/', None, 32 | 4096, None), flush=True)
for path in ({target!r}, {outside!r} + '/pwned'):
    try:
        open(path, 'a').write('x')
        print('wrote', path, flush=True)
    except OSError as e:
        print('refused', path, e.__class__.__name__, flush=True)
os.posix_spawn('/bin/sleep', ['/bin/sleep', '60'], {{}})  # an empty environment: no marker to find it by
print(open('/proc/self/status').read().split('CapEff:')[1].split()[0], os.getuid(), flush=True)
"""
r = run_sandboxed(attack)
out["attack"] = [r.status, r.stdout, r.stderr[-300:]]
forged = run_split(
    "def f(x):\n    import sys, gc\n    found = [o for o in gc.get_objects() if type(o) is bytes and len(o) == 16]\n"
    "    for fd in range(3, 64):\n        for s in found:\n            try:\n                __import__('os').write(fd, s)\n            except OSError:\n                pass\n    return x + 1\n",
    "assert f(1) == 3", ["f"])
out["forged"] = [forged.status, forged.verdict]
sleepers = [p for p in os.listdir("/proc") if p.isdigit() and alive(int(p))
            and open(f"/proc/{p}/cmdline", "rb").read().startswith(b"/bin/sleep\0" + b"60")]
out["sleepers"] = sleepers
print("RESULT " + json.dumps(out))
'''


@pytest.fixture
def open_dir():
    """A directory every user can reach and write (pytest's tmp_path is not: its parents are 0700)."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="ftmodel-nobody-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_path_without_root_holds_when_run_as_an_unprivileged_uid(open_dir) -> None:
    """CI runs as root: this runs the user-namespace path for real, as uid 65534 (setpriv)."""
    import json
    import subprocess

    import pytest_ftmodel

    python = _interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root (to become uid 65534), setpriv and an interpreter that uid can run")
    paths = [str(Path(pytest_ftmodel.__file__).resolve().parents[1])]
    try:
        import pyseccomp

        paths.append(str(Path(pyseccomp.__file__).parent))
    except ImportError:
        pass
    target = open_dir / "owned-by-nobody.txt"
    target.write_text("precious\n")
    os.chown(target, 65534, 65534)  # the user's own file: the program runs with the user's rights
    outside = open_dir / "open"
    outside.mkdir()
    outside.chmod(0o777)
    done = subprocess.run(
        [*NOBODY, python, "-I", "-c", UNPRIVILEGED_SCRIPT, json.dumps(paths), str(target), str(outside)],
        capture_output=True, text=True, timeout=120, cwd="/",
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-2000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["uid"] == 65534
    if out["level"] != "namespaces":
        pytest.skip(f"no user namespaces for an unprivileged uid here: {out['isolation']}")
    assert "no capabilities (nested user namespace)" in out["isolation"] and "minimal read-only root" in out["isolation"]
    assert (out["canary"], out["wrong"]) == ("passed", "failed")
    status, stdout, stderr = out["attack"]
    assert "ATTEMPT nonroot" in stdout and status == "passed", stderr
    assert "umount -1 remount -1" in stdout and "wrote" not in stdout
    assert "0000000000000000 1000" in stdout  # no capability, an unprivileged id
    assert target.read_text() == "precious\n" and list(outside.iterdir()) == []
    assert out["forged"] == ["failed", "split"]
    assert out["sleepers"] == []  # the exec'd grandchild with an empty environment went with the run


def test_a_program_starved_by_a_busy_machine_is_judged_on_the_cpu_it_got() -> None:
    """Busy processes hog the CPU the program is pinned to until just after its time is up: the
    program gets too little CPU to finish within its timeout of wall clock, and passes all the same."""
    import multiprocessing

    cpu = sorted(os.sched_getaffinity(0))[0]
    timeout = 1.5
    context = multiprocessing.get_context("fork")

    def hog(until: float) -> None:
        os.setsid()  # a session (so a scheduler autogroup) of its own, as the program has
        os.sched_setaffinity(0, {cpu})
        while time.monotonic() < until:
            pass

    hogs = [context.Process(target=hog, args=(time.monotonic() + 0.3 + timeout * 1.3,)) for _ in range(12)]
    for h in hogs:
        h.start()
    time.sleep(0.3)  # all of them busy on that CPU before the program starts
    program = (
        f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\nstart = time.process_time()\n"
        "while time.process_time() - start < 0.4:\n    pass\nprint('done', flush=True)\n"
    )
    r = run_sandboxed(program, timeout=timeout)
    for h in hogs:
        h.join()
    assert (r.status, r.stdout) == ("passed", "done\n"), r.stderr
    assert r.duration > timeout  # starved past its timeout of wall clock: judged on its CPU, not failed


def test_the_process_level_kills_descendants_that_carry_no_marker(contained) -> None:
    """A double fork that execs with an empty environment: no marker to find it by. The process
    level's supervisor (a child subreaper) inherits it and kills it when the program ends."""
    body = (
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.execve('/bin/sleep', ['/bin/sleep', '61.5'], {})\n    os._exit(0)\n"
        "os.wait()\ntime.sleep(0.2)\n"
    )
    r = contained(attempt("nomarker", body), "nomarker", isolation="process")
    assert r.status == "error" and "1 descendant(s) outlived the program and were killed" in r.stderr
    sleepers = []
    for entry in os.listdir("/proc"):
        try:
            if open(f"/proc/{entry}/cmdline", "rb").read() == b"/bin/sleep\x0061.5\x00" and alive(int(entry)):
                sleepers.append(entry)
        except (OSError, ValueError):
            continue
    assert sleepers == []
