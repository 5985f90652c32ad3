"""One hostile program per attack class, on both paths: the caller's (root in CI) and the path users
without root get, run for real as uid 65534 (``setpriv``) by a helper process that stays up for the
whole module. Each program prints a marker proving its attack was attempted; each test then checks
the host, and that a correct program still passes and a wrong one still fails on the same path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_ftmodel.sandbox import Isolation, SandboxResult, alive, probe_isolation, processes_of, run_sandboxed, run_split

from as_nobody import NOBODY, SETPRIV
from as_nobody import interpreter_for_nobody as _interpreter_for_nobody

RUNNER = r'''
import dataclasses, json, os, sys
sys.path[:0] = json.loads(sys.argv[1])
from concurrent.futures import ThreadPoolExecutor
from pytest_ftmodel.sandbox import forkserver, probe_isolation, run_sandboxed, run_split

def one(call):
    kind, args, kwargs = call
    r = (run_split if kind == "split" else run_sandboxed)(*args, **kwargs)
    return dataclasses.asdict(r)

print(json.dumps({"isolation": dataclasses.asdict(probe_isolation()), "uid": os.getuid()}), flush=True)
for line in sys.stdin:
    calls = json.loads(line)
    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(one, calls))
    fds = len(os.listdir("/proc/self/fd")) - len(forkserver._idle_zygotes)
    print(json.dumps({"results": results, "fds": fds}), flush=True)
'''


def _result(data: dict[str, Any]) -> SandboxResult:
    return SandboxResult(**{**data, "isolation": Isolation(**data["isolation"])})


class Path_:
    """Runs programs on one path: in this process, or in the helper running as uid 65534."""

    def __init__(self, name: str, proc: subprocess.Popen[str] | None = None, level: Isolation | None = None) -> None:
        self.name = name
        self.proc = proc
        self.level = level or probe_isolation()

    def many(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[SandboxResult]:
        """Run these at the same time; each is ("run", (program,), kwargs) or ("split", (candidate, tests, names), kwargs)."""
        if self.proc is None:
            from concurrent.futures import ThreadPoolExecutor

            def one(call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> SandboxResult:
                kind, args, kwargs = call
                return run_split(*args, **kwargs) if kind == "split" else run_sandboxed(*args, **kwargs)

            with ThreadPoolExecutor(len(calls)) as pool:
                return list(pool.map(one, calls))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(calls) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the unprivileged helper ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        reply = json.loads(line)
        self.helper_fds = reply["fds"]
        return [_result(r) for r in reply["results"]]

    def run(self, program: str, **kwargs: Any) -> SandboxResult:
        return self.many([("run", (program,), kwargs)])[0]

    def split(self, candidate: str, tests: str, names: list[str], **kwargs: Any) -> SandboxResult:
        return self.many([("split", (candidate, tests, names), kwargs)])[0]

    def canaries_hold(self) -> None:
        right, wrong = self.many([("run", ("assert sum(range(5)) == 10",), {}), ("run", ("assert sum(range(5)) == 11",), {})])
        assert (right.status, wrong.status) == ("passed", "failed"), (right.stderr, wrong.stderr)
        right, wrong = self.many([("split", ("def f(x):\n    return x + 1\n", "assert f(1) == 2", ["f"]), {}),
                                  ("split", ("def f(x):\n    return x + 2\n", "assert f(1) == 2", ["f"]), {})])
        assert (right.status, wrong.status) == ("passed", "failed"), (right.stderr, wrong.stderr)


def _import_paths() -> list[str]:
    import pytest_ftmodel

    paths = [str(Path(pytest_ftmodel.__file__).resolve().parents[1])]
    try:
        import pyseccomp

        paths.append(str(Path(pyseccomp.__file__).parent))
    except ImportError:
        pass
    return paths


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[Path_ | str]:
    python = _interpreter_for_nobody()
    if python is None:
        yield "needs root (to become uid 65534), setpriv and an interpreter that uid can run"
        return
    proc = subprocess.Popen(
        [*SETPRIV, python, "-I", "-c", RUNNER, json.dumps(_import_paths())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )
    assert proc.stdout is not None
    hello = json.loads(proc.stdout.readline() or "{}")
    try:
        assert hello.get("uid") == NOBODY, proc.stderr.read() if proc.stderr else ""
        yield Path_("unprivileged", proc, Isolation(**hello["isolation"]))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)


@pytest.fixture(params=["caller", "unprivileged"])
def path(request: pytest.FixtureRequest) -> Path_:
    if request.param == "caller":
        return Path_("caller")
    helper = request.getfixturevalue("unprivileged")
    if isinstance(helper, str):
        pytest.skip(helper)
    return helper


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach and write (pytest's tmp_path is not: its parents are 0700)."""
    made = Path(tempfile.mkdtemp(prefix="ftmodel-open-"))
    made.chmod(0o777)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def attempt(name: str, body: str) -> str:
    return f"import os, sys, time\nprint('ATTEMPT {name}', flush=True)\n{body}\n"


def left_behind(r: SandboxResult) -> list[int]:
    return [pid for pid in processes_of(r.uid, r.run_id) if alive(pid)]


