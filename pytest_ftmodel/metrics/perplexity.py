"""Exact, batched perplexity.

Scoring rule, the same for every text, model and batch:

* A text is tokenized *without* special tokens, then one start token is put in front of it: the
  tokenizer's BOS when it has one (what a Llama-style tokenizer adds itself, so it is never doubled),
  else its EOS (GPT-2's document separator; lm-evaluation-harness does the same). Every token of the
  text is scored, conditioned on that start token; the start token itself is not. A tokenizer with
  neither BOS nor EOS leaves the text's first token unscored.
* Special tokens that a tokenizer would append (ByT5's trailing EOS) are not scored.
* A sequence longer than the model's context is scored with sliding windows: the first window scores
  its whole ``max_length``; every later window feeds ``max_length - stride`` tokens of context and
  scores the next ``stride`` tokens (the last may score fewer). Each token is scored exactly once,
  with all of its left context while the text fits and at least ``max_length - stride`` tokens of
  it after that. Nothing is truncated. The default stride, three quarters of the window, keeps a
  quarter of the window as context while the extra forward work stays small enough to beat the
  naive truncating loop on CPU (bench/perplexity.py).
* ``windows="lm-eval"`` reproduces lm-evaluation-harness's ``loglikelihood_rolling`` (its HF model
  with ``add_bos_token=False``) instead: the start token, BOS else EOS, is always put in front of the
  text's tokens (even one that starts with it); the first window scores ``max_length`` tokens, every
  later one scores up to ``max_length`` tokens after a single token of context, and the last is moved
  back to end at the text's end with a full window of context. Words are counted as lm-eval's
  wikitext task counts them (``re.split(r"\\s+", text)``, no strip).
* Log-likelihoods come from shifted logits through a float32 log-softmax, gathered per target
  token; padding is masked, so a text scored alone or in any batch gives the same NLL.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence, Tuple, Union

import numpy as np

from pytest_ftmodel.data import require_strings
from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.stats import bootstrap_interval
from pytest_ftmodel.engines import engine_of
from pytest_ftmodel.tokens import prompt_ids, start_token_id, token_sequence, uses_chat

LN2 = math.log(2.0)


@dataclass(frozen=True)
class TextScore:
    """One text's contribution: summed NLL (nats) over its scored tokens."""

    nll: float
    n_tokens: int
    n_bytes: int
    n_words: int

    @property
    def per_token(self) -> float:
        return self.nll / self.n_tokens


@dataclass(frozen=True)
class PerplexityResult:
    """Corpus perplexity: ratios of corpus sums (lm-evaluation-harness conventions)."""

    perplexity: float
    nll: float
    n_tokens: int
    n_texts: int
    per_text: tuple[TextScore, ...]
    bits_per_byte: float
    word_perplexity: float
    interval: tuple[float, float]
    texts: tuple[str, ...] = ()
    #: the context of each ``(context, continuation)`` item ("" for a plain text): with ``texts``, an
    #: item's identity for baselines
    contexts: tuple[str, ...] = ()

    @property
    def mean_nll(self) -> float:
        """Token-weighted mean NLL per scored token (the "loss" a trainer prints)."""
        return self.nll / self.n_tokens

    def worst(self, k: int = 3) -> list[tuple[int, float]]:
        """Indices and per-token NLL of the ``k`` texts the model finds least likely."""
        order = sorted(range(len(self.per_text)), key=lambda i: -self.per_text[i].per_token)
        return [(i, self.per_text[i].per_token) for i in order[:k]]


@dataclass(frozen=True)
class ImprovementResult:
    """``improvement = 1 - ppl_model / ppl_base`` on the same texts, with a paired bootstrap interval."""

    improvement: float
    model: PerplexityResult
    base: PerplexityResult
    interval: tuple[float, float]


Item = Union[str, Tuple[str, str]]


