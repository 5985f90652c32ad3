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
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pytest_ftmodel import files
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
    "format": 1,  # JSON found and validated as metrics/form.py says, patterns, length
    "reference score": 1,  # SQuAD v1.1 normalisation; sacrebleu sentence scores (its signature is a setting)
    "length": 1,  # (length + 1) / (base length + 1), tokens by the fine-tuned model's tokenizer
}

#: settings that never change a number (batching, caching, parallelism; pass@k's "split-only"
#: judging refuses a problem instead of judging it another way), and ``samples``, which the helpers
#: add themselves only when above 1 (:func:`pytest_ftmodel.sampling.sampling_settings`)
NOT_SETTINGS = frozenset({"batch_size", "cache", "workers", "progress", "judging", "samples"})


class BaselineFileError(DataError):
    """The baseline file cannot be read."""

    #: non-empty when the file is broken (an update may replace it, keeping it aside): what is wrong, briefly
    broken: str = ""
    #: the sound entries of a broken file
    salvaged: dict[str, dict[str, Any]] = {}


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


def _model_of(record: Any) -> str:
    """The model an entry was recorded on, as a name other runs can tell apart from theirs: the tail of
    its checkpoint path (``full/final``, never the machine's absolute path), else its name."""
    from pytest_ftmodel.report.records import path_tail

    paths = tuple(getattr(record, "model_paths", ()) or ())
    if paths and paths[0] and not str(paths[0]).lower().startswith(("http://", "https://")):
        return path_tail(str(paths[0]))
    return str(record.model)


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
        "model": _model_of(record),
        "fingerprint": record.fingerprints[0] if record.fingerprints else "",
        "package_version": version,
    }
    return stable(entry)


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of the baseline file at ``path`` ({} when there is none), every one checked.

    A file that cannot be used raises :class:`BaselineFileError` with one line (what, where, the
    fix); when the file is broken (not JSON, not a baseline, a malformed entry) the error is
    ``broken`` and carries the entries that are sound (``salvaged``), which an update keeps."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # a folder on the way is a file: no such file either
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineFileError(
            f"baseline file {path} cannot be read ({getattr(exc, 'strerror', None) or exc}): fix its permissions or pass --ftmodel-baseline"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _broken(path, f"is not valid JSON (line {getattr(exc, 'lineno', '?')})", "not valid JSON") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise _broken(path, "is not a pytest-ftmodel baseline (no \"entries\" object)", "no \"entries\" object")
    version = data.get("format", FORMAT)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
        raise BaselineFileError(
            f"baseline file {path} was written by a newer pytest-ftmodel (format {version}; this version reads format {FORMAT}): "
            "upgrade pytest-ftmodel, or re-record it with this version (delete it, then run with --ftmodel-update-baseline)"
        )
    if version != FORMAT:
        raise _broken(path, f"has \"format\" {_shown_json(version)}, not a format this version reads ({FORMAT})", "bad \"format\"")
    problems = {key: problem for key, entry in entries.items() if (problem := entry_problem(key, entry))}
    if problems:
        first = next(iter(problems.values()))
        more = f" (and {len(problems) - 1} more bad entr{'y' if len(problems) == 2 else 'ies'})" if len(problems) > 1 else ""
        raise _broken(
            path, f"{first}{more}", f"{len(problems)} malformed entr{'y' if len(problems) == 1 else 'ies'}",
            salvaged={k: v for k, v in entries.items() if k not in problems}, sep=": ",
        )
    return entries


def _broken(path: Path, what: str, short: str, *, salvaged: dict[str, dict[str, Any]] | None = None, sep: str = " ") -> BaselineFileError:
    error = BaselineFileError(
        f"baseline file {path}{sep}{what}: restore it from version control, or "
        + ("re-record it" if salvaged is not None else "record a new one")
        + f" with --ftmodel-update-baseline (the broken file is kept as {path.name}{BROKEN})"
    )
    error.broken = short
    error.salvaged = salvaged or {}
    return error


#: the suffix of a broken baseline kept aside by an update
BROKEN = ".broken"

#: the entry's fields and their JSON types (a field may be absent)
_FIELDS: dict[str, tuple[str, ...]] = {
    "test": ("string",), "metric": ("string",), "unit": ("string",), "direction": ("string",), "compare_kind": ("string", "null"),
    "scoring_rule": ("string",), "data_hash": ("string",), "model": ("string",), "fingerprint": ("string",),
    "package_version": ("string",), "value": ("number", "null"), "n": ("number", "null"), "interval": ("list", "null"),
    "settings": ("object", "null"), "items": ("object",),
}


def _type_of(value: Any) -> str:
    """The JSON type of ``value``: object, list, string, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__


def _article(kind: str) -> str:
    return kind if kind == "null" else ("an " if kind[0] in "aeiou" else "a ") + kind


def _shown_json(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=True, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def finite(value: Any) -> bool:
    """A finite JSON number (not a boolean, not NaN or infinite)."""
    return _type_of(value) == "number" and math.isfinite(value)


def entry_problem(key: str, entry: Any) -> str:
    """What is wrong with the entry ``key`` ("" when nothing): its fields' JSON types and its items'
    values (a number; ``[NLL, tokens]`` for perplexity), so that nothing later trips over them."""
    name = f"entry {json.dumps(key, ensure_ascii=True)}"
    if not isinstance(entry, dict):
        return f"{name} is {_article(_type_of(entry))}, not an object"
    for field, kinds in _FIELDS.items():
        if field in entry and _type_of(entry[field]) not in kinds:
            return f"{name} has {json.dumps(field)} {_shown_json(entry[field])} ({_article(_type_of(entry[field]))}, not {_article(kinds[0])})"
    interval = entry.get("interval")
    if isinstance(interval, list) and (len(interval) != 2 or not all(v is None or _type_of(v) == "number" for v in interval)):
        return f"{name} has \"interval\" {_shown_json(interval)} (not [low, high], two numbers)"
    perplexity = entry.get("compare_kind") == "perplexity"
    for item_id, item in (entry.get("items") or {}).items():
        shown = json.dumps(item_id, ensure_ascii=True)
        if not isinstance(item, dict):
            return f"{name} has item {shown} that is {_article(_type_of(item))}, not an object"
        if "value" not in item:
            return f"{name} has item {shown} with no \"value\""
        value = item["value"]
        if perplexity:
            if not (isinstance(value, list) and len(value) == 2 and all(finite(v) for v in value)):
                return f"{name} has item {shown} whose \"value\" is {_shown_json(value)} (not [NLL, tokens], two numbers)"
        elif not finite(value):
            return f"{name} has item {shown} whose \"value\" is {_shown_json(value)} ({_article(_type_of(value))}, not a number)"
        for text in ("prompt", "expected", "answer", "text"):
            if text in item and not isinstance(item[text], str):
                return f"{name} has item {shown} whose {json.dumps(text)} is {_article(_type_of(item[text]))}, not a string"
    return ""


def dumps(entries: Mapping[str, Any]) -> str:
    """The file's text: sorted keys, one-space indent, a final newline; same entries, same bytes."""
    return json.dumps({"format": FORMAT, "entries": stable(dict(entries))}, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write(path: Path, entries: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file beside ``path`` replaces it (see :mod:`pytest_ftmodel.files`)."""
    files.write_atomic(path, dumps(entries), mode=_mode_of(path))  # mkstemp's 0600 would hide a committed file from the team


def _mode_of(path: Path) -> int:
    """The existing file's permissions, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def test_of(key: str, entry: Mapping[str, Any]) -> str:
    """The test an entry belongs to: its ``test`` field, else its key less the metric."""
    test = entry.get("test")
    return test if isinstance(test, str) and test else key.rsplit("::", 1)[0]


def file_of(test: str) -> str:
    """The test file of a test's name in the file (``"suite/test_a.py::test_x[1]"`` -> ``"suite/test_a.py"``)."""
    return test.split("::", 1)[0]


def unused_entries(
    entries: Mapping[str, Mapping[str, Any]],
    produced: Iterable[str],
    passed: Iterable[str],
    known: Iterable[str],
    *,
    whole_files: Iterable[str] = (),
    folder: Path | None = None,
) -> dict[str, str]:
    """Entries no test produced in this run, among those the run can speak for, each with why:

    - its test ran (and passed) without producing it;
    - its test file, relative to ``folder`` (the baseline file's), no longer exists;
    - its file is among ``whole_files`` (collected with no selection inside it: no node id, ``-k``,
      ``-m``, ``--deselect`` or ``--lf`` narrowed it) and has no such test any more.

    Entries of tests that did not run are neither reported nor removed (syrupy's rule)."""
    made, ok, seen, whole = set(produced), set(passed), set(known), set(whole_files)
    gone: dict[str, bool] = {}
    unused = {}
    for key, entry in entries.items():
        if key in made:
            continue
        test = test_of(key, entry)
        file = file_of(test)
        if folder is not None and file not in gone:
            gone[file] = not (folder / file).is_file()
        if gone.get(file):
            unused[key] = f"test file {file} is gone"
        elif test in ok:
            unused[key] = "its test ran without it"
        elif file in whole and test not in seen:
            unused[key] = f"no such test in {file} now"
    return dict(sorted(unused.items()))


def keep_aside(path: Path) -> Path:
    """Copy ``path`` to ``<name>.broken`` (``.broken.2``, ... when taken) beside it; the copy's path."""
    target = path.with_name(path.name + BROKEN)
    count = 1
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}{BROKEN}.{count}")
    files.write_atomic(target, path.read_bytes(), mode=_mode_of(path))  # a link planted at the name is replaced, not written through
    return target
