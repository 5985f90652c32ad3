"""Load a fine-tuned checkpoint (or a PEFT adapter on its base) into an :class:`FTModel`.

Nothing here imports torch or transformers at module level: the checks that run at pytest start-up
(:func:`check_model_path`, :func:`parse_device`, :func:`parse_dtype`) are plain Python, and the heavy
imports happen inside :func:`load_model`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union

from pytest_ftmodel.engines.common import (  # noqa: F401 - names model.py has always offered
    TOKENIZER_FILES,
    cache_root,
    has_tokenizer_files,
    load_tokenizer as _load_tokenizer,
    one_line as _one_line,
    quiet_transformers,
    remembered_sha256 as _remembered_sha256,
)
from pytest_ftmodel.errors import ModelLoadError, ModelPathError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MAX_MEMORY_EXAMPLE = "0=20GiB,1=20GiB,cpu=64GiB"
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")}, **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")}}
#: per-device memory budgets for spreading a model: GPU index or "cpu" / "mps" -> bytes
MaxMemory = Mapping[Union[int, str], int]

# Files a Trainer checkpoint holds that do not change what the model computes.
_TRAINING_ONLY = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|README\.md)$"
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def parse_device(value: str) -> str:
    """Return ``value`` normalised, or raise :class:`ModelPathError` naming the accepted forms."""
    device = str(value).strip().lower()
    if not _DEVICE_RE.match(device):
        raise ModelPathError(f"unknown model device {value!r}: use one of {DEVICE_CHOICES}")
    return device


def parse_max_memory(value: str) -> dict[int | str, int]:
    """``"0=20GiB,1=20GiB,cpu=64GiB"`` -> ``{0: bytes, 1: bytes, "cpu": bytes}``; a bad piece raises
    :class:`ModelPathError` naming it. Units: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB."""
    budgets: dict[int | str, int] = {}
    for piece in str(value).split(","):
        key, sep, size = (part.strip() for part in piece.partition("="))
        what = f"model max memory {value!r}: {piece.strip()!r}"
        fix = f"write DEVICE=SIZE pairs such as {MAX_MEMORY_EXAMPLE} (DEVICE: a GPU index, cpu or mps)"
        if not sep or not key or not size:
            raise ModelPathError(f"{what} is not DEVICE=SIZE: {fix}")
        device: int | str = int(key) if key.isdigit() else key.lower()
        if isinstance(device, str) and device not in ("cpu", "mps"):
            raise ModelPathError(f"{what} names no device: {fix}")
        if device in budgets:
            raise ModelPathError(f"{what} repeats device {key!r}: give each device once, as in {MAX_MEMORY_EXAMPLE}")
        m = _SIZE_RE.match(size)
        if not m:
            raise ModelPathError(f"{what} has no readable size: {fix} (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        budgets[device] = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    return budgets


def check_max_memory(value: str) -> str:
    """``value`` stripped, once :func:`parse_max_memory` accepts it (the option keeps the plain string)."""
    parse_max_memory(value)
    return str(value).strip()


def check_placement(device: str, max_memory: str | MaxMemory | None) -> dict[int | str, int] | None:
    """The memory budgets, parsed; budgets spread a model, so they go with ``auto`` only."""
    if max_memory is None or max_memory == "":
        return None
    budgets = parse_max_memory(max_memory) if isinstance(max_memory, str) else dict(max_memory)
    if parse_device(device) != "auto":
        raise ModelPathError(
            f"model max memory {max_memory!r} spreads a model over devices, and model device {device!r} names one: "
            "use --model-device auto with --model-max-memory, or drop --model-max-memory"
        )
    return budgets


def parse_dtype(value: str) -> str:
    dtype = str(value).strip().lower()
    if dtype not in DTYPE_CHOICES:
        raise ModelPathError(f"unknown model dtype {value!r}: use one of {' | '.join(DTYPE_CHOICES)}")
    return dtype


def check_model_path(path: str | os.PathLike[str], *, what: str = "model") -> str:
    """Cheaply check that ``path`` holds a model; return ``"checkpoint"`` or ``"adapter"``.

    Reads no weights, so it is safe to call at pytest start-up.
    """
    p = Path(path)
    if not p.exists():
        raise ModelPathError(f"{what} path {str(p)!r} does not exist: pass a checkpoint directory")
    if not p.is_dir():
        raise ModelPathError(
            f"{what} path {str(p)!r} is a file: pass the checkpoint directory that contains config.json"
        )
    if (p / "adapter_config.json").is_file():
        return "adapter"
    if (p / "config.json").is_file():
        return "checkpoint"
    raise ModelPathError(
        f"{what} path {str(p)!r} holds no model: looked for config.json (transformers checkpoint) "
        "or adapter_config.json (PEFT adapter)"
    )


def _no_tokenizer(folder: Path, point: str, also: str = "") -> ModelPathError:
    return ModelPathError(
        f"no tokenizer files in {str(folder)!r}{also} (looked for tokenizer.json, tokenizer.model, vocab.json, "
        f"merges.txt, vocab.txt, *.tiktoken): save the tokenizer with the model (pass processing_class=tokenizer "
        f"to the Trainer before trainer.save_model(), or run tokenizer.save_pretrained({str(folder)!r})), or point "
        f"at a folder that has it with {point}"
    )


def _local_adapter_base(path: Path, base: str | os.PathLike[str] | None) -> Path | None:
    """The base folder an adapter will load on, read from its config without loading anything; None
    when it is not known yet (the load names what is missing)."""
    try:
        named = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    if named and Path(named).is_dir():
        return Path(named)
    return Path(base) if base is not None and Path(base).is_dir() else None


def check_tokenizer(
    path: str | os.PathLike[str],
    *,
    kind: str,
    base: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    point: str = "--tokenizer PATH",
) -> None:
    """Cheaply check that a model has a tokenizer to load: in ``tokenizer`` when given, else in the
    checkpoint, else (an adapter) in its base. Looks at file names only, so it is safe at pytest
    start-up; without it every test fails on transformers' guess ("install sentencepiece or tiktoken")."""
    if tokenizer is not None:
        folder = Path(tokenizer)
        if not folder.is_dir():
            raise ModelPathError(f"tokenizer path {str(folder)!r} is not a directory: pass the folder that holds tokenizer.json ({point})")
        if not has_tokenizer_files(folder):
            raise _no_tokenizer(folder, point)
        return
    root = Path(path)
    if has_tokenizer_files(root):
        return
    if kind == "adapter":
        base_path = _local_adapter_base(root, base)
        if base_path is None or has_tokenizer_files(base_path):
            return
        raise _no_tokenizer(root, point, also=f" nor in its base model {str(base_path)!r}")
    raise _no_tokenizer(root, point)


