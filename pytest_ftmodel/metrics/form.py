"""The form of an answer: JSON against a schema, patterns, required and forbidden strings, length.

How JSON is found in an answer, the same way every time (``extract="auto"``):

1. the whole answer, stripped, if it parses;
2. else the first Markdown code fence (```` ```json ```` or a plain ```` ``` ````) whose content parses;
3. else the first ``{`` or ``[`` from which one JSON value parses (``json.JSONDecoder().raw_decode``:
   prose before and after the value is allowed, the value itself must be whole).

``extract="whole"`` takes step 1 only. Parsing is strict JSON: ``NaN``/``Infinity`` are refused (not
JSON, though Python's ``json`` accepts them), so are duplicate keys (which a reader resolves one way
or another), single quotes and trailing commas. The value found is validated by ``jsonschema`` (the
validator the schema's ``$schema`` names, Draft 2020-12 when it names none); the reason of a failing
item is the most relevant error (``jsonschema.exceptions.best_match``) with its JSON path.

An answer whose re-encoded length reaches ``max_new_tokens`` was cut by the generation limit: it is
failed with the reason "truncated at max_new_tokens" before anything else is checked (for answers
given as strings, only when ``max_new_tokens`` is given with a tokenizer).

Speed: the validator is built once per schema; an answer's parse is remembered by its hash for the
process; the verdicts of a call are remembered in the session's metric cache (one entry per call), so
a warm run imports neither jsonschema nor parses anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Pattern, Sequence

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.stats import bounded_mean_interval, proportion_interval
from pytest_ftmodel.sampling import Repeats, repeats

EXTRACT = ("auto", "whole")
NO_JSON = "no JSON found"
TRUNCATED = "truncated at max_new_tokens"

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_no_duplicates)


def _loads(text: str) -> Any:
    """Strict JSON: the whole of ``text``; raises ValueError."""
    value, end = _DECODER.raw_decode(text)
    if text[end:].strip():
        raise ValueError("extra data after the JSON value")
    return value


#: the last problem seen while looking for JSON, for the reason of an answer with none
@dataclass(frozen=True)
class Found:
    ok: bool
    value: Any = None
    why: str = ""


def _whole(answer: str) -> Found:
    text = answer.strip()
    if not text:
        return Found(False, why=NO_JSON + " (empty answer)")
    try:
        return Found(True, _loads(text))
    except _Refused as exc:
        return Found(False, why=f"invalid JSON: {exc}")
    except ValueError as exc:
        return Found(False, why=f"invalid JSON: {_short(exc)}")


def _short(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg.removesuffix(' at')} at character {exc.pos}"
    return str(exc)


def extract_json(answer: str, extract: str = "auto") -> Found:
    """The JSON value of ``answer`` found by the rule of the module doc, or why there is none."""
    first = _whole(answer)
    if first.ok or extract == "whole":
        return first
    # an answer that starts as JSON is judged as JSON; prose is judged by what follows
    why = first.why if answer.strip()[:1] in ("{", "[") else ""
    for match in _FENCE.finditer(answer):
        found = _whole(match.group(2))
        if found.ok:
            return found
        why = why or f"{found.why} (in a code fence)"
    for match in re.finditer(r"[{\[]", answer):
        try:
            value, _end = _DECODER.raw_decode(answer, match.start())
        except _Refused as exc:
            why = why or f"invalid JSON: {exc}"
            continue
        except ValueError as exc:
            why = why or f"{NO_JSON}: the {match.group()!r} at character {match.start()} starts no JSON value ({_short(exc)})"
            continue
        return Found(True, value)
    if why:
        return Found(False, why=why)
    return Found(False, why=NO_JSON)


_parsed: dict[tuple[str, str], Found] = {}


def _extract_cached(answer: str, extract: str) -> Found:
    key = (hashlib.blake2b(answer.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest(), extract)
    found = _parsed.get(key)
    if found is None:
        found = _parsed[key] = extract_json(answer, extract)
    return found


_validators: dict[str, Any] = {}


def _schema_key(schema: Any) -> str:
    if not isinstance(schema, (Mapping, bool)):
        raise DataError(f"json_schema must be a JSON Schema (a dict), got {type(schema).__name__}: pass e.g. {{'type': 'object'}}")
    try:
        return json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"json_schema is not JSON data ({exc}): pass a schema made of dicts, lists, strings and numbers") from None


def check_schema(schema: Any) -> None:
    """Raise DataError in one line unless ``schema`` is a valid JSON Schema; a schema found valid is
    remembered in the session's metric cache (a warm run does not import jsonschema to know it)."""
    from pytest_ftmodel.cache import MetricCache, active_metric_cache

    key = _schema_key(schema)
    if key in _validators:
        return
    store = active_metric_cache()
    cache_key = MetricCache.key("json-schema-valid", "jsonschema", {"schema": key}) if store is not None else ""
    if store is not None and store.get(cache_key, lambda v: v.get("valid") is True) is not None:
        return
    schema_validator(schema)
    if store is not None:
        store.put(cache_key, {"valid": True})


