"""pass@1 of generated code: every answer runs in the sandbox, never in this process."""

from pytest_ftmodel import assert_passk


def test_passk(ftmodel, problems):
    assert_passk(ftmodel, problems, k=1, at_least=0.6, max_new_tokens=48)
