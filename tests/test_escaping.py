"""Untrusted text never acts on the reader's display: terminal escapes and bidirectional overrides
("Trojan Source") are shown as escapes on every surface, by one function (escaping.visible)."""

from __future__ import annotations

import shutil
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import report
from pytest_ftmodel.escaping import CONTROL, html_text, visible

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# an answer that reads "pass" on screen while its bytes say otherwise, and one that clears the screen
HOSTILE = "access\u202e \u2066// admin\u2069 \u2066ssap\x1b[2J\x1b]8;;http://x.example/\x07"


def _raw(text: str) -> list[str]:
    return sorted({c for c in text if c in BIDI or c in "\x1b\x07\u200e\u200f\u061c"})


def test_every_bidi_control_and_terminal_escape_becomes_a_visible_escape():
    assert visible(BIDI) == "\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069"
    assert visible("\u200e\u200f\u061c") == "\\u200e\\u200f\\u061c"
    assert visible("a\x1b[31mb\x07\x9b") == "a\\x1b[31mb\\x07\\x9b"
    assert visible("line\n\tindented, née, 日本語, emoji 🙂") == "line\n\tindented, née, 日本語, emoji 🙂"
    assert visible(None) == ""


@given(st.text())
def test_no_control_survives_and_ordinary_text_is_unchanged(text):
    shown = visible(text)
    assert CONTROL.search(shown) is None
    assert not any(unicodedata.category(c) == "Cf" and unicodedata.bidirectional(c) in ("LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI") for c in shown)
    if CONTROL.search(text) is None:
        assert shown == text


def test_html_text_escapes_markup_and_controls():
    assert html_text('<b a="1">\u202e') == "&lt;b a=&quot;1&quot;&gt;\\u202e"


def test_the_sandbox_and_the_review_commands_use_the_same_function():
    from pytest_ftmodel.__main__ import shown
    from pytest_ftmodel.sandbox import escape_controls

    assert escape_controls(HOSTILE) == shown(HOSTILE) == visible(HOSTILE)


def _hostile_record() -> report.MetricRecord:
    return report.MetricRecord(
        name=f"exact match {HOSTILE}", value=0.25, threshold=0.5, op=">=", n=4, unit="items", passed=False,
        model=f"org/{HOSTILE}", test=f"tests/test_x.py::test_gate[{HOSTILE}]",
        items=({"index": 0, "id": "a", "value": 0.0, "prompt": HOSTILE, "expected": "yes", "answer": HOSTILE},),
        diagnosis=f"exact match 0.25 < 0.5 on 4 items; worst: {HOSTILE!s}",
    )


def test_terminal_table_and_summary_show_bidi_and_escapes_escaped():
    from pytest_ftmodel.report.terminal import summary_lines

    for verbose in (False, True):
        text = "\n".join(summary_lines([_hostile_record(), _hostile_record()], verbose=verbose))
        assert _raw(text) == []
        assert "\\u202e" in text


def test_markdown_shows_bidi_and_escapes_escaped():
    from pytest_ftmodel.report.markdown import render_markdown

    text = render_markdown([_hostile_record()], {})
    assert _raw(text) == []
    assert "\\u202e" in text and "\\x1b" in text


def test_html_shows_bidi_and_escapes_escaped():
    from pytest_ftmodel.report.html import render_html

    text = render_html([_hostile_record()], {})
    assert _raw(text) == []
    assert "\\u202e" in text


def test_a_served_models_error_escapes_bidi_too():
    from pytest_ftmodel.served import ServedModelError

    assert _raw(str(ServedModelError(f"the server said {HOSTILE}"))) == []


def test_a_model_named_with_escapes_is_escaped_in_a_gates_failure(bpe_pair, tmp_path) -> None:
    """A checkpoint folder (or a served model's id) is untrusted text: the failure message names the
    model, and a name with a terminal escape or a bidi override must not reach the terminal raw."""
    from pytest_ftmodel import assert_perplexity_below, load_model

    evil = tmp_path / "evil\x1b[2J\x1b[32mALL GREEN\u202etxt"
    shutil.copytree(bpe_pair.finetuned, evil)
    model = load_model(evil, device="cpu")
    with pytest.raises(AssertionError) as failed:
        assert_perplexity_below(model, ["The cat sat on the mat."], 1.0, cache=None)
    message = str(failed.value)
    assert "\x1b" not in message and "\u202e" not in message
    assert "evil\\x1b[2J\\x1b[32mALL GREEN\\u202etxt" in message