def tokenizer_fingerprint(path: str | os.PathLike[str]) -> str:
    """A content hash of the tokenizer files in ``path`` (weights beside them are not read)."""
    digest = hashlib.sha256(b"tokenizer\0")
    for name in TOKENIZER_FILES:
        f = Path(path) / name
        if f.is_file():
            digest.update(name.encode() + b"\0" + _remembered_sha256(f).encode() + b"\n")
    for f in sorted(Path(path).glob("*.tiktoken")):
        digest.update(f.name.encode() + b"\0" + _remembered_sha256(f).encode() + b"\n")
    return digest.hexdigest()[:16]


def model_files(path: str | os.PathLike[str]) -> list[Path]:
    """The top-level files of a checkpoint that determine what it computes, sorted."""
    root = Path(path)
    return sorted(
        f
        for f in root.iterdir()
        if f.is_file() and not f.name.startswith(".") and not _TRAINING_ONLY.match(f.name)
    )


def fingerprint(path: str | os.PathLike[str], *, extra: str = "") -> str:
    """A content hash of the checkpoint's weights, tokenizer and config files.

    It changes whenever any of them changes; the per-file hashes are remembered by size and mtime
    so that unchanged multi-GB files are not re-read on every run.
    """
    digest = hashlib.sha256(extra.encode())
    for f in model_files(path):
        digest.update(f.name.encode() + b"\0" + _remembered_sha256(f).encode() + b"\n")
    return digest.hexdigest()[:16]


