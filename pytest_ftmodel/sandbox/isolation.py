"""What isolation a run gets: the levels, the session's default, and the probe that finds the
strongest level this machine allows (once per process, by running a canary in it)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from pytest_ftmodel._stack import SessionStack
from pytest_ftmodel.errors import FTModelError


class SandboxUnavailable(FTModelError, RuntimeError):
    """Strict isolation was asked for and this machine cannot provide it."""


@dataclass(frozen=True)
class Isolation:
    """What was in force for a run."""

    level: str  # "namespaces" or "process"
    network: bool  # network namespace: no network
    pid_namespace: bool
    private_tmp: bool
    uid_dropped: bool  # a uid of the run's own (root); without root, an unprivileged id in a nested user namespace
    forked: bool = False  # each program in a fork of a pristine interpreter, not a fresh exec
    ipc_namespace: bool = False
    uts_namespace: bool = False  # a host name of its own ("sandbox"), not the host's
    minimal_root: bool = False  # a read-only root holding /usr and the interpreter's prefix only
    capabilities_dropped: bool = False
    seccomp: bool = False
    cgroup: str = ""  # "v1" or "v2": each run in a cgroup of its own (memory, pids, CPU for the whole run)
    note: str = ""

    def __str__(self) -> str:
        parts = [self.level]
        parts.append("no network" if self.network else "network reachable")
        if self.pid_namespace:
            parts.append("own PID namespace")
        if self.ipc_namespace:
            parts.append("own IPC namespace")
        if self.uts_namespace:
            parts.append("own host name")
        if self.minimal_root:
            parts.append("minimal read-only root")
        parts.append("private /tmp" if self.private_tmp else "shared /tmp")
        if self.uid_dropped:
            parts.append("unprivileged uid")
        elif self.capabilities_dropped:
            parts.append("no capabilities (nested user namespace)")
        else:
            parts.append("same uid as pytest")
        parts.append("seccomp filter" if self.seccomp else "no seccomp filter")
        if self.cgroup:
            parts.append(f"own cgroup {self.cgroup} per run")
        parts.append("forked from a pristine interpreter" if self.forked else "fresh interpreter")
        return ", ".join(parts) + (f" ({self.note})" if self.note else "")


_isolation: SessionStack[str] = SessionStack("auto")


def default_isolation() -> str:
    """The isolation asked for by the running pytest session (``--sandbox``), else "auto"."""
    return _isolation.current()


push_isolation, pop_isolation = _isolation.push, _isolation.pop


def as_root() -> bool:
    return os.geteuid() == 0


_probe_lock = threading.Lock()
_probed: dict[bool, Isolation] = {}


def _kernel_parts(root: bool) -> tuple[bool, str, list[str]]:
    """(seccomp, cgroup version or "", notes saying why either is missing)."""
    from pytest_ftmodel.sandbox.kernel import NO_CGROUP_WITHOUT_ROOT, cgroups, seccomp_filter

    bpf, seccomp_note = seccomp_filter()
    groups, cgroup_note = cgroups() if root else (None, NO_CGROUP_WITHOUT_ROOT)
    notes = [n for n in ((seccomp_note if bpf is None else ""), cgroup_note) if n]
    return bpf is not None, f"v{groups.version}" if groups else "", notes


def namespace_level(root: bool) -> Isolation:
    seccomp, cgroup, notes = _kernel_parts(root)
    return Isolation(
        "namespaces", network=True, pid_namespace=True, private_tmp=True, uid_dropped=root, forked=True,
        ipc_namespace=True, uts_namespace=True, minimal_root=True, capabilities_dropped=True, seccomp=seccomp, cgroup=cgroup,
        note="; ".join(notes),
    )


def process_level(root: bool, note: str) -> Isolation:
    seccomp, cgroup, notes = _kernel_parts(root)
    return Isolation(
        "process", network=False, pid_namespace=False, private_tmp=False, uid_dropped=root,
        capabilities_dropped=root, seccomp=seccomp, cgroup=cgroup, note="; ".join(n for n in (note, *notes) if n),
    )


def probe_isolation() -> Isolation:
    """The strongest level this machine allows, found once per process by running a canary in it."""
    from pytest_ftmodel.sandbox.api import _run

    root = as_root()
    with _probe_lock:
        if root in _probed:
            return _probed[root]
        level = namespace_level(root)
        canary = _run(
            "import os\nassert os.getpid() == 1 and not os.path.exists('/etc')\n", level, mode="inprocess", judge=b"",
            timeout=10.0, memory_mb=512, max_processes=8, file_size_mb=1, open_files=64, max_output=4096,
        )
        if canary.status != "passed":
            level = process_level(root, "namespaces refused on this machine")
        _probed[root] = level
        return level
