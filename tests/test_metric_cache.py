"""Metric libraries' results are cached like answers: a warm run gives the same figures without
importing rouge-score or scikit-learn (most of a second each on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_ftmodel import cache as cache_mod
from pytest_ftmodel.cache import CacheWarning, GenerationCache, pop_cache, push_cache
from pytest_ftmodel.metrics.text import NO_LABEL, classification_scores, rouge_scores

PREDICTIONS = ["the cat sat on the mat", "dogs are running fast", "", "a summary of the text"]
REFERENCES = ["a cat was sitting on the mat", "the dog runs quickly", "nothing here", "a summary of the text"]
EXPECTED = ["positive", "negative", "neutral", "positive", "negative"]
PREDICTED = ["positive", "neutral", None, "positive", "negative"]
LABELS = ["positive", "negative", "neutral"]


@pytest.fixture
def store(tmp_path):
    cache = GenerationCache(tmp_path / "cache")
    push_cache(cache)
    yield cache
    pop_cache(cache)


def _reference_rouge() -> list[dict[str, float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    return [{t: s.fmeasure for t, s in scorer.score(r, p).items()} for p, r in zip(PREDICTIONS, REFERENCES)]


def test_rouge_is_rouge_scores_cold_and_warm(store) -> None:
    cold = rouge_scores(PREDICTIONS, REFERENCES)
    assert cold == _reference_rouge()
    assert store.metrics.counts() == {"hits": 0, "misses": 4, "rebuilt": 0}
    warm = rouge_scores(PREDICTIONS, REFERENCES)
    assert warm == cold and store.metrics.counts()["hits"] == 4
    # a new pair is a miss; the others are still hits
    rouge_scores(PREDICTIONS + ["new"], REFERENCES + ["a new reference"])
    assert store.metrics.counts() == {"hits": 8, "misses": 5, "rebuilt": 0}
    # the stemmer setting is part of the key
    assert rouge_scores(["running dogs"], ["run dog"], use_stemmer=False) != rouge_scores(["running dogs"], ["run dog"])


def test_classification_is_scikit_learns_cold_and_warm(store) -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    cold = classification_scores(EXPECTED, PREDICTED, LABELS)
    y_pred = [p or NO_LABEL for p in PREDICTED]
    assert cold["accuracy"] == accuracy_score(EXPECTED, y_pred)
    assert cold["macro_f1"] == f1_score(EXPECTED, y_pred, labels=LABELS, average="macro", zero_division=0)
    assert cold["confusion"] == tuple(map(tuple, confusion_matrix(EXPECTED, y_pred, labels=LABELS + [NO_LABEL])[:3].tolist()))
    warm = classification_scores(EXPECTED, PREDICTED, LABELS)
    assert warm == cold and store.metrics.counts() == {"hits": 1, "misses": 1, "rebuilt": 0}
    # another prediction is another entry
    other = classification_scores(EXPECTED, ["positive"] * 5, LABELS)
    assert other["accuracy"] == 0.4 and store.metrics.counts()["misses"] == 2


def test_a_corrupt_or_foreign_entry_is_ignored_with_a_warning_and_rebuilt(store) -> None:
    cold = rouge_scores(PREDICTIONS[:1], REFERENCES[:1])
    (entry,) = (Path(store.root) / "metrics").rglob("*.json")
    data = json.loads(entry.read_text())
    data["result"]["rouge1"] = 7.0  # not an F-measure
    entry.write_text(json.dumps(data))
    with pytest.warns(CacheWarning, match="ignoring metric cache file"):
        again = rouge_scores(PREDICTIONS[:1], REFERENCES[:1])
    assert again == cold and store.metrics.counts()["rebuilt"] == 1
    assert json.loads(entry.read_text())["result"]["rouge1"] == cold[0]["rouge1"]  # rewritten


def test_another_library_version_is_another_entry(store, monkeypatch) -> None:
    rouge_scores(PREDICTIONS[:1], REFERENCES[:1])
    monkeypatch.setattr(cache_mod, "library_version", lambda name: "0.0-other")
    rouge_scores(PREDICTIONS[:1], REFERENCES[:1])
    assert store.metrics.counts() == {"hits": 0, "misses": 2, "rebuilt": 0}


def test_with_the_cache_off_nothing_is_read_or_written(store, no_score_cache) -> None:
    from pytest_ftmodel.cache import active_metric_cache

    assert active_metric_cache() is None  # --ftmodel-no-cache pushes None, as this fixture does
    assert rouge_scores(PREDICTIONS, REFERENCES) == _reference_rouge()
    classification_scores(EXPECTED, PREDICTED, LABELS)
    assert store.metrics.counts() == {"hits": 0, "misses": 0, "rebuilt": 0}
    assert not (Path(store.root) / "metrics").exists()


def test_a_warm_process_imports_neither_library(tmp_path) -> None:
    program = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from pytest_ftmodel.cache import GenerationCache, push_cache
        from pytest_ftmodel.metrics.text import classification_scores, rouge_scores
        push_cache(GenerationCache(Path({str(tmp_path)!r})))
        r = rouge_scores({PREDICTIONS!r}, {REFERENCES!r})
        c = classification_scores({EXPECTED!r}, {PREDICTED!r}, {LABELS!r})
        print(json.dumps([r, c["accuracy"], c["macro_f1"], [m for m in ("rouge_score", "nltk", "sklearn") if m in sys.modules]]))
        """
    )
    cold, warm = (json.loads(subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout) for _ in range(2))
    assert cold[3] == ["rouge_score", "nltk", "sklearn"]
    assert warm[:3] == cold[:3] and warm[3] == []
