"""Parity with a real server: ``transformers serve`` on 127.0.0.1 with the bpe demo's fine-tuned model.

Greedy answers through the server equal the in-process ones, raw (/v1/completions) and chat
(/v1/chat/completions); a server without prompt log-probabilities gives the perplexity gate one line.
Slow extras: the example suite's verdicts and figures served vs in-process, and a server killed
mid-run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_ftmodel import generate, load_jsonl, load_model, perplexity
from pytest_ftmodel.served import LogprobsUnavailable, ServedModelError


@pytest.fixture(scope="module")
def prompts(bpe_pair):
    return [item["instruction"] for item in load_jsonl(bpe_pair.data / "val.jsonl")][:12]


@pytest.fixture(scope="module")
def served(transformers_server, bpe_pair):
    return load_model(transformers_server, tokenizer=bpe_pair.finetuned)


@pytest.mark.parametrize("chat", [False, True], ids=["raw", "chat"])
def test_greedy_answers_equal_in_process(served, bpe_model, prompts, chat) -> None:
    assert len(prompts) == 12
    mine = generate(served, prompts, chat=chat, max_new_tokens=24, cache=None)
    theirs = generate(bpe_model, prompts, chat=chat, max_new_tokens=24, cache=None)
    equal = sum(a == b for a, b in zip(mine, theirs))
    assert equal == 12, list(zip(mine, theirs))
    assert any(a.strip() for a in mine)  # not 12 empty answers


def test_the_server_lacks_prompt_logprobs_and_the_gate_says_so(served) -> None:
    with pytest.raises(LogprobsUnavailable) as info:
        perplexity(served, ["the cat sat on the mat."])
    line = str(info.value)
    assert line.count("\n") == 0 and f"the server at {served.url}" in line and "returns none" in line
    assert "test_the_server_lacks_prompt_logprobs_and_the_gate_says_so (perplexity)" in line


def _suite(args: list[str], out: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "example_suite", "-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-rs",
         "--ftmodel-no-cache", f"--ftmodel-json={out}", *args],
        cwd=root, capture_output=True, text=True, timeout=1200,
    )


@pytest.mark.slow
def test_example_suite_gives_the_same_verdicts_and_figures_served(transformers_server, bpe_pair, tmp_path) -> None:
    served = _suite([f"--model={transformers_server}", f"--tokenizer={bpe_pair.finetuned}"], str(tmp_path / "served.json"))
    local = _suite([f"--model={bpe_pair.finetuned}"], str(tmp_path / "local.json"))
    assert served.returncode == 0, served.stdout[-3000:]
    assert local.returncode == 0, local.stdout[-3000:]

    def figures(path):
        records = json.loads(open(path).read())["records"]
        return {(r["test"].split("::")[-1], r["name"]): (r["value"], r["passed"]) for r in records}

    mine, theirs = figures(tmp_path / "served.json"), figures(tmp_path / "local.json")
    needs_logprobs = ("test_val_perplexity", "test_improves_on_base", "test_not_overfit", "test_no_forgetting")
    generation_gates = {k: v for k, v in theirs.items() if k[0] not in (*needs_logprobs, "test_training_converged")}
    assert not any(k[0] in needs_logprobs for k in mine)  # skipped served, never passed on nothing
    assert {k: mine[k] for k in generation_gates} == generation_gates
    # the gates that need what transformers serve lacks are skipped with their reason, never passed
    assert "needs prompt log-probabilities" in served.stdout and "needs a checkpoint folder" in served.stdout


@pytest.mark.slow
def test_a_server_killed_mid_run_is_one_clear_error(bpe_pair) -> None:
    from conftest import start_transformers_serve

    proc, url = start_transformers_serve(bpe_pair.finetuned)
    try:
        model = load_model(url, concurrency=2)
        generate(model, ["warm up"], chat=False, max_new_tokens=2, cache=None)
        import threading

        threading.Timer(1.0, proc.kill).start()
        with pytest.raises(ServedModelError) as info:
            generate(model, [f"Summarize: text number {i}" for i in range(200)], chat=False, max_new_tokens=48, cache=None)
        line = str(info.value)
        assert "\n" not in line and ("does not answer" in line or "failed" in line), line
    finally:
        proc.kill()
        proc.wait()
