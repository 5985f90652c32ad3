"""On-disk store of generated answers, keyed by model fingerprint + prompt + every setting.

One small JSON file per entry, written to a temporary name and renamed into place, so several
pytest-xdist workers (or CI jobs sharing a directory) can write at once without losing or tearing an
entry. A file that is corrupt, or that belongs to another key or format, is never trusted: it is
ignored with a warning, and the entry is generated again and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_ftmodel._stack import SessionStack

FORMAT = 1


class CacheWarning(UserWarning):
    """A cache file could not be trusted and is being rebuilt."""


def _version() -> str:
    from pytest_ftmodel import __version__

    return __version__


def entry_key(fingerprint: str, prompt: str, settings: dict[str, Any]) -> str:
    payload = json.dumps(
        {"fingerprint": fingerprint, "prompt": prompt, "settings": settings, "version": _version(), "format": FORMAT},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class GenerationCache:
    """Cached generations under ``root``; counts its hits and misses."""

    root: Path
    hits: int = 0
    misses: int = 0
    rebuilt: int = 0
    _warned: set[str] = field(default_factory=set, repr=False)

    def _path(self, key: str) -> Path:
        return self.root / "generations" / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[str] | None:
        path = self._path(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:
            self._distrust(path, f"unreadable ({exc.strerror or exc})")
            return None
        try:
            data = json.loads(raw)
            ok = (
                isinstance(data, dict)
                and data.get("format") == FORMAT
                and data.get("key") == key
                and isinstance(data.get("outputs"), list)
                and all(isinstance(o, str) for o in data["outputs"])
            )
        except ValueError:
            ok = False
        if not ok:
            self._distrust(path, "corrupt or written for another key")
            return None
        self.hits += 1
        return list(data["outputs"])

    def _distrust(self, path: Path, why: str) -> None:
        self.misses += 1
        self.rebuilt += 1
        if str(path) not in self._warned:
            self._warned.add(str(path))
            warnings.warn(f"ignoring generation cache file {path}: {why}; it will be rebuilt", CacheWarning, stacklevel=4)

    def put(self, key: str, outputs: list[str]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(outputs)}.tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "key": key, "outputs": outputs}, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache only costs regeneration
            warnings.warn(f"cannot write generation cache under {self.root}: {exc.strerror or exc}", CacheWarning, stacklevel=3)

    def summary(self) -> str:
        extra = f", {self.rebuilt} untrusted file(s) rebuilt" if self.rebuilt else ""
        return f"generation cache: {self.hits} hits, {self.misses} misses{extra} ({self.root})"


_caches: SessionStack[GenerationCache | None] = SessionStack(None)


def active_cache() -> GenerationCache | None:
    """The cache of the running pytest session (None outside pytest or with --ftmodel-no-cache)."""
    return _caches.current()


def push_cache(cache: GenerationCache | None) -> GenerationCache | None:
    return _caches.push(cache)


def pop_cache(cache: GenerationCache | None) -> None:
    if _caches.current() is cache:
        _caches.pop()