def schema_validator(schema: Mapping[str, Any] | bool) -> Any:
    """The jsonschema validator of ``schema`` (its ``$schema``'s draft, else 2020-12), built once per
    schema; a schema that is not one raises DataError in one line (before any model work)."""
    key = _schema_key(schema)
    validator = _validators.get(key)
    if validator is None:
        try:
            import jsonschema
            from jsonschema.validators import validator_for
        except ImportError:
            raise DataError("json_schema= needs jsonschema, a dependency of pytest-ftmodel that is missing here: pip install jsonschema") from None

        cls = validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            where = exc.json_path if hasattr(exc, "json_path") else "$"
            raise DataError(f"json_schema is not a valid {cls.__name__[:-9]} schema: {exc.message} (at {where}): fix the schema") from None
        validator = _validators[key] = cls(schema)
    return validator


def schema_reason(validator: Any, value: Any) -> str:
    """Empty when ``value`` is valid; else the most relevant error and its JSON path."""
    from jsonschema.exceptions import best_match

    # one pass: best_match of no errors is None (is_valid first would walk a failing value twice)
    error = best_match(validator.iter_errors(value))
    if error is None:
        return ""
    return f"schema: {error.message} at {error.json_path}"


def reason_kind(reason: str) -> str:
    """A failing reason's kind, for counts by kind ("schema", "invalid JSON", "truncated", ...)."""
    for prefix in ("schema", "invalid JSON", "no JSON found", "truncated", "does not match", "does not contain", "contains"):
        if reason.startswith(prefix):
            return prefix
    return "too long" if reason.endswith(")") and " words (at most " in reason else reason


@dataclass(frozen=True)
class FormatItem:
    index: int
    prompt: str
    answer: str
    passed: bool
    reason: str  # empty when the answer passed
    n_words: int
    n_tokens: int | None
    #: with samples > 1: every sample's answer and reason ("" when it passed); ``answer`` is sample
    #: 0's, ``passed`` whether every sample passed, ``reason`` the first failing sample's
    answers: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        """The share of the item's samples (its one answer: 0 or 1) that pass every check."""
        reasons = self.reasons or (self.reason,)
        return sum(not r for r in reasons) / len(reasons)


@dataclass(frozen=True)
class FormatResult:
    """The share of answers whose form passes every check, with its exact (Clopper-Pearson) interval.

    With ``samples > 1`` the share is the mean over items of each item's share of passing samples, its
    interval takes the items as the unit, and ``stability`` holds the pass@k, pass^k and flip rate."""

    share: float
    interval: tuple[float, float]
    items: tuple[FormatItem, ...]
    checks: tuple[str, ...]
    samples: int = 1
    stability: Repeats | None = None

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def n_passed(self) -> int:
        return sum(item.passed for item in self.items)

    def failing(self) -> list[FormatItem]:
        return [item for item in self.items if not item.passed]


