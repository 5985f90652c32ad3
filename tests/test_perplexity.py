"""perplexity(): checked against hand-written log-softmax references, and with properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ftmodel import DataError, perplexity, perplexity_improvement
from pytest_ftmodel.metrics.perplexity import score_texts, windows

torch = pytest.importorskip("torch")

SHORT = [
    "Summarize: The old fox ate the cake in the park. It was a cold day.\nThe fox ate the cake.",
    "Classify the sentiment: The song was dreadful.\nnegative",
    "hi",
    "Write a Python function add(a, b) that returns the sum of a and b.\ndef add(a, b):\n    return a + b",
    "Ünïcödé and emoji 🙂 survive tokenization.",
]
LONG = " ".join(f"The {a} cat chased the {b} ball in the garden." for a, b in zip(["small", "old", "quick"] * 12, ["red", "blue"] * 18))


def _ids(model, text: str) -> list[int]:
    """The scoring rule written out independently: BOS, else EOS, then the text's own tokens."""
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [start, *tok(text, add_special_tokens=False).input_ids]


def _token_nlls(model, context: list[int]) -> torch.Tensor:
    """-log p(context[j] | context[:j]) for j >= 1, from a full log-softmax in float64."""
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([context])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(context[1:])
    return -logp[:-1].gather(1, targets[:, None])[:, 0]


def _reference_full(model, text: str) -> tuple[float, int]:
    ids = _ids(model, text)
    return float(_token_nlls(model, ids).sum()), len(ids) - 1


