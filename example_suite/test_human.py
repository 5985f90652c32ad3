"""A/B against the base model (judged here by the reference judge), and human review.

The human review sheet lives in reviews/: people fill it with
`python -m pytest_ftmodel review example_suite/reviews/evaluation.json`. Until 20 items are scored the
test is skipped with that command as its reason (run with --ftmodel-require-human to fail instead).
"""

from pathlib import Path

from pytest_ftmodel import ab_sheet, assert_ab_win_rate, assert_human_scores, evaluation_sheet, judge_ab, reference_judge

REVIEWS = Path(__file__).parent / "reviews"


def test_wins_ab_against_base(ftmodel, base_model, summaries, tmp_path):
    sheet = ab_sheet(ftmodel, base_model, summaries, tmp_path / "ab.json", max_new_tokens=48)
    judge_ab(sheet, reference_judge(), name="reference")
    assert_ab_win_rate(sheet, at_least=0.6)


def test_human_review(ftmodel, val):
    sheet = evaluation_sheet(ftmodel, val, REVIEWS / "evaluation.json", n=20, max_new_tokens=48)
    assert_human_scores(sheet, min_mean={"accuracy": 4.0, "relevance": 4.0}, min_scored=20, model=ftmodel)
