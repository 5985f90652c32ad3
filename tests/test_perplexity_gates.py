"""assert_perplexity_below / assert_perplexity_improves: decisions, messages, records."""

from __future__ import annotations

import re

import pytest

from pytest_ftmodel import assert_perplexity_below, assert_perplexity_improves, load_model, perplexity, report, texts_of
from pytest_ftmodel.demo import demo_data

VAL = texts_of(demo_data()["val"])


@pytest.fixture(scope="module")
def base(bpe_pair):
    return load_model(bpe_pair.base, device="cpu")


def _last_record() -> report.MetricRecord:
    return report.recorder().records[-1]


def test_below_passes_and_records(bpe_model) -> None:
    ppl = perplexity(bpe_model, VAL).perplexity
    result = assert_perplexity_below(bpe_model, VAL, ppl * 1.01)
    assert result.perplexity == ppl
    rec = _last_record()
    assert (rec.name, rec.value, rec.threshold, rec.op, rec.n, rec.passed) == ("perplexity", ppl, ppl * 1.01, "<=", len(VAL), True)
    assert rec.test.endswith("test_below_passes_and_records") and rec.low <= ppl <= rec.high


def test_below_failure_reads_like_a_diagnosis(base) -> None:
    result = perplexity(base, VAL)
    with pytest.raises(AssertionError) as info:
        assert_perplexity_below(base, VAL, 5.0)
    message = str(info.value)
    assert f"perplexity {result.perplexity:.4g} is above the bar 5" in message
    assert f"{len(VAL)} texts, {result.n_tokens} tokens scored, 95% CI [" in message
    worst = [i for i, _ in result.worst(3)]
    listed = [int(i) for i in re.findall(r"text (\d+): [\d.]+ nats/token", message)]
    assert listed == worst
    assert _last_record().passed is False


def test_improves_passes_for_the_fine_tuned_model(bpe_model, base) -> None:
    result = assert_perplexity_improves(bpe_model, base, VAL, min_improvement=0.5)
    assert result.improvement == pytest.approx(1 - result.model.perplexity / result.base.perplexity)
    rec = _last_record()
    assert rec.name == "perplexity improvement" and rec.op == ">=" and rec.passed and rec.model == "finetuned vs base"


def test_improves_fails_for_the_base_against_itself(base) -> None:
    with pytest.raises(AssertionError, match=r"perplexity improvement 0\.0% is below the bar 10\.0%: .* on 36 texts"):
        assert_perplexity_improves(base, base, VAL, min_improvement=0.1)
    assert _last_record().passed is False


def test_failures_hide_the_helper_frames(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel import assert_perplexity_below

        def test_gate(ftmodel):
            assert_perplexity_below(ftmodel, ["The cat chased the ball."], 1.0)
        """
    )
    result = pytester.runpytest("--model", str(bpe_pair.base))
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "E       AssertionError: perplexity" in out
    assert "assertions.py" not in out  # __tracebackhide__: the user's line is the one shown