def _check_texts(texts: Sequence[Any]) -> list[Item]:
    return require_strings(texts, "text", "to score", pairs=True)


def as_trained(tokenizer: Any, items: Sequence[Any], chat: bool | str) -> Sequence[Any]:
    """Instruction records (``{"instruction", "output"}``) as ``(prompt, answer)`` pairs formatted as
    the model was fine-tuned on them: through the chat template when ``chat`` uses it, which separates
    prompt and answer; without one as the text ``texts_of()`` writes and TRL's SFT trainer reads
    (instruction, line break, output), the line break scored with the answer. ``{"text"}`` records
    become their text; strings and pairs pass as they are."""
    if isinstance(items, (str, bytes)) or not any(isinstance(x, dict) for x in items):
        return items
    templated = uses_chat(tokenizer, chat)
    out: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and "instruction" in item and "output" in item:
            answer = str(item["output"])
            out.append((str(item["instruction"]), answer if templated else "\n" + answer))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append(item["text"])
        elif isinstance(item, dict):
            raise DataError(
                f"text {i} is a record with keys {sorted(item)}: pass instruction records "
                "(instruction + output), {'text': ...} records, strings or (context, continuation) pairs"
            )
        else:
            out.append(item)
    return out


def _scored_text(item: Item) -> str:
    return item if isinstance(item, str) else item[1]


def windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over a sequence of ``n`` ids: ``(begin, end, first_target)``.

    The window feeds ids ``[begin, end)`` and scores targets ``[first_target, end)``: every position
    ``1..n-1`` is scored exactly once.
    """
    if n < 2:
        return []
    if n <= max_length:
        return [(0, n, 1)]
    out = [(0, max_length, 1)]
    scored_to = max_length
    while scored_to < n:
        end = min(scored_to + stride, n)
        # max_length - stride tokens of context, then up to stride new targets (the last window may
        # be shorter: it feeds no more context than any other window gets)
        out.append((scored_to - (max_length - stride), end, scored_to))
        scored_to = end
    return out


def lm_eval_windows(n: int, max_length: int) -> list[tuple[int, int, int]]:
    """lm-evaluation-harness's disjoint rolling windows over a start token and ``n - 1`` text tokens,
    as ``(begin, end, first_target)`` like :func:`windows` (``get_rolling_token_windows`` with
    ``context_len=1``, then ``make_disjoint_window``).

    The first window feeds up to ``max_length`` ids and scores each of them; every later one scores
    up to ``max_length`` new targets and feeds exactly ``max_length`` ids, so a short last window
    reaches back for a full window of context.
    """
    if n < 2:
        return []
    out = [(0, min(n, max_length + 1), 1)]
    scored_to = out[0][1]
    while scored_to < n:
        end = min(scored_to + max_length, n)
        out.append((end - max_length - 1, end, scored_to))
        scored_to = end
    return out


WINDOW_RULES = ("sliding", "lm-eval")
sliding_windows = windows  # score_texts' keyword `windows` names the rule


def default_stride(max_length: int) -> int:
    """The stride used when none is given: three quarters of the window, so every token of a long
    text keeps at least a quarter of the window as left context."""
    return max(1, min(max_length - 1, max_length - max_length // 4))


def _n_words(text: str, rule: str = "sliding") -> int:
    if rule == "lm-eval":  # lm-eval's wikitext task: re.split on the raw text, no strip
        return len(re.split(r"\s+", text))
    return len(re.split(r"\s+", text.strip())) if text.strip() else 0


def _memo_key(item: Item, max_length: int, stride: int, chat: bool | str, rule: str, eos: bool = False) -> tuple[Any, ...]:
    text = item if isinstance(item, str) else "\0".join(item)
    return ("ppl-text", isinstance(item, tuple), chat, hashlib.sha1(text.encode()).hexdigest(), max_length, stride, rule, eos)


def _lm_eval_sequence(tokenizer: Any, text: str) -> list[int]:
    """lm-eval's ids for ``loglikelihood_rolling`` with ``add_bos_token=False``: its prefix token (BOS,
    else EOS) and then the text's tokens without special tokens, the prefix put there unconditionally."""
    start = start_token_id(tokenizer)
    if start is None:
        raise DataError("windows='lm-eval' needs a BOS or EOS token to condition on; this tokenizer has neither: use windows='sliding'")
    return [start, *tokenizer(text, add_special_tokens=False).input_ids]