def _patterns(regex: str | Pattern[str] | Sequence[str | Pattern[str]] | None) -> list[Pattern[str]]:
    if regex is None:
        return []
    given = [regex] if isinstance(regex, (str, re.Pattern)) else list(regex)
    out = []
    for i, pattern in enumerate(given):
        if isinstance(pattern, re.Pattern):
            out.append(pattern)
            continue
        if not isinstance(pattern, str):
            raise DataError(f"regex {i} is {type(pattern).__name__}: pass a pattern string or re.compile(...)")
        try:
            out.append(re.compile(pattern))
        except re.error as exc:
            raise DataError(f"regex {pattern!r} does not compile ({exc}): fix the pattern") from None
    return out


def _strings(name: str, value: str | Sequence[str]) -> list[str]:
    given = [value] if isinstance(value, str) else list(value)
    for s in given:
        if not isinstance(s, str) or not s:
            raise DataError(f"{name} holds {s!r}: pass non-empty strings")
    return given


def _describe(schema: Any, patterns: list[Pattern[str]], contains: list[str], not_contains: list[str], max_words: int | None) -> tuple[str, ...]:
    checks = []
    if schema is not None:
        checks.append("JSON schema")
    checks += [f"matches {p.pattern!r}" for p in patterns]
    checks += [f"contains {s!r}" for s in contains]
    checks += [f"does not contain {s!r}" for s in not_contains]
    if max_words is not None:
        checks.append(f"at most {max_words} words")
    return tuple(checks)


def _verdict(
    answer: str, n_tokens: int | None, limit: int | None, validator: Any, extract: str,
    patterns: list[Pattern[str]], contains: list[str], not_contains: list[str], max_words: int | None,
) -> str:
    if limit is not None and n_tokens is not None and n_tokens >= limit:
        return TRUNCATED
    if validator is not None:
        found = _extract_cached(answer, extract)
        if not found.ok:
            return found.why
        reason = schema_reason(validator, found.value)
        if reason:
            return reason
    for pattern in patterns:
        if pattern.search(answer) is None:
            return f"does not match {pattern.pattern!r}"
    for s in contains:
        if s not in answer:
            return f"does not contain {s!r}"
    for s in not_contains:
        if s in answer:
            return f"contains {s!r}"
    if max_words is not None:
        words = len(answer.split())
        if words > max_words:
            return f"{words} words (at most {max_words})"
    return ""


def answer_tokens(tokenizer: Any, answers: Sequence[str]) -> list[int] | None:
    """Each answer's length in tokens as the tokenizer re-encodes it (no special tokens); None
    without a tokenizer."""
    if tokenizer is None:
        return None
    try:
        return [len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
    except Exception:  # noqa: BLE001 - a tokenizer that cannot count leaves token lengths out
        return None


def _is_counts(value: dict[str, Any]) -> bool:
    counts = value.get("tokens")
    return isinstance(counts, list) and all(isinstance(c, int) for c in counts)


def model_answer_tokens(model: Any, answers: Sequence[str]) -> list[int] | None:
    """:func:`answer_tokens` with ``model``'s tokenizer, remembered in the session's metric cache by the
    model's fingerprint and the answers, so that a warm run does not load the model to count."""
    from pytest_ftmodel.cache import MetricCache, active_metric_cache

    store = active_metric_cache()
    fingerprint = getattr(model, "fingerprint", "")
    key = ""
    if store is not None and isinstance(fingerprint, str) and fingerprint:
        digest = hashlib.sha256("\x00".join(answers).encode("utf-8", "surrogatepass")).hexdigest()
        key = MetricCache.key("answer-tokens", "python", {"fingerprint": fingerprint, "answers": digest, "n": len(answers)})
        found = store.get(key, _is_counts)
        if found is not None and len(found["tokens"]) == len(answers):
            return list(found["tokens"])
    counts = answer_tokens(getattr(model, "tokenizer", None), answers)
    if key and store is not None and counts is not None:
        store.put(key, {"tokens": counts})
    return counts


def _is_format(value: dict[str, Any]) -> bool:
    reasons = value.get("reasons")
    return isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)


