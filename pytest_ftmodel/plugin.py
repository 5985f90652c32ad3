"""The pytest side of pytest-ftmodel: options, ini entries, fixtures, terminal summary.

Thin on purpose: it reads the options once into an :class:`FTModelSession`, checks model paths
cheaply at start-up, and hands everything else to the library. It imports neither torch nor
transformers; models load on the first test that asks for one.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable, Generator

import pytest

from pytest_ftmodel import __version__, progress, report
from pytest_ftmodel import cache as gen_cache
from pytest_ftmodel.baseline.gate import BaselineSession, misnamed_margin, parse_margins
from pytest_ftmodel.baseline.store import BaselineFileError
from pytest_ftmodel.errors import FTModelError, ModelPathError
from pytest_ftmodel.model import DEVICE_CHOICES, DTYPE_CHOICES, check_model_path, check_tokenizer, parse_device, parse_dtype
from pytest_ftmodel.model import MAX_MEMORY_EXAMPLE, check_max_memory, check_placement

SANDBOX_LEVELS = ("auto", "strict", "process")


def parse_sandbox(value: str) -> str:
    level = str(value).strip().lower()
    if level not in SANDBOX_LEVELS:
        raise ModelPathError(f"unknown sandbox level {value!r}: use one of {' | '.join(SANDBOX_LEVELS)}")
    return level


SANDBOX_JUDGING = ("auto", "split-only")


def parse_sandbox_judging(value: str) -> str:
    mode = str(value).strip().lower()
    if mode not in SANDBOX_JUDGING:
        raise ModelPathError(f"unknown sandbox judging {value!r}: use one of {' | '.join(SANDBOX_JUDGING)}")
    return mode


_SESSION_KEY = pytest.StashKey["FTModelSession"]()

# (flag, dest and ini name, metavar, help)
_PATH_OPTIONS = (
    ("--model", "ftmodel_model", "PATH", "fine-tuned checkpoint or PEFT adapter directory, or a served model's URL (http://host:8000/v1), for the `ftmodel` fixture"),
    ("--base-model", "ftmodel_base_model", "PATH", "base model directory (or URL) for the `base_model` fixture and for adapters"),
)

# served models (--model URL): (flag, dest and ini name, metavar, help, default shown)
_SERVED_OPTIONS = (
    ("--model-name", "ftmodel_model_name", "NAME", "the served model to use for --model (as /v1/models lists it)", "the only one listed"),
    ("--base-model-name", "ftmodel_base_model_name", "NAME", "the served model to use for --base-model", "the only one listed"),
    ("--tokenizer", "ftmodel_tokenizer", "PATH", "tokenizer directory of --model: a local copy of a served model's (prompt counting, chat formatting, perplexity), or for a checkpoint saved without one", "the checkpoint's own"),
    ("--base-tokenizer", "ftmodel_base_tokenizer", "PATH", "tokenizer directory of --base-model (served, or a checkpoint saved without one)", "the checkpoint's own"),
    ("--model-api-key-env", "ftmodel_model_api_key_env", "VAR", "environment variable holding the served model's API key (never printed)", "no key"),
    ("--model-concurrency", "ftmodel_model_concurrency", "N", "requests in flight to a served model", "16"),
    ("--model-revision", "ftmodel_model_revision", "REV", "revision label of the served model; enters its fingerprint (cache, baselines, sheets)", "none"),
    ("--model-timeout", "ftmodel_model_timeout", "SECONDS", "time one request to a served model may take, from connecting to the last byte", "300"),
    ("--model-max-response-bytes", "ftmodel_model_max_response_bytes", "BYTES", "largest answer read from a served model", "67108864 (64 MiB)"),
)


def _positive(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or number <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number, not {value!r}")
        return number

    convert.__name__ = what
    return convert


_SERVED_TYPES: dict[str, Callable[[str], Any]] = {
    "ftmodel_model_concurrency": _positive(int, "model concurrency"),
    "ftmodel_model_timeout": _positive(float, "model timeout"),
    "ftmodel_model_max_response_bytes": _positive(int, "model max response bytes"),
}


_REPORT_OPTIONS = (
    ("--ftmodel-json", "ftmodel_json", "every judged figure with its per-item values as JSON"),
    ("--ftmodel-markdown", "ftmodel_markdown", "a Markdown summary (the GitHub job summary's text)"),
    ("--ftmodel-html", "ftmodel_html", "a self-contained HTML report with plots"),
)


BASELINE_FILE = "ftmodel-baseline.json"
BASELINE_MODES = ("superiority", "noninferiority")
#: ``--ftmodel-baseline=none``: compare with no baseline file
BASELINE_OFF = "none"


def _narrowed_files(config: pytest.Config) -> set[str] | None:
    """Test files (rootdir-relative, as in node ids) of which this run selects only some tests by
    the command line's node ids (``test_a.py::test_x``); None under ``--lf``, which narrows files
    while collecting them. ``-k``, ``-m`` and ``--deselect`` are seen through pytest_deselected."""
    if config.getoption("lf", False):
        return None
    files = set()
    for arg in config.args:
        file, sep, _ = str(arg).partition("::")
        if sep:
            absolute = os.path.abspath(config.invocation_params.dir / file)
            files.add(os.path.relpath(absolute, config.rootpath).replace(os.sep, "/"))
    return files


def parse_baseline_mode(value: str) -> str:
    mode = str(value).strip().lower()
    if mode not in BASELINE_MODES:
        raise ModelPathError(f"unknown baseline mode {value!r}: use one of {' | '.join(BASELINE_MODES)}")
    return mode


def _margin_option(value: str) -> str:
    try:
        parse_margins(value)
    except ValueError as exc:
        raise ModelPathError(str(exc)) from None
    return value


def _argparse_type(parse: Callable[[str], str]) -> Callable[[str], str]:
    def convert(value: str) -> str:
        try:
            return parse(value)
        except ModelPathError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ftmodel", "fine-tuned model evaluation (pytest-ftmodel)")
    for flag, dest, metavar, text in _PATH_OPTIONS:
        group.addoption(flag, dest=dest, metavar=metavar, default=None, help=f"{text} (default: ini {dest}, else none)")
        parser.addini(dest, help=f"{text}; relative to the ini file (default: none)", default=None)
    group.addoption(
        "--model-device",
        dest="ftmodel_device",
        metavar="DEVICE",
        default=None,
        type=_argparse_type(parse_device),
        help=f"device to load models on: {DEVICE_CHOICES} (default: ini ftmodel_device, else auto)",
    )
    parser.addini("ftmodel_device", help="device to load models on (default: auto)", default=None)
    group.addoption(
        "--model-max-memory",
        dest="ftmodel_max_memory",
        metavar="BUDGETS",
        default=None,
        type=_argparse_type(check_max_memory),
        help=f"spread models over devices within these budgets, e.g. {MAX_MEMORY_EXAMPLE} (with --model-device auto; "
        "default: ini ftmodel_max_memory, else every GPU's free memory when more than one is visible)",
    )
    parser.addini("ftmodel_max_memory", help=f"per-device memory budgets, e.g. {MAX_MEMORY_EXAMPLE} (default: none)", default=None)
    group.addoption(
        "--model-dtype",
        dest="ftmodel_dtype",
        metavar="DTYPE",
        default=None,
        type=_argparse_type(parse_dtype),
        help=f"dtype to load models in: {' | '.join(DTYPE_CHOICES)} (default: ini ftmodel_dtype, else auto)",
    )
    parser.addini("ftmodel_dtype", help="dtype to load models in (default: auto)", default=None)
    group.addoption(
        "--ftmodel-cache-dir",
        dest="ftmodel_cache_dir",
        metavar="DIR",
        default=None,
        help="where generated answers and per-item scores are cached across runs (default: ini ftmodel_cache_dir, else "
        ".pytest_cache/d/ftmodel in the rootdir, or the user's cache folder when the rootdir is inside a model folder)",
    )
    parser.addini(
        "ftmodel_cache_dir",
        help="answer and score cache directory; relative to the ini file (default: .pytest_cache/d/ftmodel in the rootdir)",
        default=None,
    )
    group.addoption(
        "--ftmodel-no-cache",
        dest="ftmodel_no_cache",
        action="store_true",
        default=None,
        help="generate every answer and score every item afresh, reading and writing no cache (default: ini ftmodel_no_cache, else false)",
    )
    parser.addini("ftmodel_no_cache", type="bool", help="disable the answer and score cache (default: false)", default=False)
    group.addoption(
        "--sandbox",
        dest="ftmodel_sandbox",
        metavar="LEVEL",
        default=None,
        type=_argparse_type(parse_sandbox),
        help="isolation of generated code: auto (strongest available) | strict (refuse below namespaces) | "
        "process (default: ini ftmodel_sandbox, else auto)",
    )
    parser.addini("ftmodel_sandbox", help="isolation of generated code: auto | strict | process (default: auto)", default=None)
    group.addoption(
        "--sandbox-judging",
        dest="ftmodel_sandbox_judging",
        metavar="MODE",
        default=None,
        type=_argparse_type(parse_sandbox_judging),
        help="how code samples are judged: auto (split wherever the problem allows, in-process where its tests need the "
        "candidate's objects) | split-only (fail a gate that would judge any sample in-process) "
        "(default: ini ftmodel_sandbox_judging, else auto)",
    )
    parser.addini("ftmodel_sandbox_judging", help="how code samples are judged: auto | split-only (default: auto)", default=None)
    group.addoption(
        "--ftmodel-require-human",
        dest="ftmodel_require_human",
        action="store_true",
        default=None,
        help="fail (not skip) human-score gates whose sheet is not reviewed yet (default: ini ftmodel_require_human, else false)",
    )
    parser.addini("ftmodel_require_human", type="bool", help="fail human-score gates on unfinished review (default: false)", default=False)
    for flag, dest, metavar, text, shown in _SERVED_OPTIONS:
        group.addoption(flag, dest=dest, metavar=metavar, default=None, type=_SERVED_TYPES.get(dest), help=f"{text} (default: ini {dest}, else {shown})")
        parser.addini(dest, help=f"{text} (default: {shown})", default=None)
    for flag, dest, what in _REPORT_OPTIONS:
        group.addoption(flag, dest=dest, metavar="PATH", default=None, help=f"write {what} to PATH (default: ini {dest}, else none)")
        parser.addini(dest, help=f"write {what} to this path; relative to the ini file (default: none)", default=None)
    group.addoption(
        "--ftmodel-baseline",
        dest="ftmodel_baseline",
        metavar="PATH",
        default=None,
        help=f"baseline file to compare each figure with, item by item; a file named here that does not exist stops "
        f"the run, {BASELINE_OFF} compares with none (default: ini ftmodel_baseline, else {BASELINE_FILE} in the rootdir, "
        "compared when it exists)",
    )
    parser.addini("ftmodel_baseline", help=f"baseline file; relative to the ini file (default: {BASELINE_FILE} in the rootdir)", default=None)
    group.addoption(
        "--ftmodel-update-baseline",
        dest="ftmodel_update_baseline",
        action="store_true",
        default=False,
        help="record the figures of the tests that pass into the baseline file instead of comparing (a run that does "
        "not reach its end writes nothing); remove entries those tests no longer produce, and those of test files "
        "that are gone (default: false)",
    )
    group.addoption(
        "--ftmodel-margin",
        dest="ftmodel_margins",
        metavar="NAME=VALUE",
        action="append",
        default=None,
        type=_argparse_type(_margin_option),
        help="largest drop of metric NAME that is not a regression (accuracy=0.02; perplexity=0.05 is relative); "
        "repeatable (default: ini ftmodel_margins, else 0.01 for scores, 2%% for perplexity, 0.1 for human scores)",
    )
    parser.addini("ftmodel_margins", type="linelist", help="regression margins, NAME=VALUE, one a line or several separated by commas (default: per kind)", default=[])
    group.addoption(
        "--ftmodel-baseline-mode",
        dest="ftmodel_baseline_mode",
        metavar="MODE",
        default=None,
        type=_argparse_type(parse_baseline_mode),
        help="superiority: fail when significantly worse beyond the margin | noninferiority: fail unless shown to be "
        "within the margin (default: ini ftmodel_baseline_mode, else superiority)",
    )
    parser.addini("ftmodel_baseline_mode", help="superiority | noninferiority (default: superiority)", default=None)


class FTModelSession:
    """Options read once, and the models of this process, loaded lazily and at most once each."""

    def __init__(self, config: pytest.Config) -> None:
        self.paths: dict[str, Path | str | None] = {
            "model": self._model_location(config, "ftmodel_model"),
            "base_model": self._model_location(config, "ftmodel_base_model"),
        }
        self.device = parse_device(self._value(config, "ftmodel_device") or "auto")
        self.max_memory = self._value(config, "ftmodel_max_memory")
        self.dtype = parse_dtype(self._value(config, "ftmodel_dtype") or "auto")
        self.sandbox = parse_sandbox(self._value(config, "ftmodel_sandbox") or "auto")
        self.sandbox_judging = parse_sandbox_judging(self._value(config, "ftmodel_sandbox_judging") or "auto")
        self.require_human = bool(config.getoption("ftmodel_require_human") or config.getini("ftmodel_require_human"))
        self.recorder = report.recorder()
        self.reports: dict[str, Path | None] = {dest.removeprefix("ftmodel_"): self._path(config, dest) for _, dest, _ in _REPORT_OPTIONS}
        self.verbose = config.getoption("verbose", 0) > 0
        self.written: list[str] = []
        self.started = time.monotonic()
        self.progress_sink: Any = None
        #: why the cache is not in its default place, when it is not (shown in the header)
        self.cache_note: str | None = None
        #: why the run stopped before its end ("" while it has not): see :class:`_RunEnd`
        self.interrupted = ""
        #: what stopped it on the way (a Ctrl-C, pytest.exit, an internal error, a lost worker)
        self.stops: list[str] = []
        self.cache = self._cache(config)
        self.margins = self._margins(config)  # checked even without a baseline file: a typo never passes unseen
        self.margin_errors: list[str] = []
        self.baseline = self._baseline(config)
        self.served = self._served(config)
        self._loaded: dict[str, Any] = {}
        self._failed: dict[str, str] = {}

    @staticmethod
    def _value(config: pytest.Config, dest: str) -> str | None:
        value = config.getoption(dest)
        if value is None:
            value = config.getini(dest) or None
        return value

    def _served(self, config: pytest.Config) -> dict[str, Any]:
        """The served-model options, plain values (pytest-xdist workers receive them); a bad ini value
        is a usage error like a bad flag."""
        out: dict[str, Any] = {}
        for _, dest, _, _, _ in _SERVED_OPTIONS:
            value = self._value(config, dest)
            if isinstance(value, str) and dest in _SERVED_TYPES:
                try:
                    value = _SERVED_TYPES[dest](value)
                except argparse.ArgumentTypeError as exc:
                    raise ModelPathError(f"ini {dest}: {exc}") from None
            if dest.endswith("tokenizer") and value is not None:
                value = str(self._path(config, dest))
            out[dest.removeprefix("ftmodel_")] = value
        return out

    def served_options(self, role: str) -> dict[str, Any]:
        """load_model's served-model keywords for ``role`` ("model" or "base_model")."""
        o = self.served
        base = role == "base_model"
        return {
            "name": o["base_model_name"] if base else o["model_name"],
            "tokenizer": o["base_tokenizer"] if base else o["tokenizer"],
            "api_key_env": o["model_api_key_env"],
            "concurrency": int(o["model_concurrency"] or 16),
            "revision": None if base else o["model_revision"],
            "timeout": float(o["model_timeout"] or 300.0),
            "max_response_bytes": int(o["model_max_response_bytes"] or 64 * 1024 * 1024),
        }

    @classmethod
    def _model_location(cls, config: pytest.Config, dest: str) -> Path | str | None:
        """A model's directory, or a served model's URL (kept as it is: Path would fold its //)."""
        from pytest_ftmodel.served.client import is_url

        value = config.getoption(dest) or config.getini(dest)
        return str(value) if is_url(value) else cls._path(config, dest)

    @staticmethod
    def _path(config: pytest.Config, dest: str) -> Path | None:
        cli = config.getoption(dest)
        if cli:
            return Path(cli)
        ini = config.getini(dest)
        if not ini:
            return None
        path = Path(ini)
        if not path.is_absolute() and config.inipath is not None:
            path = config.inipath.parent / path
        return path

    def _cache(self, config: pytest.Config) -> gen_cache.GenerationCache | None:
        if config.getoption("ftmodel_no_cache") or config.getini("ftmodel_no_cache"):
            return None
        path = self._path(config, "ftmodel_cache_dir")
        if path is None:
            path, self.cache_note = default_cache_dir(config.rootpath, [p for p in self.paths.values() if isinstance(p, Path)])
        why = gen_cache.distrust(Path(path))
        if why:
            config.issue_config_time_warning(gen_cache.CacheWarning(why), stacklevel=2)
            return None
        return gen_cache.GenerationCache(Path(path))

    @staticmethod
    def _margins(config: pytest.Config) -> dict[str, float]:
        given = [*(config.getini("ftmodel_margins") or []), *(config.getoption("ftmodel_margins") or [])]
        return dict(pair for line in given for pair in parse_margins(line))

    def _baseline(self, config: pytest.Config) -> BaselineSession | None:
        """The baseline gate: on when updating, or when the baseline file exists (so a project without
        one runs exactly as before)."""
        update = bool(config.getoption("ftmodel_update_baseline"))
        named = self._path(config, "ftmodel_baseline")
        if str(config.getoption("ftmodel_baseline") or config.getini("ftmodel_baseline") or "").strip().lower() == BASELINE_OFF:
            if update:
                raise ModelPathError(f"--ftmodel-update-baseline needs a baseline file to record into, and --ftmodel-baseline={BASELINE_OFF} names none: drop one of the two")
            return None
        path = named or config.rootpath / BASELINE_FILE
        if not update and not path.exists():
            if named is not None:  # named, so meant: a typo must not turn the comparison off unseen
                raise ModelPathError(
                    f"baseline file {path} does not exist: fix the path, record one with --ftmodel-update-baseline, "
                    f"or pass --ftmodel-baseline={BASELINE_OFF} to compare with none"
                )
            return None
        mode = parse_baseline_mode(self._value(config, "ftmodel_baseline_mode") or "superiority")
        given = [
            f"{flag}={value}" for flag, dest in (("--model", "ftmodel_model"), ("--base-model", "ftmodel_base_model"), ("--ftmodel-baseline", "ftmodel_baseline"))
            if (value := config.getoption(dest))
        ]
        try:
            baseline = BaselineSession(
                path, update=update, mode=mode, margins=self.margins, command_options=given, version=__version__, rootdir=config.rootpath
            )
        except BaselineFileError as exc:
            raise ModelPathError(str(exc)) from None
        baseline.narrowed = _narrowed_files(config)
        return baseline

    def check_paths(self) -> None:
        for role, path in self.paths.items():
            if isinstance(path, str):  # a served model: ask it now, so a dead server stops the run at once
                self.check_served(role, path)
            elif path is not None:
                flag = "--model" if role == "model" else "--base-model"
                tokenizer = self.served["tokenizer" if role == "model" else "base_tokenizer"]
                try:
                    kind = check_model_path(path, what=flag)
                    # by file names only (no torch): a checkpoint saved without its tokenizer would
                    # otherwise fail every test on transformers' guess at a missing library
                    check_tokenizer(
                        path, kind=kind, base=self.paths["base_model"] if role == "model" else None, tokenizer=tokenizer,
                        point=f"{'--tokenizer' if role == 'model' else '--base-tokenizer'} PATH",
                    )
                except ModelPathError as exc:
                    raise pytest.UsageError(str(exc)) from None

    def check_served(self, role: str, url: str) -> None:
        from pytest_ftmodel.served import check_served

        options = self.served_options(role)
        flag = "--model" if role == "model" else "--base-model"
        try:
            check_served(
                url, name=options["name"], api_key_env=options["api_key_env"], timeout=options["timeout"],
                max_response_bytes=options["max_response_bytes"],
            )
        except FTModelError as exc:
            raise pytest.UsageError(f"{flag}: {exc}") from None

    def check_device(self) -> None:
        """Stop at start-up, not in every test, when a model is to load on a CUDA or MPS device that this
        machine lacks. Only such a device imports torch here; auto and cpu stay free."""
        try:
            check_placement(self.device, self.max_memory)
        except ModelPathError as exc:
            raise pytest.UsageError(str(exc)) from None
        if self.device in ("auto", "cpu") or all(p is None or isinstance(p, str) for p in self.paths.values()):
            return
        from pytest_ftmodel.model import resolve_device

        try:
            resolve_device(self.device)
        except FTModelError as exc:
            raise pytest.UsageError(str(exc)) from None

    def get(self, role: str) -> Any:
        """The loaded model for ``role`` ("model" or "base_model"); fails the test with one line."""
        if role in self._loaded:
            return self._loaded[role]
        if role in self._failed:  # never retried per test: every user sees the same first error
            pytest.fail(self._failed[role], pytrace=False)
        path = self.paths[role]
        if path is None:
            flag, ini = ("--model", "ftmodel_model") if role == "model" else ("--base-model", "ftmodel_base_model")
            pytest.fail(
                f"the `{'ftmodel' if role == 'model' else 'base_model'}` fixture needs a model: "
                f"pass {flag} PATH or set {ini} in the ini file",
                pytrace=False,
            )
        from pytest_ftmodel.model import load_model, load_or_defer

        base = self.paths["base_model"] if role == "model" else None
        try:
            if isinstance(path, str):  # a served model's URL
                self._loaded[role] = load_model(path, **self.served_options(role))
            else:
                # with the cache on, a checkpoint that loaded before loads only when a test needs more
                # than cached scores and answers
                self._loaded[role] = load_or_defer(
                    path, device=self.device, dtype=self.dtype, base=base, memory=self.cache, max_memory=self.max_memory,
                    tokenizer=self.served_options(role)["tokenizer"],
                )
        except FTModelError as exc:
            # kept (the cause stays chained on the exception for library users) and reported below,
            # outside this block, so that pytest prints the one line and not the chain
            self._failed[role] = str(exc)
        if role in self._failed:
            pytest.fail(self._failed[role], pytrace=False)
        return self._loaded[role]


