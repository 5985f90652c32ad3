"""One interface for running a model: score token sequences, and generate answers.

Metrics ask :func:`engine_of` for a model's :class:`Engine` and never which kind it is. Two engines
exist today, in-process transformers (:mod:`~pytest_ftmodel.engines.transformers`) and a served,
OpenAI-compatible model (:mod:`~pytest_ftmodel.engines.served`); a third (an in-process vLLM, say) is
a new module whose model object offers an ``engine`` attribute, not a branch in every metric.

A *unit* is ``(ids, m)``: a token sequence whose last ``m`` ids are scored given everything before
them (a start token and a text, a prompt and its continuation, a window of a long text).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

Unit = tuple[list[int], int]


@runtime_checkable
class Engine(Protocol):
    """What a metric may ask of a model."""

    #: whether a long text may be scored in windows that start inside it (a served model scores each
    #: text in one request: the server would tokenize and prefix a window that starts mid-text anew)
    scores_windows: bool

    def check_scoring(self) -> None:
        """Raise one clear line when this model cannot score token sequences (no tokenizer, say)."""

    def score(self, units: Sequence[Unit], *, batch_size: int | None = None, on_done: Callable[[int, float], None] | None = None) -> list[float]:
        """Summed negative log-likelihood (nats) of the last ``m`` ids of each unit; ``on_done(unit,
        value)`` as each is scored."""

    def token_logprobs(self, units: Sequence[Unit], *, batch_size: int | None = None) -> list[list[float]]:
        """Per unit, the log-probability (nats) of each of its last ``m`` ids, in order."""

    def generate(
        self,
        prompts: Sequence[str],
        rows: Sequence[tuple[int, int]],
        *,
        chat: bool | str,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
        batch_size: int | None = None,
    ) -> list[str]:
        """One answer per ``(prompt index, seed)`` row, in the order of ``rows``."""


def engine_of(model: Any) -> Engine:
    """The engine a model runs on (its ``engine`` attribute): :func:`~pytest_ftmodel.load_model`'s
    models have one; anything else is named in one line."""
    engine = getattr(model, "engine", None)
    if engine is None:
        raise TypeError(
            f"{type(model).__name__} runs on no engine: pass a model from load_model() (a checkpoint, an adapter or a URL)"
        )
    return engine  # type: ignore[no-any-return]
