"""The assert twins of the form and reference scores, and assert_length: records, diagnoses, baseline."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("jsonschema")
pytest.importorskip("sacrebleu")

from pytest_ftmodel import (
    DataError,
    assert_bleu,
    assert_chrf,
    assert_exact_match,
    assert_f1,
    assert_format,
    assert_length,
    length_ratio,
)
from pytest_ftmodel.demo import JSON_SCHEMA, demo_data

VAL = demo_data()["val"]
JSON_ITEMS = [r for r in VAL if r["category"] == "json"]
SUMMARIES = [r for r in VAL if r["category"] == "summarize"]


def test_format_gate_records_per_item_verdicts_and_fails_with_escaped_reasons(private_record) -> None:
    answers = ['{"animal": "cat", "place": "park"}'] * 3 + ['x\x1b[2J {"animal": "pig", "place": "park"}', "I think a cat"]
    with pytest.raises(AssertionError) as info:
        assert_format(answers, JSON_ITEMS[:5], json_schema=JSON_SCHEMA, at_least=0.9)
    message = str(info.value)
    assert message.startswith("format: 3 of 5 answers pass (60.0%, 95% CI [14.7%, 94.7%]), below the bar 90.0% (checks: JSON schema; answers given)")
    assert "why they fail: schema: 1, no JSON found: 1" in message
    assert "\x1b" not in message and "\\x1b[2J" in message  # the answer's escape sequence is shown, never obeyed
    record = private_record.records[-1]
    assert (record.name, record.passed, record.n, record.details["compare_kind"]) == ("format", False, 5, "binary")
    assert [i["value"] for i in record.items] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert record.items[4]["reason"] == "no JSON found" and record.details["reasons"] == {"schema": 1, "no JSON found": 1}
    assert record.settings["json_schema"] == JSON_SCHEMA
    assert assert_format(answers[:3], JSON_ITEMS[:3], json_schema=JSON_SCHEMA).share == 1.0
    assert assert_format(answers[:3], None, json_schema=JSON_SCHEMA).share == 1.0  # answers without their prompts


def test_format_gate_on_the_demo_learned_json_and_the_base_did_not(bpe_model, bpe_pair, private_record) -> None:
    from pytest_ftmodel import load_model

    result = assert_format(bpe_model, JSON_ITEMS, json_schema=JSON_SCHEMA, at_least=0.9, max_new_tokens=48)
    assert result.share == 1.0
    base = load_model(bpe_pair.base, device="cpu")
    with pytest.raises(AssertionError, match=r"format: 0 of 12 answers pass .* model base\)"):
        assert_format(base, JSON_ITEMS, json_schema=JSON_SCHEMA, at_least=0.9, max_new_tokens=48)


@pytest.mark.parametrize(
    "gate, kwargs, name, kind",
    [
        (assert_exact_match, {"at_least": 0.5}, "exact_match", "binary"),
        (assert_f1, {"at_least": 0.5}, "f1", "continuous"),
        (assert_bleu, {"at_least": 20.0}, "bleu", "continuous"),
        (assert_chrf, {"at_least": 40.0}, "chrf", "continuous"),
    ],
)
def test_reference_gates_record_their_figure_per_item_and_fail_with_the_lowest(gate, kwargs, name, kind, private_record) -> None:
    refs = [r["output"] for r in SUMMARIES[:6]]
    answers = refs[:4] + ["nothing alike", "The cat."]
    result = gate(answers, refs, **kwargs)
    record = private_record.records[-1]
    assert (record.name, record.passed, record.details["compare_kind"], record.n) == (name, True, kind, 6)
    assert [i["value"] for i in record.items] == [it.value for it in result.items]
    if name in ("bleu", "chrf"):
        assert record.settings["signature"] == result.signature and "version:" in result.signature
    with pytest.raises(AssertionError) as info:
        gate(["nothing alike"] * 6, refs, **kwargs)
    message = str(info.value)
    assert re.match(rf"({'exact match|token F1|BLEU|chrF'}) [\d.]+ is below the bar [\d.]+ on 6 items \(95% CI", message)
    assert message.count("generated 'nothing alike'") == 3


def test_bleu_bar_is_on_sacrebleus_scale() -> None:
    from pytest_ftmodel import BarError

    with pytest.raises(BarError, match=r"^assert_bleu: at_least=120 is out of range: it must be between 0 and 100 \(sacrebleu's 0-100 scale\)$"):
        assert_bleu(["a"], ["a"], at_least=120)


def test_length_ratio_is_the_geometric_mean_with_a_t_interval(bpe_model, bpe_pair) -> None:
    import numpy as np
    from scipy import stats

    from pytest_ftmodel import generate, load_model

    base = load_model(bpe_pair.base, device="cpu")
    data = SUMMARIES + JSON_ITEMS  # the base answers these with a word, and those at the token limit
    result = length_ratio(bpe_model, data, base, max_new_tokens=48)
    prompts = [r["instruction"] for r in data]
    tok = bpe_model.tokenizer
    count = lambda answers: [len(tok(a, add_special_tokens=False).input_ids) for a in answers]  # noqa: E731
    m, b = count(generate(bpe_model, prompts, max_new_tokens=48)), count(generate(base, prompts, max_new_tokens=48))
    logs = np.log((np.array(m) + 1) / (np.array(b) + 1))
    assert result.ratio == pytest.approx(float(np.exp(logs.mean())))
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    assert result.interval == pytest.approx((float(np.exp(low)), float(np.exp(high))))
    assert [it.length for it in result.items] == m and [it.base_length for it in result.items] == b


def test_length_gate_fails_when_answers_grew_or_shrank(bpe_model, bpe_pair, private_record) -> None:
    from pytest_ftmodel import load_model

    base = load_model(bpe_pair.base, device="cpu")
    # the base answers a summary prompt with a word; the fine-tuned model with a sentence: longer
    result = assert_length(bpe_model, SUMMARIES, base=base, max_ratio=4.0, max_new_tokens=48)
    assert 2 < result.ratio < 4
    record = private_record.records[-1]
    assert (record.name, record.passed, record.op, record.details["kind"]) == ("length ratio", True, "<=", "length")
    assert len(record.details["base_lengths"]) == len(SUMMARIES) and record.model == "finetuned vs base"
    with pytest.raises(AssertionError) as info:
        assert_length(bpe_model, SUMMARIES, base=base, max_ratio=1.5, max_new_tokens=48)
    message = str(info.value)
    assert re.match(r"answer length grew: ratio above the bar 1.5: the answers are [\d.]+x as long as the base model's \(geometric mean", message)
    assert message.split("\n")[0].endswith("; model finetuned, base base)")
    assert "most grown items:" in message and "base   '" in message
    with pytest.raises(AssertionError, match=r"^answer length shrank: ratio below the bar 0.8: the answers are 0\.\d+x as long"):
        assert_length(base, SUMMARIES, base=bpe_model, max_ratio=1.5, min_ratio=0.8, max_new_tokens=48)
    assert private_record.records[-1].passed is False and private_record.records[-1].op == ">="


def test_length_gate_without_a_base_needs_a_baseline_entry() -> None:
    with pytest.raises(DataError, match="no base= and no baseline entry"):
        assert_length(["a"], [{"instruction": "x"}])


def test_length_gate_compares_with_the_baseline_entry_of_its_test(bpe_model, bpe_pair, private_record, tmp_path) -> None:
    """In process: lengths recorded on the fine-tuned model (its own base while recording), then the
    base model's one-word answers compared with them item by item."""
    from pytest_ftmodel import load_model
    from pytest_ftmodel.baseline import store
    from pytest_ftmodel.baseline.gate import BaselineSession

    path = tmp_path / "ftmodel-baseline.json"
    private_record.gate = BaselineSession(path, update=True)
    recorded = assert_length(bpe_model, SUMMARIES, max_ratio=1.5, max_new_tokens=48)
    assert recorded.ratio == 1.0 and recorded.against == "itself (recording the baseline)"
    keys = store.entry_keys(private_record.records)
    store.write(path, {k: store.entry_of(r, version="test") for k, r in zip(keys, private_record.records)})
    private_record.gate = BaselineSession(path, update=False)
    again = assert_length(bpe_model, SUMMARIES, max_ratio=1.5, min_ratio=0.8, max_new_tokens=48)
    assert again.ratio == 1.0 and again.against == "baseline" and again.n == len(SUMMARIES)
    assert private_record.records[-1].baseline is None  # compared by the helper, not by the gate
    with pytest.raises(AssertionError, match=r"^answer length shrank: .* as long as the baseline's \(geometric mean"):
        assert_length(load_model(bpe_pair.base, device="cpu"), SUMMARIES, max_ratio=1.5, min_ratio=0.8, max_new_tokens=48)
    with pytest.raises(DataError, match="the baseline counted lengths in tokens, this test in words"):
        assert_length(bpe_model, SUMMARIES, max_ratio=1.5, unit="words", max_new_tokens=48)


