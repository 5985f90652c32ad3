"""How the reports show comparisons with the baseline (``MetricRecord.baseline``): the terminal
tables, Markdown (job summary), the HTML page with its plot, JUnit properties and the JSON report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pytest_ftmodel.metrics.code  # noqa: F401 - numpy loads once, here, not inside an in-process inner session
from pytest_ftmodel import report
from pytest_ftmodel.report import versus

try:
    import matplotlib.figure  # noqa: F401 - loaded once, here, never first inside an inner session
except ImportError:  # pragma: no cover - the report extra is part of the test extra
    pass
from pytest_ftmodel.report.document import write_json
from pytest_ftmodel.report.html import render_html
from pytest_ftmodel.report.markdown import render_markdown

EVIL = '<img src="https://evil.example/x.png" onerror="alert(1)"> | ``` `tick` **bold** [link](https://evil.example) \x1b[31mRED\x1b[0m </td>'


def _worse(n: int) -> list[dict[str, str]]:
    return [
        {"id": f"{i:016x}", "prompt": f"Summarize item {i} {EVIL if i == 0 else ''}", "expected": f"reference {i}",
         "before": f"good answer {i}", "after": EVIL if i == 1 else f"worse answer {i}"}
        for i in range(n)
    ]


def _compared(verdict: str, value: float, candidate: float, delta: float, low: float, high: float, p: float, margin: float,
              *, relative: bool = False, mode: str = "superiority", test: str = "paired bootstrap", worse: int = 0) -> dict:
    items = _worse(worse)
    return {
        "verdict": verdict, "test": test, "value": value, "candidate": candidate, "delta": delta, "low": low, "high": high,
        "p_value": p, "margin": margin, "relative": relative, "n_paired": 24, "alpha": 0.05, "mode": mode,
        "worse": [i["id"] for i in items], "notes": [], "baseline_model": "finetuned",
        "baseline_fingerprint": "4aa8dc336f3917fe", "baseline_n": 24, "worse_items": items,
    }


def _rec(test: str, name: str, value: float, threshold: float, op: str, baseline: dict | None, **kw) -> report.MetricRecord:
    return report.MetricRecord(name, value, threshold, op, kw.pop("n", 24), kw.pop("unit", "items"), kw.pop("passed", True),
                               model="finetuned", test=f"example_suite/test_tasks.py::{test}", baseline=baseline, **kw)


MISMATCH = "max_new_tokens is 128 now, 64 in the baseline: restore it or run --ftmodel-update-baseline \x1b[2J"


def every_verdict() -> list[report.MetricRecord]:
    """One record per verdict, absolute and relative changes, and one record with no baseline."""
    return [
        _rec("test_summaries", "rouge1", 0.5312, 0.45, ">=", _compared("regressed", 0.6167, 0.5312, -0.0855, -0.142, -0.031, 0.002, 0.01, worse=4), low=0.4, high=0.66),
        _rec("test_sentiment", "accuracy", 0.9167, 0.8, ">=", _compared("within noise", 0.9167, 0.9167, 0.0, -0.0833, 0.0833, 0.5, 0.01, test="McNemar mid-p")),
        _rec("test_passk", "pass@1", 1.0, 0.6, ">=", _compared("improved", 0.75, 1.0, 0.25, 0.0, 0.5, 0.98, 0.01, test="McNemar mid-p"), unit="problems"),
        _rec("test_val_perplexity", "perplexity", 28.1, 40, "<=", _compared("within noise", 26.99, 28.1, 0.0411, -0.008, 0.093, 0.06, 0.02, relative=True, worse=2), unit="texts"),
        _rec("test_human_review", "mean score", 3.9, 3.5, ">=", _compared("inconclusive", 4.1, 3.9, -0.2, -0.45, 0.05, 0.08, 0.1, mode="noninferiority", test="Wilcoxon signed-rank")),
        _rec("test_wins_ab_against_base", "A/B win rate", 0.9, 0.6, ">=", {"verdict": "new"}, unit="decided"),
        _rec("test_improves_on_base", "perplexity improvement", 0.75, 0.5, ">=", {"verdict": "mismatch", "reason": MISMATCH}, unit="texts"),
        _rec("test_not_overfit", "loss gap", 0.28, 0.5, "<=", None, unit="texts"),
    ]


# --- formats and verdicts ------------------------------------------------------------------------


def test_changes_are_signed_in_the_metrics_units_or_in_percent_when_relative() -> None:
    assert [versus.fmt_change(x, False) for x in (0.0, -0.0, 0.5, -0.0833, 0.00012, float("nan"))] == ["0", "0", "+0.5", "-0.0833", "+0.00012", "nan"]
    assert [versus.fmt_change(x, True) for x in (0.0, 0.0411, -0.008, 0.00012)] == ["0%", "+4.11%", "-0.8%", "+0.012%"]
    # float noise (another number of threads moves a perplexity by ~1e-9 relative) is no change
    assert [versus.fmt_change(x, True) for x in (-3.98e-10, 4.9e-6, 5e-6, -8.75e-08)] == ["0%", "0%", "+0.0005%", "0%"]
    assert versus.fmt_change(0.02, True, sign=False) == "2%"
    records = every_verdict()
    assert [versus.delta_text(r.baseline) for r in records] == [
        "-0.0855 [-0.142, -0.031]", "0 [-0.0833, +0.0833]", "+0.25 [0, +0.5]", "+4.11% [-0.8%, +9.3%]", "-0.2 [-0.45, +0.05]", "-", "-", "-",
    ]


def test_which_verdicts_fail_the_gate() -> None:
    records = every_verdict()
    assert [versus.failed(r) for r in records] == [True, False, False, False, True, False, True, False]
    superiority = dict(records[4].baseline or {}, mode="superiority")  # "inconclusive" fails only in noninferiority mode
    assert not versus.baseline_failed(superiority)
    assert versus.failed(_rec("t", "m", 1.0, 2.0, ">=", None, passed=False))  # the bar still fails on its own


def test_the_plot_turns_every_change_so_better_is_right_in_units_of_its_own_margin() -> None:
    from pytest_ftmodel.report.plots import baseline_points

    points = {r.name: (x, ends) for r, x, ends in baseline_points(every_verdict())}
    assert set(points) == {"rouge1", "accuracy", "pass@1", "perplexity", "mean score"}  # new, mismatch, none: no point
    assert points["rouge1"][0] == pytest.approx(-8.55) and points["rouge1"][1] == pytest.approx((-14.2, -3.1))
    # perplexity's rise of 4.11% against a 2% relative margin: worse, about two margins left of zero
    assert points["perplexity"][0] == pytest.approx(-2.055) and points["perplexity"][1] == pytest.approx((-4.65, 0.4))
    assert points["pass@1"][0] == pytest.approx(25.0)
    lower_better = _rec("t", "loss", 0.5, 1.0, "<=", _compared("regressed", 0.4, 0.5, 0.1, 0.05, 0.15, 0.01, 0.02))
    assert baseline_points([lower_better])[0][1:] == (pytest.approx(-5.0), pytest.approx((-7.5, -2.5)))


# --- terminal ------------------------------------------------------------------------------------


def test_terminal_shows_the_verdict_counts_and_a_comparison_table_within_100_columns() -> None:
    long = "test_a_very_long_parametrised_test_name_that_would_overflow[case-with-a-long-id-and-more]"
    records = every_verdict() + [_rec(long, "a rather long metric name for a table", 0.5, 0.4, ">=", _compared("within noise", 0.5, 0.5, 0.0, -0.01, 0.01, 0.5, 0.01))]
    lines = report.summary_lines(records, baseline_path="ftmodel-baseline.json")
    assert max(map(len, lines)) <= 100
    assert lines[0] == "model: finetuned"
    assert lines[1].split() == ["test", "metric", "value", "bar", "95%", "CI", "n", "result"]  # the metrics table as without a baseline
    assert lines[1 + 1].split()[-1] == "FAIL" and lines[1 + 5].split()[-1] == "FAIL"  # regressed, inconclusive (noninferiority)
    assert "9 metrics recorded, 6 passed, 3 failed." in lines
    text = "\n".join(lines)
    assert ("baseline ftmodel-baseline.json of finetuned (4aa8dc33): 1 regressed, 1 mismatch, 1 inconclusive, 3 within noise, "
            "1 improved, 1 new") in " ".join(text.split())
    header = next(i for i, line in enumerate(lines) if line.startswith("test") and "Δ [95% CI]" in line)
    assert lines[header].split() == ["test", "metric", "baseline", "Δ", "[95%", "CI]", "vs", "baseline"]
    rows = lines[header + 1 : header + 9]
    assert rows[0].split()[1:] == ["rouge1", "0.6167", "-0.0855", "[-0.142,", "-0.031]", "regressed"]
    assert rows[3].split()[1:] == ["perplexity", "26.99", "+4.11%", "[-0.8%,", "+9.3%]", "within", "noise"]
    assert rows[5].split()[-3:] == ["-", "-", "new"] and rows[6].split()[-3:] == ["-", "-", "mismatch"]
    assert "…" in rows[7]  # long names cut in the middle, as in the metrics table
    assert "mismatch: test_improves_on_base perplexity improvement: max_new_tokens is 128 now, 64 in the" in " ".join(text.split())
    assert "\x1b" not in text and "\\x1b[2J" in text  # the reason's escape sequence is shown, not obeyed


def test_verbose_terminal_is_one_full_table_with_p_and_margin() -> None:
    lines = report.summary_lines(every_verdict(), verbose=True)
    assert lines[0].split() == ["test", "metric", "model", "value", "bar", "95%", "CI", "n", "baseline", "Δ", "[95%", "CI]",
                                "p", "margin", "vs", "baseline", "result"]
    perplexity = next(line for line in lines if "test_val_perplexity" in line)
    assert perplexity.split()[-9:] == ["26.99", "+4.11%", "[-0.8%,", "+9.3%]", "0.06", "2%", "within", "noise", "pass"]
    assert any(line.startswith("mismatch: example_suite/test_tasks.py::test_improves_on_base") for line in lines)
    assert not any(line.startswith("test ") and line.split()[-1] == "verdict" for line in lines)  # no second table


def test_without_baselines_the_terminal_summary_has_no_baseline_part() -> None:
    plain = [_rec("test_a", "rouge1", 0.6, 0.5, ">=", None), _rec("test_b", "accuracy", 0.4, 0.8, ">=", None, passed=False)]
    lines = report.summary_lines(plain)
    assert "baseline" not in "\n".join(lines) and "Δ" not in "\n".join(lines)
    assert lines[-1] == "2 metrics recorded, 1 passed, 1 failed."


# --- JUnit ---------------------------------------------------------------------------------------


def test_junit_properties_carry_the_comparison() -> None:
    records = {r.name: dict(report.junit_properties(r)) for r in every_verdict()}
    rouge = records["rouge1"]
    assert {k: v for k, v in rouge.items() if k.startswith("ftmodel.rouge1.") and k.split(".")[-1] in
            ("baseline", "delta", "delta_interval", "baseline_verdict", "p_value", "margin", "verdict")} == {
        "ftmodel.rouge1.baseline": "0.6167", "ftmodel.rouge1.delta": "-0.0855", "ftmodel.rouge1.delta_interval": "[-0.142, -0.031]",
        "ftmodel.rouge1.baseline_verdict": "regressed", "ftmodel.rouge1.p_value": "0.002", "ftmodel.rouge1.margin": "0.01",
        "ftmodel.rouge1.verdict": "fail",  # the figure held its bar, the comparison failed the test
    }
    ppl = records["perplexity"]
    assert (ppl["ftmodel.perplexity.delta"], ppl["ftmodel.perplexity.delta_interval"], ppl["ftmodel.perplexity.margin"]) == ("+4.11%", "[-0.8%, +9.3%]", "2%")
    assert records["A/B win rate"]["ftmodel.A/B win rate.baseline_verdict"] == "new" and "ftmodel.A/B win rate.delta" not in records["A/B win rate"]
    mismatch = records["perplexity improvement"]
    assert mismatch["ftmodel.perplexity improvement.baseline_verdict"] == "mismatch"
    assert mismatch["ftmodel.perplexity improvement.baseline_reason"] == versus.visible(MISMATCH)
    assert not any(k.endswith((".baseline", ".baseline_verdict")) for k in records["loss gap"])


SUITE = """
from pytest_ftmodel.report import MetricRecord, recorder

