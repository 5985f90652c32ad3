"""The form of an answer: the JSON task's answers must parse and fit their schema.

JSON is found in the whole answer, else in the first code fence that parses, else from the first
brace; strict JSON (no NaN, no duplicate keys) validated by jsonschema. An answer cut at
max_new_tokens fails as truncated.
"""

from pytest_ftmodel import assert_format

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