def _check_rule(windows: str, stride: int | None, texts: Sequence[Item], eos: bool = False) -> None:
    if windows not in WINDOW_RULES:
        raise DataError(f"windows={windows!r} is not a window rule: use 'sliding' (the default) or 'lm-eval'")
    if windows == "lm-eval":
        if eos:
            raise DataError("eos=True does not apply to windows='lm-eval' (lm-eval scores no end-of-sequence token): drop eos or use windows='sliding'")
        if stride is not None:
            raise DataError("stride does not apply to windows='lm-eval' (lm-eval's windows are fixed): drop stride or use windows='sliding'")
        pair = next((i for i, t in enumerate(texts) if isinstance(t, tuple)), None)
        if pair is not None:
            raise DataError(
                f"item {pair} is a (context, continuation) pair: windows='lm-eval' scores whole texts as lm-eval's "
                "loglikelihood_rolling does; use windows='sliding' for pairs"
            )


def _sequence(tokenizer: Any, item: Item, chat: bool | str, eos: bool = False) -> tuple[list[int], int]:
    """Ids of an item and the position of its first scored target; with ``eos``, the end-of-sequence
    token follows the scored text (once: a text that already ends with it keeps it), as TRL's SFT
    collators append it, so that it is scored too."""
    if isinstance(item, str):
        ids, start = token_sequence(tokenizer, item), 1
    else:
        context = prompt_ids(tokenizer, item[0], chat=chat)
        ids, start = context + list(tokenizer(item[1], add_special_tokens=False).input_ids), len(context)
    if eos and ids[-1:] != [tokenizer.eos_token_id]:
        ids.append(int(tokenizer.eos_token_id))
    return ids, start


def _check_eos(tokenizer: Any, eos: bool) -> None:
    if eos and getattr(tokenizer, "eos_token_id", None) is None:
        raise DataError("eos=True, but the tokenizer has no end-of-sequence token to score: drop eos, or set the tokenizer's eos_token")


