"""A served model is a stranger: it cannot hold a request past --model-timeout, flood memory past
--model-max-response-bytes, or drive the terminal with what it sends. Real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

import pytest

from pytest_ftmodel.served import ServedModelError, load_served
from pytest_ftmodel.served.client import Client

ESCAPES = "evil\x1b[2J\x1b[H\x1b[32mALL GREEN \x1b]8;;http://x.example/\x07link\x1b]8;;\x07\u202etxt.exe"


class RawServer:
    """Accepts connections on 127.0.0.1 and hands each socket to ``talk`` (after reading the request)."""

    def __init__(self, talk: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.sent = 0
        self.talk = talk
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            try:
                self.talk(conn)
            except OSError:  # the client hung up: what these tests want
                pass

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server():
    servers: list[RawServer] = []

    def start(talk: Callable[[RawServer, socket.socket], None]) -> RawServer:
        server = RawServer(lambda conn: talk(server, conn))
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


MODELS = b'{"object": "list", "data": [{"id": "org/tuned", "object": "model"}]}'


def _trickle_body(server: RawServer, conn: socket.socket) -> None:
    """Headers at once, then the body a byte every 0.2 s: each read is quick, the whole is not."""
    server.send(conn, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(MODELS))
    for byte in MODELS:
        server.send(conn, bytes([byte]))
        time.sleep(0.2)


def _trickle_headers(server: RawServer, conn: socket.socket) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"x-pad: " + b"a" * 60 + b"\r\n"
    for byte in head:
        server.send(conn, bytes([byte]))
        time.sleep(0.2)


@pytest.mark.parametrize("trickle", [_trickle_body, _trickle_headers], ids=["body", "headers"])
def test_a_server_trickling_bytes_is_stopped_at_the_timeout(raw_server, trickle):
    server = raw_server(trickle)
    client = Client(server.url, timeout=1.0, retries=1)
    started = time.monotonic()
    with pytest.raises(ServedModelError, match=r"^GET http://127\.0\.0\.1:\d+/v1/models did not finish within 1 s \(--model-timeout bounds each request, from connecting to the last byte\): raise --model-timeout"):
        client.get("/models")
    elapsed = time.monotonic() - started
    client.close()
    assert elapsed < 2.0, f"held for {elapsed:.1f} s"


def test_a_quick_answer_is_read_under_the_same_limits(raw_server):
    """The control: a server that answers at once is unaffected by either bound."""
    def answer(server: RawServer, conn: socket.socket) -> None:
        server.send(conn, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(MODELS) + MODELS)

    client = Client(raw_server(answer).url, timeout=1.0, retries=1, max_response_bytes=len(MODELS))
    assert client.get("/models")["data"][0]["id"] == "org/tuned"
    client.close()


BLOCK = b" " * (1 << 20)


def _flood(declare: bool) -> Callable[[RawServer, socket.socket], None]:
    """A 50 MB answer to /v1/models, streamed from one 1 MiB block (the test allocates no 50 MB)."""
    def talk(server: RawServer, conn: socket.socket) -> None:
        length = b"content-length: %d\r\n" % (50 * len(BLOCK) + len(MODELS)) if declare else b"connection: close\r\n"
        server.send(conn, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + length + b"\r\n")
        server.send(conn, MODELS[:-1] + b',"pad":"')
        for _ in range(50):
            server.send(conn, BLOCK)
        server.send(conn, b'"}')
    return talk


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "streamed"])
def test_an_answer_larger_than_the_cap_is_refused_as_it_streams(raw_server, declare):
    server = raw_server(_flood(declare))
    client = Client(server.url, timeout=30.0, retries=1, max_response_bytes=10 * len(BLOCK))
    with pytest.raises(ServedModelError, match=r"^GET http://127\.0\.0\.1:\d+/v1/models answered more than 10485760 bytes, the most read from a server \(--model-max-response-bytes\): raise it"):
        client.get("/models")
    client.close()
    time.sleep(0.2)
    # the client hung up near the cap: what the server got out is the cap plus the sockets' buffers
    assert server.sent < 25 * len(BLOCK), f"{server.sent} bytes were sent"


def test_the_plugin_takes_the_limits_from_its_options(raw_server, pytester):
    server = raw_server(_flood(False))
    pytester.makepyfile("def test_x(ftmodel):\n    pass\n")
    result = pytester.runpytest(f"--model={server.url}", "--model-max-response-bytes=1000", "-p", "no:randomly")
    result.stderr.fnmatch_lines(["*--model: GET http://127.0.0.1:*/v1/models answered more than 1000 bytes*(--model-max-response-bytes)*"])
    assert result.ret != 0


def test_a_bad_max_response_bytes_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--model-max-response-bytes=lots")
    result.stderr.fnmatch_lines(["*model max response bytes must be a positive number, not 'lots'*"])
    assert result.ret != 0


# ---- what the server says is shown escaped --------------------------------------------------------


def _raw(text: str) -> bool:
    return any(c in text for c in "\x1b\x07\u202e")


def test_model_ids_a_server_lists_are_escaped_in_the_error(serve):
    server = serve(models=[{"id": ESCAPES, "object": "model"}, {"id": "other", "object": "model"}])
    with pytest.raises(ServedModelError) as info:
        load_served(server.url, name="missing")
    message = str(info.value)
    assert not _raw(message)
    assert "evil\\x1b[2J\\x1b[H" in message and "\\u202e" in message


def test_an_error_body_with_escapes_is_escaped(raw_server):
    def refuse(server: RawServer, conn: socket.socket) -> None:
        body = ('{"error": {"message": "%s"}}' % ESCAPES.replace("\x1b", "\\u001b").replace("\x07", "\\u0007").replace("\u202e", "\\u202e")).encode()
        server.send(conn, b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)

    client = Client(raw_server(refuse).url, timeout=5.0, retries=1)
    with pytest.raises(ServedModelError) as info:
        client.get("/models")
    client.close()
    assert not _raw(str(info.value)) and not _raw(info.value.detail)  # type: ignore[attr-defined]
    assert "HTTP 400: evil\\x1b[2J" in str(info.value)


def test_the_served_model_id_is_escaped_in_pytests_output(serve, pytester):
    server = serve(models=[{"id": ESCAPES, "object": "model", "max_model_len": 64}])
    pytester.makepyfile("def test_x(ftmodel):\n    pass\n")
    result = pytester.runpytest(f"--model={server.url}", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    out = result.stdout.str() + result.stderr.str()
    assert not _raw(out)
    assert "served model: evil\\x1b[2J\\x1b[H\\x1b[32mALL GREEN \\x1b]8;;http://x.example/\\x07link" in out


def test_a_token_the_server_names_is_escaped_in_a_logprobs_error():
    from pytest_ftmodel.served.logprobs import LogprobsError, PromptLogprobs, check_alignment

    scored = PromptLogprobs(tokens=(None, "token_id:\x1b[2J\u202e"), logprobs=(None, -1.0))
    with pytest.raises(LogprobsError, match=r"^text 0: token 1 is token_id:") as info:
        check_alignment(scored, [1, 2], ["a", "b"], where="text 0")
    assert not _raw(str(info.value)) and "token_id:\\x1b[2J\\u202e" in str(info.value)
