"""generate(): batching never changes an answer, sampling is seeded per prompt, stops and chat."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import typing
import warnings

from pytest_ftmodel import DataError, generate, perplexity
from pytest_ftmodel import generation as generation_mod
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.engines.transformers import _processors
from pytest_ftmodel.generation import TruncationWarning
from pytest_ftmodel.tokens import prompt_ids, prompt_parts, token_sequence

torch = pytest.importorskip("torch")

DATA = demo_data()
PROMPTS = [r["instruction"] for r in DATA["val"][::3]] + [p["prompt"] for p in DATA["problems"][:3]] + ["Hi", "Summarize: The cat."]


def test_greedy_answers_are_the_same_alone_or_in_a_batch(demo_model) -> None:
    batched = generate(demo_model, PROMPTS, max_new_tokens=40, cache=None)
    alone = [generate(demo_model, [p], max_new_tokens=40, cache=None)[0] for p in PROMPTS]
    assert batched == alone
    assert generate(demo_model, PROMPTS, max_new_tokens=40, cache=None, batch_size=3) == batched


def test_the_fine_tuned_demo_answers_its_tasks(bpe_model) -> None:
    answers = generate(bpe_model, [p["prompt"] for p in DATA["problems"]], max_new_tokens=40, cache=None)
    passed = 0
    for answer, problem in zip(answers, DATA["problems"]):
        try:
            exec(answer + "\n" + problem["test_code"], {})  # noqa: S102 - our own demo's answers
            passed += 1
        except Exception:  # noqa: BLE001
            pass
    assert passed >= 6


def test_only_new_text_is_returned_without_special_tokens(byte_model) -> None:
    prompt = DATA["problems"][0]["prompt"]
    [answer] = generate(byte_model, [prompt], max_new_tokens=40, cache=None)
    assert prompt not in answer and byte_model.tokenizer.eos_token not in answer and "<|endoftext|>" not in answer
    assert answer.strip().startswith("def add(a, b):")


def test_sampling_is_seeded_per_prompt_not_per_batch(demo_model) -> None:
    kwargs = dict(max_new_tokens=24, temperature=1.0, n=3, seed=11, cache=None)
    together = generate(demo_model, PROMPTS, **kwargs)
    # alone, a few prompts suffice: a prompt's samples depend on its batch-mates or on none
    alone = [generate(demo_model, [p], batch_size=1, **kwargs)[0] for p in PROMPTS[::3]]
    reordered = generate(demo_model, PROMPTS[::-1], batch_size=4, **kwargs)[::-1]
    assert together == reordered and together[::3] == alone
    assert all(len(samples) == 3 for samples in together)
    assert any(len(set(samples)) > 1 for samples in together)  # samples of a prompt differ
    assert generate(demo_model, PROMPTS, **{**kwargs, "seed": 12}) != together


def test_greedy_with_n_returns_n_copies(bpe_model) -> None:
    [copies] = generate(bpe_model, PROMPTS[:1], n=3, max_new_tokens=10, cache=None)
    assert copies == [generate(bpe_model, PROMPTS[:1], max_new_tokens=10, cache=None)[0]] * 3


def test_a_tiny_nucleus_is_greedy(bpe_model) -> None:
    greedy = generate(bpe_model, PROMPTS, max_new_tokens=20, cache=None)
    assert generate(bpe_model, PROMPTS, max_new_tokens=20, temperature=0.7, top_p=1e-9, seed=3, cache=None) == greedy


def test_the_sampler_draws_from_the_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    rows = 4000
    sampler = _processors(torch, 1.0, 1.0, list(range(rows)))[0]
    picks = sampler(None, logits.repeat(rows, 1)).argmax(-1)
    freq = torch.bincount(picks, minlength=4).double() / rows
    expected = torch.softmax(logits.double(), -1)
    assert torch.allclose(freq, expected, atol=0.03)
    # top_p keeps the smallest set whose mass reaches it: here the first two tokens (0.64 + 0.24)
    nucleus = _processors(torch, 1.0, 0.8, list(range(rows)))[0]
    picked = set(nucleus(None, logits.repeat(rows, 1)).argmax(-1).tolist())
    assert picked == {0, 1}


def test_stop_strings_cut_the_answer(bpe_model) -> None:
    prompt = DATA["problems"][0]["prompt"]
    full = generate(bpe_model, [prompt], max_new_tokens=40, cache=None)[0]
    assert "return" in full
    cut = generate(bpe_model, [prompt], max_new_tokens=40, stop=["return"], cache=None)[0]
    assert cut == full[: full.index("return")]


def test_chat_auto_uses_the_template_and_false_sends_raw_text(bpe_model, byte_model) -> None:
    tok = bpe_model.tokenizer
    ids = prompt_ids(tok, "Hi")
    served = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True, add_generation_prompt=True)
    assert ids == list(getattr(served, "input_ids", served))  # as apply_chat_template tokenizes it
    assert ids.count(tok.bos_token_id) == 1  # the template's BOS, not doubled
    assert prompt_ids(tok, "Hi", chat=False) == tok("Hi").input_ids
    assert prompt_ids(byte_model.tokenizer, "Hi") == byte_model.tokenizer("Hi").input_ids  # no template
    with pytest.raises(ValueError, match="no chat template"):
        prompt_ids(byte_model.tokenizer, "Hi", chat=True)


@pytest.mark.parametrize("prompt", ["Hi", "Classify the sentiment: The book was lovely.", " leading space", "Ünïcödé 🙂\n"])
def test_raw_prompts_are_tokenized_as_the_tokenizer_does(demo_model, prompt) -> None:
    """tokenizer(prompt) with its own special tokens: a BOS for the Llama style, nothing for GPT-2 style."""
    tok = demo_model.tokenizer
    assert prompt_ids(tok, prompt, chat=False) == tok(prompt).input_ids
    if tok.bos_token_id is None:
        assert prompt_ids(tok, prompt, chat=False) == tok(prompt, add_special_tokens=False).input_ids
    else:
        assert prompt_ids(tok, prompt, chat=False)[0] == tok.bos_token_id  # once: token_sequence's rule agrees
        assert prompt_ids(tok, prompt, chat=False) == token_sequence(tok, prompt)


def test_a_t5_style_appended_eos_is_not_part_of_a_prompt() -> None:
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    assert tok("ab").input_ids[-1] == tok.eos_token_id
    assert prompt_ids(tok, "ab", chat=False) == tok("ab").input_ids[:-1]


def test_an_empty_prompt_without_special_tokens_is_the_start_token(byte_model, bpe_model) -> None:
    byte_tok = byte_model.tokenizer
    assert byte_tok("").input_ids == [] and prompt_ids(byte_tok, "", chat=False) == [byte_tok.eos_token_id]
    assert prompt_ids(bpe_model.tokenizer, "", chat=False) == bpe_model.tokenizer("").input_ids == [bpe_model.tokenizer.bos_token_id]
    # an empty context in a pair: every continuation token is scored, the first one after the start token
    text = "The cat chased the ball."
    result = perplexity(byte_model, [("", text)])
    ids = [byte_tok.eos_token_id, *byte_tok(text).input_ids]
    with torch.no_grad():
        logp = torch.log_softmax(byte_model.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    assert result.n_tokens == len(ids) - 1
    assert result.nll == pytest.approx(float(-logp[:-1].gather(1, torch.tensor(ids[1:])[:, None]).sum()), rel=1e-5)


def test_a_gpt2_style_model_answers_as_plain_model_generate_does(byte_model) -> None:
    """The byte demo is fine-tuned on tokenizer(text) + EOS, without a start token in front (as TRL's SFT
    trainer does): generate() must prompt it as transformers' own generate(**tokenizer(prompt)) does."""
    tok = byte_model.tokenizer
    prompts = [r["instruction"] for r in DATA["val"]] + [p["prompt"] for p in DATA["problems"]]
    ours = generate(byte_model, prompts, max_new_tokens=24, cache=None)
    plain = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = byte_model.model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id)
        plain.append(tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True))
    assert ours == plain


