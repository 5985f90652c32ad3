"""What every engine shares: loading a tokenizer, hashing files for fingerprints, the cache folder,
and quieting transformers. Engines (and model.py, which builds models on them) import it; it imports
none of them, so no engine reaches into another's private names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from pytest_ftmodel.errors import ModelLoadError

class TruncationWarning(UserWarning):
    """Some prompts were cut from the left to fit the model's context."""


#: files that hold a tokenizer's vocabulary (transformers' fast, sentencepiece, GPT-2, BERT and
#: tiktoken forms); tokenizer_config.json alone is settings without a vocabulary
_VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "spiece.model")
_VOCABULARY_SUFFIXES = (".tiktoken", ".model")
#: tokenizer files that enter the fingerprint of a model whose tokenizer comes from another folder
TOKENIZER_FILES = (
    *_VOCABULARY_FILES, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json",
)


def has_tokenizer_files(path: str | os.PathLike[str]) -> bool:
    """Whether the folder holds a tokenizer's vocabulary (looks at file names only)."""
    try:
        names = [f.name for f in Path(path).iterdir() if f.is_file()]
    except OSError:
        return False
    return any(n in _VOCABULARY_FILES or n.endswith(_VOCABULARY_SUFFIXES) for n in names)


def cache_root() -> Path:
    """Where pytest-ftmodel keeps caches that outlive a run (fingerprints, demo models)."""
    env = os.environ.get("PYTEST_FTMODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-ftmodel"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remembered_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered on disk keyed by (path, size, mtime, inode).

    Multi-GB weights are read once; later runs only ``stat`` them. A stale or unreadable memo is
    simply recomputed. A memo, or a memo folder, that another user could have written is not
    believed (its stamp is easy to copy, its hash anything they like): the weights are hashed afresh,
    with a warning, and nothing is written there.
    """
    from pytest_ftmodel import files

    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    memo_dir = cache_root() / "fingerprints"
    memo = memo_dir / (hashlib.sha1(str(path.resolve()).encode()).hexdigest() + ".json")
    why = files.untrusted(memo_dir)
    if not why:
        try:
            saved = json.loads(files.read_trusted(memo))
            if isinstance(saved, dict) and saved.get("stamp") == stamp and isinstance(saved.get("sha256"), str):
                return str(saved["sha256"])
        except files.Untrusted as exc:
            _distrust_memo(f"{memo} is {exc}")
        except (OSError, ValueError):
            pass
    else:
        _distrust_memo(why)
    digest = file_sha256(path)
    if not why:
        try:
            files.write_atomic(memo, json.dumps({"stamp": stamp, "sha256": digest}))
        except OSError:
            pass  # a read-only home directory only costs a re-hash next time
    return digest


_memo_warned: set[str] = set()


def _distrust_memo(why: str) -> None:
    """Say once per reason that remembered fingerprints are not used."""
    if why not in _memo_warned:
        _memo_warned.add(why)
        import warnings

        from pytest_ftmodel.cache import CacheWarning

        warnings.warn(
            f"ignoring remembered fingerprints: {why}, so another user could have written them; the weights are hashed afresh",
            CacheWarning, stacklevel=4,
        )


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and info logs inside the block, then restore them."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)


def load_tokenizer(path: Path, fallback: Path | None = None) -> Any:
    from transformers import AutoTokenizer

    source = path
    if fallback is not None and not has_tokenizer_files(path):
        source = fallback
    try:
        tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure becomes one line
        raise ModelLoadError(f"tokenizer in {str(source)!r} failed to load: {one_line(exc)}") from exc
    if tok.pad_token_id is None:
        # Batching needs a pad id; attention masks make its value irrelevant. Only the in-memory
        # tokenizer changes, never the user's files.
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            tok.pad_token = tok.convert_ids_to_tokens(0)
    return tok