class FTModel:
    """A loaded model with what evaluation needs to know about it.

    ``model`` and ``tokenizer`` may also be loaded on first use (:meth:`deferred`): the pytest
    fixtures do so when this exact checkpoint loaded before under the same settings, so that a run
    whose scores and answers all come from the cache never loads the weights, nor transformers.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        path: str | os.PathLike[str] = ".",
        device: str = "cpu",
        dtype: str = "float32",
        fingerprint: str = "",
        kind: str = "checkpoint",
        base_path: Path | None = None,
        memo: dict[Any, Any] | None = None,
        *,
        loader: Callable[[], FTModel] | None = None,
        device_map: dict[str, Any] | None = None,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.path = Path(path)
        self.device = device
        self.dtype = dtype
        self.fingerprint = fingerprint
        self.kind = kind
        self.base_path = base_path
        #: results computed for this model during the session, keyed by the request (see metrics)
        self.memo: dict[Any, Any] = {} if memo is None else memo
        self._loader = loader
        self._load_error: ModelLoadError | None = None
        #: where each module lives when the model is spread over devices (accelerate's map), else None;
        #: ``device`` is then the device of the input embeddings, where inputs go
        self.device_map = device_map

    @classmethod
    def deferred(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str,
        dtype: str,
        fingerprint: str,
        kind: str,
        base_path: Path | None,
        loader: Callable[[], FTModel],
    ) -> FTModel:
        """A model that calls ``loader`` on first use of ``model``, ``tokenizer`` or ``context_length``.

        ``device`` and ``dtype`` are those the loader is expected to give; the loaded model must have
        ``fingerprint``, else the files changed under the run and using it is refused."""
        return cls(None, None, path, device, dtype, fingerprint, kind, base_path, loader=loader)

    @property
    def loaded(self) -> bool:
        """Whether the weights and tokenizer are in memory."""
        return self._loader is None

    def _load(self) -> None:
        if self._load_error is not None:  # never retried: every user sees the same first error
            raise self._load_error
        assert self._loader is not None
        try:
            real = self._loader()
            if real.fingerprint != self.fingerprint:
                raise ModelLoadError(
                    f"the files of {str(self.path)!r} changed during the run (fingerprint {self.fingerprint}, "
                    f"now {real.fingerprint}): run the tests again"
                )
        except ModelLoadError as exc:
            self._load_error = exc
            raise
        self._model, self._tokenizer = real._model, real._tokenizer
        self.device, self.dtype, self.device_map = real.device, real.dtype, real.device_map
        self._loader = None

    @property
    def model(self) -> Any:
        if self._loader is not None:
            self._load()
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    @property
    def engine(self) -> Any:
        """How metrics run it (:mod:`pytest_ftmodel.engines`): in this process, with transformers."""
        from pytest_ftmodel.engines.transformers import TransformersEngine

        return TransformersEngine(self)

    @property
    def tokenizer(self) -> Any:
        if self._loader is not None:
            self._load()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = value

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def __repr__(self) -> str:
        state = "" if self.loaded else ", not loaded yet"
        return (
            f"FTModel(path={str(self.path)!r}, device={self.device!r}, dtype={self.dtype!r}, "
            f"fingerprint={self.fingerprint!r}, kind={self.kind!r}{state})"
        )

    @property
    def numerics(self) -> dict[str, str]:
        """What, besides the files, changes the numbers this model computes: the device's kind (CPU,
        CUDA or MPS kernels differ; which CUDA device does not) and the dtype. Part of cache keys."""
        return {"device": str(self.device).split(":")[0], "dtype": str(self.dtype)}

    @property
    def context_length(self) -> int:
        """How many positions the model attends over (the window perplexity slides)."""
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:
            return limit
        return 2048


def resolve_device(device: str) -> str:
    import torch

    device = parse_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"model device {device!r} asked for, but torch sees no CUDA device here: "
                "use --model-device cpu (or auto)"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"model device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist: "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}, or auto"
            )
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ModelLoadError("model device 'mps' asked for, but MPS is not available: use --model-device cpu")
    return device


def resolve_placement(device: str, max_memory: str | MaxMemory | None = None) -> tuple[str, dict[int | str, int] | None]:
    """``(device, None)`` to load a model whole on one device, or ``("auto", budgets)`` to spread it.

    ``auto`` spreads the model when more than one CUDA device is visible (budgets None: accelerate's
    defaults, the free memory of every GPU, then CPU RAM) or when budgets are given (exactly those
    devices); otherwise it picks one device as before: CUDA, else MPS, else CPU.
    """
    budgets = check_placement(device, max_memory)
    if parse_device(device) == "auto":
        import torch

        if budgets is not None or torch.cuda.device_count() > 1:
            return "auto", budgets
    return resolve_device(device), None


def plan_device_map(path: str | os.PathLike[str], torch_dtype: Any, budgets: MaxMemory | None = None) -> dict[str, Any]:
    """Which device each module of the checkpoint at ``path`` goes to: accelerate's
    ``infer_auto_device_map`` over budgets balanced across the GPUs (transformers' ``device_map="auto"``),
    computed on an empty model, so no weight is read. Raises one line when the model does not fit."""
    try:
        from accelerate import infer_auto_device_map, init_empty_weights
        from accelerate.utils import get_balanced_memory
    except ImportError as exc:
        raise ModelLoadError(
            'spreading a model over devices needs accelerate: pip install "pytest-ftmodel[multi-device]"'
        ) from exc
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    empty.tie_weights()  # tied embeddings and head must land on one device
    no_split = list(getattr(empty, "_no_split_modules", None) or [])
    given = dict(budgets) if budgets is not None else None
    balanced = get_balanced_memory(empty, max_memory=given, no_split_module_classes=no_split, dtype=torch_dtype)
    device_map = dict(infer_auto_device_map(empty, max_memory=balanced, no_split_module_classes=no_split, dtype=torch_dtype))
    spilled = [name or "the whole model" for name, where in device_map.items() if where == "disk"]
    if spilled:
        shown = ",".join(f"{k}={_size(v)}" for k, v in (given or {}).items()) or "the free memory of every device"
        raise ModelLoadError(
            f"model {str(path)!r} does not fit in {shown}: {', '.join(spilled[:3])}{', ...' if len(spilled) > 3 else ''} "
            f"would go to disk, which is not supported: give more memory with --model-max-memory (e.g. {MAX_MEMORY_EXAMPLE})"
        )
    return device_map


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g}{unit}"
    return f"{n}B"


def input_device(model: Any) -> str:
    """Where a (possibly spread) model takes its inputs: the device of its input embeddings."""
    embeddings = model.get_input_embeddings()
    return str(next(embeddings.parameters()).device)


def _resolve_dtype(dtype: str, device: str, config_path: Path) -> Any:
    """``auto``: float32 on CPU (half precision there is slow and inexact), else the checkpoint's dtype."""
    import torch

    dtype = parse_dtype(dtype)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cpu":
        return torch.float32
    try:
        cfg = json.loads(config_path.read_text())
    except (OSError, ValueError):
        cfg = {}
    saved = cfg.get("dtype") or cfg.get("torch_dtype")
    if saved in ("float32", "bfloat16", "float16"):
        return getattr(torch, saved)
    return torch.float32


def _check_config(path: Path) -> None:
    """Read ``config.json`` first, so that a broken one is named as such: the tokenizer reads it too,
    and would otherwise be blamed for it."""
    from transformers import AutoConfig

    file = path / "config.json"
    try:
        json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"config {str(file)!r} is not readable JSON ({_one_line(exc)}): restore it from the training "
            "output or re-save it with model.config.save_pretrained()"
        ) from exc
    try:
        AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any config failure becomes one line
        raise ModelLoadError(f"config {str(file)!r} failed to load: {_one_line(exc)}") from exc