BASE = {{"verdict": "regressed", "test": "McNemar mid-p", "value": 0.9, "candidate": 0.8, "delta": -0.1, "low": -0.16,
         "high": -0.04, "p_value": 0.0004, "margin": 0.01, "relative": False, "n_paired": 100, "alpha": 0.05,
         "mode": "superiority", "worse": ["a1"], "notes": [], "baseline_model": "release", "baseline_fingerprint": "0123456789abcdef",
         "baseline_n": 100, "worse_items": [{{"id": "a1", "prompt": {evil!r}, "expected": "yes", "before": "yes", "after": {evil!r}}}]}}

def _add(name, value, baseline, passed=True):
    recorder().add(MetricRecord(name, value, 0.5, ">=", 100, "items", passed, model="m", baseline=baseline))

def test_regressed():
    _add("accuracy", 0.8, BASE, passed=False)
    raise AssertionError("accuracy regressed against the baseline: 0.9 -> 0.8 (McNemar mid-p p = 0.0004)")

def test_same():
    _add("rouge1", 0.61, dict(BASE, verdict="within noise", delta=0.001, low=-0.02, high=0.02, p_value=0.45, worse_items=[]))

def test_new():
    _add("f1", 0.7, {{"verdict": "new"}})
"""


def test_a_session_shows_the_comparison_in_the_terminal_junit_and_every_report(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makepyfile(SUITE.format(evil=EVIL))
    result = pytester.runpytest("--junitxml=out.xml", "--ftmodel-json", "r.json", "--ftmodel-markdown", "r.md", "--ftmodel-html", "r.html")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= ftmodel metrics =*",
            "test*metric*value*bar*95% CI*n*result",
            "test_regressed*accuracy*0.8*>= 0.5*-*100*FAIL",
            "3 metrics recorded, 2 passed, 1 failed.",
            "baseline of release (01234567): 1 regressed, 1 within noise, 1 new",
            "test*metric*baseline*Δ ?95% CI?*vs baseline",  # ? for the brackets, which fnmatch reads as a class
            "test_regressed*accuracy*0.9*-0.1 ?-0.16, -0.04?*regressed",
            "test_same*rouge1*0.9*+0.001 ?-0.02, +0.02?*within noise",
            "test_new*f1*-*-*new",
        ]
    )
    ours = result.stdout.lines[result.stdout.lines.index(next(x for x in result.stdout.lines if "ftmodel metrics" in x)) + 1 :]
    assert max(len(line) for line in ours[: ours.index("ftmodel: JSON report written to r.json")]) <= 100
    props = {(c.get("name"), p.get("name")): p.get("value") for c in ET.parse(pytester.path / "out.xml").iter("testcase") for p in c.iter("property")}
    assert props[("test_regressed", "ftmodel.accuracy.baseline_verdict")] == "regressed"
    assert props[("test_regressed", "ftmodel.accuracy.p_value")] == "0.0004"
    assert props[("test_regressed", "ftmodel.accuracy.delta_interval")] == "[-0.16, -0.04]"
    assert props[("test_new", "ftmodel.f1.baseline_verdict")] == "new"
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["records"][0]["baseline"]["worse_items"][0]["after"] == EVIL and doc["summary"]["failed"] == 1
    md = (pytester.path / "r.md").read_text()
    assert "| accuracy |" in md and "**🔻 regressed**" in md and "### Failing gates" in md
    assert "accuracy regressed against the baseline: 0.9 -> 0.8 (McNemar mid-p p = 0.0004)" in md  # the test's own diagnosis
    page = (pytester.path / "r.html").read_text()
    assert 'id="baseline"' in page and "&lt;img" in page and "<img" not in page
    failures = _visible_text(page.split('<section id="failures">', 1)[1])
    assert "Against the baseline: 0.9 → 0.8, Δ -0.1 [-0.16, -0.04] (95% CI), McNemar mid-p p = <0.001, margin 0.01" in failures
    assert "accuracy regressed against the baseline: 0.9 -> 0.8 (McNemar mid-p p = 0.0004)" in failures


# --- Markdown ------------------------------------------------------------------------------------


def test_markdown_has_the_baseline_columns_and_lists_failing_comparisons_with_a_diagnosis() -> None:
    records = every_verdict()
    text = render_markdown(records, {"baseline": {"path": "ftmodel-baseline.json"}})
    lines = text.splitlines()
    assert "❌ **8 metrics: 5 passed, 3 failed**" in text
    assert r"Baseline ftmodel-baseline.json of finetuned \(4aa8dc33\)\: 1 regressed, 1 mismatch, 1 inconclusive, 2 within noise, 1 improved, 1 new" in lines
    assert "| test | metric | model | value | bar | 95% CI | n | baseline | Δ [95% CI] | vs baseline | result |" in lines
    row = next(line for line in lines if line.startswith("| test\\_val\\_perplexity"))
    assert row.endswith("| 26.99 | +4.11% [-0.8%, +9.3%] | ➖ within noise | ✅ pass |")
    row = next(line for line in lines if line.startswith("| test\\_summaries"))
    assert row.endswith("| 0.6167 | -0.0855 [-0.142, -0.031] | **🔻 regressed** | ❌ **FAIL** |")
    assert next(line for line in lines if line.startswith("| test\\_not\\_overfit")).endswith("| - | - | - | ✅ pass |")
    failing = text.split("### Failing gates", 1)[1]
    headings = [line for line in failing.splitlines() if line.startswith("**")]
    assert [h.split("**")[1] for h in headings] == ["rouge1", "mean score", "perplexity improvement"]
    assert "against the baseline: regressed, Δ -0.0855 [-0.142, -0.031] (95% CI), p 0.002, margin 0.01" in headings[0]
    # no message of its own: the diagnosis is built from the comparison, worse items included, in a fence
    assert "rouge1 regressed against the baseline: 0.6167 -> 0.5312" in failing and "before 'good answer 0'" in failing
    assert "restore it or run --ftmodel-update-baseline" in failing
    outside = re.sub(r"(?ms)^(`{3,})text\n.*?^\1$", "", text)  # everything outside the code fences
    assert "<img" not in outside and "](https://" not in outside and "\x1b" not in text


def test_markdown_without_baselines_keeps_its_table() -> None:
    text = render_markdown([_rec("test_a", "rouge1", 0.6, 0.5, ">=", None)])
    assert "| test | metric | model | value | bar | 95% CI | n | result |" in text.splitlines() and "aseline" not in text


# --- HTML ----------------------------------------------------------------------------------------


def _visible_text(page: str) -> str:
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.skip += tag in ("style", "svg")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("style", "svg")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return "".join(parser.parts)


def test_html_has_the_baseline_section_with_its_plot_table_and_escaped_worse_items() -> None:
    pytest.importorskip("matplotlib")
    page = render_html(every_verdict(), {"baseline": {"path": "ftmodel-baseline.json"}})
    section = page.split('<section id="baseline">', 1)[1].split("</section>", 1)[0]
    assert "<h2>Against the baseline</h2>" in section and section.count("<svg") == 1
    assert "in units of its own margin" in section and "better is to the right" in section
    for verdict in ("regressed", "mismatch", "inconclusive", "within-noise", "improved", "new"):
        assert f'class="vd {verdict}"' in section, verdict
    assert "<th>baseline</th><th>Δ [95% CI]</th><th>vs baseline</th>" in page  # the metrics table's columns
    assert '<td class="num">+4.11% [-0.8%, +9.3%]</td>' in page and "2% (relative)" in section
    text = _visible_text(section)
    assert "not compared: max_new_tokens is 128 now, 64 in the baseline" in text
    assert "no entry in the baseline file" in text
    assert "items that got worse, worst first: 4 of 4" in text and "items that got worse, worst first: 2 of 2" in text
    # the items of the failing comparison come first and open, those of a comparison within noise folded away
    assert section.index("test_summaries</span> <span class=\"vd regressed\">") < section.index('<details class="worse"><summary><b>perplexity')
    shown = EVIL.replace("\x1b", "\\x1b")
    assert shown in text and "<img" not in page and "\x1b" not in page
    assert not re.findall(r'(?:src|href)="(?!#)', page) and "url(http" not in page and "<script" not in page.lower()
    failures = _visible_text(page.split('<section id="failures">', 1)[1])
    assert "rouge1 regressed against the baseline: 0.6167 -> 0.5312" in failures and "perplexity improvement: not compared" in failures


def test_html_without_matplotlib_keeps_the_baseline_tables(tmp_path: Path) -> None:
    data = tmp_path / "records.json"
    data.write_text(json.dumps([r.as_dict() for r in every_verdict()]))
    code = (
        "import sys, json; sys.modules['matplotlib'] = None\n"
        "from pytest_ftmodel.report import MetricRecord\n"
        "from pytest_ftmodel.report.html import render_html\n"
        f"print(render_html([MetricRecord.from_dict(r) for r in json.load(open({str(data)!r}))]))\n"
    )
    page = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    section = page.split('<section id="baseline">', 1)[1].split("</section>", 1)[0]
    assert "<svg" not in page and 'pip install "pytest-ftmodel[report]"' in _visible_text(section)
    assert section.count("<tr>") >= 1 + 7 + 6  # the comparison table and the worse items


def test_html_without_baselines_has_no_baseline_section() -> None:
    page = render_html([_rec("test_a", "rouge1", 0.6, 0.5, ">=", None)])
    assert 'id="baseline"' not in page and "vs baseline" not in page


# --- JSON and xdist ------------------------------------------------------------------------------


def test_the_comparison_round_trips_through_json_and_a_worker_payload(tmp_path: Path) -> None:
    records = every_verdict()
    doc = json.loads(write_json(tmp_path / "r.json", records).read_text())
    assert [report.MetricRecord.from_dict(r) for r in doc["records"]] == records
    assert doc["records"][0]["baseline"]["worse_items"][1]["after"] == EVIL
    assert [r["outcome"] for r in doc["records"]] == ["fail", "pass", "pass", "pass", "fail", "pass", "fail", "pass"]
    assert doc["summary"] == {"metrics": 8, "passed": 5, "failed": 3}  # outcomes: the bar and the comparison together
    worker = report.Recorder()
    worker.records.extend(records)
    controller = report.Recorder()
    controller.merge(json.loads(json.dumps(worker.payload())))
    assert controller.records == records


# --- the page in a real browser ------------------------------------------------------------------


def test_the_page_opens_offline_in_chromium_and_shows_the_plot_the_verdicts_and_the_folded_items(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    playwright = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright: pip install 'pytest-ftmodel[test]'")
    executable = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if executable is None:
        pytest.skip("browser tests need Chromium and none was found (chromium, chromium-browser, google-chrome): apt-get install chromium")
    target = tmp_path / "report.html"
    target.write_text(render_html(every_verdict(), {"baseline": {"path": "ftmodel-baseline.json"}}), encoding="utf-8")
    with playwright.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as exc:  # a browser that cannot start here: say why
            pytest.skip(f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(target.as_uri())
            assert requests == [target.as_uri()]  # nothing else fetched: no font, script, style or image
            box = page.locator("#baseline figure svg").bounding_box()
            assert box is not None and box["width"] > 600 and box["height"] > 200
            colours = page.eval_on_selector_all(".vd", "els => els.map(e => [e.textContent, getComputedStyle(e).backgroundColor])")
            background = dict(colours)
            assert background["regressed"] == "rgb(207, 34, 46)" and background["mismatch"] == "rgb(130, 80, 223)"
            folded = page.locator("details.worse table")
            assert folded.count() == 1 and not folded.is_visible()  # within noise: folded away until opened
            page.locator("details.worse summary").click()
            assert folded.is_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # no sideways scrolling
        finally:
            browser.close()
