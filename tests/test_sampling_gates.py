"""samples=k on the generation gates: ROUGE, classification and memorisation, checked by hand
against the sampled answers; one sample is the single-answer path; greedy with samples is refused."""

from __future__ import annotations

import re

import pytest

from pytest_ftmodel import (
    BarError,
    assert_classification,
    assert_no_overfit,
    assert_rouge_above,
    classify,
    overfit_report,
    rouge,
)
from pytest_ftmodel.assertions import _cut
from pytest_ftmodel.demo import LABELS, demo_data
from pytest_ftmodel.metrics.overfit import diversity, memorisation
from pytest_ftmodel.metrics.stats import bounded_mean_interval
from pytest_ftmodel.metrics.text import extract_label, rouge_scores
from pytest_ftmodel.sampling import sampled_answers

DATA = demo_data()
SUMMARIES = [r for r in DATA["val"] if r["category"] == "summarize"][:4]
REVIEWS = [r for r in DATA["val"] if r["category"] == "classify"][:6]
SAMPLED = dict(samples=3, temperature=1.0, seed=4)


def test_rouge_with_samples_is_the_mean_of_each_items_samples(bpe_model) -> None:
    result = rouge(bpe_model, SUMMARIES, max_new_tokens=16, **SAMPLED)
    answers = sampled_answers(bpe_model, [r["instruction"] for r in SUMMARIES], max_new_tokens=16, **SAMPLED)
    assert result.samples == 3 and [list(it.answers) for it in result.items] == answers
    for item, row, ref in zip(result.items, answers, SUMMARIES):
        scores = rouge_scores(row, [ref["output"]] * 3)
        assert item.rougeL == pytest.approx(sum(s["rougeL"] for s in scores) / 3)
        assert item.generated == row[0]
    means = [it.rougeL for it in result.items]
    assert result.rougeL == pytest.approx(sum(means) / len(means))
    assert result.intervals["rougeL"] == bounded_mean_interval(means)  # the item is the unit
    spreads = result.stability["rougeL"].spreads
    assert spreads == tuple(max(s["rougeL"] for s in it.sample_scores) - min(s["rougeL"] for s in it.sample_scores) for it in result.items)


def test_one_sample_is_the_single_answer_result(bpe_model) -> None:
    for kwargs in ({}, {"temperature": 0.9, "seed": 2}):
        assert rouge(bpe_model, SUMMARIES, max_new_tokens=16, samples=1, **kwargs) == rouge(bpe_model, SUMMARIES, max_new_tokens=16, **kwargs)
        one = classify(bpe_model, REVIEWS, LABELS, samples=1, **kwargs)
        assert one == classify(bpe_model, REVIEWS, LABELS, **kwargs) and one.stability is None


def test_classification_with_samples_by_hand(bpe_model) -> None:
    result = classify(bpe_model, REVIEWS, LABELS, max_new_tokens=8, **SAMPLED)
    answers = sampled_answers(bpe_model, [r["instruction"] for r in REVIEWS], max_new_tokens=8, **SAMPLED)
    right = [[extract_label(a, LABELS) == r["expected_label"] for a in row] for row, r in zip(answers, REVIEWS)]
    assert [list(it.answers) for it in result.items] == answers
    assert result.accuracy == pytest.approx(sum(map(sum, right)) / (3 * len(REVIEWS)))
    stab = result.stability
    assert stab.pass_at_k == sum(any(r) for r in right) / len(right)
    assert stab.pass_hat_k == sum(all(r) for r in right) / len(right)
    assert stab.flip_rate == sum(len(set(r)) > 1 for r in right) / len(right)
    assert stab.flaky == tuple(i for i, r in enumerate(right) if len(set(r)) > 1)
    assert result.accuracy_interval == bounded_mean_interval([sum(r) / 3 for r in right])
    assert sum(map(sum, result.confusion)) == 3 * len(REVIEWS)  # every answer counts once
    assert [it.index for it in result.errors()] == sorted((i for i, r in enumerate(right) if not all(r)), key=lambda i: (sum(right[i]), i))