def _weights_named(path: Path) -> str:
    names = [f.name for f in model_files(path) if f.name.endswith(_WEIGHT_SUFFIXES)]
    return ", ".join(names) if names else "(no weight file found)"


def _load_causal_lm(path: Path, torch_dtype: Any, device_map: dict[str, Any] | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        spread: dict[str, Any] = {} if device_map is None else {"device_map": device_map}
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True, **spread)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"weights in {str(path)!r} ({_weights_named(path)}) failed to load: {_one_line(exc)}"
        ) from exc


def _adapter_base(path: Path, base: str | os.PathLike[str] | None) -> Path:
    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"adapter config {str(path / 'adapter_config.json')!r} is unreadable: {_one_line(exc)}") from exc
    named = cfg.get("base_model_name_or_path")
    if named and Path(named).is_dir():
        return Path(named)
    if base is not None:
        check_model_path(base, what="base model")
        return Path(base)
    raise ModelLoadError(
        f"adapter {str(path)!r} names base model {named!r}, which is not a local directory: "
        "pass --base-model PATH (or load_model(..., base=PATH))"
    )


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    base: str | os.PathLike[str] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    name: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 16,
    revision: str | None = None,
    timeout: float = 300.0,
    max_memory: str | MaxMemory | None = None,
    max_response_bytes: int | None = None,
) -> Any:
    """Load a transformers checkpoint directory, or a PEFT adapter directory on its base model, or
    connect to a served model when ``path`` is a URL (``http://host:8000/v1``).

    ``device``: auto | cpu | cuda | cuda:N | mps. ``dtype``: auto | float32 | bfloat16 | float16
    (auto is float32 on CPU, else the checkpoint's own dtype). ``base``: the base model directory of
    an adapter whose ``base_model_name_or_path`` is not a local directory. ``max_memory``: per-device
    budgets (``"0=20GiB,1=20GiB,cpu=64GiB"`` or a dict) over which ``auto`` spreads the model; with
    more than one GPU visible, ``auto`` spreads it over all of them without being asked
    (see :func:`resolve_placement`).

    ``tokenizer``: a folder holding the tokenizer, for a checkpoint saved without one (its own files
    are used otherwise; an adapter's come from its base when it has none) or for a served model.

    Served models only (see :func:`pytest_ftmodel.served.load_served`): ``name`` (the served model's id), ``api_key_env`` (the environment variable
    holding the key), ``concurrency`` (requests in flight), ``revision`` (enters the fingerprint),
    ``timeout`` (seconds a request may take, from connecting to the last byte), ``max_response_bytes``
    (the largest answer read; default 64 MiB). Returns an :class:`FTModel`, or a
    :class:`~pytest_ftmodel.served.ServedModel` for a URL.
    """
    from pytest_ftmodel.served.client import is_url

    if is_url(path):
        from pytest_ftmodel.served import load_served

        return load_served(
            str(path), name=name, tokenizer=tokenizer, api_key_env=api_key_env, concurrency=concurrency,
            revision=revision, timeout=timeout, **({} if max_response_bytes is None else {"max_response_bytes": max_response_bytes}),
        )
    if name is not None or api_key_env is not None or revision is not None:
        raise ModelPathError(f"name, api_key_env and revision apply to served models (a URL), not to {str(path)!r}")
    root = Path(path)
    kind = check_model_path(root)
    check_tokenizer(root, kind=kind, base=base, tokenizer=tokenizer, point="load_model(..., tokenizer=PATH)")
    tok_dir = None if tokenizer is None else Path(tokenizer)
    parse_dtype(dtype)
    resolved_device, budgets = resolve_placement(device, max_memory)
    spread = resolved_device == "auto"
    device_map: dict[str, Any] | None = None
    # budgets on the CPU alone keep auto's CPU dtype (float32); spread over GPUs, the checkpoint's own
    dtype_device = "cpu" if spread and budgets is not None and set(budgets) == {"cpu"} else resolved_device
    with quiet_transformers():
        if kind == "adapter":
            base_path = _adapter_base(root, base)
            check_model_path(base_path, what="base model")
            torch_dtype = _resolve_dtype(dtype, dtype_device, base_path / "config.json")
            _check_config(base_path)
            loaded_tokenizer = _load_tokenizer(tok_dir) if tok_dir is not None else _load_tokenizer(root, fallback=base_path)
            device_map = plan_device_map(base_path, torch_dtype, budgets) if spread else None
            model = _load_causal_lm(base_path, torch_dtype, device_map)
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise ModelLoadError(
                    f"{str(root)!r} is a PEFT adapter and peft is not installed: "
                    'pip install "pytest-ftmodel[peft]"'
                ) from exc
            try:
                model = PeftModel.from_pretrained(model, str(root), is_trainable=False)
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(
                    f"adapter in {str(root)!r} ({_weights_named(root)}) failed to load: {_one_line(exc)}"
                ) from exc
        else:
            base_path = None
            torch_dtype = _resolve_dtype(dtype, dtype_device, root / "config.json")
            _check_config(root)
            loaded_tokenizer = _load_tokenizer(tok_dir or root)
            device_map = plan_device_map(root, torch_dtype, budgets) if spread else None
            model = _load_causal_lm(root, torch_dtype, device_map)
        content_id = identify(root, base=base_path, tokenizer=tok_dir)[0]
    if spread:  # accelerate placed every module; inputs go where the embeddings are
        resolved_device = input_device(model)
    else:
        try:
            model = model.to(resolved_device)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"moving {str(root)!r} to {resolved_device!r} failed: {_one_line(exc)}") from exc
    model.eval()
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = loaded_tokenizer.pad_token_id
    return FTModel(
        model=model,
        tokenizer=loaded_tokenizer,
        path=root,
        device=resolved_device,
        dtype=str(torch_dtype).replace("torch.", ""),
        fingerprint=content_id,
        kind=kind,
        base_path=base_path,
        device_map=device_map,
    )