def _long(model, n_tokens: int) -> str:
    """A prompt of exactly ``n_tokens`` ids (raw text) for ``model``'s tokenizer."""
    tok, unit = model.tokenizer, "The cat sat. "
    text = unit * n_tokens
    ids = tok(text).input_ids
    special = len(ids) - len(tok(text, add_special_tokens=False).input_ids)
    return tok.decode(tok(text, add_special_tokens=False).input_ids[: n_tokens - special])


@pytest.fixture
def captured(monkeypatch):
    """The ids and max_new_tokens each batch is generated with (the model is not run)."""
    calls: list[tuple[list[list[int]], int]] = []

    def fake(model, batch, seeds, *, max_new_tokens, **kwargs):
        calls.append((batch, max_new_tokens))
        return [""] * len(batch)

    from pytest_ftmodel.engines import transformers as engine_mod

    monkeypatch.setattr(engine_mod, "_generate_batch", fake)
    return calls


def test_answers_are_capped_by_the_context_left_not_refused(demo_model, captured) -> None:
    context = demo_model.context_length
    prompt = _long(demo_model, context - 3)
    assert len(prompt_ids(demo_model.tokenizer, prompt, chat=False)) == context - 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)  # nothing is cut: the prompt fits
        generate(demo_model, [prompt, "Hi"], max_new_tokens=16, chat=False, cache=None)
        generate(demo_model, ["Hi"], max_new_tokens=context + 100, chat=False, cache=None)
    hi = len(prompt_ids(demo_model.tokenizer, "Hi", chat=False))
    assert sorted((len(b[0]), n) for b, n in captured) == sorted([(context - 3, 3), (hi, 16), (hi, context - hi)])