def test_a_failing_sampled_gate_lists_its_flaky_items(bpe_model, private_record) -> None:
    # a temperature this high makes answers flip between labels and none
    kwargs = dict(samples=4, temperature=3.0, seed=1, max_new_tokens=8)
    result = classify(bpe_model, REVIEWS, LABELS, **kwargs)
    assert result.stability.flaky, "the demo should flip at temperature 3"
    with pytest.raises(AssertionError) as info:
        assert_classification(bpe_model, REVIEWS, LABELS, min_accuracy=1.0, **kwargs)
    message = str(info.value)
    assert f"on {len(REVIEWS)} items x 4 samples" in message
    s = result.stability
    assert f"repeated sampling: 4 samples per item; pass@4 {s.pass_at_k:.3f}, pass^4 {s.pass_hat_k:.3f}; flip rate {s.flip_rate:.3f}" in message
    assert "flaky items (their samples disagree; kept in every figure):" in message
    assert re.search(rf"item {s.flaky[0]}: expected '\w+', read ('\w+'|None)(, ('\w+'|None)){{3}}  prompt ", message)
    [record] = private_record.records
    assert record.settings["samples"] == 4 and record.settings["temperature"] == 3.0 and record.settings["seed"] == 1


def test_a_failing_sampled_rouge_gate_shows_each_flaky_items_range(bpe_model) -> None:
    kwargs = dict(samples=4, temperature=2.0, seed=3, max_new_tokens=16)
    result = rouge(bpe_model, SUMMARIES, **kwargs)
    stab = result.stability["rougeL"]
    assert stab.flaky, "the demo's summaries should vary at temperature 2"
    with pytest.raises(AssertionError) as info:
        assert_rouge_above(bpe_model, SUMMARIES, rougeL=1.0, **kwargs)
    message = str(info.value)
    assert f"repeated sampling: 4 samples per item; flip rate {stab.flip_rate:.3f}; {len(stab.flaky)} of 4 items flaky (samples span >= 0.2)" in message
    i = stab.flaky[0]
    scores = [s["rougeL"] for s in result.items[i].sample_scores]
    assert f"item {i}: rougeL {min(scores):.2f}..{max(scores):.2f} over its samples  prompt " in message


def test_memorisation_with_samples_by_hand(bpe_model) -> None:
    train, val = DATA["train"][:40], DATA["val"][:6]
    result = overfit_report(bpe_model, train, val, max_new_tokens=16, **SAMPLED)
    answers = sampled_answers(bpe_model, [r["instruction"] for r in val], max_new_tokens=16, **SAMPLED)
    prompts, refs, outputs = [r["instruction"] for r in val], [r["output"] for r in val], [r["output"] for r in train]
    copied = [[0] * 3 for _ in val]
    for j in range(3):
        for m in memorisation([row[j] for row in answers], prompts, refs, outputs):
            copied[m.index][j] = 1
    assert result.memorised_share == pytest.approx(sum(sum(r) / 3 for r in copied) / len(val))
    assert [m.index for m in result.memorised] == [i for i, r in enumerate(copied) if any(r)]
    assert result.distinct2 == pytest.approx(sum(diversity([row[j] for row in answers])[1] for j in range(3)) / 3)
    assert result.stability.pass_at_k == sum(any(r) for r in copied) / len(val) and result.n_answers == len(val)
    assert overfit_report(bpe_model, train, val, max_new_tokens=16, samples=1) == overfit_report(bpe_model, train, val, max_new_tokens=16)


def test_samples_on_a_gate_that_reads_no_answers_is_an_error() -> None:
    with pytest.raises(BarError, match=r"^assert_no_overfit: samples=3 samples nothing: the loss gap reads no answers; pass max_memorised="):
        assert_no_overfit(object(), DATA["train"], DATA["val"], max_gap=0.2, samples=3, temperature=1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: assert_rouge_above(m, SUMMARIES, rougeL=0.1, samples=3),
        lambda m: assert_classification(m, REVIEWS, LABELS, min_accuracy=0.5, samples=3, temperature=0),
        lambda m: assert_no_overfit(m, DATA["train"], DATA["val"], max_memorised=0.1, samples=2),
    ],
)
def test_greedy_with_samples_fails_in_one_line_before_the_model_runs(call) -> None:
    class Model:
        def __getattr__(self, name):
            raise RuntimeError("the model ran")

    with pytest.raises(BarError, match=r"^assert_\w+: samples=\d with temperature=0(\.0)? \(greedy\): every sample would be the same answer; pass temperature > 0"):
        call(Model())


