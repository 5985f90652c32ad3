"""Progress of long work: quiet when quick, a line every tenth in logs, a redrawn line on a terminal,
through pytest's terminal without disturbing capture."""

from __future__ import annotations

import io

import pytest

from pytest_ftmodel import progress as progress_mod
from pytest_ftmodel.progress import Progress, StreamSink


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def test_quick_work_shows_nothing(clock: _Clock) -> None:
    out = io.StringIO()
    with Progress("generating answers", 50, sink=StreamSink(out)) as bar:
        for _ in range(50):
            clock.now += 0.01
            bar.advance()
    assert out.getvalue() == ""


def test_without_a_terminal_a_line_every_tenth_with_rate_and_time_left(clock: _Clock) -> None:
    out = io.StringIO()
    with Progress("generating answers", 100, sink=StreamSink(out)) as bar:
        for _ in range(100):
            clock.now += 0.5  # 2 items/s: the delay (3 s) is over after 6 items
            bar.advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "ftmodel: generating answers 6/100 (6%), 2/s, ~47 s left"
    assert [line.split()[3] for line in lines[1:-1]] == [f"{k}0/100" for k in range(1, 10)]
    assert lines[1] == "ftmodel: generating answers 10/100 (10%), 2/s, ~45 s left"
    assert lines[-1] == "ftmodel: generating answers 100/100 (100%) in 50 s, 2/s"
    assert len(lines) == 11


def test_on_a_terminal_the_line_is_redrawn_at_most_four_times_a_second(clock: _Clock) -> None:
    out = _TTY()
    with Progress("scoring windows", 1000, sink=StreamSink(out)) as bar:
        for _ in range(1000):
            clock.now += 0.01  # 10 s in all
            bar.advance()
    text = out.getvalue()
    draws = text.split("\r")[1:]
    assert 20 <= len(draws) <= 30 * 1.1  # 7 s shown, every 0.25 s
    assert "\n" not in "".join(draws[:-1]) and draws[-1].startswith("ftmodel: scoring windows 1000/1000 (100%) in 10 s")
    assert text.endswith("\n")


def test_tracking_an_iterable_counts_its_items(clock: _Clock) -> None:
    out = io.StringIO()
    bar = Progress("running programs", 3, sink=StreamSink(out))
    assert list(bar.track(iter("abc"))) == ["a", "b", "c"] and bar.done == 3


PROGRESS_SUITE = """
import sys, time
from pytest_ftmodel.progress import progress

def test_first():
    pass

def test_long_work():
    print("the test's own output")
    with progress("generating answers", 20) as bar:
        for _ in range(20):
            bar.advance()
    sys.stderr.write("the test's own stderr\\n")

def test_fails_with_output():
    print("captured and shown with the failure")
    assert False
"""


@pytest.mark.parametrize("args", [(), ("-q",)])
def test_progress_reaches_pytest_s_terminal_and_capture_keeps_the_tests_output(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    monkeypatch.setattr(progress_mod, "DELAY", 0.0)
    pytester.makepyfile(PROGRESS_SUITE)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    shown = [line for line in out.splitlines() if line.startswith("ftmodel: generating answers")]
    assert [line.split()[3] for line in shown] == ["1/20", "2/20", "4/20", "6/20", "8/20", "10/20", "12/20", "14/20", "16/20", "18/20", "20/20"]
    assert "the test's own output" not in out.split("FAILURES")[0]  # still captured (shown only for a failure)
    assert "the test's own stderr" not in out
    result.stdout.fnmatch_lines(["*Captured stdout call*", "captured and shown with the failure"])


def test_progress_under_xdist_stays_silent_and_breaks_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PROGRESS_SUITE.replace("from pytest_ftmodel.progress import progress", "from pytest_ftmodel import progress as p\np.DELAY = 0.0\nprogress = p.progress"))
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    assert "ftmodel: generating answers" not in result.stdout.str()
