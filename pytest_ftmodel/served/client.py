"""HTTP to an OpenAI-compatible server: one pooled client, bounded retries, one-line errors.

The client is httpx2 (the HTTP client huggingface_hub, and so transformers, already installs): a
thread-safe pooled ``Client`` with per-request timeouts. Retries are ours, so that which failures
are retried (429, 5xx, refused or reset connections) and how each failure reads stay in one place.
It is imported only when a served model is used, never at plugin import.

A server is not trusted to end its answers: each request, from connecting to the last byte, ends
within ``timeout`` (a server trickling a byte at a time is stopped, not waited for), and a body
larger than ``max_response_bytes`` is refused as it streams in, never read whole. Text the server
sends (model ids, error messages) is shown escaped (:func:`pytest_ftmodel.escaping.visible`).

The API key is read from the environment variable the user names, kept in the request headers
only, and never enters a message, a ``repr``, a cache key or a report.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from pytest_ftmodel.errors import FTModelError
from pytest_ftmodel.escaping import visible

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = 300.0
DEFAULT_RETRIES = 4
#: the largest answer read from a server: far above any completion or prompt-logprob answer (a few
#: MB for thousands of tokens with their alternatives), far below what would exhaust a CI runner
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class ServedModelError(FTModelError, RuntimeError):
    """A served model could not be reached, refused us, or answered something unusable. Its message
    often quotes the server: control characters and bidi overrides are escaped, never obeyed."""

    def __init__(self, message: str = "", *args: Any) -> None:
        super().__init__(visible(message), *args)


class HTTPStatusFailure(ServedModelError):
    """The server answered with an error status (kept, so callers can tell 4xx from 5xx)."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = visible(detail)


class _TooLarge(Exception):
    pass


def is_url(value: object) -> bool:
    """Whether a ``--model`` value names a server (``http://`` or ``https://``) rather than a path."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def normalise_url(url: str) -> str:
    """The API root: no trailing slash; ``/v1`` appended when the URL names only the host."""
    url = url.strip().rstrip("/")
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


def _detail(body: bytes) -> str:
    """The server's own error message, short and escaped, from a JSON error body or the text."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    text = ""
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed.get("detail", parsed.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        text = err if isinstance(err, str) else json.dumps(err)[:300]
    if not text:
        text = body[:2000].decode("utf-8", "replace")
    text = " ".join(visible(text).split())
    return text[:297] + "..." if len(text) > 300 else text


class Client:
    """Requests to one server, safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        api_key_env: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        concurrency: int = 16,
        backoff: float = 0.5,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        import httpx2

        self.url = normalise_url(url)
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.backoff = backoff
        self.max_response_bytes = int(max_response_bytes)
        headers = {"accept": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ServedModelError(
                    f"--model-api-key-env names {api_key_env}, which is not set (or empty) in the environment: "
                    f"export {api_key_env}=... before running"
                )
            headers["authorization"] = "Bearer " + key
        self._httpx = httpx2
        self._http = httpx2.Client(
            headers=headers,
            timeout=httpx2.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            limits=httpx2.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency)),
            follow_redirects=True,
            # a proxy set in the environment must not reroute a server on this machine
            trust_env=urlsplit(self.url).hostname not in ("127.0.0.1", "localhost", "::1"),
        )
        self._lock = threading.Lock()
        self.retried = 0

    def __repr__(self) -> str:  # never the headers
        return f"Client({self.url!r}, api_key_env={self.api_key_env!r})"

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, *, attempts: int | None = None) -> Any:
        return self._request("GET", path, None, attempts)

    def post(self, path: str, body: dict[str, Any], *, attempts: int | None = None) -> Any:
        return self._request("POST", path, body, attempts)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, attempts: int | None) -> Any:
        url = self.url + path
        tries = attempts or self.retries
        started = time.monotonic()
        last = ""
        for attempt in range(tries):
            if attempt:
                with self._lock:
                    self.retried += 1
            try:
                status, headers, content = self._attempt(method, url, body)
            except self._httpx.TimeoutException:
                raise self._timed_out(method, url) from None
            except _TooLarge:
                raise ServedModelError(
                    f"{method} {url} answered more than {self.max_response_bytes} bytes, the most read from a server "
                    "(--model-max-response-bytes): raise it if this server's answers are that large, or check that --model names the right server"
                ) from None
            except self._httpx.TransportError as exc:  # refused, reset, DNS: the server may come back
                last = _transport_reason(exc)
                if attempt + 1 < tries:
                    time.sleep(self._delay(attempt, None))
                    continue
                raise ServedModelError(
                    f"the served model at {self.url} does not answer ({last}; {tries} attempt(s) over "
                    f"{time.monotonic() - started:.1f} s): is the server running? check --model"
                ) from None
            if status < 400:
                try:
                    return json.loads(content)
                except ValueError:
                    raise ServedModelError(
                        f"{method} {url} answered HTTP {status} with a body that is not JSON: is this an OpenAI-compatible API root (…/v1)?"
                    ) from None
            detail = _detail(content)
            if status in (401, 403):
                fix = (
                    f"check the key in ${self.api_key_env}" if self.api_key_env
                    else "the server wants a key: put it in an environment variable and pass --model-api-key-env VAR"
                )
                raise HTTPStatusFailure(f"{method} {url} was refused (HTTP {status}: {detail}): {fix}", status, detail)
            if status in RETRY_STATUS and attempt + 1 < tries:
                last = f"HTTP {status}"
                time.sleep(self._delay(attempt, headers.get("retry-after")))
                continue
            raise HTTPStatusFailure(f"{method} {url} failed: HTTP {status}: {detail}", status, detail)
        raise AssertionError("unreachable")  # pragma: no cover

    def _timed_out(self, method: str, url: str) -> ServedModelError:
        return ServedModelError(
            f"{method} {url} did not finish within {self.timeout:g} s (--model-timeout bounds each request, from "
            "connecting to the last byte): raise --model-timeout, or lower --model-concurrency if the server is overloaded"
        )

    def _attempt(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, Any, bytes]:
        """One exchange, ended at ``timeout`` whatever the server does. httpx's timeouts bound each
        read, and a server sending a byte now and then never lets one expire: so the exchange runs in
        a thread of its own and this one stops waiting at the deadline. The abandoned thread stops at
        its next chunk, or at the read timeout, and closes its connection."""
        outcome: dict[str, Any] = {}
        abandoned = threading.Event()

        def run() -> None:
            try:
                outcome["value"] = self._exchange(method, url, body, abandoned)
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="ftmodel-served-request", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            abandoned.set()
            raise self._timed_out(method, url)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]  # type: ignore[no-any-return]

    def _exchange(self, method: str, url: str, body: dict[str, Any] | None, abandoned: threading.Event) -> tuple[int, Any, bytes]:
        """Status, headers and the body, read as it streams and refused past ``max_response_bytes``
        (counted after decompression, so a small compressed answer cannot flood memory either)."""
        with self._http.stream(method, url, json=body) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise _TooLarge()
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                if abandoned.is_set():
                    break
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise _TooLarge()
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(30.0, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return self.backoff * (2**attempt) * (0.75 + 0.5 * random.random())


def _transport_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).lower()
    if "refused" in text:
        return "connection refused"
    if "reset" in text or "disconnected" in text or "closed" in text:
        return "connection reset"
    if "name or service" in text or "nodename" in text or "resolve" in text:
        return "host name not found"
    return type(exc).__name__ + (f": {text[:120]}" if text else "")