# ---- baselines ----------------------------------------------------------------------------------


def _baseline_of(private_record, tmp_path, run):
    from pytest_ftmodel.baseline import store
    from pytest_ftmodel.baseline.gate import BaselineSession

    start = len(private_record.records)
    run()
    records = private_record.records[start:]
    path = tmp_path / "ftmodel-baseline.json"
    store.write(path, {k: store.entry_of(r, version="test") for k, r in zip(store.entry_keys(records), records)})

    def fresh() -> None:  # a new run against the file (a gate counts repeated figures of one test apart)
        private_record.gate = BaselineSession(path, update=False)

    fresh()
    return fresh


def test_a_sampled_run_never_compares_with_a_greedy_baseline(bpe_model, private_record, tmp_path) -> None:
    greedy = lambda: assert_classification(bpe_model, REVIEWS, LABELS, min_accuracy=0.0, max_new_tokens=8)  # noqa: E731
    fresh = _baseline_of(private_record, tmp_path, greedy)
    assert "samples" not in private_record.records[-1].settings  # one answer: the key it always had
    with pytest.raises(pytest.fail.Exception) as info:
        assert_classification(bpe_model, REVIEWS, LABELS, min_accuracy=0.0, max_new_tokens=8, samples=3, temperature=1.0, seed=4)
    message = str(info.value)
    assert "\n" not in message
    assert "settings differ from the baseline's (samples=<unset> in the baseline, 3 now, seed=0 in the baseline, 4 now, temperature=0.0 in the baseline, 1.0 now)" in message
    assert private_record.records[-1].baseline["verdict"] == "mismatch"
    fresh()
    greedy()  # the greedy run still compares with its baseline
    assert private_record.records[-1].baseline["verdict"] == "within noise"


def test_sampled_runs_of_other_settings_never_compare(bpe_model, private_record, tmp_path) -> None:
    run = lambda **kw: assert_rouge_above(bpe_model, SUMMARIES, rougeL=0.0, max_new_tokens=16, **{**SAMPLED, **kw})  # noqa: E731
    fresh = _baseline_of(private_record, tmp_path, run)
    record = private_record.records[-1]
    assert record.settings["samples"] == 3 and record.details["compare_kind"] == "continuous"
    for change, shown in (({"samples": 2}, "samples=3 in the baseline, 2 now"), ({"seed": 5}, "seed=4 in the baseline, 5 now"),
                          ({"top_p": 0.9}, "top_p=1.0 in the baseline, 0.9 now"), ({"temperature": 0.7}, "temperature=1.0 in the baseline, 0.7 now")):
        fresh()
        with pytest.raises(pytest.fail.Exception, match=re.escape(f"settings differ from the baseline's ({shown})")):
            run(**change)
    fresh()
    run()  # the same sampled run: the same answers (cached per sample), compared per item
    assert private_record.records[-1].baseline["verdict"] == "within noise" and private_record.records[-1].baseline["delta"] == 0


def test_sampled_accuracy_is_compared_on_per_item_means(bpe_model, private_record, tmp_path) -> None:
    run = lambda: assert_classification(bpe_model, REVIEWS, LABELS, min_accuracy=0.0, max_new_tokens=8, **SAMPLED)  # noqa: E731
    _baseline_of(private_record, tmp_path, run)
    record = private_record.records[-1]
    result = classify(bpe_model, REVIEWS, LABELS, max_new_tokens=8, **SAMPLED)
    assert [it["value"] for it in record.items] == [it.correct for it in result.items]  # each item's share of right samples
    assert record.details["compare_kind"] == "continuous" and record.n == len(REVIEWS) and record.unit == "items"


# ---- the answer gates: format, exact match, F1, BLEU, chrF --------------------------------------

JSON_ITEMS = [r for r in DATA["val"] if r["category"] == "json"][:4]
LABELLED = [r for r in DATA["val"] if r["category"] == "classify"][:4]  # short reference outputs: exact match can flip
FORMAT = dict(max_new_tokens=48, samples=3, temperature=1.0, seed=1)


