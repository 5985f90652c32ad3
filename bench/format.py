"""Validating 10,000 answers against a JSON schema: format_check cold, warm, and the naive way.

Run from the repository root: ``python bench/format.py [--n 10000] [--repeats 3]``. Each figure is
the median wall time of ``--repeats`` fresh processes (imports included, as a CI run pays them):

* naive: per answer, ``json.loads`` then ``jsonschema.validate(value, schema)`` (which checks the
  schema and builds a validator on every call), no extraction from fences or prose;
* format_check, no cache: the answers as strings, extraction as documented, the validator built once;
* format_check, cold cache: the same with the session's metric cache on (the verdicts are written);
* format_check, warm cache: the same again, the verdicts read back (jsonschema is not imported).

The answers: valid JSON, JSON in a fence, JSON in prose, and broken JSON (single quotes, trailing
commas, NaN, duplicate keys, cut short), one in five invalid for the schema.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "animal": {"enum": ["cat", "dog", "fox", "owl", "cow", "hen"]},
        "place": {"type": "string", "minLength": 1},
        "count": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["animal", "place"],
    "additionalProperties": False,
}


def answers(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        value = {"animal": rng.choice(["cat", "dog", "fox", "owl", "pig"]), "place": rng.choice(["park", "barn", ""]),
                 "count": rng.randint(-1, 9), "tags": [rng.choice("abc") for _ in range(rng.randint(0, 6))]}
        text = json.dumps(value)
        kind = i % 8
        if kind == 1:
            text = f"```json\n{text}\n```"
        elif kind == 2:
            text = f"Sure! Here it is: {text} Hope this helps."
        elif kind == 3:
            text = text.replace('"', "'")
        elif kind == 4:
            text = text[:-1] + ",}"
        elif kind == 5:
            text = text[: len(text) // 2]
        elif kind == 6:
            text = text.replace('"count": ', '"count": NaN, "x": ', 1)
        out.append(text + f" {i}" if kind == 2 else text)
    return out


CHILD = r"""
import json, sys, time
start = time.perf_counter()
mode, path, cache_dir = sys.argv[1], sys.argv[2], sys.argv[3]
data = json.load(open(path))
answers, schema = data["answers"], data["schema"]
if mode == "naive":
    import jsonschema
    passed = 0
    for a in answers:
        try:
            jsonschema.validate(json.loads(a), schema)
            passed += 1
        except (ValueError, jsonschema.ValidationError):
            pass
else:
    from pytest_ftmodel.metrics.form import format_check
    if mode != "nocache":
        from pathlib import Path
        from pytest_ftmodel.cache import GenerationCache, push_cache
        push_cache(GenerationCache(Path(cache_dir)))
    passed = format_check(answers, json_schema=schema).n_passed
print(json.dumps({"seconds": time.perf_counter() - start, "passed": passed, "jsonschema": "jsonschema" in sys.modules}))
"""


def child(mode: str, path: str, cache: str) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, mode, path, cache], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "answers.json")
        with open(path, "w") as f:
            json.dump({"answers": answers(options.n), "schema": SCHEMA}, f)
        for mode, label in (("naive", "naive (json.loads + jsonschema.validate)"), ("nocache", "format_check, no cache"),
                            ("cold", "format_check, cold cache"), ("warm", "format_check, warm cache")):
            walls, inner, info = [], [], {}
            for r in range(options.repeats):
                cache = os.path.join(tmp, f"cache-{r}")
                if mode == "warm":
                    child("cold", path, cache)
                wall, info = child(mode, path, cache)
                walls.append(wall)
                inner.append(info["seconds"])
            rows.append((label, statistics.median(walls), statistics.median(inner), info["passed"], info["jsonschema"]))
    naive = rows[0][1]
    print(f"{options.n} answers, median of {options.repeats} fresh processes ({os.cpu_count()} CPUs)")
    print(f"{'way':44} {'wall s':>7} {'in-process s':>12} {'passed':>7} {'jsonschema imported':>20} {'vs naive':>9}")
    for label, wall, inner, passed, imported in rows:
        print(f"{label:44} {wall:7.2f} {inner:12.2f} {passed:7d} {str(imported):>20} {naive / wall:8.1f}x")


if __name__ == "__main__":
    main()
