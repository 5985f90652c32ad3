"""Prompt log-probabilities from an OpenAI-compatible server: parsing and token alignment.

Two response formats are read, both from ``POST /v1/completions``:

* the OpenAI legacy format, asked for with ``echo=True, logprobs=1``: ``choices[0].logprobs`` holds
  parallel lists ``tokens`` (token strings), ``token_logprobs`` (the first one ``null``: nothing
  predicts the first token) and ``text_offset`` (each token's character offset in the echoed text),
  the prompt's tokens first, then any generated ones (vLLM, llama.cpp's servers, the OpenAI API);
* vLLM's ``prompt_logprobs=N`` extension: ``choices[0].prompt_logprobs`` is a list with one entry per
  prompt token, ``null`` for the first, else a mapping ``{token_id: {"logprob", "rank",
  "decoded_token"}}`` that holds the prompt token itself and up to ``N`` most likely tokens.

Everything here is plain Python on parsed JSON: it never talks to a server, so it is tested on
hand-written responses in those formats and on responses recorded from real servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from pytest_ftmodel.errors import FTModelError
from pytest_ftmodel.escaping import visible


class LogprobsError(FTModelError, RuntimeError):
    """A server's log-probabilities are missing, malformed, or do not line up with the local tokens.
    Its message may quote the server's tokens: control characters and bidi overrides are escaped."""

    def __init__(self, message: str = "", *args: Any) -> None:
        super().__init__(visible(message), *args)


@dataclass(frozen=True)
class PromptLogprobs:
    """Per-token log-probabilities of a prompt as a server scored it.

    ``logprobs[0]`` is ``None`` (nothing predicts the first token); ``tokens`` are the server's token
    strings (``None`` where it gave none) and ``token_ids`` its ids where the format carries them.
    """

    tokens: tuple[str | None, ...]
    logprobs: tuple[float | None, ...]
    token_ids: tuple[int | None, ...] = ()

    def __len__(self) -> int:
        return len(self.logprobs)

    def summed(self, last: int) -> float:
        """Summed negative log-likelihood (nats) of the last ``last`` tokens."""
        if not 0 < last < len(self.logprobs) + 1:
            raise LogprobsError(f"asked for the last {last} of {len(self.logprobs)} prompt tokens")
        picked = self.logprobs[len(self.logprobs) - last :]
        if any(v is None for v in picked):
            raise LogprobsError("the server gave no log-probability for a token after the first")
        return -math.fsum(v for v in picked if v is not None)


def _choice(response: Any) -> dict[str, Any]:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LogprobsError("the response has no choices[0]")
    return choices[0]


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LogprobsError(f"{where} is {value!r}, not a number")
    return float(value)


def parse_echo(response: Any, prompt: str | None = None, n_prompt_tokens: int | None = None) -> PromptLogprobs | None:
    """The prompt's log-probabilities from an ``echo=True, logprobs=N`` response, or None when the
    response carries none (a server that ignores ``echo`` or ``logprobs``).

    The echoed list also holds generated tokens after the prompt's: they are dropped by count
    (``n_prompt_tokens``, e.g. ``usage.prompt_tokens``) when given, else by ``text_offset`` (tokens that
    start inside ``prompt``).
    """
    choice = _choice(response)
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return None
    tokens = block.get("tokens")
    values = block.get("token_logprobs")
    if not isinstance(values, list) or not values:
        return None
    if not isinstance(tokens, list) or len(tokens) != len(values):
        tokens = [None] * len(values)
    offsets = block.get("text_offset")
    count = len(values)
    if n_prompt_tokens is None:
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            n_prompt_tokens = int(usage["prompt_tokens"])
    if n_prompt_tokens is not None and 0 < n_prompt_tokens <= len(values):
        count = n_prompt_tokens
    elif prompt is not None and isinstance(offsets, list) and len(offsets) == len(values):
        count = sum(1 for o in offsets if isinstance(o, int) and o < len(prompt)) or len(values)
    parsed = [_number(v, f"token_logprobs[{i}]") for i, v in enumerate(values[:count])]
    return PromptLogprobs(
        tokens=tuple(t if isinstance(t, str) else None for t in tokens[:count]),
        logprobs=(None, *parsed[1:]),  # the first is null by the format; some servers send 0
    )