def score_texts(
    model: Any,
    texts: Sequence[Item],
    *,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    chat: bool | str = False,
    windows: str = "sliding",
    eos: bool = False,
    on_scored: Callable[[int, TextScore], None] | None = None,
) -> list[TextScore]:
    """Per-text NLL and scored-token counts; results are remembered on the model for the session.
    ``on_scored(index, score)`` is called for each text as soon as its score is known (those
    remembered first), so that an interrupted run keeps what it finished.

    An item is a text (every token scored, see the module doc) or a ``(context, continuation)`` pair:
    the context is formatted as a generation prompt (through the chat template when ``chat`` says
    so, see :func:`~pytest_ftmodel.tokens.prompt_ids`) and only the continuation's tokens are scored.
    ``eos``: the end-of-sequence token is scored after each text or continuation too.
    """
    texts = _check_texts(as_trained(model.tokenizer, texts, chat))
    rule = windows
    _check_rule(rule, stride, texts, eos)
    tokenizer = model.tokenizer
    engine = engine_of(model)
    engine.check_scoring()
    _check_eos(tokenizer, eos)
    # a served model without a known context scores each text whole; the server says if it is too long
    max_length = int(max_length or model.context_length or (1 << 30))
    if max_length < 2:
        raise DataError(f"max_length {max_length} is too small: windows need at least 2 tokens")
    stride = 0 if rule == "lm-eval" else int(stride or default_stride(max_length))
    if rule == "sliding" and not 0 < stride <= max_length - 1:
        raise DataError(f"stride {stride} must be between 1 and max_length - 1 ({max_length - 1})")
    memo: dict[Any, Any] = getattr(model, "memo", {})
    scores: list[TextScore | None] = [memo.get(_memo_key(t, max_length, stride, chat, rule, eos)) for t in texts]
    for i, known in enumerate(scores):
        if known is not None and on_scored is not None:
            on_scored(i, known)
    units: list[tuple[list[int], int]] = []
    owners: list[int] = []
    counts: dict[int, int] = {}
    for i, text in enumerate(texts):
        if scores[i] is not None:
            continue
        if rule == "lm-eval":
            assert isinstance(text, str)
            seq, start = _lm_eval_sequence(tokenizer, text), 1
            spans = lm_eval_windows(len(seq), max_length)
        else:
            seq, start = _sequence(tokenizer, text, chat, eos)
            spans = [(b, e, max(f, start)) for b, e, f in sliding_windows(len(seq), max_length, stride) if e > start]
        if not spans:
            raise DataError(
                f"text {i} ({_scored_text(text)[:40]!r}) yields no token to score: remove empty texts or give them content"
            )
        counts[i] = len(seq) - start
        for begin, end, first in spans:
            units.append((seq[begin:end], end - first))
            owners.append(i)
    values: dict[int, float] = {}
    units_of: dict[int, list[int]] = {}
    for unit, owner in enumerate(owners):
        units_of.setdefault(owner, []).append(unit)

    def unit_done(unit: int, value: float) -> None:
        """Keep a window's sum; a text whose windows are all scored is scored (summed in window order,
        so the bits do not depend on the batching)."""
        values[unit] = value
        i = owners[unit]
        if any(u not in values for u in units_of[i]):
            return
        total = 0.0
        for u in units_of[i]:
            total += values[u]
        text = _scored_text(texts[i])
        score = TextScore(nll=total, n_tokens=counts[i], n_bytes=len(text.encode("utf-8")), n_words=_n_words(text, rule))
        scores[i] = score
        memo[_memo_key(texts[i], max_length, stride, chat, rule, eos)] = score
        if on_scored is not None:
            on_scored(i, score)

    if units:
        if not engine.scores_windows:
            _check_whole(units, owners, texts, max_length)
        scored = engine.score(units, batch_size=batch_size, on_done=unit_done)
        for unit, value in enumerate(scored):  # an engine that reports only at the end
            if unit not in values:
                unit_done(unit, value)
    return [s for s in scores if s is not None]


def _check_whole(units: list[tuple[list[int], int]], owners: list[int], texts: Sequence[Item], max_length: int) -> None:
    """A served model scores every text in one request: windows that start inside a text would be
    tokenized and prefixed by the server differently from in-process."""
    seen: set[int] = set()
    for owner in owners:
        if owner in seen:
            raise DataError(
                f"text {owner} ({_scored_text(texts[owner])[:40]!r}) is longer than the served model's context of "
                f"{max_length} tokens: served perplexity scores each text in one request; split long texts, or score "
                "them in-process (--model ./checkpoint)"
            )
        seen.add(owner)


#: Bumped whenever the scoring rule (module doc) changes, so scores cached under an older rule are not reused.
SCORE_RULE = 1


def _context(item: Any) -> str:
    return "" if isinstance(item, str) else str(item[0])


def _identity(item: Any) -> list[str] | None:
    """What an item is, without a tokenizer: a text, a (context, continuation) pair, or an instruction
    record (which the tokenizer and ``chat`` turn into a pair, see :func:`as_trained`); None for
    anything else, which is left to the uncached path to name."""
    if isinstance(item, str):
        return ["text", item]
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, str) for t in item):
        return ["pair", item[0], item[1]]
    if isinstance(item, dict):
        if "instruction" in item and "output" in item:
            return ["record", str(item["instruction"]), str(item["output"])]
        if isinstance(item.get("text"), str):
            return ["text", item["text"]]
    return None


