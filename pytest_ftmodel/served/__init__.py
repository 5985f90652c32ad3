"""Served models: the same gates on a model behind an OpenAI-compatible API.

``client`` (HTTP, retries, errors), ``logprobs`` (parsing and token alignment of prompt
log-probabilities), ``model`` (:class:`ServedModel`, generation and scoring). Importing this package
is cheap: the HTTP library is imported when a client is made.
"""

from __future__ import annotations

from pytest_ftmodel.served.client import Client, ServedModelError, is_url, normalise_url
from pytest_ftmodel.served.logprobs import LogprobsError, PromptLogprobs, check_alignment, parse_echo, parse_prompt_logprobs
from pytest_ftmodel.served.model import (
    LogprobsUnavailable,
    ServedModel,
    check_served,
    load_served,
    prompt_logprobs_missing,
    served_fingerprint,
)


def is_served(model: object) -> bool:
    """Whether ``model`` is a :class:`ServedModel` (for the plugin and reports; metrics run a model
    through its engine, :func:`pytest_ftmodel.engines.engine_of`, and never ask)."""
    return isinstance(model, ServedModel)


__all__ = [
    "Client", "LogprobsError", "LogprobsUnavailable", "PromptLogprobs", "ServedModel", "ServedModelError",
    "check_alignment", "check_served", "is_served", "is_url", "load_served", "normalise_url", "parse_echo",
    "parse_prompt_logprobs", "prompt_logprobs_missing", "served_fingerprint",
]
