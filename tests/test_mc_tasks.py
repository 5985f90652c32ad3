"""mc_items: an lm-eval multiple-choice task file turned into items through lm-eval's own task code,
offline (a task YAML over a local JSON file; the datasets cache in the test's folder)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

from pytest_ftmodel.errors import DataError  # noqa: E402

DOCS = [
    {"question": "The small cat chased the ball in the", "options": ["garden", "rainy", "dog"], "label": 0},
    {"question": "The old owl found the", "options": ["garden", "hat", "quick"], "label": 1},
    {"question": "It was a", "options": ["cat", "box", "sunny day"], "label": 2},
    {"question": "I think the movie was", "options": ["great", "barn", "owl"], "label": 0},
]


def _task(tmp_path, monkeypatch, *, shots: int = 1, output_type: str = "multiple_choice", target: str = "label") -> str:
    # nothing reaches the user's datasets cache or the network
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    yaml = tmp_path / "tiny_mc.yaml"
    yaml.write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {json.dumps(str(data))}\n"
        f"  cache_dir: {json.dumps(str(tmp_path / 'hf-datasets'))}\n"
        "test_split: test\nfewshot_split: test\n"
        f"output_type: {output_type}\n"
        'doc_to_text: "Q: {{question}}\\nA:"\n'
        'doc_to_choice: "{{options}}"\n'
        f"doc_to_target: {target}\n"
        f"num_fewshot: {shots}\n"
        "metric_list:\n  - metric: acc\n"
    )
    return str(yaml)


def test_a_task_yaml_becomes_items(tmp_path, monkeypatch):
    from pytest_ftmodel import mc_items

    items = mc_items(_task(tmp_path, monkeypatch), limit=3)
    assert len(items) == 3
    for k, (item, doc) in enumerate(zip(items, DOCS)):
        assert item["choices"] == doc["options"] and item["answer"] == doc["label"]
        assert item["target_delimiter"] == " " and item["id"] == f"tiny_mc/{k}" and item["category"] == "tiny_mc"
        shot, question = item["prompt"].split("\n\n")  # one few-shot example, then the question
        assert question == f"Q: {doc['question']}\nA:"
        # the example is another document, answered with its gold choice
        [other] = [d for d in DOCS if shot == f"Q: {d['question']}\nA: {d['options'][d['label']]}"]
        assert other is not doc
    assert not (tmp_path / "hf-datasets").exists() or any((tmp_path / "hf-datasets").iterdir())


def test_zero_shot_and_the_items_score(tmp_path, monkeypatch, byte_model, no_score_cache):
    from pytest_ftmodel import mc_accuracy, mc_items

    items = mc_items(_task(tmp_path, monkeypatch, shots=0))
    assert [it["prompt"] for it in items] == [f"Q: {d['question']}\nA:" for d in DOCS]
    result = mc_accuracy(byte_model, items, cache=None)
    assert result.n == 4 and all(len(it.loglik) == 3 for it in result.items)


def test_gold_given_as_the_choice_text(tmp_path, monkeypatch):
    from pytest_ftmodel import mc_items

    items = mc_items(_task(tmp_path, monkeypatch, shots=0, target='"{{options[label]}}"'))
    assert [it["answer"] for it in items] == [d["label"] for d in DOCS]


def test_not_a_multiple_choice_task(tmp_path, monkeypatch):
    from pytest_ftmodel import mc_items

    with pytest.raises(DataError, match="not multiple_choice"):
        mc_items(_task(tmp_path, monkeypatch, shots=0, output_type="loglikelihood"))


@pytest.mark.parametrize(
    "task,match",
    [
        ("missing.yaml", "does not exist"),
        # lm-eval indexes its thousands of built-in task files for a name: about 15 s
        pytest.param("no_such_task_anywhere_xyz", "lm-eval has no task", marks=pytest.mark.slow),
    ],
)
def test_unknown_tasks_get_one_line(tmp_path, monkeypatch, task, match):
    from pytest_ftmodel import mc_items

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=match) as info:
        mc_items(str(tmp_path / task) if task.endswith(".yaml") else task, limit=1)
    assert "\n" not in str(info.value)


def test_bad_limit():
    from pytest_ftmodel import mc_items

    with pytest.raises(DataError, match="limit=0"):
        mc_items("x.yaml", limit=0)
