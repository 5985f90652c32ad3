"""Perplexity gates: below a bar on validation data, and clearly better than the base model."""

import pytest

from pytest_ftmodel import assert_perplexity_below, assert_perplexity_improves, texts_of


@pytest.mark.needs_logprobs
def test_val_perplexity(ftmodel, val):
    assert_perplexity_below(ftmodel, texts_of(val), 40.0)


@pytest.mark.needs_logprobs
def test_improves_on_base(ftmodel, base_model, val):
    # at least 50% lower perplexity than the base model
    assert_perplexity_improves(ftmodel, base_model, texts_of(val), min_improvement=0.5)