def score_key(
    model: Any, identity: list[str], *, max_length: int | None, stride: int | None, chat: bool | str, windows: str, eos: bool = False
) -> str:
    """The cache key of one item's score: the model's files (fingerprint) and numerics (device kind,
    dtype), the item, and every setting that shapes its score, as requested: what the model's config
    and tokenizer make of a default (the context as window, ``chat="auto"``) follows from their files."""
    from pytest_ftmodel.cache import entry_key
    from pytest_ftmodel.tokens import PROMPT_RULE

    settings: dict[str, Any] = {
        "score": "nll",
        "score_rule": SCORE_RULE,
        "windows": windows,
        "max_length": None if max_length is None else int(max_length),
        "stride": None if stride is None else int(stride),
        **getattr(model, "numerics", {}),
    }
    if identity[0] != "text":  # chat formats the context of pairs and records only
        settings["chat"] = chat if chat == "auto" else bool(chat)
        settings["prompt_rule"] = PROMPT_RULE
    if eos:  # only when asked, so that scores cached before the option existed stay valid
        settings["eos"] = True
    return entry_key(model.fingerprint, json.dumps(identity, ensure_ascii=False), settings)


def cached_scores(
    model: Any,
    texts: Sequence[Any],
    *,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    chat: bool | str = False,
    windows: str = "sliding",
    cache: Any = "auto",
    eos: bool = False,
) -> tuple[list[TextScore], tuple[str, ...], tuple[str, ...]]:
    """Per-item scores, scored texts and their contexts ("" for a whole text) of :func:`perplexity`'s items, each taken from ``cache`` when
    it holds one for this model, item and settings; only the others are scored, in one batched pass,
    and stored. When every item is cached the model is not touched: a model that loads on first use
    (the pytest fixtures on a warm run) is never loaded."""
    from pytest_ftmodel.cache import resolve_cache

    store = resolve_cache(cache)
    items = list(texts) if not isinstance(texts, (str, bytes)) else texts
    identities = [_identity(x) for x in items] if store is not None and not isinstance(items, (str, bytes)) else []
    options: dict[str, Any] = dict(max_length=max_length, stride=stride, batch_size=batch_size, chat=chat, windows=windows, eos=eos)
    if store is None or not identities or any(i is None for i in identities):
        converted = _check_texts(as_trained(model.tokenizer, items, chat))
        return score_texts(model, converted, **options), tuple(_scored_text(t) for t in converted), tuple(_context(t) for t in converted)
    scores = store.scores
    keys = [score_key(model, ident, max_length=max_length, stride=stride, chat=chat, windows=windows, eos=eos) for ident in identities if ident]
    # an entry from before contexts were kept is scored again, so that item ids stay right
    found = [f if isinstance(f, dict) and "context" in f else None for f in (scores.get(k) for k in keys)]
    missing = [i for i, f in enumerate(found) if f is None]
    if missing:
        converted = _check_texts(as_trained(model.tokenizer, [items[i] for i in missing], chat))

        def keep(j: int, score: TextScore) -> None:
            """Cache each score as it is computed: a run stopped half-way keeps the half it scored."""
            i = missing[j]
            found[i] = {**asdict(score), "text": _scored_text(converted[j]), "context": _context(converted[j])}
            scores.put(keys[i], found[i])

        score_texts(model, converted, on_scored=keep, **options)
    entries = [f for f in found if f is not None]
    return (
        [TextScore(nll=e["nll"], n_tokens=e["n_tokens"], n_bytes=e["n_bytes"], n_words=e["n_words"]) for e in entries],
        tuple(e["text"] for e in entries),
        tuple(e.get("context", "") for e in entries),
    )