def _reference_windowed(model, text: str, max_length: int, stride: int) -> tuple[float, int]:
    """One forward pass per token. Token j sees all of its prefix while j < max_length; after that the
    window that scores it starts at a multiple of the stride (the transformers perplexity guide's
    loop), k * stride with k = (j - max_length) // stride + 1. stride=1: as much context as fits."""
    ids = _ids(model, text)
    total = 0.0
    for j in range(1, len(ids)):
        begin = 0 if j < max_length else ((j - max_length) // stride + 1) * stride
        assert j - begin >= min(j, max_length - stride) and j + 1 - begin <= max_length
        total += float(_token_nlls(model, ids[begin : j + 1])[-1])
    return total, len(ids) - 1



# these tests check what scoring computes: no score may come from the session's disk cache
# (tests/test_score_cache.py covers the cache)
pytestmark = pytest.mark.usefixtures("no_score_cache")


def _fresh(model):
    model.memo.clear()  # results are remembered per session; these tests must recompute
    return model


def test_matches_a_hand_written_log_softmax(demo_model) -> None:
    result = perplexity(_fresh(demo_model), SHORT)
    total_nll, total_tokens = 0.0, 0
    for text, score in zip(SHORT, result.per_text):
        nll, n = _reference_full(demo_model, text)
        assert score.n_tokens == n
        assert score.nll == pytest.approx(nll, rel=1e-5)
        total_nll, total_tokens = total_nll + nll, total_tokens + n
    assert result.n_tokens == total_tokens and result.n_texts == len(SHORT)
    assert result.nll == pytest.approx(total_nll, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-5)


def test_first_token_rule_keeps_one_bos_or_uses_eos(byte_model, bpe_model) -> None:
    # Llama style: the tokenizer adds BOS itself; it is scored as context once, never doubled
    text = "The cat chased the ball."
    bpe_ids = bpe_model.tokenizer(text).input_ids
    assert bpe_ids[0] == bpe_model.tokenizer.bos_token_id
    assert perplexity(bpe_model, [text]).n_tokens == len(bpe_ids) - 1
    # GPT-2 style, no BOS, tokenizer(text) adds nothing: every token is scored after an EOS start token
    assert byte_model.tokenizer(text).input_ids == byte_model.tokenizer(text, add_special_tokens=False).input_ids
    assert perplexity(byte_model, [text]).n_tokens == len(byte_model.tokenizer(text).input_ids)


@pytest.mark.parametrize("max_length, stride", [(16, 1), (33, 1), (16, 5), (33, None), (33, 32)])
def test_long_texts_are_scored_with_sliding_windows(demo_model, max_length, stride) -> None:
    result = perplexity(_fresh(demo_model), [LONG[:300]], max_length=max_length, stride=stride)
    nll, n = _reference_windowed(demo_model, LONG[:300], max_length, stride or max_length - max_length // 4)
    assert result.n_tokens == n
    assert result.nll == pytest.approx(nll, rel=1e-5)


def test_texts_longer_than_the_context_are_not_truncated(demo_model) -> None:
    text = LONG * 2
    n = len(_ids(demo_model, text)) - 1
    assert n > demo_model.context_length  # really longer than the model can see at once
    result = perplexity(_fresh(demo_model), [text])
    assert result.n_tokens == n
    # the default stride is three quarters of the context: the same as asking for it explicitly
    length = demo_model.context_length
    again = perplexity(_fresh(demo_model), [text], stride=length - length // 4)
    assert again.nll == pytest.approx(result.nll, rel=1e-6)
    assert perplexity(_fresh(demo_model), [text], stride=length // 2).nll != pytest.approx(result.nll, rel=1e-6)


def test_the_naive_recipe_differs(byte_model) -> None:
    """`outputs.loss * n_tokens` over-counts by one token per text; ours counts scored targets."""
    text = SHORT[1]
    ids = torch.tensor([_ids(byte_model, text)])
    with torch.no_grad():
        loss = float(byte_model.model(input_ids=ids, labels=ids).loss)
    naive = loss * ids.shape[1]
    ours = perplexity(_fresh(byte_model), [text]).nll
    assert ours == pytest.approx(loss * (ids.shape[1] - 1), rel=1e-5)
    assert naive > ours * 1.001


def test_corpus_ratios_and_interval(demo_model) -> None:
    r = perplexity(demo_model, SHORT)
    n_bytes = sum(len(t.encode()) for t in SHORT)
    n_words = sum(len(t.split()) for t in SHORT)
    assert r.bits_per_byte == pytest.approx(r.nll / math.log(2) / n_bytes)
    assert r.word_perplexity == pytest.approx(math.exp(r.nll / n_words))
    low, high = r.interval
    assert low <= r.perplexity <= high
    assert perplexity(demo_model, SHORT).interval == r.interval  # seeded
    worst = r.worst(2)
    assert [i for i, _ in worst] == sorted(range(len(SHORT)), key=lambda i: -r.per_text[i].per_token)[:2]


def test_results_are_reused_within_the_session(bpe_model, monkeypatch) -> None:
    perplexity(bpe_model, SHORT)
    calls = []
    real = type(bpe_model.model).forward
    monkeypatch.setattr(type(bpe_model.model), "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = perplexity(bpe_model, list(reversed(SHORT)) + ["A new text."])
    assert len(calls) == 1  # only the new text was scored
    assert again.n_texts == len(SHORT) + 1


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "no texts to score"),
        ("just one string", "texts is a single string: pass a list"),
        (["ok", 3], "text 1 is int, not str"),
        (["ok", "fine", ""], "text 2 ('') yields no token to score"),
    ],
)
def test_bad_input_names_the_item_and_the_fix(bpe_model, texts, message) -> None:
    with pytest.raises(DataError, match=__import__("re").escape(message)):
        perplexity(bpe_model, texts)


def test_improvement_is_one_minus_the_ratio(bpe_model, bpe_pair) -> None:
    from pytest_ftmodel import load_model

    base = load_model(bpe_pair.base, device="cpu")
    r = perplexity_improvement(bpe_model, base, SHORT)
    assert r.improvement == pytest.approx(1 - perplexity(bpe_model, SHORT).perplexity / perplexity(base, SHORT).perplexity)
    assert r.interval[0] <= r.improvement <= r.interval[1]


# ---- properties -------------------------------------------------------------------------------

texts_strategy = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=120).filter(str.strip),
    min_size=1,
    max_size=7,
)
slow = settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@slow
@given(texts=texts_strategy, batch_size=st.integers(1, 8))
def test_batch_size_never_changes_a_number(demo_model, texts, batch_size) -> None:
    alone = [score_texts(_fresh(demo_model), [t], batch_size=1)[0] for t in texts]
    together = score_texts(_fresh(demo_model), texts, batch_size=batch_size)
    for a, b in zip(alone, together):
        assert b.n_tokens == a.n_tokens
        assert b.nll == pytest.approx(a.nll, rel=1e-5, abs=1e-6)


