"""The one way the plugin creates or replaces a file: never through a link someone planted.

Caches, memos, sheets, baselines, reports and demo files may sit in folders other people can write
(a shared review folder, a CI cache). A predictable name there (``x.<pid>.tmp``, ``.sheet.lock``)
lets them plant a symbolic link so that we create or overwrite a file of their choosing with our
rights. So a file's contents are written to a fresh ``mkstemp`` name in the target folder (created
with ``O_EXCL``: it never follows or reuses what is there) and renamed over the target, which replaces
a link rather than writing through it; a lock file is opened with ``O_NOFOLLOW``.

:func:`untrusted` says why a folder or file that another user could have written (as ``ssh``
judges its files) must not be believed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None, durable: bool = False) -> Path:
    """Put ``data`` (text is written as UTF-8) at ``path`` as a whole, through a temporary file in
    the same folder and ``os.replace``: a reader (or a crash) never sees half a file, and a link
    planted at ``path`` or at a temporary name is replaced or never touched, not written through.

    ``mode``: the file's permissions (default: what the umask gives a new file, as ``open`` would;
    mkstemp's own 0600 would hide a committed file from the team). ``durable``: fsync the file and
    its folder, for files a person's work lives in.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return target


class LinkRefused(OSError):
    """A symbolic link where the plugin creates a file: refused, never followed."""


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` (and its parents) where missing; a link at ``path`` itself raises
    :class:`LinkRefused`, so that nothing is then written into the folder it leads to."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink():
        raise LinkRefused(errno.ELOOP, "a symbolic link where a folder is created (refused, not followed)", str(folder))
    return folder


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the folder ``src`` into ``dst`` (merged with what is there), every file put in place by
    :func:`write_atomic`: a link planted at a file's name is replaced, never written through, and a
    link where one of the folders belongs raises :class:`LinkRefused` (``shutil.copytree`` with
    ``dirs_exist_ok`` follows both)."""
    src_root, dst_root = Path(src), Path(dst)
    for folder, _dirs, names in os.walk(src_root):
        target = make_folder(dst_root / Path(folder).relative_to(src_root))
        for name in names:
            source = Path(folder) / name
            write_atomic(target / name, source.read_bytes(), mode=stat.S_IMODE(source.stat().st_mode) | 0o644)


def _open_no_link(path: str | os.PathLike[str], flags: int, mode: int, where: str) -> int:
    """``os.open`` that never follows a link at ``path`` (:class:`LinkRefused` names ``where``)."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(errno.ELOOP, f"a symbolic link where {where} (refused, not followed)", str(path)) from None
        raise


def open_lock(path: str | os.PathLike[str]) -> int:
    """A descriptor of the lock file ``path`` for ``flock``, created if missing. A link at ``path``
    raises :class:`LinkRefused`: following it would create its target with our rights. Read-only
    (``flock`` needs no more) and readable by others, so co-reviewers of a shared folder can lock it too."""
    # non-blocking: opening a FIFO planted at the name would otherwise wait for a writer forever
    fd = _open_no_link(path, os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK, 0o644, "a lock file belongs")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LinkRefused(errno.EINVAL, "not a regular file where a lock file belongs (refused): remove it", str(path))
    return fd


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (see :func:`open_lock`) while the block runs."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock(p)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; writers still replace files whole
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to the file ``path`` (created if missing); a link there raises :class:`LinkRefused`."""
    fd = _open_no_link(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666, "a file is appended to")
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(text)


class Untrusted(Exception):
    """A file that another user could have written, read where only our own writing may be believed."""


def read_trusted(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of the file ``path``, if only we (or root) could have written it; else
    :class:`Untrusted` saying why. Its folders are the caller's to judge (:func:`untrusted`), once."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        why = untrusted_stat(os.fstat(handle.fileno()), folder=False) if hasattr(os, "geteuid") else ""
        if why:
            raise Untrusted(why)
        return handle.read().decode("utf-8")


def _trusted_owner(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def untrusted_stat(st: os.stat_result, *, folder: bool) -> str:
    """Why a file or folder with this ``stat`` could hold another user's writing, or "" when only
    we (or root) could: owned by someone else, or writable by group or others (a folder with the
    sticky bit, like /tmp, lets no one replace our own entries, so it is fine above ours)."""
    if not _trusted_owner(st.st_uid):
        return f"owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (folder and st.st_mode & stat.S_ISVTX):
        return f"writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
    return ""


def untrusted(path: str | os.PathLike[str]) -> str:
    """Why ``path`` (a file or folder, existing or about to be created) might hold what another user
    wrote: the first of it and its folders up to ``/`` that another user owns or can write, as
    "FOLDER is REASON"; "" when none is. A missing path is judged by its nearest existing folder."""
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows: no uid semantics to check
        return ""
    p = Path(os.path.abspath(path))
    for part in (p, *p.parents):
        try:
            st = os.lstat(part)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{part} cannot be checked ({exc.strerror or exc})"
        if stat.S_ISLNK(st.st_mode):
            # a link is as trustworthy as whoever made it (in a sticky folder like /tmp anyone may
            # have), and what it leads to is judged on its own
            if not _trusted_owner(st.st_uid):
                return f"{part} is a link owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
            why = untrusted(os.path.realpath(part))
            if why:
                return why
            continue
        # the sticky bit keeps others from replacing our entries, not from adding theirs: fine in the
        # folders above the one we use, not in that one
        why = untrusted_stat(st, folder=stat.S_ISDIR(st.st_mode) and part != p)
        if why:
            return f"{part} is {why}"
    return ""