def test_a_capped_answer_is_the_model_s_own_continuation(bpe_model) -> None:
    context = bpe_model.context_length
    prompt = _long(bpe_model, context - 4)
    [answer] = generate(bpe_model, [prompt], max_new_tokens=50, chat=False, cache=None)
    ids = prompt_ids(bpe_model.tokenizer, prompt, chat=False)
    with torch.no_grad():
        out = bpe_model.model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False, pad_token_id=bpe_model.tokenizer.eos_token_id)
    assert answer == bpe_model.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_only_a_prompt_that_fills_the_context_is_cut_with_a_counted_warning(demo_model, captured) -> None:
    context = demo_model.context_length
    long_prompt = _long(demo_model, context + 300) + DATA["problems"][0]["prompt"]
    fits = _long(demo_model, context - 20)
    with pytest.warns(TruncationWarning, match=r"1 of 3 prompt\(s\) were longer than the model's context of \d+ tokens"):
        answers = generate(demo_model, [long_prompt, fits, "Hi"], max_new_tokens=16, chat=False, cache=None)
    assert answers == ["", "", ""]
    lengths = sorted(len(ids) for batch, _ in captured for ids in batch)
    assert context - 16 in lengths  # cut to leave max_new_tokens of room
    assert context - 20 in lengths  # not cut: it leaves room for an answer
    # the end of the prompt, where the question is, is kept
    cut = next(ids for batch, _ in captured for ids in batch if len(ids) == context - 16)
    full = prompt_ids(demo_model.tokenizer, long_prompt, chat=False)
    assert cut[-30:] == full[-30:]
    # a cut never takes more than half the context from the answer
    captured.clear()
    with pytest.warns(TruncationWarning):
        generate(demo_model, [long_prompt], max_new_tokens=10_000, chat=False, cache=None)
    [([ids], budget)] = captured
    assert budget == context // 2 and len(ids) == context - context // 2


def test_a_cut_chat_prompt_keeps_the_template_head_and_loses_the_user_text_start(bpe_model, captured) -> None:
    tok, context = bpe_model.tokenizer, bpe_model.context_length
    question = "Classify the sentiment: The book was lovely."
    parts = prompt_parts(tok, _long(bpe_model, context) + question, chat=True)
    head = tok.apply_chat_template([{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True).split("<|assistant|>")[0]
    assert tok.decode(parts.head) + tok.decode(parts.text) + tok.decode(parts.tail) == tok.decode(parts.ids)
    assert tok.decode(parts.head) == head.rstrip("\n") + "\n" and parts.head[0] == tok.bos_token_id
    with pytest.warns(TruncationWarning, match="1 of 1 prompt"):
        generate(bpe_model, [_long(bpe_model, context) + question], max_new_tokens=8, cache=None)
    [([ids], budget)] = captured
    assert len(ids) == context - 8 and budget == 8
    assert ids[: len(parts.head)] == parts.head and ids[-len(parts.tail) :] == parts.tail
    assert tok.decode(ids).count("<|user|>") == 1 and tok.decode(ids).endswith(question + "\n<|assistant|>\n")
    assert ids.count(tok.bos_token_id) == 1


def test_generate_is_typed_by_n() -> None:
    get_overloads = getattr(typing, "get_overloads", None)
    if get_overloads is None:
        pytest.skip("typing.get_overloads needs Python 3.11")
    returns = {o.__annotations__["n"]: o.__annotations__["return"] for o in get_overloads(generation_mod.generate)}
    assert returns == {"Literal[1]": "list[str]", "int": "list[list[str]]"}


@pytest.mark.parametrize(
    ("prompts", "kwargs", "message"),
    [
        ([], {}, "no prompts to generate from"),
        ("one string", {}, "prompts is a single string"),
        (["ok", None], {}, "prompt 1 is NoneType, not str"),
        (["ok"], {"n": 0}, "must be at least 1"),
        (["ok"], {"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_input(bpe_model, prompts, kwargs, message) -> None:
    with pytest.raises(DataError, match=message):
        generate(bpe_model, prompts, cache=None, **kwargs)


_REFERENCE: dict[str, list[str]] = {}


@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(order=st.permutations(range(len(PROMPTS))), batch_size=st.integers(1, 8))
def test_greedy_answers_do_not_depend_on_order_or_batch_size(bpe_model, order, batch_size) -> None:
    if "greedy" not in _REFERENCE:  # the reference is computed once, not once per example
        _REFERENCE["greedy"] = generate(bpe_model, PROMPTS, max_new_tokens=16, cache=None)
    reference = _REFERENCE["greedy"]
    shuffled = generate(bpe_model, [PROMPTS[i] for i in order], max_new_tokens=16, cache=None, batch_size=batch_size)
    assert [shuffled[order.index(i)] for i in range(len(PROMPTS))] == reference


def test_an_unknown_cache_word_is_refused(bpe_model) -> None:
    with pytest.raises(ValueError, match="cache='session': pass 'auto', None or a GenerationCache"):
        generate(bpe_model, ["Hi"], cache="session")
