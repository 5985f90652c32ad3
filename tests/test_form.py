"""format_check: JSON found the same way every time, verdicts equal jsonschema's, patterns and length."""

from __future__ import annotations

import json
import re

import pytest

jsonschema = pytest.importorskip("jsonschema")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_ftmodel.errors import DataError  # noqa: E402
from pytest_ftmodel.metrics.form import NO_JSON, TRUNCATED, extract_json, format_check  # noqa: E402

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"animal": {"enum": ["cat", "dog"]}, "n": {"type": "integer", "minimum": 0}},
    "required": ["animal"],
    "additionalProperties": False,
}


def test_json_is_found_whole_then_in_a_fence_then_in_prose() -> None:
    assert extract_json(' {"a": 1} ').value == {"a": 1}
    assert extract_json('Here:\n```json\n{"a": 2}\n```\nand ```\n{"a": 3}\n```').value == {"a": 2}
    assert extract_json('Here:\n```\nnot json\n```\n```\n[1, 2]\n```').value == [1, 2]  # the first fence that parses
    assert extract_json('The answer is {"a": 4} as asked. {"a": 5}').value == {"a": 4}
    assert extract_json("a [broken, then {\"a\": 6}").value == {"a": 6}
    assert not extract_json('```json\n{"a": 2}\n```', "whole").ok
    assert extract_json("no braces at all").why == NO_JSON


@pytest.mark.parametrize(
    "answer, why",
    [
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": Infinity}', "Infinity is not JSON"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ("{'a': 1}", "invalid JSON"),
        ('{"a": 1,}', "invalid JSON"),
        ('{"a": [1, 2', "invalid JSON"),
    ],
)
def test_strict_json_refuses_what_python_accepts_or_a_reader_resolves(answer: str, why: str) -> None:
    found = extract_json(answer)
    assert not found.ok and why in found.why


def test_reasons_name_the_schema_error_and_its_path_and_the_share_has_an_exact_interval() -> None:
    answers = ['{"animal": "cat"}', '{"animal": "cow"}', '{"animal": "dog", "n": -1}', "I think it is a cat", '{"animal": "cat", "x": 1}']
    result = format_check(answers, json_schema=SCHEMA)
    assert [i.passed for i in result.items] == [True, False, False, False, False]
    reasons = [i.reason for i in result.items]
    assert reasons[1] == "schema: 'cow' is not one of ['cat', 'dog'] at $.animal"
    assert reasons[2] == "schema: -1 is less than the minimum of 0 at $.n"
    assert reasons[3] == NO_JSON
    assert "Additional properties are not allowed ('x' was unexpected)" in reasons[4]
    assert result.share == pytest.approx(0.2)
    from scipy.stats import binomtest

    ci = binomtest(1, 5).proportion_ci(method="exact")
    assert result.interval == pytest.approx((ci.low, ci.high))


def test_all_pass_never_gives_a_collapsed_interval() -> None:
    result = format_check(['{"animal": "cat"}'] * 8, json_schema=SCHEMA)
    assert result.share == 1.0 and result.interval[0] == pytest.approx(0.631, abs=1e-3) and result.interval[1] == 1.0


def test_patterns_contains_and_length_give_the_first_check_that_failed() -> None:
    answers = ["Label: yes", "label: no", "Label: yes, sorry", "Label: yes " + "word " * 10]
    result = format_check(answers, regex=r"^Label: (yes|no)", not_contains=["sorry"], max_words=5)
    assert [i.reason for i in result.items] == ["", "does not match '^Label: (yes|no)'", "contains 'sorry'", "12 words (at most 5)"]
    assert format_check(["abc"], contains="b").share == 1.0
    assert format_check(["abc"], contains=["b", "z"]).items[0].reason == "does not contain 'z'"


class _WordTokenizer:
    """One token per word, as a tokenizer re-encodes an answer."""

    def __call__(self, text: str, add_special_tokens: bool = True):  # noqa: ANN204
        class Out:
            input_ids = text.split()

        return Out()


def test_an_answer_cut_at_max_new_tokens_is_truncated_before_anything_else() -> None:
    answers = ['{"animal": "cat"}', '{"animal": "cat", "n": 1, "n2": 2, "n3": 3}']
    result = format_check(answers, json_schema=SCHEMA, max_new_tokens=6, tokenizer=_WordTokenizer())
    assert [i.reason for i in result.items] == ["", TRUNCATED]
    # given strings: no truncation check unless the caller gives the limit and the tokenizer
    assert format_check(answers[:1], json_schema=SCHEMA, max_new_tokens=1).share == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"json_schema": {"type": "objekt"}}, "json_schema is not a valid Draft202012 schema: "),
        ({"json_schema": "object"}, "json_schema must be a JSON Schema (a dict)"),
        ({"regex": "(unclosed"}, "regex '(unclosed' does not compile"),
        ({}, "no check given"),
        ({"regex": "x", "extract": "first"}, "extract='first' is not known"),
    ],
)
def test_bad_checks_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(DataError) as info:
        format_check(["x"], **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_schema_fails_before_any_model_work() -> None:
    class Exploding:
        def __getattr__(self, name):  # noqa: ANN001, ANN204
            raise AssertionError("the model was used")

    with pytest.raises(DataError, match="not a valid"):
        format_check(Exploding(), [{"instruction": "x"}], json_schema={"type": 5})


def test_the_schema_draft_is_the_one_it_names() -> None:
    # Draft 4: exclusiveMaximum is a boolean modifier; 2020-12 would call that schema invalid
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "maximum": 3, "exclusiveMaximum": True}
    assert [i.passed for i in format_check(["2", "3"], json_schema=draft4).items] == [True, False]


