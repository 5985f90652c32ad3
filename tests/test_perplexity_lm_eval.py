"""perplexity(..., windows="lm-eval"): lm-evaluation-harness's rolling windows, reproduced.

In CI: against a per-token log-softmax reference of lm-eval's rule written out here (one forward pass
per token, its context read off the rule), with hypothesis over lengths and window sizes. With
``-m slow``: against lm-eval's own ``HFLM.loglikelihood_rolling`` (``add_bos_token=False``).
"""

from __future__ import annotations

import inspect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ftmodel import DataError, assert_perplexity_below, assert_perplexity_improves, perplexity
from pytest_ftmodel.metrics.perplexity import lm_eval_windows, perplexity_improvement

torch = pytest.importorskip("torch")

LONG = " ".join(
    f"The {a} cat chased the {b} ball in the garden." for a, b in zip(["small", "old", "quick"] * 12, ["red", "blue"] * 18)
)



# these tests check what scoring computes: no score may come from the session's disk cache
# (tests/test_score_cache.py covers the cache)
pytestmark = pytest.mark.usefixtures("no_score_cache")


def _fresh(model):
    model.memo.clear()
    return model


def _lm_eval_context_start(t: int, n: int, max_length: int) -> int:
    """Where the context of text token ``t`` (of ``n``) starts, in ids ``[prefix] + tokens``, under
    lm-eval's rule: the first ``max_length`` tokens see everything before them from the prefix on;
    later tokens come in blocks of ``max_length``, and a block ending at token ``end`` is fed the
    ``max_length`` ids before ``end`` (a short last block thus reaches back for a full window)."""
    if t < max_length:
        return 0
    block_start = max_length + (t - max_length) // max_length * max_length
    end = min(block_start + max_length, n)  # one past the block's last token, in text tokens
    return end - max_length  # text token end - max_length - 1 is id end - max_length


def _reference(model, text: str, max_length: int) -> tuple[float, int]:
    """Each token's own context, one row per token (right-padded: a causal model's logits at the
    context's last position do not see the padding), then a float64 log-softmax of that row."""
    tok = model.tokenizer
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    tokens = tok(text, add_special_tokens=False).input_ids
    ids = [prefix, *tokens]
    contexts = [ids[_lm_eval_context_start(t, len(tokens), max_length) : t + 1] for t in range(len(tokens))]
    assert all(1 <= len(c) <= max_length for c in contexts)
    width = max(map(len, contexts))
    batch = torch.tensor([c + [0] * (width - len(c)) for c in contexts])
    with torch.no_grad():
        logits = model.model(input_ids=batch).logits.double()
    last = logits[torch.arange(len(contexts)), torch.tensor([len(c) - 1 for c in contexts])]
    logp = torch.log_softmax(last, dim=-1)[torch.arange(len(tokens)), torch.tensor(tokens)]
    return -float(logp.sum()), len(tokens)


