"""A small OpenAI-compatible HTTP server on 127.0.0.1 for the tests of served models.

It answers the way the API documents (``/v1/models``, ``/v1/completions`` with ``echo`` +
``logprobs`` in the legacy format or vLLM's ``prompt_logprobs``, ``/v1/chat/completions``), and can
be told to misbehave as real servers do: refuse a key, answer 429/503 a few times, stall, die.
Answers come from a function the test gives, which may run a real model (``reference_backend``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Behaviour:
    models: list[dict[str, Any]] = field(default_factory=lambda: [{"id": "org/tuned", "object": "model", "max_model_len": 512}])
    key: str | None = None
    #: statuses answered, in order, before the real answers (e.g. [429, 503])
    failures: list[int] = field(default_factory=list)
    stall: float = 0.0
    #: logprob format: "echo" (OpenAI legacy), "prompt_logprobs" (vLLM), or None (ignored, like transformers serve)
    logprobs: str | None = None
    answer: Callable[[dict[str, Any]], str] = lambda body: "an answer"
    #: (prompt) -> (token strings, token ids, logprobs with None first, char offsets)
    score: Callable[[str], tuple[list[str], list[int], list[float | None], list[int]]] | None = None
    #: llama.cpp's layout: the echo leaves out the leading start token (the text's first token comes
    #: first, with a null log-probability) while usage.prompt_tokens counts it
    drop_start: bool = False
    #: (prompt, token id) -> (token string, log p(token | prompt)): a one-token completion forced by
    #: logit_bias {id: 100}, reported unbiased as llama.cpp does; None: logit_bias is ignored
    forced: Callable[[str, int], tuple[str, float]] | None = None
    #: (request body) -> the whole /v1/completions response (replaying a recording); overrides the rest
    respond: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    die_after: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)


class Stub:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _common(self) -> bool:
                b = stub.behaviour
                with stub.lock:
                    b.headers_seen.append(dict(self.headers))
                    if b.die_after is not None and len(b.requests) >= b.die_after:
                        threading.Thread(target=stub.die, daemon=True).start()
                        self.close_connection = True
                        self.connection.close()
                        return False
                if b.key is not None and self.headers.get("authorization") != f"Bearer {b.key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                    return False
                with stub.lock:
                    status = b.failures.pop(0) if b.failures else None
                if status is not None:
                    self._send(status, {"error": {"message": f"try again ({status})"}})
                    return False
                if b.stall:
                    time.sleep(b.stall)
                return True

            def do_GET(self) -> None:  # noqa: N802
                if not self._common():
                    return
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": stub.behaviour.models})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub.lock:
                    stub.behaviour.requests.append(body)
                if not self._common():
                    return
                b = stub.behaviour
                if self.path == "/v1/chat/completions":
                    text = b.answer(body)
                    self._send(200, {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
                elif self.path == "/v1/completions":
                    self._send(200, completion_payload(b, body))
                else:
                    self._send(404, {"detail": "Not Found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def die(self) -> None:
        """Stop as a killed server does: later connections are refused."""
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion_payload(b: Behaviour, body: dict[str, Any]) -> dict[str, Any]:
    if b.respond is not None:
        return b.respond(body)
    prompt = body.get("prompt", "")
    choice: dict[str, Any] = {"index": 0, "text": b.answer(body), "finish_reason": "stop", "logprobs": None}
    usage = None
    if b.logprobs == "echo" and not body.get("echo") and body.get("logprobs") is not None:
        bias = body.get("logit_bias") or {}
        if b.forced is not None and len(bias) == 1 and next(iter(bias.values())) >= 100:
            token, value = b.forced(prompt, int(next(iter(bias))))
        else:
            token, value = " x", -0.5
        choice["text"] = token
        choice["logprobs"] = {"tokens": [token], "token_logprobs": [value], "text_offset": [len(prompt)], "top_logprobs": [{token: value}]}
    if b.score is not None and b.logprobs == "echo" and body.get("echo") and body.get("logprobs") is not None:
        tokens, _ids, values, offsets = b.score(prompt)
        n_prompt = len(tokens)
        if b.drop_start:
            tokens, values, offsets = tokens[1:], [None, *values[2:]], offsets[1:]
        # the legacy format: prompt tokens first, then one generated token (max_tokens=1)
        choice["text"] = prompt + " x"
        choice["logprobs"] = {
            "tokens": tokens + [" x"],
            "token_logprobs": values + [-0.5],
            "text_offset": offsets + [len(prompt)],
            "top_logprobs": [None] + [{t: v} for t, v in zip(tokens[1:], values[1:])] + [{" x": -0.5}],
        }
        usage = {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}
    if b.score is not None and b.logprobs == "prompt_logprobs" and body.get("prompt_logprobs") is not None:
        tokens, ids, values, _ = b.score(prompt)
        entries: list[Any] = [None]
        for t, i, v in zip(tokens[1:], ids[1:], values[1:]):
            entry = {str(i): {"logprob": v, "rank": 2, "decoded_token": t}}
            entry[str(i + 1 if i != 0 else 1)] = {"logprob": -0.01, "rank": 1, "decoded_token": "?"}  # the top-1 alternative
            entries.append(entry)
        choice["prompt_logprobs"] = entries
    out: dict[str, Any] = {"object": "text_completion", "model": body.get("model"), "choices": [choice]}
    if usage:
        out["usage"] = usage
    return out


def reference_backend(model: Any) -> Callable[[str], tuple[list[str], list[int], list[float | None], list[int]]]:
    """Score a prompt as vLLM does: ``tokenizer(prompt)`` (its own special tokens, special-token text
    parsed), then a per-token float32 log-softmax of a real in-process model."""
    import torch

    tok = model.tokenizer

    def score(prompt: str) -> tuple[list[str], list[int], list[float | None], list[int]]:
        enc = tok(prompt, return_offsets_mapping=True)
        ids = list(enc.input_ids)
        with torch.inference_mode():
            logits = model.model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        values: list[float | None] = [None] + [float(logp[p - 1, ids[p]]) for p in range(1, len(ids))]
        tokens = [tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]
        offsets = [int(span[0]) for span in enc.offset_mapping]
        return tokens, ids, values, offsets

    return score


def reference_forced(model: Any) -> Callable[[str, int], tuple[str, float]]:
    """log p(token | prompt) from a real in-process model, the prompt tokenized as ``reference_backend``
    does: what llama.cpp reports for a one-token completion forced by ``logit_bias``."""
    import torch

    tok = model.tokenizer

    def forced(prompt: str, token_id: int) -> tuple[str, float]:
        ids = list(tok(prompt).input_ids)
        with torch.inference_mode():
            logits = model.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        value = float(torch.log_softmax(logits, dim=-1)[token_id])
        return tok.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False), value

    return forced