@slow
@given(texts=texts_strategy)
def test_n_tokens_is_the_rules_count(demo_model, texts) -> None:
    result = perplexity(demo_model, texts)
    assert result.n_tokens == sum(len(demo_model.tokenizer(t, add_special_tokens=False).input_ids) for t in texts)


@slow
@given(text=st.text(min_size=1, max_size=60).filter(str.strip), stride=st.integers(1, 60))
def test_window_scoring_equals_full_context_when_the_text_fits(byte_model, text, stride) -> None:
    full = perplexity(_fresh(byte_model), [text])
    windowed = perplexity(_fresh(byte_model), [text], max_length=200, stride=min(stride, 199))
    assert windowed.nll == pytest.approx(full.nll, rel=1e-6)


@given(n=st.integers(0, 400), max_length=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_once_with_enough_context(n, max_length, data) -> None:
    stride = data.draw(st.integers(1, max_length - 1))
    spans = windows(n, max_length, stride)
    scored = [j for begin, end, first in spans for j in range(first, end)]
    assert sorted(scored) == list(range(1, n)) and len(scored) == len(set(scored))
    for begin, end, first in spans:
        assert 0 <= begin < first <= end <= n and end - begin <= max_length
        # the first target of a window sees the whole prefix, or exactly max_length - stride tokens:
        # a short last window feeds no more context than the others
        assert (begin, first) == (0, 1) or first - begin == max_length - stride


@pytest.mark.parametrize("chat", [False, "auto"])
def test_a_pair_scores_only_the_continuation_given_the_context(demo_model, chat) -> None:
    from pytest_ftmodel.tokens import prompt_ids

    context, continuation = "Classify the sentiment: The book was lovely.", "positive"
    result = perplexity(_fresh(demo_model), [(context, continuation)], chat=chat)
    ctx = prompt_ids(demo_model.tokenizer, context, chat=chat)
    cont = demo_model.tokenizer(continuation, add_special_tokens=False).input_ids
    nlls = _token_nlls(demo_model, ctx + cont)
    assert result.n_tokens == len(cont)
    # abs: the fine-tuned demo is sure of the label (NLL ~0.01), where float32 rounding is ~1e-7
    assert result.nll == pytest.approx(float(nlls[-len(cont):].sum()), rel=1e-5, abs=1e-6)
    assert result.texts == (continuation,)


def test_a_pair_longer_than_the_context_scores_every_continuation_token_once(bpe_model) -> None:
    context, continuation = LONG, " The cat chased the ball." * 3
    result = perplexity(_fresh(bpe_model), [(context, continuation)], max_length=32, stride=8)
    assert result.n_tokens == len(bpe_model.tokenizer(continuation, add_special_tokens=False).input_ids)


def test_logits_only_at_scored_positions_give_the_same_numbers(demo_model, monkeypatch) -> None:
    """Where the model takes logits_to_keep, only scored positions are projected onto the vocabulary;
    the full-logits path must give the same NLL for windows (context positions) and padded batches."""
    from pytest_ftmodel.engines import transformers as ppl_module

    texts = [LONG[:200], *SHORT]
    calls: list[bool] = []
    forward = type(demo_model.model).forward

    def spy(self, *args, **kwargs):
        calls.append("logits_to_keep" in kwargs)
        return forward(self, *args, **kwargs)

    assert ppl_module._keeps_mask(demo_model.model)  # read from the real forward's signature
    monkeypatch.setattr(type(demo_model.model), "forward", spy)
    kept = perplexity(_fresh(demo_model), texts, max_length=24, stride=10)
    assert calls and all(calls)  # both demo families take the mask: the fast path really ran
    monkeypatch.setitem(ppl_module._KEEPS_MASK, type(demo_model.model), False)
    calls.clear()
    full = perplexity(_fresh(demo_model), texts, max_length=24, stride=10)
    assert calls and not any(calls)
    assert full.n_tokens == kept.n_tokens
    for a, b in zip(full.per_text, kept.per_text):
        assert a.nll == pytest.approx(b.nll, rel=1e-5)


def test_a_model_that_reads_logits_to_keep_the_old_way_falls_back(demo_model, monkeypatch) -> None:
    """Older causal LMs slice `hidden[:, logits_to_keep, :]`, which a boolean mask breaks: scoring
    falls back to full logits for that model class and gives the same numbers."""
    from pytest_ftmodel.engines import transformers as ppl_module

    texts = [LONG[:120], *SHORT]
    expected = perplexity(_fresh(demo_model), texts, max_length=24, stride=10)
    forward = type(demo_model.model).forward

    def old_style(self, *args, logits_to_keep=0, **kwargs):
        out = forward(self, *args, **kwargs)
        if not isinstance(logits_to_keep, int):
            out.logits = out.logits[:, logits_to_keep, :]  # IndexError for a 2-D mask, as before
        return out

    monkeypatch.setattr(type(demo_model.model), "forward", old_style)
    monkeypatch.delitem(ppl_module._KEEPS_MASK, type(demo_model.model), raising=False)
    got = perplexity(_fresh(demo_model), texts, max_length=24, stride=10)
    assert ppl_module._KEEPS_MASK[type(demo_model.model)] is False
    for a, b in zip(got.per_text, expected.per_text):
        assert a.nll == pytest.approx(b.nll, rel=1e-5)


def test_instruction_records_are_scored_as_the_model_was_fine_tuned(demo_model) -> None:
    """A record is its answer given its prompt: through the chat template when the tokenizer has one,
    else the SFT text (instruction, line break, output) with the line break scored with the answer."""
    from pytest_ftmodel.tokens import prompt_ids

    record = {"instruction": "Classify the sentiment: The book was lovely.", "output": "positive"}
    result = perplexity(_fresh(demo_model), [record], chat="auto")
    tok = demo_model.tokenizer
    templated = bool(getattr(tok, "chat_template", None))
    answer = record["output"] if templated else "\n" + record["output"]
    ctx = prompt_ids(tok, record["instruction"], chat="auto")
    cont = tok(answer, add_special_tokens=False).input_ids
    nlls = _token_nlls(demo_model, ctx + cont)
    assert result.n_tokens == len(cont)
    assert result.nll == pytest.approx(float(nlls[-len(cont):].sum()), rel=1e-5, abs=1e-5)  # float32 scoring
    # the same numbers as the pair written out by hand, and {"text"} records are their text
    assert perplexity(_fresh(demo_model), [(record["instruction"], answer)], chat="auto").nll == pytest.approx(result.nll)
    assert perplexity(_fresh(demo_model), [{"text": SHORT[0]}]).nll == pytest.approx(perplexity(_fresh(demo_model), [SHORT[0]]).nll)


def test_a_record_of_another_shape_is_one_line(bpe_model) -> None:
    with pytest.raises(DataError, match=r"text 1 is a record with keys \['prompt'\]: pass instruction records"):
        perplexity(bpe_model, [{"instruction": "a", "output": "b"}, {"prompt": "x"}])
