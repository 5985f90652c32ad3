"""Report files: JSON (--ftmodel-json), Markdown and the GitHub job summary, the HTML page."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import pytest_ftmodel.metrics.code  # noqa: F401 - numpy (and matplotlib below) load once, here, never first
from pytest_ftmodel import report  # inside an in-process inner session, which would unload them again

try:
    import matplotlib.figure  # noqa: F401
except ImportError:  # pragma: no cover - the report extra is part of the test extra
    pass
from pytest_ftmodel.files import _umask
from pytest_ftmodel.report.document import SCHEMA_VERSION, build_document, write_json
from pytest_ftmodel.report.html import render_html
from pytest_ftmodel.report.markdown import md_code_block, md_text, render_markdown

EVIL = '<img src="https://evil.example/x.png" onerror="alert(1)"> | `tick` **bold** [link](https://evil.example)'


def _trainer_state(path: Path) -> Path:
    history = [{"step": s, "loss": 2.0 / (1 + s / 20)} for s in range(10, 210, 10)]
    history += [{"step": s, "eval_loss": 1.4 - s / 400 + (s / 300) ** 2} for s in range(20, 220, 20)]
    path.write_text(json.dumps({"log_history": history, "global_step": 200}))
    return path


def record_every_kind(tmp_path: Path) -> list[report.MetricRecord]:
    """One record per kind of gate, from the result objects the helpers judge."""
    from pytest_ftmodel.human import ABResult
    from pytest_ftmodel.metrics.code import CodeResult, ProblemResult, Sample
    from pytest_ftmodel.metrics.curve import training_curve
    from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore
    from pytest_ftmodel.metrics.text import RougeItem, RougeResult

    model = report.ModelName("checkpoint-320", str(tmp_path / "runs/full/checkpoint-320"), "feedc0ffee123456")
    texts = tuple(f"validation text {i} {EVIL if i == 3 else ''}" for i in range(12))
    scores = tuple(TextScore(nll=(2.0 + i % 5) * 10, n_tokens=10, n_bytes=40, n_words=8) for i in range(12))
    ppl = PerplexityResult(22.8, 300.0, 120, 12, scores, 1.1, 30.0, (14.4, 43.3), texts)
    report.record_metric("perplexity", 22.8, threshold=40, op="<=", n=12, unit="texts", passed=True, model=model,
                         interval=ppl.interval, result=ppl, settings={"stride": None})
    items = tuple(
        RougeItem(i, f"Summarize item {i}", f"reference {i}", EVIL if i == 0 else f"answer {i}", i / 10, i / 20, i / 10)
        for i in range(10)
    )
    rouge = RougeResult(0.45, 0.22, 0.45, {"rouge1": (0.3, 0.6), "rouge2": (0.1, 0.3), "rougeL": (0.3, 0.6)}, items)
    report.record_metric("rouge1", 0.45, threshold=0.5, op=">=", n=10, unit="items", passed=False, model=model,
                         interval=(0.3, 0.6), result=rouge, settings={"max_new_tokens": 48})
    report.recorder().attach_diagnosis(report.recorder().records[-1].test, f"rouge1 0.450 is below the bar 0.500\n  generated {EVIL!r}")
    problems = tuple(
        ProblemResult(f"task/{i}", tuple(Sample(f"def f():\n    return {j}", "passed" if j <= i else "failed", "" if j <= i else "AssertionError") for j in range(4)))
        for i in range(5)
    )
    code = CodeResult({1: 0.7}, {1: (0.45, 0.9)}, problems, 4, "namespaces, no network")
    report.record_metric("pass@1", 0.7, threshold=0.6, op=">=", n=5, unit="problems", passed=True, model=model,
                         interval=(0.45, 0.9), result=code)
    ab = ABResult(model_wins=9, base_wins=2, ties=1, win_rate=9 / 11, interval=(0.52, 0.95), p_value=0.065,
                  judges=("reference",), agreement=None, agreement_kind=None)
    report.record_metric("A/B win rate", ab.win_rate, threshold=0.6, op=">=", n=11, unit="decided", passed=True,
                         interval=ab.interval, result=ab)
    curve = training_curve(_trainer_state(tmp_path / "trainer_state.json"))
    report.record_metric("eval loss (best)", curve.best_eval_loss, threshold=None, op="<=", n=len(curve.eval),
                         unit="evals", passed=True, model=model, result=curve)
    return list(report.recorder().records)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href", "xlink:href", "action", "data", "poster", "srcset") and value:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def test_json_report_has_every_field_and_a_schema_version(tmp_path: Path) -> None:
    records = record_every_kind(tmp_path)
    out = write_json(tmp_path / "out" / "report.json", records, {"models": {"model": {"path": "/x", "fingerprint": "f"}}})
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert doc["summary"] == {"metrics": 5, "passed": 4, "failed": 1}
    ppl = doc["records"][0]
    for key in ("test", "name", "value", "threshold", "op", "direction", "low", "high", "n", "unit", "passed",
                "model", "model_label", "model_paths", "fingerprints", "settings", "baseline", "items", "details"):
        assert key in ppl, key
    assert ppl["direction"] == "lower is better" and ppl["fingerprints"] == ["feedc0ffee123456"]
    assert ppl["model_label"] == "checkpoint-320" and ppl["baseline"] is None
    assert [round(i["value"], 6) for i in ppl["items"]] == [2.0 + i % 5 for i in range(12)]  # per-text NLL per token
    rouge = doc["records"][1]
    assert rouge["items"][0]["answer"] == EVIL and rouge["settings"] == {"max_new_tokens": 48}
    assert rouge["diagnosis"].startswith("rouge1 0.450 is below the bar")
    code = doc["records"][2]["details"]
    assert code["isolation"] == "namespaces, no network"
    # pass@k by k from the per-problem counts: problem i has i + 1 of 4 samples passing
    from pytest_ftmodel.metrics.code import pass_at_k

    assert code["pass_at"]["2"] == pytest.approx(sum(pass_at_k(4, min(i + 1, 4), 2) for i in range(5)) / 5)
    curve = doc["records"][4]["details"]
    assert curve["kind"] == "training curve" and len(curve["eval"]) == 10 and curve["best_step"] in [s for s, _ in curve["eval"]]
    assert not [p for p in out.parent.iterdir() if p.name != "report.json"]  # no temporary file left behind
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable like any new file, not private


def test_json_is_written_atomically_and_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.json"
    target.write_text('{"old": true}')

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pytest_ftmodel.report.document.os.replace", broken)
    with pytest.raises(OSError):
        write_json(target, [], {})
    assert target.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_nan_values_become_null_not_invalid_json(tmp_path: Path) -> None:
    report.record_metric("odd", float("nan"), threshold=1.0, op="<=", n=1, unit="items", passed=False)
    doc = build_document(list(report.recorder().records))
    assert doc["records"][0]["value"] is None
    json.dumps(doc, allow_nan=False)


def test_markdown_escapes_untrusted_text() -> None:
    assert md_text("a|b <b>x</b> *y* `z`") == r"a\|b &lt;b&gt;x&lt;/b&gt; \*y\* \`z\`"
    assert md_text("see https://evil.example or www.evil.example") == r"see https\://evil.example or www\.evil.example"
    block = md_code_block("answer ``` closes a fence?\n````")
    assert block.startswith("`````text\n") and block.endswith("\n`````")


def test_markdown_summary_has_the_table_and_the_failing_gates(tmp_path: Path) -> None:
    records = record_every_kind(tmp_path)
    text = render_markdown(records)
    lines = text.splitlines()
    assert lines[0] == "## ftmodel metrics"
    assert "❌ **5 metrics: 4 passed, 1 failed**" in text
    assert "| test | metric | model | value | bar | 95% CI | n | result |" in lines
    rows = [line for line in lines if line.startswith("| ") and "rouge1" in line]
    assert len(rows) == 1 and rows[0].endswith("| 0.45 | ≥ 0.5 | [0.3, 0.6] | 10 items | ❌ **FAIL** |")
    assert "### Failing gates" in text and "```text\nrouge1 0.450 is below the bar 0.500" in text
    # the evil answer appears only inside the code fence of the diagnosis, never as live Markdown/HTML
    outside = text.split("```text", 1)[0]
    assert "<img" not in outside and "](https://" not in outside


def test_html_page_is_self_contained_with_its_sections_plots_and_escaped_items(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    records = record_every_kind(tmp_path)
    page = render_html(records, {"models": {"model": {"path": str(tmp_path / "runs/full/checkpoint-320"), "fingerprint": "feedc0ffee123456"}}, "sandbox": "auto"})
    parsed = _parse(page)
    assert {"summary", "metrics", "plots", "worst-items", "failures"} <= parsed.ids
    assert parsed.tags.count("svg") == 5  # per-text NLL, ROUGE distribution, pass@k, A/B, training curve
    assert not [u for u in parsed.urls if not u.startswith("#")]  # nothing fetched: only in-page references
    assert "@import" not in "".join(parsed.styles) and "url(http" not in page
    assert "<script" not in page.lower()
    assert "<img" not in page  # the answer's markup is shown as text
    assert EVIL in "".join(parsed.text)  # ... and reads as written
    assert 'class="fail"' in page and 'class="pass"' in page
    assert "feedc0ffee123456" in page


def test_html_page_without_matplotlib_says_how_to_get_plots_and_keeps_the_tables(tmp_path: Path) -> None:
    records = record_every_kind(tmp_path)
    data = tmp_path / "records.json"
    data.write_text(json.dumps([r.as_dict() for r in records]))
    code = (
        "import sys, json; sys.modules['matplotlib'] = None\n"
        "from pytest_ftmodel.report import MetricRecord\n"
        "from pytest_ftmodel.report.html import render_html\n"
        f"records = [MetricRecord.from_dict(r) for r in json.load(open({str(data)!r}))]\n"
        "print(render_html(records))\n"
    )
    page = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    parsed = _parse(page)
    assert "svg" not in parsed.tags
    assert 'pip install "pytest-ftmodel[report]"' in "".join(parsed.text)
    assert {"metrics", "worst-items", "failures"} <= parsed.ids and parsed.tags.count("tr") > 10


REPORTING_SUITE = """
from pytest_ftmodel import record_metric