@pytest.mark.slow  # the in-process test above covers the comparison; this one the option's whole path
def test_length_gate_compares_with_the_lengths_the_baseline_recorded(pytester: pytest.Pytester, bpe_pair) -> None:
    """Recorded on the fine-tuned model, then the base model's answers (a word each) are gated against it."""
    pytester.makepyfile(
        test_len=f"""
from pytest_ftmodel import assert_length, demo

SUMMARIES = [r for r in demo.demo_data()["val"] if r["category"] == "summarize"]

def test_length(ftmodel):
    assert_length(ftmodel, SUMMARIES, max_ratio=1.5, min_ratio=0.8, max_new_tokens=48)
"""
    )
    baseline = pytester.path / "baseline.json"
    recorded = pytester.runpytest_subprocess(f"--model={bpe_pair.finetuned}", f"--ftmodel-baseline={baseline}", "--ftmodel-update-baseline")
    assert recorded.ret == 0, recorded.stdout.str()
    text = baseline.read_text()
    assert "test_len.py::test_length::length ratio" in text and '"unit": "tokens"' in text
    same = pytester.runpytest_subprocess(f"--model={bpe_pair.finetuned}", f"--ftmodel-baseline={baseline}")
    assert same.ret == 0, same.stdout.str()
    grew = pytester.runpytest_subprocess(f"--model={bpe_pair.base}", f"--ftmodel-baseline={baseline}")
    assert grew.ret == pytest.ExitCode.TESTS_FAILED
    grew.stdout.fnmatch_lines(["*answer length shrank: ratio below the bar 0.8: the answers are *x as long as the baseline's*"])


