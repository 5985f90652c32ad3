"""The local review page: ``pytest-ftmodel review SHEET --web`` and ``pytest-ftmodel ab SHEET --web``.

A standard-library HTTP server (one thread per request) serves one page, its script and style, and a
small JSON API. Every change is one reviewer's answer to one item, merged into the sheet on disk
under the sheet's lock with the same atomic writes as the terminal commands (human.set_review,
human.set_judgement), so several reviewers or tabs at once lose nothing.

Only the holder of the access token (a random 128-bit value in the printed address) can read or
change the sheet: the page sends it in a header, requests without it get 403. Model answers are
untrusted: the page builds its content with textContent only, and a strict Content-Security-Policy
allows no inline script, no other origin and no framing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.human import AB_FORMAT, EVAL_FORMAT, is_scored, read_sheet, set_judgement, set_review

MAX_BODY = 256 * 1024
TOKEN_HEADER = "X-Review-Token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC = {"/app.js": ("review_page.js", "text/javascript"), "/app.css": ("review_page.css", "text/css")}


def _static(name: str) -> bytes:
    return resources.files("pytest_ftmodel").joinpath("web").joinpath(name).read_bytes()


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sheet: Path, kind: str, token: str, reviewer: str) -> None:
        self.sheet, self.kind, self.token, self.reviewer = sheet, kind, token, reviewer
        self.format = EVAL_FORMAT if kind == "review" else AB_FORMAT
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/?token={self.token}"


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body are two writes: without this, keep-alive requests wait on delayed ACKs
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal shows the address only
        pass

    # ---- responses --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        given = self.headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    # ---- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path in STATIC:  # the page's code: no data in it
            name, ctype = STATIC[url.path]
            return self._send(HTTPStatus.OK, _static(name), f"{ctype}; charset=utf-8")
        if url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
        if url.path not in ("/", "/api/sheet"):
            return self._error(HTTPStatus.NOT_FOUND, f"no page {url.path!r}")
        if not self._authorised(query):
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong access token: open the address the command printed")
        if url.path == "/":
            return self._send(HTTPStatus.OK, _static("review_page.html"), "text/html; charset=utf-8")
        try:
            sheet = read_sheet(self.server.sheet, self.server.format)
        except DataError as exc:
            return self._error(HTTPStatus.CONFLICT, str(exc))
        asking = (query.get("reviewer") or [self.server.reviewer])[0].strip()
        self._json(HTTPStatus.OK, _public(sheet, self.server, asking))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/api/save":
            return self._error(HTTPStatus.NOT_FOUND, f"no endpoint {url.path!r}")
        if not self._authorised({}):  # the token only in the header: a form on another site cannot send it
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong access token: open the address the command printed")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the change as application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is needed")
        if not 0 < length <= MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a change is 1 to {MAX_BODY} bytes of JSON")
        try:
            change = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "the change is not valid JSON")
        try:
            saved = _apply(change, self.server)
            answer: dict[str, Any] = {"saved": saved}
            if self.server.kind == "review":  # scoring the last criterion shows the judges' scores, not before
                sheet = read_sheet(self.server.sheet, EVAL_FORMAT)
                item = next((it for it in sheet["items"] if it["id"] == change["item"]), None)
                if item is not None:
                    answer["judges"] = judges_shown(item, sheet["criteria"], str(change["reviewer"]).strip())
        except DataError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        self._json(HTTPStatus.OK, answer)


def judges_shown(item: dict[str, Any], criteria: list[str], reviewer: str) -> dict[str, Any]:
    """The automated judges' scores of an item, for ``reviewer`` only once that person has scored it
    on every criterion (never before: a score seen first anchors the person's own)."""
    from pytest_ftmodel.judges.gate import answer_digest

    if not reviewer or not is_scored(item, criteria, reviewer):
        return {}
    read = answer_digest(item)  # a judge's score of an answer (or request, reference) edited since is not shown
    return {
        name: {"scores": {c: v for c, v in (r.get("weighted") or r["scores"]).items() if v is not None}}
        for name, r in item["reviews"].items() if r.get("kind") == "auto" and r.get("answer") == read
    }


def _public(sheet: dict[str, Any], server: ReviewServer, reviewer: str = "") -> dict[str, Any]:
    """What the page needs: the items and every reviewer's own answers (the page shows only the
    answers of the name typed into it); the automated judges' scores only of the items ``reviewer``
    has scored."""
    if server.kind == "review":
        items = [
            {
                "id": it["id"], "prompt": it.get("prompt"), "expected": it.get("expected"), "generated": it.get("generated"),
                "reviews": {name: r for name, r in it["reviews"].items() if r.get("kind", "human") != "auto"},
                "judges": judges_shown(it, sheet["criteria"], reviewer),
            }
            for it in sheet["items"]
        ]
        return {"kind": "review", "criteria": sheet["criteria"], "items": items, "reviewer": server.reviewer, "sheet": server.sheet.name}
    items = [
        {
            "id": it["id"], "prompt": it.get("prompt"), "expected": it.get("expected"), "A": it.get("A"), "B": it.get("B"),
            "judgements": {j["judge"]: {"choice": j["choice"], "reason": j.get("reason", "")} for j in it["judgements"] if j.get("kind") != "auto"},
        }
        for it in sheet["items"]
    ]
    return {"kind": "ab", "items": items, "reviewer": server.reviewer, "sheet": server.sheet.name}


def _apply(change: Any, server: ReviewServer) -> dict[str, Any]:
    if not isinstance(change, dict) or "item" not in change or "reviewer" not in change:
        raise DataError('a change is {"item": ID, "reviewer": NAME, ...}')
    allowed = {"item", "reviewer", "scores", "notes"} if server.kind == "review" else {"item", "reviewer", "choice", "reason"}
    unknown = sorted(set(change) - allowed)
    if unknown:
        raise DataError(f"unknown fields {unknown}: a change has {sorted(allowed)}")
    if server.kind == "review":
        return set_review(server.sheet, change["item"], change["reviewer"], scores=change.get("scores"), notes=change.get("notes"))
    return set_judgement(server.sheet, change["item"], change["reviewer"], choice=change.get("choice"), reason=change.get("reason"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    sheet: str | Path, kind: str, *, host: str = "127.0.0.1", port: int = 0, reviewer: str = "", token: str | None = None
) -> ReviewServer:
    """A review server for ``sheet`` (``kind`` "review" or "ab"), bound but not yet serving; the sheet
    is read once first, so a broken one is a DataError before any page is served."""
    if kind not in ("review", "ab"):
        raise ValueError(f"kind is 'review' or 'ab', not {kind!r}")
    path = Path(sheet)
    read_sheet(path, EVAL_FORMAT if kind == "review" else AB_FORMAT)
    try:
        return ReviewServer((host, port), path, kind, token or secrets.token_urlsafe(16), reviewer)
    except OSError as exc:
        raise DataError(f"cannot serve the review page on {host}:{port} ({exc.strerror}): choose another --port or --host") from None


def serve_in_thread(server: ReviewServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="review-page", daemon=True)
    thread.start()
    return thread


def serve_until_interrupted(
    sheet: str | Path, kind: str, *, host: str = "127.0.0.1", port: int = 0, reviewer: str = "", open_browser: bool = True
) -> int:
    """Serve the page until Ctrl-C, printing its address (with the token) on one line."""
    server = make_server(sheet, kind, host=host, port=port, reviewer=reviewer)
    if not _is_loopback(host):
        print(
            f"warning: serving on {host}, not loopback: anyone who can reach this machine and learns the address can read and change {sheet}",
            file=sys.stderr,
        )
    what = "review" if kind == "review" else "A/B"
    print(f"{what} page for {sheet}: {server.url}  (Ctrl-C stops it; every answer is saved at once)", flush=True)
    if open_browser:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped; every answer given is saved.")
    finally:
        server.server_close()
    return 0
