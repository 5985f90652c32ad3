"""Overfitting, the training curve, and a leakage check on the validation split."""

import pytest

from pytest_ftmodel import assert_no_leakage, assert_no_overfit, assert_training_converged


@pytest.mark.needs_logprobs
def test_not_overfit(ftmodel, train, val):
    # the demo's own bar; the usual reading of a gap: < 0.2 fine, 0.2-0.5 some overfitting, > 0.5 strong
    assert_no_overfit(ftmodel, train, val, max_gap=0.5)


@pytest.mark.needs_checkpoint
def test_training_converged(ftmodel):
    assert_training_converged(ftmodel)  # reads trainer_state.json from the checkpoint folder


def test_no_leakage(train, val):
    assert_no_leakage(train, val)
