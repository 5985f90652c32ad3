"""Kernel filters and per-run resource groups: the system-call filter (libseccomp) and cgroup v2.

The filter is built here, in the parent, with libseccomp (the ``pyseccomp`` bindings), and exported
as BPF; the harness loads those bytes with one ``prctl`` in each program's process, so the sandbox
never imports ctypes or libseccomp itself. Where libseccomp cannot be had, :func:`seccomp_filter`
returns None and the isolation says so.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading

# System calls an evaluation program never needs: debugging other processes, the mount family,
# namespaces, kernel keyrings, eBPF, perf, userfaultfd, kexec and modules, file handles, memory
# outside every file-size and tmpfs cap (memfd, SysV shm and message queues), io_uring.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsmount",
    "fspick", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "name_to_handle_at",
    "open_by_handle_at", "memfd_create", "memfd_secret", "shmget", "msgget", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "settimeofday",
    "clock_settime", "adjtimex", "iopl", "ioperm", "lookup_dcookie", "vhangup",
)
_NAMESPACE_FLAGS = 0x7E020000  # every CLONE_NEW* flag

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
        with tempfile.TemporaryFile() as fh:
            rules.export_bpf(fh)
            fh.seek(0)
            code = fh.read()
    except (RuntimeError, ValueError, OSError) as exc:
        return None, f"no system-call filter: libseccomp failed ({exc})"
    return code.hex(), "seccomp filter"


def _flags(mask: int) -> list[int]:
    return [1 << bit for bit in range(32) if mask & (1 << bit)]


def cgroup_note() -> str:
    """Why runs get no cgroup of their own here (empty when one could be had)."""
    root = "/sys/fs/cgroup"
    controllers = ""
    for candidate in (f"{root}/cgroup.controllers", f"{root}/unified/cgroup.controllers"):
        try:
            with open(candidate) as fh:
                controllers = fh.read()
            break
        except OSError:
            continue
    if "memory" not in controllers.split() or "pids" not in controllers.split():
        return "no cgroup v2 memory/pids controllers on this machine: limits are per process"
    if not os.access(root, os.W_OK):
        return "cgroup v2 not delegated to this user: limits are per process"
    return "cgroup v2 per run not implemented yet: limits are per process"
