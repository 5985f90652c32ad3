"""The uids runs get as root: never one that an earlier run had, in this process or any other.

At the namespace level nothing a run owned can outlive it (its files live on its private tmpfs, its
IPC objects in its IPC namespace, its processes in its PID namespace), but at the process level a
program can leave a file in a world-writable host directory, which a later program with the same
uid could read. So uids are handed out from one counter kept on disk, in a directory only root can
reach (``sandbox-uids`` in the cache directory), which every process of this machine's root takes
blocks of under a lock: from :data:`UID_BASE` up, two per run (the program's and its split judge's),
about a billion runs before the counter starts over. Where the file cannot be used, the run is an
error: a uid that might repeat is never handed out.

After a process-level run, what its uid left at the top of the usual world-writable directories is
removed as well (:func:`remove_leftovers`): the counter is what makes reuse impossible, this keeps
the host tidy.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import threading

UID_BASE = 2_000_000_000  # far above any real account
UID_END = 4_294_967_294  # (uid_t)-1 is no uid; nor, on some systems, the one below it
BLOCK = 1024  # uids a process reserves at a time (512 runs)

_lock = threading.Lock()
_next = 0
_end = 0  # the current block: [_next, _end)


def counter_path() -> str:
    from pytest_ftmodel.model import cache_root

    return os.path.join(cache_root(), "sandbox-uids")


def _reserve(count: int) -> int:
    """The first of ``count`` uids no one has had, taken from the on-disk counter under its lock."""
    path = counter_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    folder = os.stat(os.path.dirname(path))
    if folder.st_uid != os.geteuid() or folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(f"{os.path.dirname(path)} is writable by others than its owner: the uid counter cannot be kept there")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise OSError(f"{path} is writable by others than its owner: refusing to trust its count")
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        used = int(text) if text.isdigit() else 0
        start = UID_BASE + used
        if start + count > UID_END:  # a billion runs later: start over
            start, used = UID_BASE, 0
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{used + count}\n".encode(), 0)
        os.fsync(fd)
        return start
    finally:
        os.close(fd)  # releases the lock


def fresh_pair() -> int:
    """A uid for a run's program; the next one is its split judge's. Raises OSError where the
    counter cannot be kept."""
    global _next, _end
    with _lock:
        if _next + 2 > _end:
            _next = _reserve(BLOCK)
            _end = _next + BLOCK
        uid = _next
        _next += 2
        return uid


def _forget_after_fork() -> None:
    """A forked copy of this process must not hand out the rest of its parent's block."""
    global _lock, _next, _end
    _lock = threading.Lock()
    _next = _end = 0


os.register_at_fork(after_in_child=_forget_after_fork)

WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/run/shm", "/var/lock")


def remove_leftovers(uid: int) -> list[str]:
    """Remove what ``uid`` (or its judge, ``uid + 1``) owns at the top of the usual world-writable
    directories; returns what was removed."""
    removed = []
    for directory in dict.fromkeys((tempfile.gettempdir(), *WORLD_WRITABLE)):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid not in (uid, uid + 1):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(entry.path)
            except OSError:
                continue
    return removed