#: the cache's default place under the rootdir, the same whether or not pytest's cacheprovider is on
DEFAULT_CACHE_DIR = (".pytest_cache", "d", "ftmodel")


def default_cache_dir(rootdir: Path, model_dirs: list[Path]) -> tuple[Path, str | None]:
    """``<rootdir>/.pytest_cache/d/ftmodel`` (where pytest's cacheprovider would put it, computed here
    so that turning the provider off moves nothing), and None; or, when the rootdir is a model folder
    or inside one, the user's cache folder and why: a model folder is never written into (its files
    are the model, and the fingerprint is a hash of them)."""
    root = rootdir.resolve()
    for model in model_dirs:
        folder = model.resolve()
        if root == folder or folder in root.parents:
            from pytest_ftmodel.model import cache_root  # plain Python: cheap

            user = cache_root() / "cache"
            return user, f"ftmodel cache: {user} (the rootdir {rootdir} is inside the model folder {model}, which is never written to)"
    return rootdir.joinpath(*DEFAULT_CACHE_DIR), None


def _sandbox_defaults() -> Any:
    from pytest_ftmodel import sandbox  # stdlib only: cheap

    return sandbox


def _human_defaults() -> Any:
    from pytest_ftmodel import human  # stdlib only at import: cheap

    return human