def format_check(
    answers_or_model: Any,
    data: Sequence[Any] | None = None,
    *,
    json_schema: Mapping[str, Any] | bool | None = None,
    regex: str | Pattern[str] | Sequence[str | Pattern[str]] | None = None,
    contains: str | Sequence[str] = (),
    not_contains: str | Sequence[str] = (),
    max_words: int | None = None,
    extract: str = "auto",
    prompt_key: str = "instruction",
    max_new_tokens: int | None = None,
    tokenizer: Any = None,
    samples: int = 1,
    **generate_kwargs: Any,
) -> FormatResult:
    """Check the form of each answer: JSON against ``json_schema`` (found as the module doc says),
    every ``regex`` (``re.search``), every string of ``contains``, none of ``not_contains``, at most
    ``max_words`` words. The first check an answer fails is its reason.

    ``answers_or_model``: a model (``data`` holds the prompts under ``prompt_key``; answers are
    generated, greedy and cached, with ``max_new_tokens`` (default 128) and ``generate_kwargs``) or a
    list of answers already generated (``data`` optional: their prompts, for the reports). An answer
    that reached ``max_new_tokens`` tokens is failed as truncated (for given answers, only when
    ``max_new_tokens`` and ``tokenizer`` are given).

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``; a model only): k seeded answers per
    item, each checked; an item's figure is its share of passing samples (see :mod:`pytest_ftmodel.sampling`)."""
    if extract not in EXTRACT:
        raise DataError(f"extract={extract!r} is not known: use one of {', '.join(map(repr, EXTRACT))}")
    if json_schema is not None:
        check_schema(json_schema)
    patterns = _patterns(regex)
    contains_, not_contains_ = _strings("contains", contains), _strings("not_contains", not_contains)
    if max_words is not None and (not isinstance(max_words, int) or isinstance(max_words, bool) or max_words < 0):
        raise DataError(f"max_words={max_words!r}: pass a whole number >= 0")
    checks = _describe(json_schema, patterns, contains_, not_contains_, max_words)
    given = isinstance(answers_or_model, (list, tuple)) and all(isinstance(a, str) for a in answers_or_model)
    if given:
        if samples != 1:
            raise DataError(f"samples={samples!r} with answers given: pass the model to sample its answers, or drop samples=")
        answers = list(answers_or_model)
        prompts = [str(item.get(prompt_key, "")) if isinstance(item, Mapping) else str(item) for item in data] if data is not None else [""] * len(answers)
        if len(prompts) != len(answers):
            raise DataError(f"{len(answers)} answers for {len(prompts)} data items: pass one answer per item")
        limit = max_new_tokens if tokenizer is not None else None
        _require_checks(checks)
    else:
        from pytest_ftmodel.data import require_keys
        from pytest_ftmodel.sampling import sampled_answers

        if data is None:
            raise DataError("format_check(model, data): pass the data items whose prompts the model answers")
        items = require_keys(data, [prompt_key])
        prompts = [str(item[prompt_key]) for item in items]
        _require_checks(checks)
        limit = 128 if max_new_tokens is None else max_new_tokens
        rows_ = sampled_answers(answers_or_model, prompts, samples=samples, max_new_tokens=limit, **generate_kwargs)
        answers = [a for row in rows_ for a in row]  # item-major: item i's samples are answers[i*k:(i+1)*k]
    k = 1 if given else samples
    if not answers:
        raise DataError("no answers to check: pass at least one item (a gate on nothing would pass)")
    if given or tokenizer is not None:
        n_tokens = answer_tokens(tokenizer, answers)
    else:
        n_tokens = model_answer_tokens(answers_or_model, answers)
    reasons = _cached_reasons(answers, n_tokens, limit, json_schema, extract, patterns, contains_, not_contains_, max_words)
    if k == 1:
        rows = tuple(
            FormatItem(i, p, a, not r, r, len(a.split()), None if n_tokens is None else n_tokens[i])
            for i, (p, a, r) in enumerate(zip(prompts, answers, reasons))
        )
        passed = sum(item.passed for item in rows)
        return FormatResult(passed / len(rows), proportion_interval(passed, len(rows)), rows, checks)
    sampled = []
    for i, p in enumerate(prompts):
        these, why = answers[i * k : (i + 1) * k], reasons[i * k : (i + 1) * k]
        first = next((r for r in why if r), "")
        sampled.append(FormatItem(
            i, p, these[0], not first, first, len(these[0].split()), None if n_tokens is None else n_tokens[i * k],
            answers=tuple(these), reasons=tuple(why),
        ))
    stability = repeats([[0.0 if r else 1.0 for r in it.reasons] for it in sampled], binary=True)
    # the item is the unit: its samples are not independent draws
    return FormatResult(stability.mean, bounded_mean_interval(stability.means), tuple(sampled), checks, samples=k, stability=stability)


