"""A model served behind an OpenAI-compatible API (vLLM, TGI, SGLang, llama.cpp, ``transformers serve``).

:func:`load_served` asks ``/v1/models`` which model to use, reads what the server says about it
(its fingerprint and context length come from there), and loads the optional local tokenizer.
:func:`complete` generates through ``/v1/completions`` (raw prompts) or ``/v1/chat/completions``
(chat) with the semantics of in-process generation; :func:`score_sequences` gets prompt
log-probabilities for perplexity, checking that the server scored the same tokens as the local
tokenizer made.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from pytest_ftmodel.errors import DataError, ModelLoadError
from pytest_ftmodel.served.client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Client,
    HTTPStatusFailure,
    ServedModelError,
    normalise_url,
)
from pytest_ftmodel.served.logprobs import (
    LogprobsError,
    PromptLogprobs,
    check_alignment,
    parse_echo,
    parse_generated,
    parse_prompt_logprobs,
    same_token,
)

T = TypeVar("T")

DEFAULT_CONCURRENCY = 16
#: keys of a /v1/models entry that say which weights are served (not volatile ones such as `created`)
_IDENTITY_KEYS = ("id", "root", "parent", "revision", "max_model_len", "owned_by", "meta")
#: where servers report the context length in their /v1/models entry (vLLM: max_model_len)
_CONTEXT_KEYS = ("max_model_len", "context_length", "max_context_length", "context_window")
#: tokenizer files that count for the fingerprint (weights in the same folder are not read)
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "vocab.json",
    "merges.txt", "chat_template.jinja", "chat_template.json", "config.json", "generation_config.json",
)


class LogprobsUnavailable(ServedModelError):
    """The server returns no prompt log-probabilities, which perplexity and loss gates need."""


@dataclass(eq=False)
class ServedModel:
    """A served model with what evaluation needs to know about it; gates take it like an FTModel."""

    url: str
    model_id: str
    fingerprint: str
    tokenizer: Any = field(repr=False)
    context_length: int | None
    info: dict[str, Any] = field(repr=False)
    client: Client = field(repr=False)
    concurrency: int = DEFAULT_CONCURRENCY
    revision: str | None = None
    tokenizer_path: Path | None = None
    kind: str = "served"
    device: str = "served"
    dtype: str = "served"
    #: how the server gives prompt log-probabilities: "echo", "prompt_logprobs", "none"; None until asked
    logprob_mode: str | None = field(default=None, repr=False)
    logprob_reason: str = field(default="", repr=False)
    #: log p(first | start) per (start id, first id), for servers whose echo leaves out the start token
    first_logprobs: dict[tuple[int, int], float] = field(default_factory=dict, repr=False, compare=False)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.model_id.rstrip("/").rsplit("/", 1)[-1] or self.model_id

    @property
    def path(self) -> str:
        """Where the model lives, for reports and sheets: the API root and the served model's id
        (``http://host:8000/v1#org/model``), so reports name it by the id's last part."""
        return f"{self.url}#{self.model_id}"

    @property
    def model(self) -> None:
        """No in-process module: the weights live on the server."""
        return None

    @property
    def engine(self) -> Any:
        """How metrics run it (:mod:`pytest_ftmodel.engines`): over HTTP."""
        from pytest_ftmodel.engines.served import ServedEngine

        return ServedEngine(self)

    @property
    def determinism(self) -> str:
        """What the run can promise about repeated answers, for the report."""
        return (
            "greedy answers repeat as far as the server's arithmetic does; sampled answers send a seed per "
            "sample, which only servers that honour `seed` reproduce (vLLM, llama.cpp do; under concurrency "
            "transformers serve does not)"
        )

    def uses_chat(self, chat: bool | str) -> bool:
        """``chat="auto"``: the local tokenizer's chat template decides; without a local tokenizer the
        chat endpoint is used and the server applies its own template."""
        if self.tokenizer is not None:
            from pytest_ftmodel.tokens import uses_chat

            return uses_chat(self.tokenizer, chat)
        return chat == "auto" or bool(chat)

    def close(self) -> None:
        self.client.close()


def _pick_model(url: str, listing: Any, name: str | None) -> dict[str, Any]:
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise ServedModelError(f"{url}/models answered without a model list: is {url} an OpenAI-compatible API root?")
    entries = [e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str)]
    ids = [e["id"] for e in entries]
    shown = ", ".join(repr(i) for i in ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    if name is not None:
        for entry in entries:
            if entry["id"] == name:
                return entry
        raise ServedModelError(f"the server at {url} serves no model {name!r}; it serves {shown or 'none'}: fix --model-name")
    if len(entries) == 1:
        return entries[0]
    if not entries:
        raise ServedModelError(f"the server at {url} lists no model at {url}/models: pass --model-name NAME")
    raise ServedModelError(f"the server at {url} serves {len(ids)} models ({shown}): pick one with --model-name NAME")


def _context_from(entry: dict[str, Any]) -> int | None:
    for key in _CONTEXT_KEYS:
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _context_from_tokenizer(path: Path | None, tokenizer: Any) -> int | None:
    if path is not None and (path / "config.json").is_file():
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = cfg.get(key)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    return None


def served_fingerprint(entry: dict[str, Any], revision: str | None, tokenizer_path: Path | None) -> str:
    """A hash of what the server says about the model (id, root, revision, context length...), the
    optional ``--model-revision`` and the local tokenizer's files. Weaker than hashing weights: a server
    that serves other weights under the same name and metadata gets the same fingerprint."""
    from pytest_ftmodel.engines.common import remembered_sha256

    identity = {k: entry[k] for k in _IDENTITY_KEYS if k in entry}
    digest = hashlib.sha256(b"served\0")
    digest.update(json.dumps({"server": identity, "revision": revision}, sort_keys=True, default=str).encode())
    if tokenizer_path is not None:
        for name in _TOKENIZER_FILES:
            f = tokenizer_path / name
            if f.is_file():
                digest.update(name.encode() + b"\0" + remembered_sha256(f).encode() + b"\n")
    return digest.hexdigest()[:16]


def load_served(
    url: str,
    *,
    name: str | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    api_key_env: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    revision: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> ServedModel:
    """Connect to the OpenAI-compatible API at ``url`` (e.g. ``http://127.0.0.1:8000/v1``).

    ``name``: the served model (default: the only one ``/models`` lists). ``tokenizer``: a local
    tokenizer directory, for counting and chat formatting client-side and for perplexity.
    ``api_key_env``: the environment variable holding the API key. ``timeout``: seconds a request
    may take, from connecting to the last byte. ``max_response_bytes``: the largest answer read.
    """
    if concurrency < 1:
        raise ModelLoadError(f"model concurrency {concurrency} must be at least 1")
    client = Client(url, api_key_env=api_key_env, timeout=timeout, retries=retries, concurrency=concurrency, max_response_bytes=max_response_bytes)
    try:
        entry = _pick_model(client.url, client.get("/models"), name)
    except BaseException:
        client.close()
        raise
    tok = None
    tok_path = None
    if tokenizer is not None:
        from pytest_ftmodel.engines.common import load_tokenizer, quiet_transformers

        tok_path = Path(tokenizer)
        if not tok_path.is_dir():
            client.close()
            raise ModelLoadError(f"tokenizer path {str(tok_path)!r} is not a directory: pass the folder holding tokenizer.json (--tokenizer)")
        with quiet_transformers():
            tok = load_tokenizer(tok_path)
    context = _context_from(entry) or _context_from_tokenizer(tok_path, tok)
    return ServedModel(
        url=client.url,
        model_id=entry["id"],
        fingerprint=served_fingerprint(entry, revision, tok_path),
        tokenizer=tok,
        context_length=context,
        info={k: entry[k] for k in _IDENTITY_KEYS if k in entry},
        client=client,
        concurrency=int(concurrency),
        revision=revision,
        tokenizer_path=tok_path,
    )


def check_served(
    url: str, *, name: str | None, api_key_env: str | None, timeout: float, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
) -> None:
    """The start-up check: the server answers, the key is accepted, the model name is right. Raises
    :class:`ServedModelError` with one line."""
    client = Client(url, api_key_env=api_key_env, timeout=min(timeout, 30.0), retries=2, concurrency=1, max_response_bytes=max_response_bytes)
    try:
        _pick_model(client.url, client.get("/models"), name)
    finally:
        client.close()


def _pool_map(model: ServedModel, fn: Callable[[int], T], n: int, on_done: Callable[[], None] | None = None) -> list[T]:
    """``[fn(i) for i in range(n)]`` with up to ``model.concurrency`` requests in flight; the first
    error (in input order) is raised after the others have finished or failed."""
    if n == 0:
        return []
    results: list[Any] = [None] * n
    with ThreadPoolExecutor(max_workers=min(model.concurrency, n), thread_name_prefix="ftmodel-served") as pool:
        futures = [pool.submit(fn, i) for i in range(n)]
        for i, fut in enumerate(futures):
            exc = fut.exception()
            if exc is not None:
                for other in futures:
                    other.cancel()
                raise exc
            results[i] = fut.result()
            if on_done is not None:
                on_done()
    return results


def prompt_budget(model: ServedModel, prompt: str, *, chat: bool, max_new_tokens: int) -> int:
    """``min(max_new_tokens, context - prompt tokens)`` where the tokenizer and context are known
    (as in-process); else ``max_new_tokens``, the server enforcing its own limit."""
    if model.tokenizer is None or not model.context_length:
        return max_new_tokens
    from pytest_ftmodel.tokens import prompt_ids

    n = len(prompt_ids(model.tokenizer, prompt, chat=chat))
    if n >= model.context_length:
        raise DataError(
            f"prompt {prompt[:40]!r}... has {n} tokens, no room for an answer in the served model's context of "
            f"{model.context_length}: shorten it (in-process runs cut it from the left)"
        )
    return min(max_new_tokens, model.context_length - n)


def _cut(text: str, stop: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def complete(
    model: ServedModel,
    jobs: Sequence[tuple[str, int]],
    *,
    chat: bool,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop: Sequence[str],
    on_done: Callable[[], None] | None = None,
) -> list[str]:
    """One answer per ``(prompt, seed)`` job, up to ``model.concurrency`` requests at a time.

    Greedy at ``temperature=0``; each job is one request with ``n=1`` and its own seed, so that
    sample ``s`` of a prompt does not depend on how many samples were asked for. The answer is cut
    at the first stop string here too: some servers return the stop string itself.
    """
    budgets = [prompt_budget(model, p, chat=chat, max_new_tokens=max_new_tokens) for p, _ in jobs]

    def one(i: int) -> str:
        prompt, seed = jobs[i]
        body: dict[str, Any] = {"model": model.model_id, "max_tokens": budgets[i], "temperature": float(temperature), "n": 1}
        if temperature > 0:
            body["top_p"] = float(top_p)
            body["seed"] = int(seed)
        if stop:
            body["stop"] = list(stop)
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
            try:
                out = model.client.post("/chat/completions", body)
            except HTTPStatusFailure as exc:
                if exc.status == 400 and "template" in exc.detail.lower():
                    raise ServedModelError(
                        f"the server has no chat template for {model.model_id!r} ({exc.detail}): pass chat=False, or "
                        "--tokenizer PATH with a tokenizer that has no chat template (then chat='auto' sends raw prompts)"
                    ) from None
                raise
            text = _message_text(out)
        else:
            body["prompt"] = prompt
            text = _completion_text(model.client.post("/completions", body))
        return _cut(text, stop)

    return _pool_map(model, one, len(jobs), on_done)


def _completion_text(out: Any) -> str:
    try:
        text = out["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise ServedModelError(f"a /completions response has no choices[0].text: {str(out)[:200]}") from None
    return text if isinstance(text, str) else ""


def _message_text(out: Any) -> str:
    try:
        text = out["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ServedModelError(f"a /chat/completions response has no choices[0].message.content: {str(out)[:200]}") from None
    return text if isinstance(text, str) else ""  # null content: an empty answer


# ---- prompt log-probabilities ------------------------------------------------------------------


def _added_lead(tokenizer: Any) -> list[int]:
    """The ids ``tokenizer(text)`` puts before a text's own (a Llama-style BOS; none for GPT-2 style):
    what a server adds to a string prompt by itself."""
    with_special = list(tokenizer("a").input_ids)
    own = list(tokenizer("a", add_special_tokens=False).input_ids)
    k = len(with_special) - len(own)
    return with_special[:k] if k > 0 and with_special[k:] == own else []


def prompt_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The string to send so that a server tokenizing it as ``tokenizer(text)`` does gets ``ids``:
    the leading special ids the tokenizer adds itself are left to the server; any other special token
    (GPT-2's start token ``<|endoftext|>``) is written out, and servers parse it back to its id."""
    lead = _added_lead(tokenizer)
    body = list(ids[len(lead) :]) if lead and list(ids[: len(lead)]) == lead else list(ids)
    return str(tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def _gate() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return f"{current.split(' ')[0]} (perplexity)" if current else "perplexity"


def _ask(model: ServedModel, mode: str, text: str, ids: Sequence[int], attempts: int | None = None) -> PromptLogprobs | None:
    body: dict[str, Any] = {"model": model.model_id, "prompt": text, "max_tokens": 1, "temperature": 0.0}
    if mode == "echo":
        body.update(echo=True, logprobs=1)
        out = model.client.post("/completions", body, attempts=attempts)
        return parse_echo(out, prompt=text)
    body["prompt_logprobs"] = 1
    out = model.client.post("/completions", body, attempts=attempts)
    return parse_prompt_logprobs(out, expected_ids=ids)


def _probe(model: ServedModel, text: str, ids: Sequence[int]) -> None:
    """Find how this server gives prompt log-probabilities, once per model."""
    reasons = []
    for mode, what in (("echo", "echo=True with logprobs"), ("prompt_logprobs", "prompt_logprobs")):
        try:
            got = _ask(model, mode, text, ids, attempts=1)
        except HTTPStatusFailure as exc:
            if exc.status in (401, 403):
                raise
            reasons.append(f"{what}: HTTP {exc.status}")
            continue
        except LogprobsError as exc:
            reasons.append(f"{what}: {exc}")
            continue
        if got is not None and len(got) > 1:
            model.logprob_mode = mode
            return
        reasons.append(f"{what}: ignored")
    model.logprob_mode = "none"
    model.logprob_reason = "; ".join(reasons)


def score_sequences(model: ServedModel, sequences: Sequence[Sequence[int]], on_done: Callable[[], None] | None = None) -> list[PromptLogprobs]:
    """Prompt log-probabilities of each id sequence (a start token and a text's tokens, or a prompt
    and its continuation), each checked to be scored on exactly those tokens."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise DataError(
            f"{_gate()} on a served model needs its tokenizer, to score the same tokens as in-process: "
            "pass --tokenizer PATH (load_model(url, tokenizer=PATH))"
        )
    texts = [prompt_text(tokenizer, ids) for ids in sequences]
    with model._lock:
        if model.logprob_mode is None and sequences:
            _probe(model, texts[0], sequences[0])
    if model.logprob_mode == "none":
        raise LogprobsUnavailable(
            f"{_gate()} needs prompt log-probabilities, and the server at {model.url} (model {model.model_id!r}) returns none "
            f"({model.logprob_reason}): serve the model with vLLM or llama.cpp's server, or run this gate in-process (--model ./checkpoint)"
        )
    mode = str(model.logprob_mode)

    def one(i: int) -> tuple[PromptLogprobs, bool]:
        ids = list(sequences[i])
        pieces = _pieces(tokenizer, ids)
        where = f"{_gate()}, text {i} ({texts[i][:30]!r}...)"
        if mode != "echo":
            got = _ask(model, mode, texts[i], ids)
            if got is None:
                raise LogprobsError(f"{_gate()}: the server stopped returning prompt log-probabilities (text {i})")
            check_alignment(got, ids, pieces, where=where)
            return got, False
        out = model.client.post("/completions", _echo_body(model, texts[i]))
        got = parse_echo(out, prompt=texts[i])
        if got is None:
            raise LogprobsError(f"{_gate()}: the server stopped returning prompt log-probabilities (text {i})")
        try:
            check_alignment(got, ids, pieces, where=where)
            return got, False
        except LogprobsError:
            # llama.cpp's servers leave the leading start token out of the echo: the text's tokens
            # come first, the first of them with no log-probability (fetched below), while the
            # usage counts the start token (a server that never saw one counts one token fewer)
            rest = parse_echo(out, n_prompt_tokens=len(ids) - 1) if len(ids) > 1 else None
            if rest is None or _usage_prompt_tokens(out) != len(ids) or not _aligned(rest, ids[1:], pieces[1:]):
                raise
            return rest, True

    scored = _pool_map(model, one, len(sequences), on_done)
    wanted = sorted({(int(sequences[i][0]), int(sequences[i][1])) for i, (_, shifted) in enumerate(scored) if shifted})
    with model._lock:
        missing = [pair for pair in wanted if pair not in model.first_logprobs]
    fetched = _pool_map(model, lambda k: _first_logprob(model, *missing[k]), len(missing))
    with model._lock:
        model.first_logprobs.update(zip(missing, fetched))
        firsts = dict(model.first_logprobs)
    results = []
    for seq, (got, shifted) in zip(sequences, scored):
        if shifted:
            start = str(tokenizer.decode([seq[0]], skip_special_tokens=False, clean_up_tokenization_spaces=False))
            got = PromptLogprobs(
                tokens=(start, *got.tokens),
                logprobs=(None, firsts[(int(seq[0]), int(seq[1]))], *got.logprobs[1:]),
            )
        results.append(got)
    return results


def _pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)) for t in ids]


def _echo_body(model: ServedModel, text: str) -> dict[str, Any]:
    return {"model": model.model_id, "prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}


def _usage_prompt_tokens(out: Any) -> int | None:
    usage = out.get("usage") if isinstance(out, dict) else None
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _aligned(scored: PromptLogprobs, ids: Sequence[int], pieces: Sequence[str]) -> bool:
    try:
        check_alignment(scored, ids, pieces, where="")
    except LogprobsError:
        return False
    return True


def _first_logprob(model: ServedModel, start: int, first: int) -> float:
    """log p(first | start), for a server whose echo leaves out the start token (llama.cpp's): the
    start token alone as the prompt and a one-token completion forced to ``first`` by ``logit_bias``
    (llama.cpp reports the unbiased log-probability of the token it generates). One prompt per
    request: llama-cpp-python refuses a list (HTTP 500); ``max_tokens: 0`` would mean no limit there."""
    tokenizer = model.tokenizer
    prompt = prompt_text(tokenizer, [start])
    piece = _pieces(tokenizer, [first])[0]
    body: dict[str, Any] = {
        "model": model.model_id, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
        "logit_bias": {str(first): 100},
    }
    got: tuple[str | None, float | None] | None = None
    try:
        got = parse_generated(model.client.post("/completions", body))
    except HTTPStatusFailure as exc:
        if exc.status in (401, 403) or exc.status >= 500:
            raise
    if got is None or got[1] is None or same_token(got[0], first, piece) is False:
        seen = f"it answered {got[0]!r}" if got is not None and got[0] is not None else "it answered no log-probability"
        raise LogprobsError(
            f"{_gate()}: the server's echo leaves out the start token {_pieces(tokenizer, [start])[0]!r}, so the text's first "
            f"token {piece!r} gets no log-probability, and the server does not honour logit_bias to score it apart "
            f"(asked for {piece!r}, {seen}): serve the model with vLLM, or run this gate in-process (--model ./checkpoint)"
        )
    return float(got[1])


def prompt_logprobs_missing(model: Any) -> str | None:
    """None when ``model`` can be scored for perplexity (an in-process model, or a server that returns
    prompt log-probabilities and a local tokenizer to align them); else one line saying what is missing.
    Asks the server once per model, with a one-token prompt."""
    if not isinstance(model, ServedModel):
        return None
    if model.tokenizer is None:
        return f"the served model {model.model_id!r} has no local tokenizer to score with: pass --tokenizer PATH"
    with model._lock:
        if model.logprob_mode is None:
            from pytest_ftmodel.tokens import token_sequence

            ids = token_sequence(model.tokenizer, "a")
            _probe(model, prompt_text(model.tokenizer, ids), ids)
    if model.logprob_mode == "none":
        return f"the server at {model.url} returns no prompt log-probabilities ({model.logprob_reason})"
    return None
