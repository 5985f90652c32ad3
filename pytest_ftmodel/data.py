"""Loading evaluation data from the files users already have (JSONL, one record per line)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from pytest_ftmodel.errors import DataError


def load_jsonl(path: str | os.PathLike[str], *, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts; every record must have the ``required`` keys.

    Blank lines are skipped. A malformed line raises :class:`DataError` naming the file, the line
    number and what is wrong.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read data file {str(p)!r}: {exc.strerror or exc}") from None
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{p}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
        missing = [k for k in required if k not in record]
        if missing:
            raise DataError(
                f"{p}:{lineno}: missing field(s) {', '.join(map(repr, missing))}; present: {', '.join(map(repr, record)) or 'none'}"
            )
        records.append(record)
    if not records:
        raise DataError(f"data file {str(p)!r} holds no records")
    return records


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> Path:
    from pytest_ftmodel.files import write_atomic

    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def text_of(item: Any, *, key: str = "text", also: Sequence[str] = ()) -> str | None:
    """The text an item holds, or None: the item itself when a string, else its ``key`` field, else
    ``"instruction\noutput"`` for an instruction record, else the first of the ``also`` fields."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if isinstance(item.get(key), str):
            return str(item[key])
        if isinstance(item.get("instruction"), str) and isinstance(item.get("output"), str):
            return f"{item['instruction']}\n{item['output']}"
        for field in also:
            if isinstance(item.get(field), str):
                return str(item[field])
    return None


def texts_of(data: Sequence[Any], *, key: str = "text") -> list[str]:
    """Plain texts from a list of strings, or of records with a ``key`` field.

    Instruction records (``instruction`` + ``output``) become ``"instruction\noutput"``.
    """
    texts: list[str] = []
    for i, item in enumerate(data):
        text = text_of(item, key=key)
        if text is None:
            shape = f"keys {sorted(item)}" if isinstance(item, dict) else type(item).__name__
            raise DataError(
                f"item {i} is not text: expected a string, a record with {key!r}, or instruction/output ({shape} given)"
            )
        texts.append(text)
    return texts


def require_keys(data: Sequence[Any], keys: Sequence[str], *, what: str = "data") -> list[dict[str, Any]]:
    """Check that ``data`` is a non-empty list of records that all have ``keys``; return it as a list."""
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise DataError(f"{what} must be a list of records (dicts), got {type(data).__name__}")
    items = list(data)
    if not items:
        raise DataError(f"{what} is empty: a gate needs at least one item")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{what} item {i} is {type(item).__name__}, not a record (dict) with {', '.join(map(repr, keys))}")
        missing = [k for k in keys if k not in item]
        if missing:
            present = ", ".join(map(repr, item)) or "none"
            raise DataError(
                f"{what} item {i} lacks {', '.join(map(repr, missing))} (keys present: {present}); "
                "name the right key with prompt_key=/reference_key=/label_key="
            )
    return items


def require_strings(items: Sequence[Any], noun: str, purpose: str, *, pairs: bool = False) -> list[Any]:
    """A non-empty list of strings (or, with ``pairs``, of ``(str, str)`` tuples), else a DataError
    that names the offending item: ``noun`` is what one item is called ("text", "prompt")."""
    if isinstance(items, str):
        raise DataError(f"{noun}s is a single string: pass a list of strings, e.g. [{noun}]")
    items = list(items)
    if not items:
        raise DataError(f"no {noun}s {purpose}: pass a non-empty list of strings")
    for i, item in enumerate(items):
        pair = pairs and isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, str) for t in item)
        if not (isinstance(item, str) or pair):
            hint = " (records: use texts_of(data)) or (context, continuation) pairs" if pairs else ""
            raise DataError(f"{noun} {i} is {type(item).__name__}, not str: pass plain strings{hint}")
    return items