def _require_checks(checks: tuple[str, ...]) -> None:
    if not checks:
        raise DataError("no check given: pass json_schema=, regex=, contains=, not_contains= or max_words= (a gate on nothing would pass)")


def _cached_reasons(
    answers: list[str], n_tokens: list[int] | None, limit: int | None, schema: Any, extract: str,
    patterns: list[Pattern[str]], contains: list[str], not_contains: list[str], max_words: int | None,
) -> list[str]:
    """Every answer's reason ("" when it passed), remembered in the session's metric cache as one
    entry per call (keyed by the answers, their lengths and every check), so that a warm run neither
    imports jsonschema nor parses an answer."""
    from pytest_ftmodel.cache import MetricCache, active_metric_cache

    store = active_metric_cache()
    key = ""
    if store is not None:
        digest = hashlib.sha256("\x00".join(answers).encode("utf-8", "surrogatepass")).hexdigest()
        key = MetricCache.key("format", "jsonschema" if schema is not None else "python", {
            "answers": digest, "n": len(answers), "tokens": n_tokens, "limit": limit, "schema": schema, "extract": extract,
            "regex": [[p.pattern, p.flags] for p in patterns], "contains": contains, "not_contains": not_contains, "max_words": max_words,
        })
        found = store.get(key, _is_format)
        if found is not None and len(found["reasons"]) == len(answers):
            return list(found["reasons"])
    validator = schema_validator(schema) if schema is not None else None
    reasons = [
        _verdict(a, None if n_tokens is None else n_tokens[i], limit, validator, extract, patterns, contains, not_contains, max_words)
        for i, a in enumerate(answers)
    ]
    if store is not None:
        store.put(key, {"reasons": reasons})
    return reasons


# ---- answer length against the base model or the baseline ----------------------------------------

UNITS = ("tokens", "words")


@dataclass(frozen=True)
class LengthItem:
    index: int
    prompt: str
    answer: str
    length: int  # in the result's unit
    n_words: int
    n_tokens: int | None
    base_length: int | None  # the base model's (or the baseline's) answer, in the same unit; None: unpaired
    base_answer: str = ""

    @property
    def ratio(self) -> float | None:
        """(length + 1) / (base length + 1): defined for empty answers, 1 for equal lengths."""
        return None if self.base_length is None else (self.length + 1) / (self.base_length + 1)


@dataclass(frozen=True)
class LengthResult:
    """Answer lengths of a model and the paired ratio to a base (model or baseline file).

    ``ratio``: the geometric mean over paired items of ``(length + 1) / (base length + 1)``; its
    interval the t-interval of the mean log ratio, exponentiated (the log ratios of a paired design
    are close to symmetric where the ratios are not, and the geometric mean is the ratio of typical
    lengths, not dragged by one runaway answer as a ratio of means is)."""

    ratio: float
    interval: tuple[float, float]
    unit: str
    items: tuple[LengthItem, ...]
    against: str  # "base model" or "baseline"

    @property
    def n(self) -> int:
        return sum(item.base_length is not None for item in self.items)

    @property
    def mean_length(self) -> float:
        return sum(item.length for item in self.items) / len(self.items)

    @property
    def mean_base_length(self) -> float:
        paired = [item.base_length for item in self.items if item.base_length is not None]
        return sum(paired) / len(paired) if paired else float("nan")

    def extremes(self, k: int = 3, *, longest: bool = True) -> list[LengthItem]:
        paired = [item for item in self.items if item.ratio is not None]
        return sorted(paired, key=lambda item: (-(item.ratio or 0.0) if longest else (item.ratio or 0.0), item.index))[:k]


