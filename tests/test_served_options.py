"""--model URL and the served-model options: start-up checks (exit 4, one line), ini twins, and the
API key, which appears nowhere: not in output, reports, cache files or error texts."""

from __future__ import annotations

import pytest

from openai_stub import reference_backend

PASSING = "def test_nothing():\n    pass\n"
KEY = "sk-live-0123456789abcdef"


def _errors(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stderr.lines if line.startswith("ERROR")]


def test_help_lists_the_served_options_with_their_defaults(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = " ".join(result.stdout.str().split())
    for expected in (
        "--model-name=NAME", "--base-model-name=NAME", "--tokenizer=PATH", "--base-tokenizer=PATH",
        "--model-api-key-env=VAR", "--model-concurrency=N", "--model-revision=REV", "--model-timeout=SECONDS",
        "(default: ini ftmodel_model_concurrency, else 16)", "(default: ini ftmodel_model_timeout, else 300)",
        "(default: ini ftmodel_model_name, else the only one listed)",
    ):
        assert expected in text, expected


def test_a_dead_server_stops_the_run_at_start_up(pytester: pytest.Pytester, serve) -> None:
    s = serve()
    url = s.url
    s.close()
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(f"--model={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    [line] = _errors(result)
    assert line.startswith(f"ERROR: --model: the served model at {url} does not answer (connection refused; 2 attempt(s)")
    assert line.endswith("is the server running? check --model") and "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("models", "args", "message"),
    [
        ([{"id": "a"}, {"id": "b"}], [], "serves 2 models ('a', 'b'): pick one with --model-name NAME"),
        ([{"id": "a"}], ["--model-name=z"], "serves no model 'z'; it serves 'a': fix --model-name"),
    ],
)
def test_model_names_are_checked_at_start_up(pytester: pytest.Pytester, serve, models, args, message) -> None:
    s = serve(models=models)
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(f"--model={s.url}", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    [line] = _errors(result)
    assert line.endswith(message)


def test_a_refused_key_names_the_variable_never_the_key(pytester: pytest.Pytester, serve, monkeypatch) -> None:
    s = serve(key=KEY)
    monkeypatch.setenv("SERVED_KEY", "sk-wrong-key-42")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(f"--model={s.url}", "--model-api-key-env=SERVED_KEY")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    [line] = _errors(result)
    assert "HTTP 401" in line and "check the key in $SERVED_KEY" in line and "sk-wrong-key-42" not in line


def test_bad_numbers_are_usage_errors(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--model-concurrency=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*model concurrency must be a positive number, not '0'*"])
    pytester.makeini("[pytest]\nftmodel_model_timeout = soon\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini ftmodel_model_timeout: model timeout must be a positive number, not 'soon'*"])


def test_the_key_appears_nowhere(pytester: pytest.Pytester, serve, monkeypatch, bpe_model, bpe_pair) -> None:
    """A whole run with the key: gates pass, and the key is in no output, report, cache file or error."""
    s = serve(key=KEY, logprobs="echo", score=reference_backend(bpe_model), answer=lambda body: "positive")
    monkeypatch.setenv("SERVED_KEY", KEY)
    pytester.makepyfile(
        """
        import pytest
        from pytest_ftmodel import assert_perplexity_below, generate

        def test_generates(ftmodel):
            assert generate(ftmodel, ["Is this good?"], max_new_tokens=4) == ["positive"]

        def test_perplexity(ftmodel):
            assert_perplexity_below(ftmodel, ["the cat sat on the mat."], 1e9)

        def test_fails_with_a_server_error(ftmodel):
            ftmodel.client.post("/nowhere", {})

        def test_repr(ftmodel):
            print(repr(ftmodel), repr(ftmodel.client), vars(ftmodel))
        """
    )
    cache = pytester.path / "gen-cache"
    result = pytester.runpytest(
        f"--model={s.url}", "--model-api-key-env=SERVED_KEY", f"--tokenizer={bpe_pair.finetuned}", "--model-revision=r7",
        f"--ftmodel-cache-dir={cache}", "--ftmodel-json=out.json", "--ftmodel-html=out.html", "--ftmodel-markdown=out.md",
        "-rA", "-s", "-v",
    )
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*served model: org/tuned at http://127.0.0.1:*/v1 (fingerprint * from /v1/models: weaker than a hash of the weights)*"])
    result.stdout.fnmatch_lines(["*.py:10: HTTPStatusFailure: POST http://127.0.0.1:*/v1/nowhere failed: HTTP 404: Not Found"])
    assert all(h.get("authorization") == f"Bearer {KEY}" for h in s.behaviour.headers_seen)
    texts = {"stdout": result.stdout.str(), "stderr": result.stderr.str()}
    files = [p for p in pytester.path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" and "generations" in p.parts for p in files)  # the cache was written
    for p in files:
        texts[str(p)] = p.read_bytes().decode("utf-8", "replace")
    leaked = [where for where, text in texts.items() if KEY in text]
    assert leaked == []