def session_of(config: pytest.Config) -> FTModelSession:
    return config.stash[_SESSION_KEY]


_PATH_FLAGS = ("--model", "--base-model", "--ftmodel-cache-dir")


def _check_ini_was_found(config: pytest.Config) -> None:
    """Refuse to run when pytest took a ``--model PATH`` value for a test path and so missed the ini file.

    pytest chooses its rootdir and ini file before plugins are loaded, so the value of a plugin's
    option written as a separate word counts as a path argument. With no test path given, the search
    starts from the model directory and misses the project's configuration (and ``ftmodel_*`` ini
    settings) without a word. Written as one word (``--model=PATH``) it is not mistaken.
    """
    if config.inipath is not None or not any(a in _PATH_FLAGS for a in config.invocation_params.args):
        return
    try:
        from _pytest.config.findpaths import locate_config

        missed = locate_config(config.invocation_params.dir, [config.invocation_params.dir])[1]
    except Exception:  # noqa: BLE001 - a private helper of pytest; without it, no check
        return
    if missed is not None:
        raise pytest.UsageError(
            f"pytest read the path after --model/--base-model as a test path and so did not load {missed}: "
            "write the option as one word (--model=PATH), or name the tests too (pytest tests --model PATH)"
        )


def pytest_configure(config: pytest.Config) -> None:
    _check_ini_was_found(config)
    try:
        session = FTModelSession(config)
    except (ModelPathError, ValueError) as exc:  # a bad ini value: the CLI ones were checked by argparse
        raise pytest.UsageError(str(exc)) from None
    session.check_paths()
    session.check_device()
    session.recorder = report.push_recorder()
    session.recorder.gate = session.baseline
    gen_cache.push_cache(session.cache)
    # progress lines go to pytest's terminal; a pytest-xdist worker's output never reaches it
    session.progress_sink = progress.push_sink(progress.Silent() if _is_xdist_worker(config) else progress.PytestSink(config))
    config.pluginmanager.register(_RunEnd(session), "ftmodel-run-end")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistMerge(session), "ftmodel-xdist")
    # the library's defaults ("auto", no strict review) hold unless asked otherwise: only then are
    # those modules imported, keeping start-up cheap for projects that do not use them
    if session.sandbox != "auto":
        _sandbox_defaults().push_isolation(session.sandbox)
    if session.sandbox_judging != "auto":
        _sandbox_defaults().push_judging(session.sandbox_judging)
    if session.require_human:
        _human_defaults().push_require(True)
    config.stash[_SESSION_KEY] = session


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION_KEY, None)
    if session is not None:
        report.pop_recorder(session.recorder)
        gen_cache.pop_cache(session.cache)
        progress.pop_sink(session.progress_sink)
        if session.sandbox != "auto":
            _sandbox_defaults().pop_isolation()
        if session.sandbox_judging != "auto":
            _sandbox_defaults().pop_judging()
        if session.require_human:
            _human_defaults().pop_require()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = config.stash.get(_SESSION_KEY, None)
    if session is None or all(p is None for p in session.paths.values()):
        return None
    model, base = session.paths["model"], session.paths["base_model"]
    header = (
        f"ftmodel: model={model or '-'} base_model={base or '-'} device={session.device} dtype={session.dtype} "
        f"sandbox={session.sandbox}"
    )
    return [header] if session.cache_note is None else [header, session.cache_note]


