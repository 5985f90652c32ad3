"""How text becomes the ids a model is scored or prompted with: one rule for the whole package."""

from __future__ import annotations

from typing import Any


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


def prompt_ids(tokenizer: Any, prompt: str, *, chat: bool | str = "auto") -> list[int]:
    """Ids of a generation prompt.

    With a chat template (``chat="auto"`` and the tokenizer has one, or ``chat=True``) the prompt is
    sent as one user turn with the generation prompt appended; the template's own BOS is kept, and a
    BOS is added only when the tokenizer has one and the template did not put it there. Otherwise the
    raw text follows the scoring rule of :func:`token_sequence`.
    """
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat == "auto" else bool(chat)
    if not use_chat:
        return token_sequence(tokenizer, prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True, but the tokenizer has no chat template: use chat=False or 'auto'")
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    bos = tokenizer.bos_token_id
    if bos is not None and not (ids and ids[0] == bos):
        ids.insert(0, int(bos))
    return ids
