"""generate(): batching never changes an answer, sampling is seeded per prompt, stops and chat."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ftmodel import DataError, generate
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.generation import TruncationWarning, _processors
from pytest_ftmodel.tokens import prompt_ids, token_sequence

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
    assert prompt not in answer and "</s>" not in answer and "<pad>" not in answer
    assert answer.strip().startswith("def add(a, b):")


def test_sampling_is_seeded_per_prompt_not_per_batch(demo_model) -> None:
    kwargs = dict(max_new_tokens=24, temperature=1.0, n=3, seed=11, cache=None)
    together = generate(demo_model, PROMPTS, **kwargs)
    alone = [generate(demo_model, [p], batch_size=1, **kwargs)[0] for p in PROMPTS]
    reordered = generate(demo_model, PROMPTS[::-1], batch_size=4, **kwargs)[::-1]
    assert together == alone == reordered
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
    templated = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    ids = prompt_ids(tok, "Hi")
    assert ids == tok(templated, add_special_tokens=False).input_ids and ids.count(tok.bos_token_id) == 1
    assert prompt_ids(tok, "Hi", chat=False) == token_sequence(tok, "Hi")
    assert prompt_ids(byte_model.tokenizer, "Hi") == token_sequence(byte_model.tokenizer, "Hi")  # no template
    with pytest.raises(ValueError, match="no chat template"):
        prompt_ids(byte_model.tokenizer, "Hi", chat=True)


def test_long_prompts_are_cut_from_the_left_with_a_counted_warning(bpe_model) -> None:
    long_prompt = "The cat sat. " * 200 + DATA["problems"][0]["prompt"]
    with pytest.warns(TruncationWarning, match=r"1 of 2 prompt\(s\) were longer than the model's context"):
        answers = generate(bpe_model, [long_prompt, "Hi"], max_new_tokens=16, cache=None)
    assert len(answers) == 2
    with pytest.raises(DataError, match="leaves no room for a prompt"):
        generate(bpe_model, ["Hi"], max_new_tokens=bpe_model.context_length, cache=None)


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


@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(order=st.permutations(range(len(PROMPTS))), batch_size=st.integers(1, 8))
def test_greedy_answers_do_not_depend_on_order_or_batch_size(bpe_model, order, batch_size) -> None:
    reference = generate(bpe_model, PROMPTS, max_new_tokens=16, cache=None)
    shuffled = generate(bpe_model, [PROMPTS[i] for i in order], max_new_tokens=16, cache=None, batch_size=batch_size)
    assert [shuffled[order.index(i)] for i in range(len(PROMPTS))] == reference


def test_an_unknown_cache_word_is_refused(bpe_model) -> None:
    with pytest.raises(ValueError, match="cache='session': pass 'auto', None or a GenerationCache"):
        generate(bpe_model, ["Hi"], cache="session")