def _ppl_stat(nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    return np.exp(nll.sum(axis=-1) / tokens.sum(axis=-1))


def perplexity(
    model: Any,
    texts: Sequence[Item],
    *,
    stride: int | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    chat: bool | str = False,
    windows: str = "sliding",
    cache: Any = "auto",
    eos: bool = False,
) -> PerplexityResult:
    """Perplexity of ``model`` (an :class:`~pytest_ftmodel.FTModel`) on ``texts``.

    ``exp(summed NLL / scored tokens)`` over the corpus, exact for any batch size; long texts are
    scored with sliding windows of ``max_length`` (default: the model's context) advancing by
    ``stride`` (default: three quarters of the window, see :func:`default_stride`). ``batch_size``
    defaults to a size chosen from memory.
    Items may also be ``(context, continuation)`` pairs, of which only the continuation is scored, or
    instruction records, scored as the model was fine-tuned on them (see :func:`as_trained`).
    ``windows="lm-eval"`` scores texts exactly as lm-evaluation-harness's ``loglikelihood_rolling``
    (HF model, ``add_bos_token=False``) does, and counts words as its wikitext task does.
    ``eos=True`` scores the end-of-sequence token after each text or answer too, as supervised
    fine-tuning trains on it (TRL's SFT collators append it): the mean NLL of instruction records then
    equals a Trainer's ``eval_loss`` on them.
    ``cache="auto"`` takes per-text scores from the pytest session's cache, and stores new ones there
    (see :func:`cached_scores`); pass ``None`` to skip it, or a
    :class:`~pytest_ftmodel.cache.GenerationCache` outside pytest.
    """
    scores, scored, contexts = cached_scores(
        model, texts, max_length=max_length, stride=stride, batch_size=batch_size, chat=chat, windows=windows, cache=cache, eos=eos
    )
    nll = sum(s.nll for s in scores)
    n_tokens = sum(s.n_tokens for s in scores)
    n_bytes = sum(s.n_bytes for s in scores)
    n_words = sum(s.n_words for s in scores)
    interval = bootstrap_interval([[s.nll for s in scores], [s.n_tokens for s in scores]], _ppl_stat)
    return PerplexityResult(
        perplexity=math.exp(nll / n_tokens),
        nll=nll,
        n_tokens=n_tokens,
        n_texts=len(scores),
        per_text=tuple(scores),
        bits_per_byte=nll / (LN2 * n_bytes) if n_bytes else float("nan"),
        word_perplexity=math.exp(nll / n_words) if n_words else float("nan"),
        interval=interval,
        texts=scored,
        contexts=contexts,
    )


def perplexity_improvement(
    model: Any,
    base: Any,
    texts: Sequence[Item],
    *,
    stride: int | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    chat: bool | str = False,
    windows: str = "sliding",
    cache: Any = "auto",
    eos: bool = False,
) -> ImprovementResult:
    """``1 - ppl_model / ppl_base`` on the same texts, with a paired bootstrap interval over texts;
    every keyword is :func:`perplexity`'s, applied to both models."""
    options: dict[str, Any] = dict(stride=stride, batch_size=batch_size, max_length=max_length, chat=chat, windows=windows, cache=cache, eos=eos)
    mine = perplexity(model, texts, **options)
    theirs = perplexity(base, texts, **options)

    def stat(m_nll: np.ndarray, m_tok: np.ndarray, b_nll: np.ndarray, b_tok: np.ndarray) -> np.ndarray:
        return 1.0 - _ppl_stat(m_nll, m_tok) / _ppl_stat(b_nll, b_tok)

    interval = bootstrap_interval(
        [
            [s.nll for s in mine.per_text],
            [s.n_tokens for s in mine.per_text],
            [s.nll for s in theirs.per_text],
            [s.n_tokens for s in theirs.per_text],
        ],
        stat,
    )
    return ImprovementResult(
        improvement=1.0 - mine.perplexity / theirs.perplexity, model=mine, base=theirs, interval=interval
    )
