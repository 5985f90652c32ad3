"""What fine-tuning broke: general multiple-choice questions, the fine-tuned model against the base
model item by item (McNemar's test), scored by log-likelihood as lm-evaluation-harness's ``acc``."""

import pytest

from pytest_ftmodel import assert_no_forgetting


@pytest.mark.needs_logprobs
def test_no_forgetting(ftmodel, base_model, general_questions):
    assert_no_forgetting(ftmodel, base_model, general_questions, margin=0.02, per_category=True)
