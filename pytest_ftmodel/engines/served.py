"""The served engine: an OpenAI-compatible server (vLLM, TGI, SGLang, llama.cpp, ``transformers
serve``). Scoring reads the server's prompt log-probabilities of exactly the ids the in-process
engine scores (:func:`~pytest_ftmodel.served.model.score_sequences` checks the alignment); generation
sends the same requests with the same semantics (:func:`~pytest_ftmodel.served.model.complete`)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from pytest_ftmodel.engines.base import Unit
from pytest_ftmodel.progress import progress


class ServedEngine:
    """Runs a :class:`~pytest_ftmodel.served.ServedModel` over HTTP."""

    #: each text is scored in one request: a window that starts inside a text would be tokenized and
    #: prefixed by the server anew, unlike in-process
    scores_windows = False

    def __init__(self, model: Any) -> None:
        self.served = model

    def check_scoring(self) -> None:
        from pytest_ftmodel.served.model import score_sequences

        if self.served.tokenizer is None:
            score_sequences(self.served, [])  # raises: names the gate and --tokenizer

    def _scored(self, units: Sequence[Unit], what: str) -> list[Any]:
        from pytest_ftmodel.served.model import score_sequences

        bar = progress(what, len(units))
        scored = score_sequences(self.served, [ids for ids, _ in units], on_done=lambda: bar.advance(1))
        bar.close()
        return scored

    def score(self, units: Sequence[Unit], *, batch_size: int | None = None, on_done: Callable[[int, float], None] | None = None) -> list[float]:
        values = [s.summed(m) for s, (_, m) in zip(self._scored(units, "scoring texts (served)"), units)]
        if on_done is not None:
            for k, value in enumerate(values):
                on_done(k, value)
        return values

    def token_logprobs(self, units: Sequence[Unit], *, batch_size: int | None = None) -> list[list[float]]:
        from pytest_ftmodel.served import LogprobsError

        out = []
        for s, (_, m) in zip(self._scored(units, "scoring choices (served)"), units):
            s.summed(m)  # checks that the last m log-probabilities are there
            picked = [v for v in s.logprobs[len(s.logprobs) - m :] if v is not None]
            if len(picked) != m or not all(math.isfinite(v) for v in picked):
                raise LogprobsError("the server gave no finite log-probability for a scored token")
            out.append(picked)
        return out

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
        from pytest_ftmodel.served.model import complete

        bar = progress("generating answers", len(rows))
        texts = complete(
            self.served, [(prompts[i], seed) for i, seed in rows], chat=self.served.uses_chat(chat),
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=list(stop), on_done=lambda: bar.advance(1),
        )
        bar.close()
        return texts