def identify(
    path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None, tokenizer: str | os.PathLike[str] | None = None
) -> tuple[str, str, Path | None]:
    """``(fingerprint, kind, base path)`` of a checkpoint or adapter, from its files alone: nothing is
    loaded, and unchanged files are not even re-read (see :func:`fingerprint`). A tokenizer from
    another folder enters the fingerprint by its files."""
    root = Path(path)
    kind = check_model_path(root)
    extra = "" if tokenizer is None else "tokenizer:" + tokenizer_fingerprint(tokenizer) + "\n"
    if kind == "adapter":
        base_path = _adapter_base(root, base)
        check_model_path(base_path, what="base model")
        return fingerprint(root, extra=extra + "base:" + fingerprint(base_path)), kind, base_path
    return fingerprint(root, extra=extra), kind, None


def _installed(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def load_key(fingerprint_: str, device: str, dtype: str, max_memory: str | None = None) -> str:
    """What must hold for a model that loaded once to load again the same: its files, the settings it
    was loaded with, the versions of what loads it, and the machine's kind (a CUDA driver or not)."""
    import platform
    import sys

    from pytest_ftmodel import __version__

    payload = {
        "fingerprint": fingerprint_,
        "device": device,
        "dtype": dtype,
        "max_memory": max_memory,
        "versions": [__version__, *(_installed(n) for n in ("torch", "transformers", "peft", "safetensors"))],
        "machine": [sys.platform, platform.machine(), os.path.exists("/dev/nvidiactl"), os.environ.get("CUDA_VISIBLE_DEVICES")],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_or_defer(
    path: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    base: str | os.PathLike[str] | None = None,
    memory: Any = None,
    max_memory: str | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> FTModel:
    """:func:`load_model`, or, when ``memory`` (a :class:`~pytest_ftmodel.cache.GenerationCache`)
    remembers that these very files loaded with these settings and library versions on this kind of
    machine, a model that loads on first use (:meth:`FTModel.deferred`), with the device and dtype
    that load gave. Without ``memory`` (``--ftmodel-no-cache``) the model always loads now."""
    if memory is None:
        return load_model(path, device=device, dtype=dtype, base=base, max_memory=max_memory, tokenizer=tokenizer)
    content_id, kind, base_path = identify(path, base=base, tokenizer=tokenizer)
    key = load_key(content_id, device, dtype, max_memory)
    seen = memory.recall_load(key)
    if seen is not None:
        return FTModel.deferred(
            path,
            device=seen["device"],
            dtype=seen["dtype"],
            fingerprint=content_id,
            kind=kind,
            base_path=base_path,
            loader=lambda: load_model(path, device=device, dtype=dtype, base=base, max_memory=max_memory, tokenizer=tokenizer),
        )
    model = load_model(path, device=device, dtype=dtype, base=base, max_memory=max_memory, tokenizer=tokenizer)
    if model.fingerprint == content_id:
        memory.remember_load(key, {"device": model.device, "dtype": model.dtype, "fingerprint": content_id})
    return model