def _schema():
    pytest.importorskip("jsonschema")
    from pytest_ftmodel.demo import JSON_SCHEMA

    return JSON_SCHEMA


def test_one_sample_is_todays_answer_gate_result(bpe_model, private_record) -> None:
    pytest.importorskip("sacrebleu")
    from pytest_ftmodel import assert_exact_match, assert_format
    from pytest_ftmodel.metrics import reference
    from pytest_ftmodel.metrics.form import format_check

    schema = _schema()
    for kwargs in ({}, {"temperature": 0.9, "seed": 2}):
        one = format_check(bpe_model, JSON_ITEMS, json_schema=schema, max_new_tokens=48, samples=1, **kwargs)
        assert one == format_check(bpe_model, JSON_ITEMS, json_schema=schema, max_new_tokens=48, **kwargs) and one.stability is None
        for metric in ("exact_match", "f1", "bleu", "chrf"):
            compute = getattr(reference, metric)
            one = compute(bpe_model, LABELLED, max_new_tokens=8, samples=1, **kwargs)
            assert one == compute(bpe_model, LABELLED, max_new_tokens=8, **kwargs) and one.stability is None
    assert_format(bpe_model, JSON_ITEMS, json_schema=schema, at_least=0.0, max_new_tokens=48, samples=1)
    assert_exact_match(bpe_model, LABELLED, at_least=0.0, max_new_tokens=8, samples=1)
    for record in private_record.records:  # one answer: the keys they always had
        assert "samples" not in record.settings and "repeats" not in record.details
    assert private_record.records[0].details["compare_kind"] == private_record.records[1].details["compare_kind"] == "binary"


def test_sampled_format_check_by_hand(bpe_model) -> None:
    from pytest_ftmodel.metrics.form import format_check

    schema = _schema()
    result = format_check(bpe_model, JSON_ITEMS, json_schema=schema, **FORMAT)
    answers = sampled_answers(bpe_model, [r["instruction"] for r in JSON_ITEMS], **FORMAT)
    assert [list(it.answers) for it in result.items] == answers and result.samples == 3
    # each sample checked on its own, as the single-answer check would
    ok = [[format_check([a], json_schema=schema).share == 1.0 for a in row] for row in answers]
    assert any(len(set(r)) > 1 for r in ok), "the demo's JSON should flip at temperature 1"
    assert result.share == pytest.approx(sum(map(sum, ok)) / (3 * len(ok)))
    assert [it.share for it in result.items] == [sum(r) / 3 for r in ok]
    assert result.interval == bounded_mean_interval([sum(r) / 3 for r in ok])  # the item is the unit
    stab = result.stability
    assert stab.pass_at_k == sum(any(r) for r in ok) / len(ok)
    assert stab.pass_hat_k == sum(all(r) for r in ok) / len(ok) == result.n_passed / result.n
    assert stab.flip_rate == sum(len(set(r)) > 1 for r in ok) / len(ok)
    assert stab.flaky == tuple(i for i, r in enumerate(ok) if len(set(r)) > 1)
    assert [it.index for it in result.failing()] == [i for i, r in enumerate(ok) if not all(r)]


def test_a_failing_sampled_format_gate_lists_its_flaky_items(bpe_model, private_record) -> None:
    from pytest_ftmodel import assert_format
    from pytest_ftmodel.metrics.form import format_check

    schema = _schema()
    result = format_check(bpe_model, JSON_ITEMS, json_schema=schema, **FORMAT)
    s = result.stability
    with pytest.raises(AssertionError) as info:
        assert_format(bpe_model, JSON_ITEMS, json_schema=schema, at_least=1.0, **FORMAT)
    message = str(info.value)
    assert message.startswith(f"format: {result.share:.1%} of 4 items x 3 samples pass (95% CI [")
    assert f"repeated sampling: 3 samples per item; pass@3 {s.pass_at_k:.3f}, pass^3 {s.pass_hat_k:.3f}; flip rate {s.flip_rate:.3f}" in message
    assert "flaky items (their samples disagree; kept in every figure):" in message
    i = s.flaky[0]
    passing = sum(not r for r in result.items[i].reasons)
    assert f"item {i}: passes in {passing} of 3 samples  prompt {_cut(JSON_ITEMS[i]['instruction'], 40)!r}" in message
    j = next(j for j, r in enumerate(result.items[i].reasons) if r)
    assert f"(sample {j}; passes in {passing} of 3 samples)" in message
    [record] = private_record.records
    assert record.settings["samples"] == 3 and record.settings["temperature"] == 1.0 and record.settings["seed"] == 1
    assert record.details["compare_kind"] == "continuous" and [it["value"] for it in record.items] == [it.share for it in result.items]
    rep = record.details["repeats"]
    assert (rep["pass_at_k"], rep["pass_hat_k"], rep["flip_rate"]) == (s.pass_at_k, s.pass_hat_k, s.flip_rate)
    assert [f["index"] for f in rep["flaky"]] == list(s.flaky) and rep["flaky"][0]["prompt"] == JSON_ITEMS[i]["instruction"]