def test_format_and_bleu_take_part_in_the_baseline(pytester: pytest.Pytester) -> None:
    """Recorded, then compared item by item: worse answers regress (McNemar for the format's 0/1,
    the paired test for sentence BLEU); the sacrebleu signature is part of the entry's settings."""
    pytester.makepyfile(
        test_forms="""
import os
from pytest_ftmodel import assert_bleu, assert_format

REFS = [f"the {a} sat on the {b} today" for a in ("cat", "dog", "owl", "fox", "hen") for b in ("mat", "box", "hat", "log")]
GOOD = os.environ.get("WORSE") is None

def test_json():
    answers = ['{"a": 1}' if GOOD or i % 2 else "no json" for i in range(20)]
    assert_format(answers, [{"instruction": f"q{i}"} for i in range(20)], json_schema={"type": "object"}, at_least=0.0)

def test_bleu():
    answers = [r if GOOD or i % 2 else "something else entirely" for i, r in enumerate(REFS)]
    assert_bleu(answers, [{"instruction": f"q{i}", "output": r} for i, r in enumerate(REFS)], at_least=0.0)
"""
    )
    baseline = pytester.path / "baseline.json"
    recorded = pytester.runpytest_subprocess(f"--ftmodel-baseline={baseline}", "--ftmodel-update-baseline")
    assert recorded.ret == 0, recorded.stdout.str()
    text = baseline.read_text()
    assert '"compare_kind": "binary"' in text and '"signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:' in text
    assert pytester.runpytest_subprocess(f"--ftmodel-baseline={baseline}").ret == 0
    pytester._monkeypatch.setenv("WORSE", "1")
    worse = pytester.runpytest_subprocess(f"--ftmodel-baseline={baseline}")
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(["*format regressed against the baseline*", "*bleu regressed against the baseline*"], consecutive=False)


def test_a_warm_run_imports_neither_sacrebleu_nor_jsonschema(tmp_path) -> None:
    """Scores, verdicts and the schema's validity are read back from the session's metric cache."""
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
from pytest_ftmodel.cache import GenerationCache, push_cache
from pytest_ftmodel import bleu, chrf, format_check
push_cache(GenerationCache(Path({str(tmp_path)!r})))
refs = ["the cat sat on the mat", "a dog ate the cake"]
print(bleu(["the cat sat", "a dog ate cake"], refs).score, chrf(["the cat sat", "a dog ate cake"], refs).score,
      format_check(['{{"a": 1}}', "x"], json_schema={{"type": "object"}}).share)
print("imported:", sorted(m for m in ("sacrebleu", "jsonschema") if m in sys.modules))
"""
    run = lambda: subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()  # noqa: E731
    cold, warm = run(), run()
    assert cold[0] == warm[0]  # the same figures
    assert cold[1] == "imported: ['jsonschema', 'sacrebleu']" and warm[1] == "imported: []"