def parse_prompt_logprobs(response: Any, expected_ids: Sequence[int] | None = None) -> PromptLogprobs | None:
    """The prompt's log-probabilities from vLLM's ``prompt_logprobs`` response, or None without them.

    Each entry maps token ids to ``{"logprob", "rank", "decoded_token"}`` and holds the prompt's own
    token among up to N most likely ones. With ``expected_ids`` (the local tokenizer's ids) the entry
    keyed by the expected id is read, and its absence is a misalignment; without, an entry of one
    token is that token, and of two the one that is not ranked first.
    """
    choice = _choice(response)
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list) or not entries:
        return None
    tokens: list[str | None] = []
    values: list[float | None] = []
    ids: list[int | None] = []
    for i, entry in enumerate(entries):
        if entry is None:
            if i:
                raise LogprobsError(f"prompt_logprobs[{i}] is null; only the first token's may be")
            tokens.append(None)
            values.append(None)
            ids.append(int(expected_ids[0]) if expected_ids else None)
            continue
        if not isinstance(entry, dict) or not entry:
            raise LogprobsError(f"prompt_logprobs[{i}] is {entry!r}, not a mapping of token ids")
        key = _pick(entry, i, expected_ids)
        info = entry[key]
        if isinstance(info, dict):
            value = _number(info.get("logprob"), f"prompt_logprobs[{i}].logprob")
            decoded = info.get("decoded_token")
        else:  # a bare number
            value, decoded = _number(info, f"prompt_logprobs[{i}]"), None
        tokens.append(decoded if isinstance(decoded, str) else None)
        values.append(value if i else None)
        ids.append(int(key))
    return PromptLogprobs(tokens=tuple(tokens), logprobs=tuple(values), token_ids=tuple(ids))


def _pick(entry: dict[str, Any], i: int, expected: Sequence[int] | None) -> str:
    if expected is not None:
        if i >= len(expected):
            raise LogprobsError(f"the server scored {i + 1}+ prompt tokens, the local tokenizer has {len(expected)}")
        key = str(int(expected[i]))
        if key not in entry:
            raise LogprobsError(
                f"token {i}: the server's prompt_logprobs hold ids {sorted(entry)[:5]}, not the local tokenizer's {key}"
            )
        return key
    if len(entry) == 1:
        return next(iter(entry))
    not_first = [k for k, v in entry.items() if not (isinstance(v, dict) and v.get("rank") == 1)]
    if len(not_first) == 1:
        return not_first[0]
    raise LogprobsError(f"prompt_logprobs[{i}] holds {len(entry)} tokens and no local ids to tell which is the prompt's")


def _comparable(piece: str | None) -> bool:
    return bool(piece) and "\ufffd" not in str(piece)


def check_alignment(
    scored: PromptLogprobs, ids: Sequence[int], pieces: Sequence[str], *, where: str
) -> None:
    """Raise :class:`LogprobsError` (one line naming ``where`` and the first differing token) unless
    the server scored exactly the local tokens ``ids`` (whose decoded texts are ``pieces``).

    Token ids are compared where the format carries them; token strings otherwise, except where
    either side is a fragment of a multi-byte character (U+FFFD) or empty.
    """
    if len(scored) != len(ids):
        raise LogprobsError(
            f"{where}: the server tokenized the prompt into {len(scored)} tokens, the local tokenizer into {len(ids)}: "
            "pass the served model's own tokenizer (--tokenizer PATH)"
        )
    for i, expected in enumerate(ids):
        got_id = scored.token_ids[i] if i < len(scored.token_ids) else None
        if got_id is not None and got_id != expected:
            raise LogprobsError(
                f"{where}: token {i} is id {got_id} on the server, {expected} locally: pass the served model's own tokenizer (--tokenizer PATH)"
            )
        got = scored.tokens[i]
        if got_id is None and got is not None and got.startswith("token_id:"):
            if got != f"token_id:{expected}":
                raise LogprobsError(f"{where}: token {i} is {got} on the server, id {expected} locally")
            continue
        if got_id is None and _comparable(got) and _comparable(pieces[i]) and got != pieces[i]:
            raise LogprobsError(
                f"{where}: token {i} is {got!r} on the server, {pieces[i]!r} locally: "
                "pass the served model's own tokenizer (--tokenizer PATH)"
            )


def parse_generated(response: Any) -> tuple[str | None, float | None] | None:
    """The first generated token's string and log-probability from a ``logprobs=N`` response without
    ``echo`` (the OpenAI legacy layout), or None when the response carries no log-probabilities."""
    block = _choice(response).get("logprobs")
    if not isinstance(block, dict):
        return None
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    if not isinstance(values, list) or not values:
        return None
    token = tokens[0] if isinstance(tokens, list) and tokens and isinstance(tokens[0], str) else None
    return token, _number(values[0], "token_logprobs[0]")


def same_token(got: str | None, expected_id: int, piece: str) -> bool | None:
    """Whether a server's token string is the local token ``expected_id`` (decoded: ``piece``); None
    where it cannot be told (no string, or a fragment of a multi-byte character on either side)."""
    if got is not None and got.startswith("token_id:"):
        return got == f"token_id:{expected_id}"
    if not (_comparable(got) and _comparable(piece)):
        return None
    return got == piece
