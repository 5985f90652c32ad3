"""Run untrusted generated code in an isolated subprocess, judge it where it cannot reach its
tests, and report the isolation achieved.

Layers, strongest first (probed once per process; see :func:`probe_isolation`):

``namespaces``
    Each program is a fork of a pristine ``python -I -S`` fork server (one per run in flight, kept
    for later runs) whose root is a minimal read-only tree: ``/usr`` and the interpreter's prefix,
    bound read-only, nothing else of the host. The program gets new PID, mount, network and IPC
    namespaces: no network, a private size-capped tmpfs as ``/tmp`` (cwd, HOME, TMPDIR) and
    ``/dev/shm``, a ``/proc`` showing only its own processes, and teardown kills every process in
    it. It runs without any capability: as root under a fresh unprivileged uid, without root as an
    unprivileged id in a nested user namespace; then ``no_new_privs`` and a seccomp filter.
    As root, each run's processes share one cgroup of the run's own (memory, pids, CPU), where the
    machine lets root make one (``kernel.py``), and uids are never handed out twice (``uids.py``).
``process``
    Where namespaces are refused: a fresh ``python -I -S`` per program in a fresh temporary
    directory (removed after), a dropped uid when running as root, a new session, and a sweep that
    kills every process left with the run's uid or marker.

Judging (see ``harness.py``): :func:`run_split` runs the candidate and the tests in separate
processes that exchange plain data only; :func:`run_sandboxed` runs one program in one process.

Files: ``api.py`` (the public functions and a run's life), ``isolation.py`` (levels and probe),
``forkserver.py`` (starting processes), ``harness.py`` (inside the sandbox), ``plain.py`` (the
plain-data codec of the split judge), ``kernel.py`` (seccomp and cgroups), ``split.py`` (which
problems can be split, and how: from the problem alone, never the answer), ``uids.py`` (uids never handed out twice).
"""

from __future__ import annotations

from pytest_ftmodel.sandbox.api import (
    SandboxResult,
    alive,
    escape_controls,
    processes_of,
    run_sandboxed,
    run_split,
)
from pytest_ftmodel.sandbox.isolation import (
    Isolation,
    SandboxUnavailable,
    default_isolation,
    pop_isolation,
    probe_isolation,
    push_isolation,
)
from pytest_ftmodel.sandbox.split import JudgingRefused, default_judging, pop_judging, push_judging
from pytest_ftmodel.sandbox.uids import UID_BASE

__all__ = [
    "UID_BASE", "Isolation", "JudgingRefused", "SandboxResult", "SandboxUnavailable", "alive", "default_isolation",
    "default_judging", "escape_controls", "pop_isolation", "pop_judging", "probe_isolation", "processes_of",
    "push_isolation", "push_judging", "run_sandboxed", "run_split",
]