def pytest_collection_finish(session: pytest.Session) -> None:
    ftsession = config_session(session.config)
    if ftsession is not None:
        ftsession.recorder.order = {item.nodeid: i for i, item in enumerate(session.items)}
        if ftsession.baseline is not None:
            ftsession.baseline.known.update(item.nodeid for item in session.items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if not items:
        return
    ftsession = config_session(items[0].config)
    if ftsession is not None and ftsession.baseline is not None:
        ftsession.baseline.known.update(item.nodeid for item in items)
        ftsession.baseline.deselected.update(item.nodeid for item in items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    rec = session_of(item.config).recorder
    rec.current_item = item
    try:
        return (yield)
    finally:
        rec.current_item = None


_CALL_OUTCOME = pytest.StashKey[str]()


def _outcome_of(report_: pytest.TestReport) -> str:
    """A phase's outcome as pytest counts it: an expected failure is "xfailed", not "skipped"."""
    if report_.skipped:
        return "xfailed" if hasattr(report_, "wasxfail") else "skipped"
    return str(report_.outcome)


def _settle(item: pytest.Item, report_: pytest.TestReport) -> None:
    """A record's outcome is its test's: the call's (or a setup that did not pass; a teardown that
    fails makes the records taken in it failed ones)."""
    outcome = _outcome_of(report_)
    if report_.when == "call":
        item.stash[_CALL_OUTCOME] = outcome
    elif report_.when == "setup" and report_.passed:
        return
    elif report_.when == "teardown" and not report_.failed:
        outcome = item.stash.get(_CALL_OUTCOME, outcome)
    session_of(item.config).recorder.settle(item, outcome)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Bad input found by the library reads as its one line (what, where, the fix), not a traceback;
    the test's records take its outcome."""
    report_ = yield
    baseline = session_of(item.config).baseline
    if baseline is not None and report_.when == "call" and report_.passed:
        baseline.passed.add(item.nodeid)
    excinfo = call.excinfo
    if excinfo is not None and report_.failed:
        session_of(item.config).recorder.attach_diagnosis(item.nodeid, report.diagnosis_of(excinfo.value))
    if excinfo is not None and excinfo.errisinstance(FTModelError) and report_.failed:
        path, lineno, _ = item.reportinfo()
        report_.longrepr = _one_line_repr(str(path), (lineno or 0) + 1, f"{excinfo.typename}: {excinfo.value}")
    _settle(item, report_)
    report_.user_properties = list(item.user_properties)  # as settled (JUnit reads the report's)
    return report_


def pytest_sessionfinish(session: pytest.Session) -> None:
    ftsession = config_session(session.config)
    if ftsession is None:
        return
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller reports
        workeroutput["ftmodel"] = _worker_payload(ftsession)
        return
    misnamed = False
    if ftsession.baseline is not None:
        # an interrupted run never writes the baseline: it would mix this run's figures, of the tests
        # that got to run, with the file's
        ftsession.baseline.finish(ftsession.recorder.ordered(), interrupted=ftsession.interrupted)
        misnamed = ftsession.baseline.end_of_session(ftsession.recorder.ordered())  # a margin naming no metric
        if ftsession.baseline.write_failed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # the run did not do what it was asked
    elif ftsession.margins:  # no file to compare with, yet a misspelt margin is still a usage error
        recorded = {r.name for r in ftsession.recorder.ordered()}
        lines = [misnamed_margin(name, recorded, listed=recorded, listed_as="recorded in this run") for name in sorted(ftsession.margins)]
        ftsession.margin_errors = [line for line in lines if line]
        misnamed = bool(ftsession.margin_errors)
    if misnamed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED, pytest.ExitCode.TESTS_FAILED):
        session.exitstatus = pytest.ExitCode.USAGE_ERROR  # as argparse's own check of the option's form
    ftsession.written = report.write_reports(
        ftsession.recorder.ordered(), _report_session(ftsession, session), ftsession.reports, os.environ.get("GITHUB_STEP_SUMMARY")
    )


def _worker_payload(session: FTModelSession) -> dict[str, Any]:
    payload = session.recorder.payload()
    if session.cache is not None:
        payload["cache"] = {**session.cache.counts(), "scores": session.cache.scores.counts()}
    if session.baseline is not None:
        payload["baseline"] = session.baseline.payload()
    return payload


class _RunEnd:
    """Tells whether the session ran to its end: a Ctrl-C or ``pytest.exit``, an internal error, a
    stop after failures (``-x``, ``--maxfail``, ``--sw``) or a lost pytest-xdist worker all mean it
    did not, whatever the exit status says (``pytest.exit(returncode=0)``)."""

    def __init__(self, session: FTModelSession) -> None:
        self.session = session

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        value = excinfo.value
        if type(value) is KeyboardInterrupt:
            self.session.stops.append("KeyboardInterrupt")
        else:  # pytest.exit, "N errors during collection", pytest-xdist's stop after failures
            self.session.stops.append(str(getattr(value, "msg", "") or value) or excinfo.typename)

    def pytest_internalerror(self, excrepr: Any, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.session.stops.append(f"internal error: {excinfo.typename}")

    @pytest.hookimpl(tryfirst=True)  # before the JUnit file is written at the end of the session
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        stops = list(self.session.stops)
        for stop in (session.shouldfail, session.shouldstop):
            if stop and str(stop) not in stops:
                stops.append(str(stop))
        if not stops and exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
            stops.append("interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else "internal error")
        self.session.interrupted = "; ".join(stops)
        xml = _junit_xml(session.config)
        if self.session.interrupted and xml is not None:
            xml.add_global_property("ftmodel.interrupted", self.session.interrupted)
        judged = report.versus.judged_text(self.session.recorder.ordered())
        if judged and xml is not None:
            xml.add_global_property("ftmodel.judged", report.versus.visible(judged))


def _junit_xml(config: pytest.Config) -> Any:
    """The JUnit XML writer of the session (``--junitxml``), or None."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pytest's private module moved: the other reports still say it
        return None
    return config.stash.get(xml_key, None)


class _XdistMerge:
    """Registered only when pytest-xdist is installed (its hooks exist only then)."""

    def __init__(self, session: FTModelSession) -> None:
        self.session = session
        self._merged: list[Any] = []  # the nodes (kept, so that no later node shares an id() with one)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        if error is not None:  # its records and the tests it was running are lost
            self.session.stops.append(f"worker {getattr(getattr(node, 'gateway', None), 'id', '?')} went down: {error}")
        payload = getattr(node, "workeroutput", {}).get("ftmodel")
        if not payload or any(n is node for n in self._merged):  # a worker stopped by Ctrl-C is reported down twice
            return
        self._merged.append(node)
        self.session.recorder.merge(payload)
        if self.session.baseline is not None and payload.get("baseline"):
            self.session.baseline.merge(payload["baseline"])
        counts, cache = payload.get("cache"), self.session.cache
        if counts and cache is not None:
            cache.add_counts(counts)
            cache.scores.add_counts(counts.get("scores", {}))


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _baseline_shown(session: FTModelSession) -> str | None:
    """The baseline file as the summary names it: relative to the working directory when inside it."""
    if session.baseline is None:
        return None
    path = os.path.abspath(session.baseline.path)
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _report_session(session: FTModelSession, pytest_session: pytest.Session) -> dict[str, Any]:
    """What the reports say about the run: models, settings, outcome."""
    loaded = session._loaded
    models = {}
    for role, path in session.paths.items():
        if path is not None:
            fingerprint = getattr(loaded.get(role), "fingerprint", "") or report.fingerprint_of(session.recorder.records, path)
            models[role] = {"path": path if isinstance(path, str) else os.path.abspath(path), "fingerprint": fingerprint}
            if isinstance(getattr(loaded.get(role), "determinism", None), str):  # a served model
                served = loaded[role]
                models[role]["served"] = {"model_id": served.model_id, "fingerprint_source": "/v1/models", "determinism": served.determinism}
    return {
        "models": models,
        "device": session.device,
        "dtype": session.dtype,
        "sandbox": session.sandbox,
        "tests_failed": pytest_session.testsfailed,
        "interrupted": bool(session.interrupted),
        "interruption": session.interrupted or None,
        "tests_collected": pytest_session.testscollected,
        "baseline": None
        if session.baseline is None
        else {"path": _baseline_shown(session), "mode": session.baseline.mode, "update": session.baseline.update},
        "duration_s": round(time.monotonic() - session.started, 1),
        "cache": None
        if session.cache is None
        else {"hits": session.cache.hits, "misses": session.cache.misses, "root": str(session.cache.root), "scores": session.cache.scores.counts()},
    }


def config_session(config: pytest.Config) -> FTModelSession | None:
    return config.stash.get(_SESSION_KEY, None)


def _one_line_repr(path: str, lineno: int, message: str) -> Any:
    """``path:lineno: message`` as the failure, with ``message`` as its crash line: pytest's short
    summary (``-ra``) shows the crash line, so it reads the message rather than the path. Built from
    the same parts as pytest's own ``pytest.fail(..., pytrace=False)`` report, so pytest-xdist carries it."""
    line = f"{path}:{lineno}: {message}"
    try:
        from _pytest._code.code import ExceptionChainRepr, ReprEntry, ReprFileLocation, ReprTraceback
    except ImportError:  # pytest's private module moved: the plain line still reads right in full
        return line
    traceback = ReprTraceback([ReprEntry([line], None, None, None, "value")], None, "value")
    return ExceptionChainRepr([(traceback, ReprFileLocation(path, lineno, message), None)])


def _served_lines(session: FTModelSession) -> list[str]:
    """What a served model's figures rest on: its fingerprint's source and what determinism holds."""
    from pytest_ftmodel.escaping import visible

    out = []
    for role, model in session._loaded.items():
        determinism = getattr(model, "determinism", None)
        if isinstance(determinism, str):
            out.append(  # the id is the server's text: escaped, so it cannot drive the terminal
                f"served {role}: {visible(model.model_id)} at {model.url} (fingerprint {model.fingerprint} from /v1/models: "
                f"weaker than a hash of the weights); {determinism}"
            )
    return out


def pytest_terminal_summary(terminalreporter: Any) -> None:
    session = session_of(terminalreporter.config)
    records = session.recorder.ordered()
    lines = report.summary_lines(records, verbose=session.verbose, baseline_path=_baseline_shown(session))
    sandbox = report.sandbox_line(records, session.sandbox)
    if sandbox:
        lines.append(sandbox)
    scored = report.scored_line(records)
    if scored:
        lines.append(scored)
    if session.cache is not None:
        lines.extend(c.summary() for c in (session.cache, session.cache.scores) if c.hits + c.misses)
    if session.baseline is not None:
        lines.extend(session.baseline.outcome)
    lines.extend(session.margin_errors)
    lines.extend(_served_lines(session))
    lines.extend(session.written)
    if not lines:
        return
    if session.interrupted:
        lines.insert(0, f"INTERRUPTED ({session.interrupted}): {report.INTERRUPTED_NOTE}")
    terminalreporter.write_sep("=", "ftmodel metrics")
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def ftmodel(request: pytest.FixtureRequest) -> Any:
    """The fine-tuned model from ``--model`` (or ini ``ftmodel_model``), loaded once per process.

    Each pytest-xdist worker is its own process and loads its own copy.
    """
    return session_of(request.config).get("model")


@pytest.fixture(scope="session")
def base_model(request: pytest.FixtureRequest) -> Any:
    """The base model from ``--base-model`` (or ini ``ftmodel_base_model``), loaded once per process."""
    return session_of(request.config).get("base_model")