# ---- fuzz: verdicts equal a direct jsonschema computation on the same extraction ----------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["cat", "dog", "cow", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["animal", "n", "x"]), inner, max_size=3),
    max_leaves=6,
)


#: objects the schema accepts (about half the values drawn), so that both verdicts are exercised
_valid = st.fixed_dictionaries({"animal": st.sampled_from(["cat", "dog"])}, optional={"n": st.integers(0, 9)})


@st.composite
def _outputs(draw: st.DrawFn) -> str:
    value = draw(st.one_of(_valid, _values))
    text = json.dumps(value, indent=draw(st.sampled_from([None, 2])))
    broken = draw(
        st.sampled_from(["none", "single quotes", "trailing comma", "nan", "duplicate", "truncate", "infinity"])
    )
    if broken == "single quotes":
        text = text.replace('"', "'")
    elif broken == "trailing comma":
        text = re.sub(r"([\]}])$", r",\1", text) if text[-1:] in "]}" else text + ","
    elif broken == "nan":
        text = text.replace("0", "NaN", 1) if "0" in text else '{"n": NaN}'
    elif broken == "infinity":
        text = '{"animal": "cat", "n": -Infinity}'
    elif broken == "duplicate":
        text = '{"animal": "cat", "animal": "dog"}' if draw(st.booleans()) else text
    elif broken == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    wrap = draw(st.sampled_from(["bare", "fence json", "fence", "prose", "prose and fence", "spaces"]))
    before = draw(st.sampled_from(["", "Sure! ", "Here is the answer: ", "{not json} "]))
    after = draw(st.sampled_from(["", " Hope it helps.", " [done]", "\n"]))
    if wrap == "fence json":
        return f"{before}```json\n{text}\n```{after}"
    if wrap == "fence":
        return f"```\n{text}\n```"
    if wrap == "prose":
        return f"{before}{text}{after}"
    if wrap == "prose and fence":
        return f"{before}\n```\nnot json\n```\n```json\n{text}\n```{after}"
    if wrap == "spaces":
        return f"  \n{text}\n "
    return text


def _reference_extraction(answer: str):
    """The documented rule, written out independently with the standard library."""

    def strict(text: str):
        def refuse(name):
            raise ValueError(name)

        def pairs(items):
            keys = [k for k, _ in items]
            if len(keys) != len(set(keys)):
                raise ValueError("duplicate")
            return dict(items)

        return json.loads(text, parse_constant=refuse, object_pairs_hook=pairs)

    candidates = [answer.strip()]
    candidates += [m.group(1).strip() for m in re.finditer(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", answer, re.S)]
    for text in candidates:
        try:
            return True, strict(text)
        except ValueError:
            pass
    decoder = json.JSONDecoder(parse_constant=lambda n: (_ for _ in ()).throw(ValueError(n)), object_pairs_hook=lambda items: _dedupe(items))
    for i, ch in enumerate(answer):
        if ch in "{[":
            try:
                return True, decoder.raw_decode(answer, i)[0]
            except ValueError:
                continue
    return False, None


def _dedupe(items):
    keys = [k for k, _ in items]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate")
    return dict(items)


def test_the_generated_outputs_cover_every_verdict() -> None:
    """The fuzz below is worth something only if its outputs pass and fail for every reason."""
    from hypothesis import HealthCheck

    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(_outputs())
    def collect(answer: str) -> None:
        item = format_check([answer], json_schema=SCHEMA).items[0]
        seen.add("pass" if item.passed else item.reason.split(":")[0].split(" (")[0])

    collect()
    assert {"pass", "schema", "invalid JSON", "no JSON found"} <= seen, seen


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(_outputs())
def test_verdicts_equal_jsonschema_on_generated_outputs(answer: str) -> None:
    result = format_check([answer], json_schema=SCHEMA)
    found, value = _reference_extraction(answer)
    expected = found and jsonschema.Draft202012Validator(SCHEMA).is_valid(value)
    assert result.items[0].passed == expected, (answer, result.items[0].reason)
    if found and not expected:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(value))
        assert result.items[0].reason == f"schema: {error.message} at {error.json_path}"