def test_sampled_reference_scores_by_hand(bpe_model) -> None:
    pytest.importorskip("sacrebleu")
    from pytest_ftmodel.metrics import reference
    from pytest_ftmodel.metrics.reference import exact_match_score, f1_score, sacre_scores

    kwargs = dict(max_new_tokens=8, **SAMPLED)
    answers = sampled_answers(bpe_model, [r["instruction"] for r in LABELLED], **kwargs)
    refs = [r["output"] for r in LABELLED]
    em = reference.exact_match(bpe_model, LABELLED, **kwargs)
    right = [[exact_match_score(a, ref) for a in row] for row, ref in zip(answers, refs)]
    assert [list(it.answers) for it in em.items] == answers and [list(it.values) for it in em.items] == right
    assert em.score == pytest.approx(sum(map(sum, right)) / (3 * len(right)))
    assert em.interval == bounded_mean_interval([sum(r) / 3 for r in right])
    assert em.stability.binary and em.stability.pass_at_k == sum(any(r) for r in right) / len(right)
    assert em.stability.pass_hat_k == sum(all(r) for r in right) / len(right)
    assert em.stability.flip_rate == sum(len(set(r)) > 1 for r in right) / len(right)
    f1 = reference.f1(bpe_model, LABELLED, **kwargs)
    assert [it.value for it in f1.items] == pytest.approx([sum(f1_score(a, ref) for a in row) / 3 for row, ref in zip(answers, refs)])
    assert not f1.stability.binary
    # BLEU: each item's mean sentence score (sacrebleu, effective order), the figure their mean, on 0-100
    bleu = reference.bleu(bpe_model, LABELLED, **kwargs)
    sentence = sacre_scores("bleu", [a for row in answers for a in row], [(ref,) for ref in refs for _ in range(3)])["sentence"]
    sentence = [min(v, 100.0) for v in sentence]  # a perfect match scores 100.00000000000004
    means = [sum(sentence[3 * i : 3 * i + 3]) / 3 for i in range(len(refs))]
    assert [it.value for it in bleu.items] == pytest.approx(means) and bleu.score == pytest.approx(sum(means) / len(means))
    low, high = bounded_mean_interval([m / 100 for m in means])
    assert bleu.interval == pytest.approx((100 * low, 100 * high)) and "mean of sentence scores" in bleu.signature


def test_a_failing_sampled_exact_match_gate_lists_its_flaky_items(bpe_model, private_record) -> None:
    from pytest_ftmodel import assert_exact_match
    from pytest_ftmodel.metrics import reference

    kwargs = dict(max_new_tokens=8, **SAMPLED)
    result = reference.exact_match(bpe_model, LABELLED, **kwargs)
    s = result.stability
    assert s.flaky, "the demo's labels should flip at temperature 1"
    with pytest.raises(AssertionError) as info:
        assert_exact_match(bpe_model, LABELLED, at_least=1.0, **kwargs)
    message = str(info.value)
    assert f"on 4 items x 3 samples (95% CI [" in message
    assert f"pass@3 {s.pass_at_k:.3f}, pass^3 {s.pass_hat_k:.3f}; flip rate {s.flip_rate:.3f}" in message
    i = s.flaky[0]
    assert f"item {i}: {' '.join(f'{v:.3f}' for v in result.items[i].values)} over its samples  prompt " in message
    [record] = private_record.records
    assert record.settings["samples"] == 3 and record.details["compare_kind"] == "continuous"
    assert [f["index"] for f in record.details["repeats"]["flaky"]] == list(s.flaky)


