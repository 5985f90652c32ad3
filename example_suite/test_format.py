"""The form of an answer: the JSON task's answers must parse and fit their schema.

JSON is found in the whole answer, else in the first code fence that parses, else from the first
brace; strict JSON (no NaN, no duplicate keys) validated by jsonschema. An answer cut at
max_new_tokens fails as truncated.
"""

from importlib.util import find_spec

import pytest

from pytest_ftmodel import assert_format

# looked up, not imported: a warm run reads the verdicts from the cache and never imports jsonschema
pytestmark = pytest.mark.skipif(
    find_spec("jsonschema") is None, reason='the JSON Schema gate needs jsonschema: pip install "pytest-ftmodel[format]"'
)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "animal": {"enum": ["cat", "dog", "fox", "owl", "cow", "hen"]},
        "place": {"enum": ["garden", "kitchen", "park", "barn"]},
    },
    "required": ["animal", "place"],
    "additionalProperties": False,
}


def test_json_answers(ftmodel, json_questions):
    assert_format(ftmodel, json_questions, json_schema=SCHEMA, at_least=0.9, max_new_tokens=48)
