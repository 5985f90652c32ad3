"""Perplexity gates: below a bar on validation data, and clearly better than the base model.

Each validation answer is scored given its prompt, formatted as the model was fine-tuned (its chat
template, chat="auto"; else instruction, line break, answer): the perplexity that fine-tuning lowers.
"""

import pytest

from pytest_ftmodel import assert_perplexity_below, assert_perplexity_improves


@pytest.mark.needs_logprobs
def test_val_perplexity(ftmodel, val):
    assert_perplexity_below(ftmodel, val, 4.0, chat="auto")


@pytest.mark.needs_logprobs
def test_improves_on_base(ftmodel, base_model, val):
    # at least 90% lower answer perplexity than the base model
    assert_perplexity_improves(ftmodel, base_model, val, min_improvement=0.9, chat="auto")