@pytest.mark.parametrize("gate", ["assert_format", "assert_exact_match", "assert_f1", "assert_bleu", "assert_chrf"])
@pytest.mark.parametrize(
    "bad, shown",
    [
        ({"samples": 3}, r"samples=3 with temperature=0(\.0)? \(greedy\): every sample would be the same answer; pass temperature > 0"),
        ({"samples": 0, "temperature": 1.0}, r"samples=0 is out of range: it must be a whole number >= 1"),
        ({"top_p": 1.5, "samples": 2, "temperature": 1.0}, r"top_p=1\.5"),
        ({"seed": "x"}, r"seed must be a whole number, got 'x'"),
    ],
)
def test_a_bad_sampling_argument_on_an_answer_gate_is_one_line_before_the_model_runs(gate, bad, shown) -> None:
    import pytest_ftmodel
    from pytest_ftmodel.errors import BarError, BarTypeError

    class Model:
        def __getattr__(self, name):
            raise RuntimeError("the model ran")

    bar = {"json_schema": {"type": "object"}} if gate == "assert_format" else {}
    with pytest.raises((BarError, BarTypeError)) as info:
        getattr(pytest_ftmodel, gate)(Model(), LABELLED, at_least=0.5, **bar, **bad)
    message = str(info.value)
    assert "\n" not in message and message.startswith(gate) and re.search(shown, message), message


def test_samples_with_answers_given_is_one_line() -> None:
    from pytest_ftmodel import DataError, assert_exact_match, assert_format

    with pytest.raises(DataError, match=r"^samples=2 with answers given: pass the model to sample its answers, or drop samples=$"):
        assert_format(["{}"], None, max_words=5, samples=2, temperature=1.0)
    with pytest.raises(DataError, match=r"^samples=2 with answers given: pass the model"):
        assert_exact_match(["a"], ["a"], samples=2, temperature=1.0)


def test_a_sampled_format_run_compares_per_item_and_never_with_a_greedy_baseline(bpe_model, private_record, tmp_path) -> None:
    from pytest_ftmodel import assert_format
    from pytest_ftmodel.report.records import repeats_text

    schema = _schema()
    greedy = lambda: assert_format(bpe_model, JSON_ITEMS, json_schema=schema, at_least=0.0, max_new_tokens=48)  # noqa: E731
    _baseline_of(private_record, tmp_path, greedy)
    with pytest.raises(pytest.fail.Exception, match=re.escape("settings differ from the baseline's (samples=<unset> in the baseline, 3 now")):
        assert_format(bpe_model, JSON_ITEMS, json_schema=schema, at_least=0.0, **FORMAT)
    sampled = lambda: assert_format(bpe_model, JSON_ITEMS, json_schema=schema, at_least=0.0, **FORMAT)  # noqa: E731
    _baseline_of(private_record, tmp_path, sampled)
    sampled()  # the same sampled run: the same answers, compared per item
    record = private_record.records[-1]
    assert record.baseline["verdict"] == "within noise" and record.baseline["delta"] == 0
    s = record.details["repeats"]
    assert repeats_text(record).startswith("3 samples per item; pass@3 ") and s["flaky"] and s["binary"]


def test_a_sampled_bleu_record_keeps_its_scale(bpe_model, private_record) -> None:
    pytest.importorskip("sacrebleu")
    from pytest_ftmodel import assert_bleu

    result = assert_bleu(bpe_model, SUMMARIES, at_least=0.0, max_new_tokens=16, samples=3, temperature=2.0, seed=3)
    [record] = private_record.records
    assert record.value == pytest.approx(result.score) and 0 <= result.interval[0] <= result.score <= result.interval[1] <= 100
    rep = record.details["repeats"]
    assert not rep["binary"] and rep["flaky"], "the demo's summaries should vary at temperature 2"
    first = rep["flaky"][0]
    assert first["mean"] == pytest.approx(result.items[first["index"]].value)  # on BLEU's 0-100 scale, as the item's value
    assert record.settings["signature"] == result.signature and "mean of sentence scores" in result.signature
    assert record.details["item_value"] == "mean sentence BLEU (sacrebleu, effective order) over 3 samples"