lm_eval_settings = settings(
    max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@lm_eval_settings
@given(length=st.integers(1, 130), max_length=st.integers(2, 40))
def test_matches_a_per_token_reference_of_lm_evals_rule(demo_model, length, max_length) -> None:
    text = LONG[:length]
    result = perplexity(_fresh(demo_model), [text], max_length=max_length, windows="lm-eval")
    nll, n = _reference(demo_model, text, max_length)
    assert result.n_tokens == n
    assert result.nll == pytest.approx(nll, rel=1e-5)


def test_differs_from_every_sliding_stride_on_a_long_text(byte_model) -> None:
    """No stride reproduces lm-eval: its windows score max_length tokens after one token of context."""
    text, max_length = LONG[:200], 32
    target = perplexity(_fresh(byte_model), [text], max_length=max_length, windows="lm-eval").nll
    nll, _ = _reference(byte_model, text, max_length)
    assert target == pytest.approx(nll, rel=1e-5)
    for stride in (max_length - 1, max_length // 2, max_length - max_length // 4):
        assert perplexity(byte_model, [text], max_length=max_length, stride=stride).nll != pytest.approx(target, rel=1e-4)


@given(n=st.integers(0, 400), max_length=st.integers(1, 64))
def test_lm_eval_windows_score_every_token_once(n, max_length) -> None:
    spans = lm_eval_windows(n, max_length)
    scored = [j for begin, end, first in spans for j in range(first, end)]
    assert sorted(scored) == list(range(1, n)) and len(scored) == len(set(scored))
    for i, (begin, end, first) in enumerate(spans):
        assert end - 1 - begin <= max_length  # ids fed: the last id is only a target
        if i == 0:
            assert (begin, first) == (0, 1)
        else:
            assert end - first <= max_length and end - 1 - begin == max_length  # a full window, always


def test_words_are_counted_as_lm_evals_wikitext_task(bpe_model) -> None:
    texts = [" The cat sat.\n\nOn the mat. ", "A  b"]
    lm = perplexity(bpe_model, texts, windows="lm-eval")
    ours = perplexity(bpe_model, texts)
    words_lm = sum(len(re.split(r"\s+", t)) for t in texts)  # 8 + 2: the leading and trailing "" count
    assert [s.n_words for s in lm.per_text] == [8, 2] and words_lm == 10
    assert [s.n_words for s in ours.per_text] == [6, 2]
    assert lm.word_perplexity == pytest.approx(2.718281828459045 ** (lm.nll / words_lm))


@pytest.mark.parametrize(
    ("kwargs", "items", "message"),
    [
        ({"windows": "rolling"}, ["a text"], "windows='rolling' is not a window rule: use 'sliding' (the default) or 'lm-eval'"),
        ({"windows": "lm-eval", "stride": 8}, ["a text"], "stride does not apply to windows='lm-eval'"),
        ({"windows": "lm-eval"}, ["a text", ("Q?", "A.")], "item 1 is a (context, continuation) pair: windows='lm-eval' scores whole texts"),
    ],
)
def test_bad_window_options_say_what_to_do(bpe_model, kwargs, items, message) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        perplexity(bpe_model, items, **kwargs)


# ---- the helpers take every keyword perplexity() takes ----------------------------------------------


def _keywords(function) -> set[str]:
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY}


@pytest.mark.parametrize("helper", [assert_perplexity_below, assert_perplexity_improves, perplexity_improvement])
def test_helpers_take_every_keyword_of_perplexity(helper) -> None:
    assert _keywords(perplexity) <= _keywords(helper)


def test_pairs_through_the_gate_are_scored_with_the_chat_template(bpe_model) -> None:
    pairs = [("Classify the sentiment: The book was lovely.", "positive"), ("Classify the sentiment: The tea was awful.", "negative")]
    chat = perplexity(bpe_model, pairs, chat="auto")
    assert chat.perplexity != pytest.approx(perplexity(bpe_model, pairs).perplexity, rel=1e-3)  # the template matters
    gated = assert_perplexity_below(bpe_model, pairs, chat.perplexity * 1.001, chat="auto")
    assert gated.nll == chat.nll and gated.n_tokens == chat.n_tokens


def test_improvement_passes_every_keyword_to_both_models(bpe_model, bpe_pair) -> None:
    from pytest_ftmodel import load_model

    base = load_model(bpe_pair.base, device="cpu")
    texts = [LONG[:300], "A short one."]
    # a bar any result clears: this checks what reaches perplexity(), not the verdict
    r = assert_perplexity_improves(bpe_model, base, texts, -100.0, max_length=24, windows="lm-eval")
    for model, got in ((bpe_model, r.model), (base, r.base)):
        assert got.nll == pytest.approx(perplexity(model, texts, max_length=24, windows="lm-eval").nll)
        assert got.nll != pytest.approx(perplexity(model, texts, max_length=24).nll, rel=1e-6)


# ---- against lm-eval itself (heavy install: run with -m slow) ---------------------------------------


def _long_texts(tokenizer, context: int) -> list[str]:
    """Validation-style texts of 1 to ~3.5 contexts' worth of tokens, plus short ones."""
    from pytest_ftmodel import texts_of
    from pytest_ftmodel.demo import demo_data

    pool = texts_of(demo_data()["val"])
    texts, current = [], ""
    for i, text in enumerate(pool * 4):
        current = f"{current}\n\n{text}" if current else text
        if len(tokenizer(current, add_special_tokens=False).input_ids) > context * (1 + len(texts) % 4 * 0.8):
            texts.append(current)
            current = ""
    return [*texts[:6], pool[0], pool[1][:9]]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["byte", "bpe"])
def test_matches_lm_eval_loglikelihood_rolling(family, request) -> None:
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pytest_ftmodel import load_model

    pair = request.getfixturevalue(f"{family}_pair")
    ours_model = load_model(pair.finetuned, device="cpu")
    context = min(ours_model.context_length, 128)  # windows shorter than the demo's 512 keep the texts short
    texts = _long_texts(ours_model.tokenizer, context)
    assert max(len(ours_model.tokenizer(t, add_special_tokens=False).input_ids) for t in texts) > 3 * context
    lm = HFLM(pretrained=str(pair.finetuned), add_bos_token=False, device="cpu", batch_size=1, max_length=context)
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    theirs = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    ours = perplexity(ours_model, texts, windows="lm-eval", max_length=context)
    worst = max(abs(s.nll + ll) / abs(ll) for s, ll in zip(ours.per_text, theirs))
    print(f"{family}: {len(texts)} texts, worst per-text relative error {worst:.2e}")
    assert worst <= 1e-6
