"""The form, reference and length figures in every report: terminal, JSON, Markdown, HTML (with a
plot that fits each), JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("jsonschema")
pytest.importorskip("sacrebleu")


def test_new_figures_reach_every_report_with_their_plots(pytester: pytest.Pytester, bpe_pair) -> None:
    pytest.importorskip("matplotlib")
    pytester.makepyfile(
        test_answers="""
from pytest_ftmodel import assert_bleu, assert_chrf, assert_exact_match, assert_f1, assert_format, assert_length, demo

REFS = ["the cat sat on the mat", "a dog ate the cake", "the owl moved the box"]
SUMMARIES = [r for r in demo.demo_data()["val"] if r["category"] == "summarize"]

def test_json():
    assert_format(['{"a": 1}', "no json \\x1b[2J", '{"a": 2}'], None, json_schema={"type": "object"}, at_least=0.5)

def test_refs():
    answers = ["the cat sat on a mat", "a dog ate cake", "the owl moved the box"]
    assert_exact_match(answers, REFS, at_least=0.3)
    assert_f1(answers, REFS, at_least=0.5)
    assert_bleu(answers, REFS, at_least=10)
    assert_chrf(answers, REFS, at_least=10)

def test_length(ftmodel, base_model):
    assert_length(ftmodel, SUMMARIES, base=base_model, max_ratio=5.0, max_new_tokens=48)
"""
    )
    result = pytester.runpytest_subprocess(
        f"--model={bpe_pair.finetuned}", f"--base-model={bpe_pair.base}", "--ftmodel-json=r.json", "--ftmodel-markdown=r.md",
        "--ftmodel-html=r.html", "--junitxml=j.xml",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["test_json * format * 0.6667 * >= 0.5 *", "test_refs * exact_match *", "test_refs * bleu *", "test_length * length ratio *<= 5*",
         "scored with sacrebleu: bleu nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:*; chrf", "  nrefs:1|*"],
        consecutive=False,
    )
    records = json.loads((pytester.path / "r.json").read_text())["records"]
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"format", "exact_match", "f1", "bleu", "chrf", "length ratio"}
    assert by_name["format"]["items"][1]["reason"].startswith("no JSON found: the '[' at character 9") and by_name["bleu"]["settings"]["signature"].startswith("nrefs:1")
    assert by_name["length ratio"]["details"]["base_lengths"] and by_name["length ratio"]["details"]["unit"] == "tokens"
    markdown = (pytester.path / "r.md").read_text()
    assert "| test\\_json | format |" in markdown and "| length ratio | finetuned vs base | 3.5 |" in markdown
    assert "scored with sacrebleu\\: bleu nrefs\\:1\\|case\\:mixed" in markdown
    page = (pytester.path / "r.html").read_text()
    assert page.count("<figure") >= 6  # format, exact_match, f1, bleu, chrf, length
    assert "failing answers by reason" not in page or "<svg" in page
    assert "\x1b" not in page and "no json \\x1b[2J" in page  # the answer shown escaped
    assert "<th>why it failed</th>" in page and "no JSON found: the &#x27;[&#x27; at character 9" in page
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "j.xml").iter("property")}
    assert props["ftmodel.format"] == "0.6667" and props["ftmodel.bleu.signature"].startswith("nrefs:1")
    assert props["ftmodel.length ratio.bar"] == "5" and props["ftmodel.length ratio.direction"] == "<="
