"""The baseline file: one entry per test and metric, with per-item values, as deterministic JSON.

An entry is written from a :class:`~pytest_ftmodel.report.records.MetricRecord` (the record's items
carry content-hash ids, see :func:`~pytest_ftmodel.report.records.item_ids`). The file is meant to
be committed and read in review: keys are sorted, floats rounded to 12 significant digits, one
entry per ``"<test node id>::<metric>"`` key, and writing the same results twice gives the same
bytes. Writes go to a temporary file that replaces the old one (``os.replace``), so a reader never
sees half a file. Standard library only: the plugin imports this at start-up.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pytest_ftmodel.errors import DataError

#: the file's own layout
FORMAT = 1

#: texts kept per item in the file: enough to show "before" in a diagnosis, small enough to diff
TEXT_CHARS = 200

#: version of the rule that turns a model's outputs into each kind of figure; a baseline written
#: under another version of a rule is not compared (bump when a change moves the numbers)
SCORING_RULES: dict[str, int] = {
    "per-text NLL": 1,  # perplexity, perplexity improvement, loss gap (see metrics/perplexity.py)
    "per-item score": 1,  # ROUGE F-measures (rouge-score, stemmed by default)
    "classification": 1,  # label read from the answer (metrics/text.py extract_label)
    "pass@k": 1,  # unbiased pass@k estimator, sandbox verdicts
    "human": 1,  # mean over an item's complete reviews
    "A/B": 1,  # verdicts counted per item
}

#: settings that never change a number (batching, caching, parallelism)
NOT_SETTINGS = frozenset({"batch_size", "cache", "workers", "progress"})


class BaselineFileError(DataError):
    """The baseline file cannot be read."""


def scoring_rule(kind: str) -> str:
    return f"{kind}/{SCORING_RULES.get(kind, 1)}"


def effective_settings(given: Mapping[str, Any], *funcs: Callable[..., Any], **extra: Any) -> dict[str, Any]:
    """The settings a figure was computed under: ``given`` over the defaults of ``funcs`` (the first
    function's default wins, e.g. rouge()'s ``max_new_tokens=128`` over generate()'s), so that
    leaving a default out and writing it out read the same. ``extra`` adds derived settings."""
    out: dict[str, Any] = {}
    for func in funcs:
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.default is not inspect.Parameter.empty and p.name not in out and p.name not in NOT_SETTINGS:
                out[p.name] = p.default
    out.update({k: v for k, v in given.items() if k not in NOT_SETTINGS})
    out.update(extra)
    return stable(out)


def stable(value: Any) -> Any:
    """``value`` as JSON data with floats rounded to 12 significant digits (so that the last bits of a
    sum, which vary with summation order, do not change the file) and tuples as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        rounded = float(f"{value:.12g}")
        return 0.0 if rounded == 0 else rounded
    if isinstance(value, Mapping):
        return {str(k): stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [stable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return stable(float(value))  # numpy scalars
    except (TypeError, ValueError):
        return str(value)


def _cut(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def compare_value(kind: str, item: Mapping[str, Any]) -> Any:
    """An item's value as :func:`~pytest_ftmodel.baseline.compare.compare` takes it for ``kind``."""
    if kind == "perplexity":
        nll = item.get("nll")
        if nll is None:
            nll = float(item["value"]) * int(item["n_tokens"])
        return [float(nll), int(item["n_tokens"])]
    return float(item.get("compare", item["value"]))


def entry_keys(records: Iterable[Any], test_key: Callable[[str], str] = str) -> list[str]:
    """The entry key of each record: ``"<test>::<metric>"``, then ``#2``, ``#3`` for a test that judges
    the same metric more than once (in the order it judged them). ``test_key`` turns a node id into
    the test's name in the file (see :func:`relative_test`)."""
    seen: dict[tuple[str, str], int] = {}
    keys = []
    for r in records:
        count = seen.get((r.test, r.name), 0) + 1
        seen[(r.test, r.name)] = count
        keys.append(f"{test_key(r.test)}::{r.name}" + (f"#{count}" if count > 1 else ""))
    return keys


def relative_test(nodeid: str, rootdir: Path, folder: Path) -> str:
    """A test's node id with its file relative to ``folder`` (the baseline file's) instead of pytest's
    rootdir, so that the keys stay the same whichever rootdir pytest picks (it moves with the paths
    given on the command line when there is no ini file)."""
    file, sep, rest = nodeid.partition("::")
    try:
        rel = os.path.relpath(os.path.abspath(rootdir / file), os.path.abspath(folder))
    except ValueError:  # another drive (Windows)
        return nodeid
    return rel.replace(os.sep, "/") + sep + rest


def entry_of(record: Any, *, version: str, test: str | None = None) -> dict[str, Any]:
    """A record as a baseline entry (JSON data, floats as :func:`stable` writes them)."""
    details = record.details or {}
    kind = details.get("compare_kind")
    items: dict[str, Any] = {}
    if kind:
        for it in record.items:
            if "id" not in it:
                continue
            shown = {k: _cut(it[k]) for k in ("prompt", "expected", "answer", "text") if it.get(k)}
            items[str(it["id"])] = {"value": compare_value(kind, it), **shown}
    data_hash = hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16] if items else ""
    entry = {
        "test": record.test if test is None else test,
        "metric": record.name,
        "value": record.value,
        "n": record.n,
        "unit": record.unit,
        "interval": list(record.interval) if record.interval is not None else None,
        "direction": "higher" if record.op == ">=" else "lower",
        "compare_kind": kind,
        "scoring_rule": scoring_rule(str(details.get("kind", ""))),
        "settings": record.settings,
        "items": items,
        "data_hash": data_hash,
        "model": str(record.model),
        "fingerprint": record.fingerprints[0] if record.fingerprints else "",
        "package_version": version,
    }
    return stable(entry)


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of the baseline file at ``path`` ({} when there is none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BaselineFileError(f"baseline file {path} cannot be read ({exc.strerror}): fix its permissions or pass --ftmodel-baseline") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BaselineFileError(
            f"baseline file {path} is not valid JSON (line {getattr(exc, 'lineno', '?')}): restore it from version control "
            "or write it again with --ftmodel-update-baseline"
        ) from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise BaselineFileError(
            f"baseline file {path} is not a pytest-ftmodel baseline (no \"entries\" object): pass another file "
            "with --ftmodel-baseline, or write it again with --ftmodel-update-baseline"
        )
    return entries


def dumps(entries: Mapping[str, Any]) -> str:
    """The file's text: sorted keys, one-space indent, a final newline; same entries, same bytes."""
    return json.dumps({"format": FORMAT, "entries": stable(dict(entries))}, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write(path: Path, entries: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file beside ``path`` replaces it."""
    text = dumps(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, _mode_of(path))  # mkstemp's 0600 would hide a committed file from the team
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _mode_of(path: Path) -> int:
    """The existing file's permissions, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def unused_entries(
    entries: Mapping[str, Mapping[str, Any]], produced: Iterable[str], passed: Iterable[str], known: Iterable[str]
) -> list[str]:
    """Keys of entries no test produced in this run, among those the run can speak for (as syrupy
    does): the entry's test ran and passed without producing it, or its test file was collected
    and no longer has that test. Entries of tests not selected are neither reported nor removed."""
    made, ok, seen = set(produced), set(passed), set(known)
    files = {t.split("::", 1)[0] for t in seen}
    unused = []
    for key, entry in entries.items():
        test = str(entry.get("test") or key.rsplit("::", 1)[0])
        if key in made:
            continue
        if test in ok or (test not in seen and test.split("::", 1)[0] in files):
            unused.append(key)
    return sorted(unused)