def geometric_ratio(ratios: Sequence[float], level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Geometric mean of ``ratios`` and the t-interval of their mean log, exponentiated."""
    import math

    logs = [math.log(r) for r in ratios]
    n = len(logs)
    mean = sum(logs) / n
    if n < 2:
        return math.exp(mean), (0.0, float("inf"))
    from scipy.special import stdtrit

    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = float(stdtrit(n - 1, 1 - (1 - level) / 2)) * sd / math.sqrt(n)
    return math.exp(mean), (math.exp(mean - half), math.exp(mean + half))


def _lengths(answers: Sequence[str], model: Any, unit: str) -> tuple[list[int], list[int], list[int] | None]:
    words = [len(a.split()) for a in answers]
    tokens = model_answer_tokens(model, answers)
    if unit == "tokens" and tokens is None:
        raise DataError("unit='tokens' needs the model's tokenizer: pass unit='words' for a model without one")
    return (tokens if unit == "tokens" and tokens is not None else words), words, tokens


def length_ratio(
    model: Any,
    data: Sequence[Any],
    base: Any = None,
    *,
    base_lengths: Sequence[int | None] | None = None,
    unit: str = "tokens",
    prompt_key: str = "instruction",
    max_new_tokens: int = 128,
    **generate_kwargs: Any,
) -> LengthResult:
    """Each answer's length (``unit``: "tokens" as the fine-tuned model's tokenizer counts them, for
    both models, or "words") and the paired ratio to ``base``'s answers to the same prompts, or to
    ``base_lengths`` (one per item, None where the item has none: e.g. a baseline file's)."""
    from pytest_ftmodel.data import require_keys
    from pytest_ftmodel.generation import generate

    if unit not in UNITS:
        raise DataError(f"unit={unit!r} is not known: use one of {', '.join(map(repr, UNITS))}")
    if (base is None) == (base_lengths is None):
        raise DataError("length_ratio needs exactly one of base= (a model) or base_lengths= (one per item)")
    items = require_keys(data, [prompt_key])
    if not items:
        raise DataError("data is empty: pass at least one item (a gate on nothing would pass)")
    prompts = [str(item[prompt_key]) for item in items]
    answers = generate(model, prompts, max_new_tokens=max_new_tokens, **generate_kwargs)
    lengths, words, tokens = _lengths(answers, model, unit)
    base_answers = [""] * len(prompts)
    if base is not None:
        base_answers = generate(base, prompts, max_new_tokens=max_new_tokens, **generate_kwargs)
        # counted by the fine-tuned model's tokenizer too: one measuring stick for both
        paired: list[int | None] = list(_lengths(base_answers, model, unit)[0])
    else:
        paired = list(base_lengths or [])
        if len(paired) != len(prompts):
            raise DataError(f"{len(paired)} base lengths for {len(prompts)} items: pass one per item (None where unknown)")
    rows = tuple(
        LengthItem(i, p, a, lengths[i], words[i], None if tokens is None else tokens[i], paired[i], base_answers[i])
        for i, (p, a) in enumerate(zip(prompts, answers))
    )
    ratios = [r for r in (row.ratio for row in rows) if r is not None]
    if not ratios:
        raise DataError("no item has a base length to compare with: the baseline holds none of these items (re-record it)")
    ratio, interval = geometric_ratio(ratios)
    return LengthResult(ratio, interval, unit, rows, "base model" if base is not None else "baseline")