def test_good():
    record_metric("rouge1", 0.61, threshold=0.5, op=">=", n=40, unit="items", passed=True, model="m")

def test_bad():
    record_metric("accuracy", 0.4, threshold=0.8, op=">=", n=10, unit="items", passed=False, model="m", interval=(0.2, 0.6))
    raise AssertionError("accuracy 0.400 is below the bar 0.800 <b>|</b>")
"""


def test_the_options_write_every_report_and_the_job_summary_is_appended(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(REPORTING_SUITE)
    summary = pytester.path / "step_summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest("--ftmodel-json", "out/r.json", "--ftmodel-markdown", "out/r.md", "--ftmodel-html", "out/r.html")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["ftmodel: JSON report written to out/r.json", "ftmodel: Markdown summary written to out/r.md",
         "ftmodel: job summary written to *step_summary.md", "ftmodel: HTML report written to out/r.html"]
    )
    doc = json.loads((pytester.path / "out/r.json").read_text())
    assert [r["test"].rsplit("::")[-1] for r in doc["records"]] == ["test_good", "test_bad"]
    assert doc["records"][1]["diagnosis"] == "accuracy 0.400 is below the bar 0.800 <b>|</b>"
    assert doc["session"]["tests_failed"] == 1
    md = (pytester.path / "out/r.md").read_text()
    assert summary.read_text() == "# earlier step\n" + md + "\n"
    assert "accuracy 0.400 is below the bar 0.800 <b>|</b>" in md  # inside the fence, verbatim
    assert "&lt;b&gt;" in (pytester.path / "out/r.html").read_text()


def test_reports_are_ini_settings_too_and_a_bad_path_is_one_line(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makepyfile(REPORTING_SUITE)
    pytester.makeini("[pytest]\nftmodel_json = reports/r.json\n")
    (pytester.path / "blocker").write_text("a file, not a folder")
    result = pytester.runpytest("--ftmodel-html", "blocker/r.html")
    result.stdout.fnmatch_lines(["ftmodel: JSON report written to *reports/r.json", "ftmodel: cannot write the HTML report to blocker/r.html: *"])
    assert (pytester.path / "reports/r.json").is_file()
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the tests' own outcome, not a crash


def test_no_job_summary_when_nothing_was_measured(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest().assert_outcomes(passed=1)
    assert not summary.exists()