def sleepers(tag: str) -> list[int]:
    """Live processes running ``sleep <tag>`` (a marker-less way to find what a program started)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if open(f"/proc/{entry}/cmdline", "rb").read() == f"/bin/sleep\0{tag}\0".encode() and alive(int(entry)):
                found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def needs_minimal_root(path: Path_) -> None:
    if not path.level.minimal_root:
        pytest.skip(f"no minimal root on this path: {path.level}")


# ---- verdict forgery ----------------------------------------------------------------------------

FIND_THE_NONCE = (
    "import gc\nfound = [o for o in gc.get_objects() if type(o) is bytes and len(o) == 16]\n"
    "frame = sys._getframe()\nwhile frame is not None:\n"
    "    found += [v for v in frame.f_locals.values() if type(v) is bytes and len(v) == 16]\n    frame = frame.f_back\n"
    "print('found', len(found), flush=True)\n"
    "for fd in range(3, 64):\n    for secret in found + [b'x' * 16]:\n        try:\n            os.write(fd, secret)\n        except OSError:\n            pass\n"
)


def test_a_verdict_cannot_be_forged(path: Path_) -> None:
    candidate = attempt("forge", "def f(x):\n" + "".join("    " + line + "\n" for line in FIND_THE_NONCE.splitlines()) + "    return x + 2\n")
    in_process = attempt("forge", FIND_THE_NONCE + "assert False, 'wrong'\n")
    split, single = path.many([("split", (candidate, "assert f(1) == 2", ["f"]), {}), ("run", (in_process,), {})])
    for r, verdict in ((split, "split"), (single, "in-process")):
        assert "ATTEMPT forge" in r.stdout and "found 0" in r.stdout, (r.stdout, r.stderr)
        assert (r.status, r.verdict) == ("failed", verdict)
        assert left_behind(r) == []
    path.canaries_hold()


ADD = {
    "task_id": "toy/add", "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add",
}
CLASS_FORGERY = (  # says 42, and redefines the entry point as a class whose objects equal anything (after a form feed)
    "    return 42\n\x0cclass Yes:\n    def __eq__(self, other):\n        return True\n"
    "\x0cclass add:\n    def __new__(cls, *args):\n        return Yes()\n"
)


def test_an_answer_cannot_choose_in_process_judging(path: Path_) -> None:
    """The plan comes from the problem alone: the answer that redefines its entry point as a class is
    judged split, on either path, and fails; the right answer passes."""
    from pytest_ftmodel.metrics.code import build_job

    forged, right = build_job(ADD, CLASS_FORGERY), build_job(ADD, "    return a + b\n")
    assert forged.plan == right.plan and forged.plan is not None
    results = path.many([("split", (job.program, job.plan.tests, list(job.plan.names)), {}) for job in (forged, right)])
    assert [(r.status, r.verdict) for r in results] == [("failed", "split"), ("passed", "split")], results[0].stderr[-300:]
    assert "add returned an object of type Yes" in results[0].stderr


# the tests wait until the candidate's process (their child) has ended, then call it and swallow what it raises
SWALLOWED_AFTER_THE_END = (
    "import os, time\nuntil = time.monotonic() + 5\n"
    "while os.waitpid(-1, os.WNOHANG) == (0, 0) and time.monotonic() < until:\n    time.sleep(0.002)\n"
    "try:\n    f(1)\nexcept Exception:\n    pass\n"
)
ENDED_CANDIDATES = {
    "the program raised SyntaxError before the tests ran": "def f(x):\n    return x +\n",
    "the candidate's process ended before answering a call to f": (
        "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.05), os._exit(0))).start()\n\ndef f(x):\n    return x\n"
    ),
    "f returned an object of type object": (
        "import os\n\ndef f(x):\n    try:\n        os.write(2, b'x' * (1 << 20))\n    except OSError:\n        pass\n    return object()\n"
    ),
}


def test_a_candidate_that_has_ended_fails_with_its_reason_even_where_the_tests_catch_everything(path: Path_) -> None:
    reasons = list(ENDED_CANDIDATES)
    results = path.many([("split", (ENDED_CANDIDATES[why], SWALLOWED_AFTER_THE_END, ["f"]), {}) for why in reasons])
    for why, r in zip(reasons, results):
        assert (r.status, r.verdict) == ("failed", "split"), (why, r.stderr[-300:])
        assert "BrokenPipe" not in r.stderr, r.stderr[-300:]
        if "object" not in why:  # that one flooded stderr past its cap: its line is lost
            assert r.stderr.rstrip().endswith(f"[sandbox] failed sample: {why}"), r.stderr
    path.canaries_hold()


# ---- unmount, remount, capabilities -------------------------------------------------------------


def test_mounts_cannot_be_undone(path: Path_) -> None:
    needs_minimal_root(path)
    prefix = os.path.realpath(sys.base_prefix)
    body = (
        "from ctypes import CDLL, get_errno\nlibc = CDLL(None, use_errno=True)\n"
        "print('umount', libc.umount2(b'/tmp', 2), 'remount', libc.mount(None, b'/', None, 32 | 4096, None),"
        " 'unshare', libc.unshare(0x10000000 | 0x20000), flush=True)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0], flush=True)\n"
        f"for target in ('/usr/pwned', {prefix + '/pwned'!r}):\n"
        "    try:\n        open(target, 'w')\n        print('wrote', target, flush=True)\n"
        "    except OSError as e:\n        print('refused', e.errno, flush=True)\n"
    )
    r = path.run(attempt("mounts", body))
    assert "ATTEMPT mounts" in r.stdout and r.status == "passed", r.stderr
    assert "umount -1 remount -1 unshare -1" in r.stdout and "0000000000000000" in r.stdout and "wrote" not in r.stdout
    assert not Path("/usr/pwned").exists() and not Path(prefix, "pwned").exists()
    path.canaries_hold()


# ---- host files, filesystem sockets, world-writable directories ---------------------------------


def test_host_files_sockets_and_world_writable_directories_are_out_of_reach(path: Path_, open_dir: Path) -> None:
    needs_minimal_root(path)
    token = os.urandom(4).hex()
    secret = open_dir / "source.py"
    secret.write_text("TOKEN = 'abc'\n")
    secret.chmod(0o666)  # world-readable and writable: only the minimal root keeps it out of reach
    listener = socket.socket(socket.AF_UNIX)
    sock_path = open_dir / "host.sock"
    listener.bind(str(sock_path))
    sock_path.chmod(0o777)
    listener.listen(1)
    listener.settimeout(0.1)
    places = [str(secret), str(open_dir / f"new-{token}"), f"/var/tmp/pwned-{token}", f"/run/lock/pwned-{token}"]
    body = (
        f"for place in {places!r}:\n"
        "    try:\n        open(place, 'a').write('x')\n        print('wrote', place, flush=True)\n"
        "    except OSError as e:\n        print('refused', e.__class__.__name__, flush=True)\n"
        f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({str(sock_path)!r})\n    s.send(b'hello from the sandbox')\n"
        "    print('connected', flush=True)\nexcept OSError as e:\n    print('no socket', e.__class__.__name__, flush=True)\n"
    )
    r = path.run(attempt("host", body))
    got = []
    try:
        conn, _ = listener.accept()
        got.append(conn.recv(64))
    except OSError:
        pass
    listener.close()
    assert "ATTEMPT host" in r.stdout and r.status == "passed", r.stderr
    assert "wrote" not in r.stdout and "no socket" in r.stdout and got == []
    assert secret.read_text() == "TOKEN = 'abc'\n" and sorted(p.name for p in open_dir.iterdir()) == ["host.sock", "source.py"]
    assert not [p for p in places[2:] if Path(p).exists()]
    assert left_behind(r) == []
    path.canaries_hold()


# ---- sockets beyond the network namespace, the host's name -------------------------------------

SOCKETS = (
    "import socket\n"
    "for name, family, kind in (('vsock', 40, socket.SOCK_STREAM), ('netlink', 16, socket.SOCK_DGRAM), ('packet', 17, socket.SOCK_RAW),"
    " ('inet', 2, socket.SOCK_STREAM), ('inet6', 10, socket.SOCK_DGRAM)):\n"
    "    try:\n        socket.socket(family, kind, 15 if name == 'netlink' else 0).close()\n        print('made', name, flush=True)\n"
    "    except OSError as e:\n        print('refused', name, e.errno, flush=True)\n"
    "try:\n    socket.socketpair(2, socket.SOCK_STREAM)\n    print('made pair inet', flush=True)\n"
    "except OSError as e:\n    print('refused pair inet', e.errno, flush=True)\n"
    "a, b = socket.socketpair()\na.send(b'ok')\nprint('unix pair', b.recv(2).decode(), flush=True)\n"
    "s = socket.socket(socket.AF_UNIX)\ns.bind('/tmp/own.sock')\nprint('unix socket bound', flush=True)\n"
    "print('hostname', socket.gethostname(), os.uname().nodename, flush=True)\n"
)


def test_only_unix_sockets_and_a_host_name_of_its_own(path: Path_) -> None:
    """vsock is not covered by network namespaces (on a VM it may reach the host's services), and a
    netlink socket hears the host's device events: every family but AF_UNIX is refused. The host
    name is the run's own."""
    r = path.run(attempt("sockets", SOCKETS))
    assert "ATTEMPT sockets" in r.stdout and r.status == "passed", r.stderr
    assert "unix pair ok" in r.stdout and "unix socket bound" in r.stdout  # multiprocessing and the like still work
    if path.level.seccomp:
        for name in ("vsock", "netlink", "packet", "inet", "inet6", "pair inet"):
            assert f"refused {name} 97" in r.stdout, r.stdout  # EAFNOSUPPORT
    assert "made" not in r.stdout or not path.level.seccomp
    if path.level.level == "namespaces":
        assert path.level.uts_namespace and "own host name" in str(path.level)
        assert "hostname sandbox sandbox" in r.stdout and socket.gethostname() != "sandbox", r.stdout
    path.canaries_hold()


# ---- file locks and file watches: channels between runs, windows on the host ---------------------

LOCKS = (
    "import fcntl, struct, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = os.open(os.__file__, os.O_RDONLY)\n"
    "def tried(name, call):\n    try:\n        call()\n        print('took', name, flush=True)\n"
    "    except OSError as e:\n        print('refused', name, e.errno, flush=True)\n"
    "tried('flock', lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB))\n"
    "lock = struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0)\n"
    "for name, command in (('getlk', 5), ('setlk', 6), ('setlkw', 7), ('ofd_getlk', 36), ('ofd_setlk', 37), ('ofd_setlkw', 38)):\n"
    "    tried(name, lambda: fcntl.fcntl(fd, command, lock))\n"
    "tried('lease', lambda: fcntl.fcntl(fd, 1025))\ntried('notify', lambda: fcntl.fcntl(os.open('/usr', os.O_RDONLY), 1026, 1))\n"
    "print('getfd', fcntl.fcntl(fd, fcntl.F_GETFD), flush=True)\n"  # other fcntl commands still work
    "for name, call in (('inotify_init', lambda: libc.inotify_init()), ('inotify_init1', lambda: libc.inotify_init1(0)),"
    " ('fanotify_init', lambda: libc.fanotify_init(0, 0))):\n"
    "    print(name, call(), ctypes.get_errno(), flush=True)\n"
)


def test_file_locks_and_file_watches_are_refused(path: Path_) -> None:
    """flock() on the read-only stdlib files every run sees carried bits between concurrent runs, and
    inotify showed which modules other runs and the host open: both refused inside the sandbox."""
    r = path.run(attempt("locks", LOCKS))
    assert "ATTEMPT locks" in r.stdout and r.status == "passed", r.stderr
    if not path.level.seccomp:
        pytest.skip(f"no system-call filter on this path: {path.level}")
    for name in ("flock", "getlk", "setlk", "setlkw", "ofd_getlk", "ofd_setlk", "ofd_setlkw", "lease", "notify"):
        assert f"refused {name} 1" in r.stdout, r.stdout  # EPERM
    assert "took" not in r.stdout and "getfd 1" in r.stdout  # FD_CLOEXEC: the fcntl family otherwise works
    for name in ("inotify_init", "inotify_init1", "fanotify_init"):
        assert f"{name} -1 1" in r.stdout, r.stdout
    path.canaries_hold()


# ---- SysV IPC ----------------------------------------------------------------------------------


def _sysv_keys() -> set[int]:
    keys = set()
    for kind in ("shm", "msg", "sem"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        keys |= {int(line.split()[0]) for line in lines if line.split()}
    return keys


def test_sysv_ipc_is_refused_or_dies_with_the_run(path: Path_) -> None:
    key = 0x5EED0000 + int.from_bytes(os.urandom(2), "little")
    body = (
        "from ctypes import CDLL, get_errno\nlibc = CDLL(None, use_errno=True)\n"
        f"print('shm', libc.shmget({key}, 16 << 20, 0o1666), 'msg', libc.msgget({key}, 0o1666), 'sem', libc.semget({key}, 1, 0o1666), flush=True)\n"
        "from_other_run = libc.shmget(" + str(key) + ", 0, 0o666)\nprint('found', from_other_run, flush=True)\n"
    )
    first, second = path.run(attempt("ipc", body)), path.run(attempt("ipc", body))
    for r in (first, second):
        assert "ATTEMPT ipc" in r.stdout and r.status == "passed", r.stderr
        if path.level.seccomp:
            assert "shm -1 msg -1 sem -1" in r.stdout
    assert "found -1" in second.stdout  # nothing of the first run's reached the second
    assert key not in _sysv_keys()  # nor the host
    path.canaries_hold()


# ---- uid reuse: nothing a run leaves reaches a later run ----------------------------------------


def test_nothing_a_run_leaves_reaches_a_later_run(path: Path_, open_dir: Path) -> None:
    token = os.urandom(4).hex()
    places = [f"/tmp/left-{token}", f"/dev/shm/left-{token}", f"/var/tmp/left-{token}", f"{open_dir}/left-{token}", f"left-{token}"]
    leave = (
        f"for place in {places!r}:\n"
        "    try:\n        fd = os.open(place, os.O_CREAT | os.O_WRONLY, 0o600)\n        os.write(fd, b'run-0-secret')\n"
        "        print('left', place, flush=True)\n    except OSError as e:\n        print('refused', place, e.__class__.__name__, flush=True)\n"
    )
    take = (
        f"for place in {places!r}:\n"
        "    try:\n        print('read', place, open(place, 'rb').read(), flush=True)\n"
        "    except OSError as e:\n        print('nothing at', place, e.__class__.__name__, flush=True)\n"
    )
    first = path.run(attempt("leave", leave))
    assert "ATTEMPT leave" in first.stdout and "left" in first.stdout, first.stderr  # at least its own /tmp
    later = [path.run(attempt("take", take)) for _ in range(3)]
    for r in later:
        assert "ATTEMPT take" in r.stdout and "run-0-secret" not in r.stdout and "read" not in r.stdout, r.stdout
        assert r.uid is None or r.uid not in (first.uid, first.uid + 1)
    for place in places[1:4]:  # the host's own directories: nothing left there
        assert not Path(place).exists()
    path.canaries_hold()


def test_a_uid_is_never_handed_out_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Across blocks, across processes sharing the counter, and after this process starts over."""
    from pytest_ftmodel.sandbox import uids

    monkeypatch.setattr(uids, "counter_path", lambda: str(tmp_path / "state" / "sandbox-uids"))
    monkeypatch.setattr(uids, "BLOCK", 6)  # three runs a block
    monkeypatch.setattr(uids, "_next", 0)
    monkeypatch.setattr(uids, "_end", 0)
    mine = [uids.fresh_pair() for _ in range(7)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # another process: starts from the counter, not from its parent's block
        os.write(write_end, json.dumps([uids.fresh_pair() for _ in range(5)]).encode())
        os._exit(0)
    os.close(write_end)
    theirs = json.loads(os.read(read_end, 1 << 16))
    os.close(read_end)
    os.waitpid(pid, 0)
    monkeypatch.setattr(uids, "_next", 0)  # this process starting over (a new session) reads the counter too
    monkeypatch.setattr(uids, "_end", 0)
    again = [uids.fresh_pair() for _ in range(4)]
    every = [u + k for u in mine + theirs + again for k in (0, 1)]
    assert len(set(every)) == len(every) and min(every) >= uids.UID_BASE
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0  # only root reaches the counter
    (tmp_path / "state" / "sandbox-uids").chmod(0o666)
    monkeypatch.setattr(uids, "_end", 0)
    with pytest.raises(OSError, match="writable by others"):
        uids.fresh_pair()  # a counter anyone could rewind is never trusted


def test_process_level_leftovers_are_unreadable_to_later_runs_and_tidied(monkeypatch: pytest.MonkeyPatch, open_dir: Path) -> None:
    """The process level runs on the host's tree: a 0600 file run N leaves in a world-writable place
    stays unreadable to every later run (run N + 500 had the same uid before), and what it left at
    the top of /var/tmp is removed after it."""
    from pytest_ftmodel.sandbox import uids

    if os.geteuid() != 0:
        pytest.skip("runs get uids of their own only as root")
    monkeypatch.setattr(uids, "BLOCK", 4)  # two runs a block: the later runs come from fresh blocks
    monkeypatch.setattr(uids, "_end", 0)
    token = os.urandom(4).hex()
    nested, top = open_dir / f"left-{token}", Path(f"/var/tmp/left-{token}")
    leave = attempt("leave", "".join(
        f"fd = os.open({str(p)!r}, os.O_CREAT | os.O_WRONLY, 0o600)\nos.write(fd, b'run-0-secret')\n" for p in (nested, top)))
    first = run_sandboxed(leave, isolation="process")
    assert first.status == "passed" and "ATTEMPT leave" in first.stdout, first.stderr
    assert nested.stat().st_uid == first.uid and not top.exists()  # tidied: the top of /var/tmp
    take = attempt("take", f"try:\n    print(open({str(nested)!r}).read())\nexcept OSError as e:\n    print('refused', e.__class__.__name__)\n")
    later = [run_sandboxed(take, isolation="process") for _ in range(5)]
    assert len({first.uid, *(r.uid for r in later)}) == 6
    assert all("refused PermissionError" in r.stdout for r in later), [r.stdout for r in later]


# ---- memory: memfd, /dev/shm, forks -------------------------------------------------------------

HOLD = (
    "try:\n    os.memfd_create('hold')\n    print('memfd made', flush=True)\nexcept OSError as e:\n    print('memfd refused', e.errno, flush=True)\n"
    "try:\n    with open('/dev/shm/fill', 'wb') as fh:\n        for _ in range(256):\n            fh.write(b'x' * (1 << 20))\n"
    "    print('shm filled', flush=True)\nexcept OSError as e:\n    print('shm full', e.__class__.__name__, flush=True)\n"
    "pids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n        block = bytearray(b'x') * (100 << 20)\n"
    "        print('held', i, flush=True)\n        time.sleep(1.5)\n        os._exit(0)\n    pids.append(pid)\n"
    "held = sum(os.waitpid(p, 0)[1] == 0 for p in pids)\nprint('all held', held, flush=True)\nassert held == 4\n"
)


def test_memory_is_counted_over_the_whole_run(path: Path_) -> None:
    """memfd is refused, /dev/shm is a capped tmpfs, and four forks of 100 MiB at memory_mb=128
    (each within its own address-space limit) exceed the run's cgroup where it has one."""
    if not path.level.cgroup:
        assert "limits are per process" in path.level.note  # the isolation says so
        r = path.run(attempt("memory", HOLD.split("pids = []")[0]), memory_mb=128)
    else:
        r = path.run(attempt("memory", HOLD), memory_mb=128, timeout=10)
        assert r.status == "memory" and "all held 4" not in r.stdout, (r.status, r.stdout, r.stderr)
        assert "reached its memory limit" in r.stderr
    assert "ATTEMPT memory" in r.stdout and "shm full" in r.stdout
    if path.level.seccomp:
        assert "memfd refused 1" in r.stdout
    assert left_behind(r) == []
    path.canaries_hold()


# ---- fork storms against parallel runs ----------------------------------------------------------

STORM = (
    "if os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['/bin/sleep', 'TAG'])\n"
    "n = 0\nend = time.monotonic() + 2.5\ntry:\n    while n < 200:\n        if os.fork() == 0:\n            os.setsid()\n"
    "            while time.monotonic() < end:\n                pass\n            os._exit(0)\n        n += 1\n"
    "except OSError as e:\n    print('forked', n, e.__class__.__name__, flush=True)\n"
    "while time.monotonic() < end:\n    pass\n"
)
NEEDS_CPU = "import time\ntime.sleep(0.5)\nstart = time.process_time()\nwhile time.process_time() - start < 0.2:\n    pass\nprint('done', flush=True)\n"


def test_a_fork_storm_neither_escapes_nor_fails_a_parallel_run(path: Path_) -> None:
    tag = f"{61 + int.from_bytes(os.urandom(2), 'little') / 1e5:.5f}"
    storm = attempt("storm", STORM.replace("TAG", tag))
    stormy, fine = path.many([("run", (storm,), {"timeout": 3.0, "max_processes": 32}), ("run", (NEEDS_CPU,), {"timeout": 3.0})])
    assert "ATTEMPT storm" in stormy.stdout and "forked" in stormy.stdout, stormy.stderr
    assert int(stormy.stdout.split("forked")[1].split()[0]) < 32
    # the parallel run passes: judged on the CPU it got, however the storm starves it
    assert fine.status == "passed", (fine.status, fine.stderr)
    assert left_behind(stormy) == [] and sleepers(tag) == []
    path.canaries_hold()


# ---- escape sequences ---------------------------------------------------------------------------


def test_escape_sequences_never_reach_a_terminal(path: Path_) -> None:
    body = (
        "print('\\x1b[32m1 passed\\x1b[0m\\r', flush=True)\n"
        "sys.stderr.write('\\x1b]52;c;cHduZWQ=\\x07 \\u202e evil \\x9b\\n')\nassert False, '\\x1b[2J'\n"
    )
    r = path.run(attempt("escapes", body))
    assert "ATTEMPT escapes" in r.stdout and r.status == "failed"
    for text in (r.stdout, r.stderr):
        assert not any(c in text for c in "\x1b\r\x07\x9b\u202e")
    assert "\\x1b[32m1 passed" in r.stdout and "\\x1b]52;c;cHduZWQ=\\x07" in r.stderr and "AssertionError: \\x1b[2J" in r.stderr
    path.canaries_hold()


# ---- descriptors --------------------------------------------------------------------------------


def descriptors() -> int:
    """This process's open descriptors, but for the idle fork servers' sockets (the pool grows with the runs in flight)."""
    from pytest_ftmodel.sandbox import forkserver

    return len(os.listdir("/proc/self/fd")) - len(forkserver._idle_zygotes)


def test_no_descriptor_leaks_in_or_out(path: Path_) -> None:
    body = (
        "import stat\nfor name in sorted(os.listdir('/proc/self/fd'), key=int):\n"
        "    try:\n        mode = os.stat(f'/proc/self/fd/{name}').st_mode\n    except OSError:\n        continue\n"
        "    kind = 'socket' if stat.S_ISSOCK(mode) else 'pipe' if stat.S_ISFIFO(mode) else 'dir' if stat.S_ISDIR(mode) else 'other'\n"
        "    print('fd', name, kind, flush=True)\n"
    )
    batch = [("run", (attempt("descriptors", body),), {}) for _ in range(4)] + [("split", ("def f():\n    return 1\n", "assert f() == 1", ["f"]), {})] * 4
    path.many(batch)  # as many fork servers as runs in flight: the pool holds one descriptor for each
    before, helper_before = descriptors(), getattr(path, "helper_fds", None)
    results = path.many(batch)
    r = results[0]
    assert "ATTEMPT descriptors" in r.stdout and r.status == "passed", r.stderr
    kinds = dict(line.split()[1:] for line in r.stdout.splitlines() if line.startswith("fd "))
    assert kinds.get("1") == kinds.get("2") == "pipe" and not {"socket", "dir"} & set(kinds.values()), kinds
    assert all(x.status == "passed" for x in results)
    assert descriptors() == before
    if helper_before is not None:
        assert path.helper_fds == helper_before  # the unprivileged caller's count too
    path.canaries_hold()


def test_the_unprivileged_path_is_the_user_namespace_path(path: Path_) -> None:
    """What the helper's runs get: the namespace level without root, or the probe says why not."""
    if path.name == "caller":
        assert path.level == probe_isolation()
        return
    level = path.level
    assert not level.uid_dropped and not level.cgroup
    if level.level == "namespaces":
        assert level.capabilities_dropped and level.minimal_root and "no capabilities (nested user namespace)" in str(level)
    r = path.run("import os\nprint(os.getuid())")
    assert r.status == "passed" and r.uid is None and r.stdout.strip() in ("1000", str(NOBODY))


# ---- a virtual environment's interpreter in the minimal root ------------------------------------


def test_a_virtual_environments_interpreter_runs_in_the_minimal_root() -> None:
    """CI runs from a venv: its ``bin`` and ``pyvenv.cfg``, and the base interpreter's prefix, are
    bound read-only into the minimal root, so programs run, and can start, the same interpreter;
    the venv's site-packages is not there (programs run ``python -I -S``), nor the checkout."""
    level = probe_isolation()
    if not level.minimal_root:
        pytest.skip(f"no minimal root here: {level}")
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running from a virtual environment")
    program = (
        "import os, subprocess, sys\n"
        "print('exe', sys.executable, os.path.exists(sys.executable), flush=True)\n"
        "print('site', any('site-packages' in p for p in sys.path), flush=True)\n"
        "look = 'import os, sys; print(sys.prefix, [p for p in sys.path if \"site-packages\" in p and os.path.isdir(p)])'\n"
        "child = subprocess.run([sys.executable, '-I', '-c', look], capture_output=True, text=True)\n"
        "print('child', child.returncode, child.stdout.strip(), flush=True)\n"
        f"print('checkout', os.path.exists({str(Path.cwd() / 'pyproject.toml')!r}), os.path.exists({os.path.dirname(sys.prefix)!r} + '/pyproject.toml'), flush=True)\n"
        "try:\n    open(os.path.join(sys.prefix, 'pwned'), 'w')\nexcept OSError as e:\n    print('prefix', e.errno, flush=True)\n"
    )
    r = run_sandboxed(program)
    assert r.status == "passed", r.stderr
    assert f"exe {sys.executable} True" in r.stdout and "site False" in r.stdout
    assert f"child 0 {sys.prefix} []" in r.stdout  # the venv's own interpreter, its site-packages out of sight
    assert "checkout False False" in r.stdout and "prefix 30" in r.stdout  # EROFS
    assert not Path(sys.prefix, "pwned").exists()


VENV_RUNNER = r'''
import dataclasses, json, sys
sys.path[:0] = json.loads(sys.argv[1])
from pytest_ftmodel.sandbox import run_sandboxed
program = (
    "import subprocess, sys\n"
    "child = subprocess.run([sys.executable, '-I', '-c', 'import sys; print(sys.prefix)'], capture_output=True, text=True)\n"
    "print('child', child.returncode, child.stdout.strip(), child.stderr.strip()[-200:], flush=True)\n"
    "open(sys.executable, 'ab')\n"
)
r = run_sandboxed(program, timeout=10)
print(json.dumps({"prefix": sys.prefix, "executable": sys.executable, "status": r.status, "stdout": r.stdout,
                  "stderr": r.stderr[-500:], "isolation": str(r.isolation)}))
'''


@pytest.fixture(scope="module")
def venv_under_tmp() -> Iterator[Any]:
    """Makes virtual environments under /tmp (as CI images often do): no pip, links to the interpreter."""
    made = Path(tempfile.mkdtemp(prefix="ftmodel-venv-", dir="/tmp"))
    made.chmod(0o755)  # uid 65534 runs one too

    def make(python: str) -> Path:
        venv = made / f"venv-{len(list(made.iterdir()))}"
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        return venv

    yield make
    shutil.rmtree(made, ignore_errors=True)


@pytest.mark.parametrize("who", ["caller", "unprivileged"])
def test_a_virtual_environment_under_tmp_can_start_its_interpreter(venv_under_tmp: Any, who: str) -> None:
    """Each run's private /tmp would hide a virtual environment kept under /tmp: its files are bound
    again over the run's /tmp (read-only), so a program can start sys.executable there too."""
    if who == "unprivileged":
        base = _interpreter_for_nobody()
        if base is None:
            pytest.skip("needs root (to become uid 65534), setpriv and an interpreter that uid can run")
        venv = venv_under_tmp(base)
        command = [*SETPRIV, str(venv / "bin" / "python")]
    else:
        venv = venv_under_tmp(sys.executable)
        command = [str(venv / "bin" / "python")]
    done = subprocess.run([*command, "-I", "-c", VENV_RUNNER, json.dumps(_import_paths())], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["prefix"] == str(venv) and out["executable"].startswith("/tmp/")
    if "minimal read-only root" not in out["isolation"]:
        pytest.skip(f"no minimal root here: {out['isolation']}")
    # the program could not write the interpreter's tree; its child started, the same environment's interpreter
    assert out["status"] == "failed" and ("Read-only file system" in out["stderr"] or "Permission denied" in out["stderr"]), out
    assert f"child 0 {venv} " in out["stdout"] + " ", out


# ---- where pivot_root is refused ----------------------------------------------------------------


def test_where_pivot_root_is_refused_the_minimal_root_holds_by_moving_it_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """An initramfs root cannot be pivoted away from: the fork server then moves its new root over
    ``/`` and chroots into it (switch_root's way). Simulated by a harness that knows no pivot_root."""
    from pytest_ftmodel.sandbox import forkserver

    level = probe_isolation()
    if not level.minimal_root:
        pytest.skip(f"no minimal root here: {level}")
    source = forkserver.HARNESS_SOURCE
    assert "_PIVOT_ROOT = {" in source
    forkserver.close_idle_zygotes()
    monkeypatch.setattr(forkserver, "HARNESS_SOURCE", source.replace("_PIVOT_ROOT = {", "_PIVOT_ROOT = {} or {"))
    try:
        body = (
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print('root', sorted(os.listdir('/')), sorted(os.listdir('/..')), flush=True)\n"
            "print('chroot', libc.chroot(b'/usr'), 'umount', libc.umount2(b'/', 2), flush=True)\n"
            f"print('outside', os.path.exists('/etc/passwd'), os.path.exists({str(Path.cwd() / 'pyproject.toml')!r}), flush=True)\n"
            "print('mounts', sum(1 for line in open('/proc/self/mountinfo')), flush=True)\n"
            "open('/pwned', 'w')\n"
        )
        r = run_sandboxed(attempt("chroot", body))
        servers = len(forkserver._idle_zygotes)
    finally:
        forkserver.close_idle_zygotes()  # the next tests get servers from the real harness
    assert "ATTEMPT chroot" in r.stdout and r.status == "failed" and "Read-only file system" in r.stderr, r.stderr
    root = r.stdout.split("root ")[1].split("\n")[0]
    assert "'etc'" not in root and "'home'" not in root and "'usr'" in root and "'tmp'" in root
    assert "chroot -1 umount -1" in r.stdout and "outside False False" in r.stdout
    assert servers == 1 and not Path("/pwned").exists(), r.stdout
    assert run_sandboxed("assert sum(range(5)) == 10").passed and run_sandboxed("assert False").status == "failed"


def test_a_process_level_run_is_judged_on_its_cpu_use_too() -> None:
    """The process level too: a loop is stopped once it used its CPU time, a program that waits
    after its timeout of wall clock (saying so), and the supervisor reaps every process, so the
    run's CPU use is known."""
    waits, spins = [run_sandboxed(p, timeout=1.0, isolation="process") for p in ("import time\ntime.sleep(600)", "while True:\n    pass")]
    assert waits.status == "timeout" and waits.cpu_seconds is not None and waits.cpu_seconds < 0.5
    assert "the program waited (sleep, input, a lock)" in waits.stderr and 1.0 <= waits.duration < 4.0
    assert spins.status == "timeout" and "[sandbox]" not in spins.stderr, spins.stderr
    done = run_sandboxed("print(sum(range(10**6)))", isolation="process")
    assert done.passed and done.cpu_seconds is not None and 0 < done.cpu_seconds < 5


# ---- a busy machine -----------------------------------------------------------------------------

HALF_A_SECOND = (
    "import os, time\nos.sched_setaffinity(0, {CPU})\nstart = time.process_time()\n"
    "while time.process_time() - start < 0.5:\n    pass\nprint('done', flush=True)\n"
)
HOG = "import os, sys, time\nos.setsid()\nos.sched_setaffinity(0, {CPU})\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def test_a_correct_program_is_never_failed_because_the_machine_is_busy(path: Path_) -> None:
    """Four busy processes (each in a session of its own, as a run is) saturate the core the program
    is pinned to, for the whole test: the program, which needs 0.5 s of CPU with a 1 s timeout, gets
    about a fifth of that core, and passes, judged on the CPU it got; an infinite loop beside it still
    times out."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    hogs = [subprocess.Popen([sys.executable, "-I", "-c", HOG.replace("{CPU}", f"{{{cpu}}}"), "30"]) for _ in range(4)]
    try:
        time.sleep(0.2)  # all of them busy before the programs start
        fine, loop = path.many([("run", (HALF_A_SECOND.replace("{CPU}", f"{{{cpu}}}"),), {"timeout": 1.0}),
                                ("run", ("while True:\n    pass\n",), {"timeout": 1.0})])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert (fine.status, fine.stdout) == ("passed", "done\n"), (fine.status, fine.stderr[-500:])
    assert fine.duration > 1.0  # it needed more than its timeout of wall clock: it was starved, not failed
    assert loop.status == "timeout" and "[sandbox]" not in loop.stderr, (loop.status, loop.stderr[-500:])  # its CPU time spent


def test_the_cgroup_v2_set_up_on_a_delegating_tree(tmp_path: Path) -> None:
    """The v2 branch (this machine's v2 offers no memory controller; CI's may): on a tree laid out as
    cgroupfs lays it out, our cgroup's children get memory, pids and cpu, and a run its limits."""
    from pytest_ftmodel.sandbox import kernel

    own = tmp_path / "session"
    own.mkdir()
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text("\n")
    (own / "ftmodel-999999999").mkdir()  # a session that ended without tidying up
    groups, why = kernel._setup_v2(str(tmp_path), "/session")
    assert groups is not None and why == "" and groups.version == 2
    assert not (own / "ftmodel-999999999").exists()
    parent = own / f"ftmodel-{os.getpid()}"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    run = groups.create(96, 34)
    assert (parent / "run-0" / "memory.max").read_text() == str(96 << 20) and (parent / "run-0" / "pids.max").read_text() == "34"
    (parent / "run-0" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert run.oom_killed()
    (own / "cgroup.controllers").write_text("cpu io\n")
    assert kernel._setup_v2(str(tmp_path), "/session") == (None, "cgroup v2 offers cpu io here, not memory and pids")
