"""Fixtures for the example suite: copy this file and point the data fixtures at your own files.

With ``--model`` / ``--base-model`` (or their ini entries) the suite evaluates your checkpoints;
without them it builds the embedded demo pair (a tiny base model and its fine-tuned version).
"""

from __future__ import annotations

import pytest

from pytest_ftmodel import load_jsonl


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.option.help:
        return
    want_model = not (config.getoption("ftmodel_model") or config.getini("ftmodel_model"))
    want_base = not (config.getoption("ftmodel_base_model") or config.getini("ftmodel_base_model"))
    if want_model or want_base:
        from pytest_ftmodel.demo import build_demo

        pair = build_demo("bpe")  # cached after the first build
        if want_model:
            config.option.ftmodel_model = str(pair.finetuned)
        if want_base:
            config.option.ftmodel_base_model = str(pair.base)


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
def problems(data_dir):
    from pytest_ftmodel import load_problems

    return load_problems(data_dir / "problems.jsonl")
