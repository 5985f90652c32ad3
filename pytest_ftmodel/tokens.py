"""How text becomes the ids a model is scored or prompted with: one rule for the whole package.

* A whole text scored for perplexity (:func:`token_sequence`) is its own tokens after one start
  token (BOS, else EOS), lm-evaluation-harness's convention.
* A prompt (:func:`prompt_ids`: generation prompts, the context of a ``(context, continuation)``
  pair) is tokenized as the model was trained and is served: ``tokenizer(prompt)`` with the
  tokenizer's own special tokens (BOS for Llama-style tokenizers, nothing for GPT-2-style ones), as
  transformers pipelines, TRL's collators and vLLM do; or, with a chat template, as
  ``apply_chat_template(..., add_generation_prompt=True, tokenize=True)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Bumped whenever the prompt rule changes, so cached answers made under an older rule are not reused.
PROMPT_RULE = 2


def start_token_id(tokenizer: Any) -> int | None:
    """The token every text is conditioned on: BOS, else EOS (GPT-2's document separator), else none."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return None


def token_sequence(tokenizer: Any, text: str) -> list[int]:
    """The start token (if any, never doubled), then the text's own tokens without special tokens."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    start = start_token_id(tokenizer)
    if start is not None and not (ids and ids[0] == start):
        ids.insert(0, start)
    return ids


def uses_chat(tokenizer: Any, chat: bool | str) -> bool:
    """Whether ``chat`` (``"auto"``, True or False) means the chat template for this tokenizer."""
    if chat == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True, but the tokenizer has no chat template: use chat=False or 'auto'")
    return bool(chat)


@dataclass(frozen=True)
class PromptParts:
    """A prompt's ids in three parts: ``head + text + tail``.

    ``head`` is what comes before the user's text (a BOS; a chat template's header and system part),
    ``tail`` what follows it (a template's end of turn and generation prompt). A prompt too long for
    the context loses the start of ``text``, never its head or tail.
    """

    head: list[int]
    text: list[int]
    tail: list[int]

    @property
    def ids(self) -> list[int]:
        return self.head + self.text + self.tail

    def cut_to(self, keep: int) -> list[int]:
        """The ids in at most ``keep`` tokens: the start of the text goes first; when head and tail
        alone do not fit, the whole sequence is cut from the left."""
        ids = self.ids
        if len(ids) <= keep:
            return ids
        room = keep - len(self.head) - len(self.tail)
        if room < 1:
            return ids[len(ids) - keep :]
        return self.head + self.text[len(self.text) - room :] + self.tail


def prompt_parts(tokenizer: Any, prompt: str, *, chat: bool | str = "auto") -> PromptParts:
    """The ids of a prompt (see :func:`prompt_ids`), split into head, the prompt's text, and tail."""
    if uses_chat(tokenizer, chat):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # what apply_chat_template(tokenize=True) does: the template writes the special tokens it wants
        # (a BOS once), so none are added on top
        ids = list(tokenizer(rendered, add_special_tokens=False).input_ids)
        parts = _split_at_text(tokenizer, rendered, ids, prompt)
    else:
        ids = list(tokenizer(prompt).input_ids)
        own = list(tokenizer(prompt, add_special_tokens=False).input_ids)
        eos = tokenizer.eos_token_id
        if eos is not None and len(ids) > len(own) and ids[-1] == eos and own[-1:] != [eos]:
            # a T5-style tokenizer appends EOS to every text; a prompt is the start of a text, and a
            # model asked to continue after an end-of-sequence token would start a new document
            ids = ids[:-1]
        parts = _split_known(ids, own)
    if not parts.ids:
        # An empty prompt with a tokenizer that adds no special tokens (GPT-2 style) gives no position
        # to predict the first token from: it is conditioned on the start token, as whole texts are.
        start = start_token_id(tokenizer)
        if start is not None:
            return PromptParts([start], [], [])
    return parts


def prompt_ids(tokenizer: Any, prompt: str, *, chat: bool | str = "auto") -> list[int]:
    """Ids of a generation prompt, or of the context of a ``(context, continuation)`` pair.

    Without a chat template (``chat=False``, or ``"auto"`` and the tokenizer has none) the ids are
    exactly ``tokenizer(prompt).input_ids``: the tokenizer's own special tokens (a BOS for Llama-style
    tokenizers, nothing for GPT-2-style ones), as the model was fine-tuned and is served. Two
    exceptions: an EOS that a T5-style tokenizer appends is dropped (a prompt is not a finished text),
    and a prompt that gives no ids at all (an empty prompt, a tokenizer that adds nothing) is the start
    token alone (BOS, else EOS), so that there is a position to predict the first new token from.

    With a chat template (``chat="auto"`` and the tokenizer has one, or ``chat=True``) the prompt is
    one user turn with the generation prompt appended, tokenized as ``apply_chat_template(...,
    tokenize=True)`` does: the template's own special tokens (its BOS, once), none added on top.
    """
    return prompt_parts(tokenizer, prompt, chat=chat).ids


def _split_known(ids: list[int], own: list[int]) -> PromptParts:
    """Split ``ids`` around ``own`` (the text's tokens without special tokens) when it occurs in them."""
    if own:
        for k in range(len(ids) - len(own) + 1):
            if ids[k : k + len(own)] == own:
                return PromptParts(ids[:k], own, ids[k + len(own) :])
        return PromptParts([], ids, [])
    return PromptParts(ids, [], [])


def _split_at_text(tokenizer: Any, rendered: str, ids: list[int], prompt: str) -> PromptParts:
    """Split a rendered chat prompt's ids at the user's text (the last place it occurs)."""
    text = prompt if prompt in rendered else prompt.strip()
    begin = rendered.rfind(text) if text else -1
    if begin < 0:  # the template rewrote the text beyond recognition: no head to protect
        return PromptParts([], ids, [])
    end = begin + len(text)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc.input_ids) == ids:
            spans = [tuple(span) for span in enc.offset_mapping]
            n_head = 0
            while n_head < len(spans) and spans[n_head][1] <= begin:
                n_head += 1
            n_tail = 0
            while n_tail < len(spans) - n_head and spans[len(spans) - 1 - n_tail][0] >= end:
                n_tail += 1
            return PromptParts(ids[:n_head], ids[n_head : len(ids) - n_tail], ids[len(ids) - n_tail :])
    pieces = [list(tokenizer(p, add_special_tokens=False).input_ids) for p in (rendered[:begin], text, rendered[end:])]
    if pieces[0] + pieces[1] + pieces[2] == ids:
        return PromptParts(*pieces)
    return PromptParts([], ids, [])
