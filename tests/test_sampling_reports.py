"""Every report shows a sampled figure's samples, pass@k / pass^k, flip rate and flaky items, escaped."""

from __future__ import annotations

import json

import pytest

from pytest_ftmodel import report
from pytest_ftmodel.report.html import render_html
from pytest_ftmodel.report.markdown import render_markdown
from pytest_ftmodel.metrics.text import ClassificationItem, ClassificationResult, LabelScores
from pytest_ftmodel.report.records import junit_properties, record_metric, repeats_text
from pytest_ftmodel.sampling import repeats

HOSTILE = "<script>x</script> \u202e\x1b[2J evil"
PROMPTS = ["fine prompt", HOSTILE, "steady", "half"]
# per item and sample: right (1) or wrong (0); items 1 and 3 flip
RIGHT = [[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]]


def _result() -> ClassificationResult:
    stab = repeats(RIGHT, binary=True)
    items = tuple(
        ClassificationItem(
            i, p, "a", "a" if r[0] else "b", "a" if r[0] else "b",
            answers=tuple("a" if x else "b" for x in r), predictions=tuple("a" if x else "b" for x in r),
        )
        for i, (p, r) in enumerate(zip(PROMPTS, RIGHT))
    )
    return ClassificationResult(
        accuracy=stab.mean, macro_f1=0.5, per_label={"a": LabelScores(1, 0.5, 0.6, 12)}, confusion=((6, 6, 0), (0, 0, 0)),
        confusion_labels=("a", "b", "<no label>"), n_unparseable=0, accuracy_interval=stab.interval(), items=items,
        samples=3, stability=stab,
    )


@pytest.fixture
def record(private_record):
    return record_metric(
        "accuracy", _result().accuracy, threshold=0.9, op=">=", n=4, unit="items", passed=False, result=_result(),
        settings={"samples": 3, "temperature": 1.0},
    )


def test_the_record_carries_the_stability_and_every_flaky_item(record) -> None:
    rep = record.details["repeats"]
    assert rep["samples"] == 3 and rep["pass_at_k"] == 0.75 and rep["pass_hat_k"] == 0.25 and rep["flip_rate"] == 0.5
    assert [f["index"] for f in rep["flaky"]] == [1, 3] and rep["flaky"][0]["prompt"] == HOSTILE
    assert [it["value"] for it in record.items] == pytest.approx([1.0, 2 / 3, 0.0, 1 / 3])
    assert record.details["compare_kind"] == "continuous"
    assert repeats_text(record) == "3 samples per item; pass@3 0.75, pass^3 0.25; flip rate 0.5; 2 of 4 items flaky (items 1, 3)"
    data = json.loads(json.dumps(record.as_dict()))  # the JSON report holds it as it is
    assert data["details"]["repeats"]["flaky"][1] == {"index": 3, "mean": pytest.approx(1 / 3), "prompt": "half"}


def test_terminal_markdown_html_and_junit_show_it_escaped(record) -> None:
    terminal = " ".join(" ".join(report.summary_lines([record])).split())  # wrapped lines joined
    assert "repeated sampling: -" not in terminal
    assert "accuracy: 3 samples per item; pass@3 0.75, pass^3 0.25; flip rate 0.5; 2 of 4 items flaky (items 1, 3)" in terminal
    markdown = render_markdown([record])
    assert "### Repeated sampling" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| ") and "| 3 |" in line)
    assert "| 0.75 | 0.25 | 0.5 |" in row and r"1: &lt;script&gt;x&lt;/script&gt; \\u202e\\x1b\[2J evil; 3: half" in row
    html = render_html([record])
    assert '<section id="repeats"><h2>Repeated sampling</h2>' in html
    assert "&lt;script&gt;x&lt;/script&gt; \\u202e\\x1b[2J evil" in html and "<script>x" not in html
    props = dict(junit_properties(record))
    assert props["ftmodel.accuracy.samples"] == "3" and props["ftmodel.accuracy.pass_at_k"] == "0.75"
    assert props["ftmodel.accuracy.pass_hat_k"] == "0.25" and props["ftmodel.accuracy.flip_rate"] == "0.5"
    assert props["ftmodel.accuracy.flaky_items"] == "1,3"
    for text in (terminal, markdown, html):
        assert "\u202e" not in text and "\x1b" not in text


def test_a_single_answer_figure_adds_nothing(private_record) -> None:
    single = ClassificationResult(
        accuracy=1.0, macro_f1=1.0, per_label={}, confusion=((1,),), confusion_labels=("a",), n_unparseable=0,
        accuracy_interval=(0.0, 1.0), items=(ClassificationItem(0, "p", "a", "a", "a"),),
    )
    rec = record_metric("accuracy", 1.0, threshold=0.5, op=">=", n=1, unit="items", passed=True, result=single)
    assert "repeats" not in rec.details and repeats_text(rec) == "" and rec.details["compare_kind"] == "binary"
    assert "Repeated sampling" not in render_markdown([rec]) and 'id="repeats"' not in render_html([rec])
    assert not any(k.endswith(".samples") for k, _ in junit_properties(rec))


def test_the_memorised_share_lists_its_flaky_items_with_their_prompts(private_record) -> None:
    from pytest_ftmodel.metrics.overfit import Memorised, OverfitResult

    copied = [[0, 0], [1, 0], [1, 1]]  # item 1 copies in one sample of two, item 2 in both
    stab = repeats(copied, binary=True)
    result = OverfitResult(
        train_loss=1.0, val_loss=1.1, gap=0.1, ratio=1.1, band="fine", advice="", train=None, val=None, n_answers=3,
        memorised_share=stab.mean, memorised=(Memorised(1, "p1", "a", "t", True), Memorised(2, "p2", "a", "t", True)),
        samples=2, stability=stab,
    )
    rec = record_metric("memorised share", stab.mean, threshold=0.1, op="<=", n=3, unit="items", passed=False, result=result)
    rep = rec.details["repeats"]
    assert rep["flaky"] == [{"index": 1, "mean": 0.5, "prompt": "p1"}]
    assert rep["pass_at_k"] == pytest.approx(2 / 3) and rep["pass_hat_k"] == pytest.approx(1 / 3)
