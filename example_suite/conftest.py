"""Fixtures for the example suite: copy this file and point the data fixtures at your own files.

With ``--model`` / ``--base-model`` (or their ini entries) the suite evaluates your checkpoints;
without them it runs on the demo pair shipped with the package (a tiny base model and its fine-tuned version).

A model of the demo is compared with the committed baseline of the demo's fine-tuned model of its
family (``ftmodel-baseline.<family>.json`` here; ``--ftmodel-update-baseline`` records into that
file), unless ``--ftmodel-baseline`` or the ini names another file. Your own project keeps one ``ftmodel-baseline.json`` in its rootdir instead, written
by ``pytest --model=RELEASED_CHECKPOINT --ftmodel-update-baseline`` and committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_ftmodel import load_jsonl

HERE = Path(__file__).resolve().parent


def _demo_family(model: str | None) -> str | None:
    """"bpe" or "byte" for a checkpoint of the demo (``<dir>/<family>/finetuned`` and its siblings)."""
    if not model:
        return None
    path = Path(model)
    family = path.parent.name
    return family if family in ("byte", "bpe") and (path.parent / "finetuned").is_dir() else None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_logprobs: the test scores texts (perplexity, loss); see below")
    config.addinivalue_line("markers", "needs_checkpoint: the test reads the checkpoint folder; see below")
    if config.option.help:
        return
    want_model = not (config.getoption("ftmodel_model") or config.getini("ftmodel_model"))
    want_base = not (config.getoption("ftmodel_base_model") or config.getini("ftmodel_base_model"))
    if want_model or want_base:
        from pytest_ftmodel.demo import build_demo

        pair = build_demo("bpe")  # the shipped checkpoints: nothing is trained
        if want_model:
            config.option.ftmodel_model = str(pair.finetuned)
        if want_base:
            config.option.ftmodel_base_model = str(pair.base)
    family = _demo_family(config.getoption("ftmodel_model"))
    shipped = HERE / f"ftmodel-baseline.{family}.json"
    # the family's file when it is there (or is being recorded); else the default, which may be absent
    if family and not (config.getoption("ftmodel_baseline") or config.getini("ftmodel_baseline")):
        if shipped.exists() or config.getoption("ftmodel_update_baseline"):
            config.option.ftmodel_baseline = str(shipped)


@pytest.fixture(scope="session")
def data_dir():
    from pytest_ftmodel.demo import demo_data_dir

    return demo_data_dir()


@pytest.fixture(scope="session")
def train(data_dir):
    return load_jsonl(data_dir / "train.jsonl", required=["instruction", "output"])


@pytest.fixture(scope="session")
def val(data_dir):
    return load_jsonl(data_dir / "val.jsonl", required=["instruction", "output"])


@pytest.fixture(scope="session")
def summaries(val):
    return [item for item in val if item["category"] == "summarize"]


@pytest.fixture(scope="session")
def reviews(val):
    return [item for item in val if item["category"] == "classify"]


@pytest.fixture(scope="session")
def general_questions(data_dir):
    """Multiple-choice questions the base model answers well (not what it was fine-tuned for)."""
    return load_jsonl(data_dir / "mc.jsonl", required=["prompt", "choices", "answer"])


@pytest.fixture(scope="session")
def problems(data_dir):
    from pytest_ftmodel import load_problems

    return load_problems(data_dir / "problems.jsonl")



# A served model (--model http://host:8000/v1) runs every gate that needs only generated answers.
# Two kinds of test need more, and are marked: perplexity and loss gates (`needs_logprobs`) need the
# server's prompt log-probabilities (vLLM and llama.cpp's server return them; transformers serve does
# not) and a local tokenizer (--tokenizer); the training-curve gate (`needs_checkpoint`) reads
# trainer_state.json from the checkpoint folder. Against a server that lacks them these tests are
# skipped with one line saying why (`pytest -rs` lists it): never passed on nothing.
@pytest.fixture(autouse=True)
def _served_model_limits(request):
    if not any(request.node.get_closest_marker(m) for m in ("needs_logprobs", "needs_checkpoint")):
        return
    from pytest_ftmodel.served import is_served, prompt_logprobs_missing

    models = [request.getfixturevalue(f) for f in ("ftmodel", "base_model") if f in request.fixturenames]
    for model in models:
        if is_served(model) and request.node.get_closest_marker("needs_checkpoint"):
            pytest.skip(f"needs a checkpoint folder; the model is served at {model.url}")
        missing = prompt_logprobs_missing(model) if request.node.get_closest_marker("needs_logprobs") else None
        if missing:
            pytest.skip(f"needs prompt log-probabilities: {missing}")


@pytest.fixture(scope="session")
def json_questions(val):
    return [item for item in val if item["category"] == "json"]
