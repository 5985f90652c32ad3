"""On-disk store of generated answers, per-item scores and metric results, keyed by model fingerprint + item + every setting.

One small JSON file per entry, written to a temporary name and renamed into place, so several
pytest-xdist workers (or CI jobs sharing a directory) can write at once without losing or tearing an
entry. A file that is corrupt, or that belongs to another key or format, is never trusted: it is
ignored with a warning, and the entry is generated again and rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pytest_ftmodel import files
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
class _Store:
    """One JSON file per entry under ``root/<folder>``; counts hits, misses and untrusted files."""

    root: Path
    hits: int = 0
    misses: int = 0
    rebuilt: int = 0
    _warned: set[str] = field(default_factory=set, repr=False)

    folder = "entries"
    what = "cache"

    def _path(self, key: str) -> Path:
        return self.root / self.folder / key[:2] / f"{key}.json"

    def _read(self, key: str, field_: str, valid: Callable[[Any], bool]) -> Any:
        path = self._path(key)
        try:
            raw = files.read_trusted(path)
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:
            self._distrust(path, f"unreadable ({exc.strerror or exc})")
            return None
        except (files.Untrusted, UnicodeDecodeError) as exc:  # another user's answers are not ours to serve
            self._distrust(path, str(exc))
            return None
        try:
            data = json.loads(raw)
            ok = isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == key and valid(data.get(field_))
        except ValueError:
            ok = False
        if not ok:
            self._distrust(path, "corrupt or written for another key")
            return None
        self.hits += 1
        return data[field_]

    def _distrust(self, path: Path, why: str) -> None:
        self.misses += 1
        self.rebuilt += 1
        if str(path) not in self._warned:
            self._warned.add(str(path))
            warnings.warn(f"ignoring {self.what} file {path}: {why}; it will be rebuilt", CacheWarning, stacklevel=5)

    def _write(self, key: str, field_: str, value: Any) -> None:
        path = self._path(key)
        try:
            files.write_atomic(path, json.dumps({"format": FORMAT, "key": key, field_: value}, ensure_ascii=False))
        except OSError as exc:  # a read-only cache only costs recomputation
            warnings.warn(f"cannot write {self.what} under {self.root}: {exc.strerror or exc}", CacheWarning, stacklevel=4)

    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "rebuilt": self.rebuilt}

    def add_counts(self, counts: dict[str, int]) -> None:
        self.hits += counts.get("hits", 0)
        self.misses += counts.get("misses", 0)
        self.rebuilt += counts.get("rebuilt", 0)

    def summary(self) -> str:
        extra = f", {self.rebuilt} untrusted file(s) rebuilt" if self.rebuilt else ""
        return f"{self.what}: {self.hits} hits, {self.misses} misses{extra} ({self.root})"


def _is_score(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("nll"), float)
        and all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool) for k in ("n_tokens", "n_bytes", "n_words"))
        and isinstance(value.get("text"), str)
    )


@dataclass
class ScoreCache(_Store):
    """Cached per-item scores (summed NLL, token count, the scored text) under ``root/scores``."""

    folder = "scores"
    what = "score cache"

    def get(self, key: str) -> dict[str, Any] | None:
        found = self._read(key, "score", _is_score)
        return dict(found) if found is not None else None

    def put(self, key: str, score: dict[str, Any]) -> None:
        self._write(key, "score", score)


def _is_metric(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


@dataclass
class MetricCache(_Store):
    """Cached results of metric libraries on given texts (rouge-score's per-pair F-measures,
    scikit-learn's classification scores) under ``root/metrics``, keyed by the inputs and the
    library's version: a warm run does not import those libraries (most of a second each)."""

    folder = "metrics"
    what = "metric cache"

    @staticmethod
    def key(metric: str, library: str, inputs: dict[str, Any]) -> str:
        payload = json.dumps(
            {"metric": metric, "library": library_version(library), "inputs": inputs, "version": _version(), "format": FORMAT},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str, valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        found = self._read(key, "result", lambda v: _is_metric(v) and valid(v))
        return dict(found) if found is not None else None

    def put(self, key: str, result: dict[str, Any]) -> None:
        self._write(key, "result", result)


@functools.lru_cache(maxsize=None)
def library_version(distribution: str) -> str:
    """The installed version of ``distribution`` (read from its metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def active_metric_cache() -> MetricCache | None:
    cache = active_cache()
    return cache.metrics if cache is not None else None


def _is_judged(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("repeats"), list)
        and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 5) for v in value["repeats"])
        and isinstance(value.get("reasoning"), list)
        and all(isinstance(r, str) for r in value["reasoning"])
        and len(value["reasoning"]) == len(value["repeats"])
    )


@dataclass
class JudgeCache(_Store):
    """Cached rubric-judge scores (one per repeat, with the judge's reasoning) under ``root/judges``,
    keyed by the judge's fingerprint, the whole judge prompt (rubric, request, reference, answer), the
    scoring rule, the cue and the sampling settings: a warm run makes no judge call."""

    folder = "judges"
    what = "judge cache"

    def get(self, key: str) -> dict[str, Any] | None:
        found = self._read(key, "judged", _is_judged)
        return dict(found) if found is not None else None

    def put(self, key: str, judged: dict[str, Any]) -> None:
        self._write(key, "judged", judged)


@dataclass
class GenerationCache(_Store):
    """Cached generations under ``root``; counts its hits and misses. Its :attr:`scores` are the
    per-item scores cached beside them, and it remembers which models loaded (see
    :func:`~pytest_ftmodel.model.load_or_defer`)."""

    scores: ScoreCache = field(init=False, repr=False)
    metrics: MetricCache = field(init=False, repr=False)
    judges: JudgeCache = field(init=False, repr=False)

    folder = "generations"
    what = "generation cache"

    def __post_init__(self) -> None:
        self.scores = ScoreCache(self.root)
        self.metrics = MetricCache(self.root)
        self.judges = JudgeCache(self.root)

    def get(self, key: str) -> list[str] | None:
        found = self._read(key, "outputs", lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v))
        return list(found) if found is not None else None

    def put(self, key: str, outputs: list[str]) -> None:
        self._write(key, "outputs", outputs)

    def recall_load(self, key: str) -> dict[str, str] | None:
        """What a model that loaded earlier under ``key`` gave (device, dtype), or None. A missing or
        unreadable record only means loading the model now."""
        try:
            data = json.loads(files.read_trusted(self.root / "models" / f"{key}.json"))
        except (OSError, ValueError, files.Untrusted):
            return None
        if isinstance(data, dict) and data.get("key") == key and isinstance(data.get("device"), str) and isinstance(data.get("dtype"), str):
            return {"device": data["device"], "dtype": data["dtype"]}
        return None

    def remember_load(self, key: str, info: dict[str, str]) -> None:
        path = self.root / "models" / f"{key}.json"
        try:
            files.write_atomic(path, json.dumps({"key": key, **info}))
        except OSError:
            pass  # not remembered: the next run loads the model again


def distrust(root: Path) -> str:
    """Why the cache folder ``root`` must not be used (one line), or "" when it may: a folder that
    another user owns or can write (it or a folder above it) could hold answers and scores they wrote."""
    why = files.untrusted(root)
    if not why:
        return ""
    return (
        f"not using the cache {root}: {why}, so another user could plant answers and scores in it; "
        "this run computes everything afresh (give --ftmodel-cache-dir a folder only you can write)"
    )


_caches: SessionStack[GenerationCache | None] = SessionStack(None)


def active_cache() -> GenerationCache | None:
    """The cache of the running pytest session (None outside pytest or with --ftmodel-no-cache)."""
    return _caches.current()


def resolve_cache(cache: Any) -> Any:
    """What a function's ``cache=`` argument names: ``"auto"`` the running session's cache (see
    :func:`active_cache`), None or a cache object itself; any other word is one clear error."""
    if isinstance(cache, str):
        if cache != "auto":
            raise ValueError(f"cache={cache!r}: pass 'auto', None or a GenerationCache")
        return active_cache()
    return cache


def push_cache(cache: GenerationCache | None) -> GenerationCache | None:
    return _caches.push(cache)


def pop_cache(cache: GenerationCache | None) -> None:
    if _caches.current() is cache:
        _caches.pop()
