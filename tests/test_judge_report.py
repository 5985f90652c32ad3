"""The judge gate in the reports: its means with intervals, its calibration (alpha, interval,
overlap), its stability under repeats, and the HTML plot of judge against people on the overlap."""

from __future__ import annotations

import importlib.util
import json
from xml.etree import ElementTree

import pytest

from pytest_ftmodel.human import EVAL_FORMAT
from pytest_ftmodel.judges.gate import answer_digest

pytest_plugins = "pytester"

# The run under test goes in a process of its own: the pytester fixture forgets, when a test ends, the
# modules imported during it, and numpy's extension modules (which the plots import) cannot be imported
# twice in a process, so an in-process run here broke every later model load in the worker.
pytest.importorskip("matplotlib")


def judged_sheet(path, n=24, people=22, offsets=(0.2, -0.2, 0.1)):
    """A sheet that a judge "robo" scored with repeats (item i's level L = 1 + i % 5, repeats L + offsets)
    and a person "ana" scored as L on the first ``people`` items; one answer holds markup."""
    items = []
    for i in range(n):
        level = 1 + i % 5
        answer = f"answer {i}" + (" <b>bold</b>" if i == 0 else "")
        reps = [min(5.0, max(1.0, level + o)) for o in offsets]
        reviews = {"robo": {
            "kind": "auto", "judge": "fp1", "answer": answer_digest({"prompt": f"question {i}", "expected": None, "generated": answer}), "notes": "",
            "scores": {"accuracy": level}, "weighted": {"accuracy": sum(reps) / len(reps)}, "repeats": {"accuracy": reps},
        }}
        if i < people:
            reviews["ana"] = {"scores": {"accuracy": level}, "notes": ""}
        items.append({"id": f"i{i}", "prompt": f"question {i}", "expected": None, "generated": answer, "reviews": reviews})
    path.write_text(json.dumps({"format": EVAL_FORMAT, "version": 2, "model": {"path": "m", "fingerprint": "fp"}, "criteria": ["accuracy"], "items": items}))
    return path


def test_the_reports_carry_the_judge_its_calibration_stability_and_plot(pytester: pytest.Pytester) -> None:
    judged_sheet(pytester.path / "sheet.json")
    pytester.makepyfile(
        """
        from pytest_ftmodel import assert_judge_scores

        def test_judge():
            assert_judge_scores("sheet.json", judge="robo", min_mean={"accuracy": 2.5})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-json", "r.json", "--ftmodel-html", "r.html")
    result.assert_outcomes(passed=1)
    records = {r["name"]: r for r in json.loads((pytester.path / "r.json").read_text())["records"]}
    mean = records["judge robo accuracy"]
    clipped = [sum(min(5.0, max(1.0, 1 + i % 5 + o)) for o in (0.2, -0.2, 0.1)) / 3 for i in range(24)]
    assert mean["value"] == pytest.approx(sum(clipped) / 24)
    assert mean["n"] == 24 and mean["low"] < mean["value"] < mean["high"]
    alpha = records["judge robo vs people accuracy (alpha)"]
    assert alpha["value"] == pytest.approx(1.0) and alpha["n"] == 22 and alpha["threshold"] == 0.6 and alpha["low"] is not None
    stable = records["judge robo accuracy repeats agreeing"]
    assert stable["value"] == 1.0 and stable["n"] == 3
    assert mean["details"]["overlap"] == 22 and len(mean["details"]["pairs"]) == 22 and mean["details"]["repeats"] == 3
    page = (pytester.path / "r.html").read_text()
    assert "people&#x27;s mean accuracy" in page or "people's mean accuracy" in page
    assert "<b>bold</b>" not in page


def test_the_plot_shows_a_judge_name_from_the_sheet_escaped(pytester: pytest.Pytester) -> None:
    # the name is read from the sheet: control characters, a bidi override and matplotlib's mathematics
    # markup are drawn as text (escaped), never raw in the page, and never break the report
    if importlib.util.find_spec("matplotlib") is None:  # not importorskip: an inline run above may have unloaded numpy
        pytest.skip("needs matplotlib")
    name = "robo\x1b[31m\u202e$\\nocommand{x}$"
    path = judged_sheet(pytester.path / "sheet.json")
    data = json.loads(path.read_text())
    for item in data["items"]:
        item["reviews"][name] = item["reviews"].pop("robo")
    path.write_text(json.dumps(data))
    pytester.makepyfile(
        f"""
        from pytest_ftmodel import assert_judge_scores

        def test_judge():
            assert_judge_scores("sheet.json", judge={name!r}, min_mean={{"accuracy": 2.5}})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-html", "r.html", "--junitxml", "r.xml")
    result.assert_outcomes(passed=1)
    page = (pytester.path / "r.html").read_text()
    assert "\x1b" not in page and "\u202e" not in page
    assert "<svg" in page
    # JUnit XML stays well-formed: the name is escaped in the property names too
    names = [p.get("name") for p in ElementTree.parse(pytester.path / "r.xml").iter("property")]
    assert "ftmodel.judge robo\\x1b[31m\\u202e$\\nocommand{x}$ accuracy" in names
