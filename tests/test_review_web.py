"""The local review page: a real server process, a real browser (Debian's chromium through
playwright), real keyboard input; what people typed must be on disk afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pytest_ftmodel import ab_result, assert_human_scores

HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> \x1b[31mRED\x1b[0m \x07 &amp; ok"
CODE_ANSWER = (
    "Here is a function that reverses the words of a sentence:\n\n"
    "```python\ndef reverse_words(sentence: str) -> str:\n    \"\"\"Reverse the order of words.\"\"\"\n"
    "    words = sentence.split()\n    return \" \".join(reversed(words))\n\n\n"
    "assert reverse_words(\"the quick brown fox\") == \"fox brown quick the\"\n```\n\n"
    "It splits on any whitespace, so several spaces between words collapse to one. For very long inputs the "
    "cost is linear in the length of the sentence, and the result keeps no leading or trailing spaces."
)
LONG_ANSWER = "\n\n".join(
    f"Paragraph {k}: the fine-tuned model explains the refund policy step by step, citing the order date, the "
    "delivery window and the condition of the returned item; it then lists what the customer must send and "
    "how long the bank usually takes to show the money again on the statement." for k in range(1, 9)
)


def _answers(i: int) -> tuple[str, str]:
    kinds = [
        (CODE_ANSWER, LONG_ANSWER),
        (LONG_ANSWER, "Short answer.\nWith a second line."),
        (f"Tricky text: {HOSTILE}", CODE_ANSWER),
        ("", "The capital of France is Paris."),
    ]
    return kinds[i % len(kinds)]


def eval_sheet(path: Path, n: int = 30) -> Path:
    items = []
    for i in range(n):
        answer, reference = _answers(i)
        items.append({
            "id": f"val-{i}", "prompt": f"Question {i}: explain, with an example, how to do task number {i}.\n\nBe precise.",
            "expected": reference, "generated": answer, "reviews": {},
        })
    sheet = {"format": "pytest-ftmodel/evaluation-sheet", "version": 2, "model": {"path": "m", "fingerprint": "f" * 16},
             "seed": 0, "criteria": ["accuracy", "relevance", "fluency", "format"], "items": items}
    path.write_text(json.dumps(sheet, indent=1))
    return path


def ab_sheet_file(path: Path, n: int = 20) -> Path:
    items, a_is = [], {}
    for i in range(n):
        first, second = _answers(i)
        items.append({"id": f"q{i}", "prompt": f"Write a helper for case {i} <b>bold?</b>", "expected": "A reference answer.",
                      "A": first, "B": second, "judgements": []})
        a_is[f"q{i}"] = "model" if i % 2 else "base"
    path.write_text(json.dumps({"format": "pytest-ftmodel/ab-sheet", "version": 2, "seed": 0, "items": items}, indent=1))
    path.with_name(f"{path.stem}.key{path.suffix}").write_text(json.dumps({"fingerprints": {}, "a_is": a_is}))
    return path


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url
        self.base = url.split("/?")[0]
        self.token = url.split("token=")[1]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, err
        return out


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(sheet: Path, kind: str, *extra: str) -> Served:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_ftmodel", kind, str(sheet), "--web", "--no-browser", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"(http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        served = Served(proc, match.group(1))
        started.append(served)
        return served

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate()


def _request(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}") if "json" in resp.headers.get("Content-Type", "") else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# ---- the server, over plain HTTP ------------------------------------------------------------------


def test_the_command_prints_one_line_with_the_address_and_ctrl_c_stops_it(serve, tmp_path) -> None:
    s = serve(eval_sheet(tmp_path / "s.json", 3), "review", "--judge", "ana")
    status, data = _request(f"{s.base}/api/sheet", headers={"X-Review-Token": s.token})
    assert status == 200 and len(data["items"]) == 3 and data["reviewer"] == "ana"
    with urllib.request.urlopen(s.url, timeout=10) as page:
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "stopped" in s.stop()


def test_without_the_token_nothing_is_read_or_changed(serve, tmp_path) -> None:
    sheet = eval_sheet(tmp_path / "s.json", 3)
    before = sheet.read_bytes()
    s = serve(sheet, "review")
    change = json.dumps({"item": "val-0", "reviewer": "eve", "scores": {"accuracy": 1}}).encode()
    for headers in ({}, {"X-Review-Token": "wrong"}, {"X-Review-Token": s.token[:-1]}):
        assert _request(f"{s.base}/api/save", data=change, headers={"Content-Type": "application/json", **headers})[0] == 403
        assert _request(f"{s.base}/api/sheet", headers=headers)[0] == 403
    assert _request(f"{s.base}/")[0] == 403 and _request(f"{s.base}/?token=nope")[0] == 403
    # the token in the query is enough to open the page, never to change the sheet
    assert _request(f"{s.base}/api/save?token={s.token}", data=change, headers={"Content-Type": "application/json"})[0] == 403
    assert sheet.read_bytes() == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"item": "val-0", "reviewer": "ana", "scores": {"accuracy": 6}}', "application/json", 400, "use a whole number 1-5"),
        (b'{"item": "val-0", "reviewer": "ana", "scores": {"accuracy": true}}', "application/json", 400, "use a whole number 1-5"),
        (b'{"item": "val-0", "reviewer": "ana", "scores": {"taste": 3}}', "application/json", 400, "no criterion 'taste'"),
        (b'{"item": "nope", "reviewer": "ana", "scores": {"accuracy": 3}}', "application/json", 400, "no item 'nope'"),
        (b'{"item": "val-0", "reviewer": "", "scores": {"accuracy": 3}}', "application/json", 400, "name must be non-empty"),
        (b'{"item": "val-0", "reviewer": "ana", "choice": "A"}', "application/json", 400, "unknown fields ['choice']"),
        (b'{"item": "val-0", "reviewer": "ana", "notes": 5}', "application/json", 400, "notes must be text"),
        (b'[1, 2]', "application/json", 400, "a change is"),
        (b'{"item": "val-0", "reviewer": "ana", "scores": {"accuracy": 3}}', "text/plain", 415, "application/json"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_the_sheet_stays(serve, tmp_path, body, content_type, status, message) -> None:
    sheet = eval_sheet(tmp_path / "s.json", 2)
    before = sheet.read_bytes()
    s = serve(sheet, "review")
    got, data = _request(f"{s.base}/api/save", data=body, headers={"Content-Type": content_type, "X-Review-Token": s.token})
    assert got == status and message in data["error"]
    assert sheet.read_bytes() == before


def test_ab_requests_are_checked_and_people_cannot_overwrite_an_automated_judge(serve, tmp_path) -> None:
    sheet = ab_sheet_file(tmp_path / "ab.json", 2)
    data = json.loads(sheet.read_text())
    data["items"][0]["judgements"].append({"judge": "rouge-L", "kind": "auto", "choice": "A", "reason": ""})
    sheet.write_text(json.dumps(data))
    before = sheet.read_bytes()
    s = serve(sheet, "ab")
    post = lambda change: _request(f"{s.base}/api/save", data=json.dumps(change).encode(), headers={"Content-Type": "application/json", "X-Review-Token": s.token})  # noqa: E731
    assert post({"item": "q0", "reviewer": "ana", "choice": "C"})[1]["error"].startswith("choice 'C'")
    assert "before giving a reason" in post({"item": "q0", "reviewer": "ana", "reason": "why"})[1]["error"]
    assert "automated judge" in post({"item": "q0", "reviewer": "rouge-L", "choice": "B"})[1]["error"]
    assert sheet.read_bytes() == before
    status, shown = _request(f"{s.base}/api/sheet", headers={"X-Review-Token": s.token})
    assert status == 200 and shown["items"][0]["judgements"] == {}  # people do not see the automated verdicts


def test_loopback_check() -> None:
    from pytest_ftmodel.review_web import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5") and not _is_loopback("example.org")


# ---- the page, in a real browser ---------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need playwright: pip install 'pytest-ftmodel[test]'")
    executable = _chromium()
    if executable is None:
        pytest.skip("browser tests need Chromium and none was found (chromium, chromium-browser, google-chrome): apt-get install chromium")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as exc:  # a browser that cannot start here: say why
            pytest.skip(f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


def _saved(pg) -> None:
    from playwright.sync_api import expect

    expect(pg.locator("#status")).to_have_text("saved", timeout=15000)




def _reviews(sheet: Path) -> list[dict]:
    return [it["reviews"] for it in json.loads(sheet.read_text())["items"]]


def test_a_30_item_review_by_keyboard_alone_is_on_disk(serve, page, tmp_path) -> None:
    sheet = eval_sheet(tmp_path / "s.json", 30)
    s = serve(sheet, "review", "--judge", "ana")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 30")
    assert page.inner_text("#progress-text") == "item 1 of 30 \u00b7 30 left"
    expected = {}
    for i in range(30):
        digits = [1 + (i + k) % 5 for k in range(4)]
        expected[f"val-{i}"] = digits
        page.keyboard.type("".join(map(str, digits)))  # four criteria, then the next item comes by itself
    _saved(page)
    page.wait_for_selector("#done:not([hidden])")
    assert "All 30 items scored by ana" in page.inner_text("#done")
    for it in json.loads(sheet.read_text())["items"]:
        assert it["reviews"]["ana"]["scores"] == dict(zip(["accuracy", "relevance", "fluency", "format"], expected[it["id"]]))
    # fix a mistake: back to item 30, choose fluency, change it, add a note
    assert page.inner_text("#progress-text").startswith("item 30 of 30")
    page.keyboard.press("b")
    assert page.inner_text("#progress-text").startswith("item 29 of 30")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("5")
    page.keyboard.press("e")
    page.keyboard.type("changed my mind")
    page.keyboard.press("Escape")
    _saved(page)
    review = json.loads(sheet.read_text())["items"][28]["reviews"]["ana"]
    assert review["scores"]["fluency"] == 5 and review["notes"] == "changed my mind"
    # stop and resume: a new page shows the scores given, on the first item, nothing left
    page.reload()
    page.wait_for_selector("#done:not([hidden])")
    assert page.inner_text("#progress-text") == "item 1 of 30 \u00b7 0 left"
    assert page.get_attribute(".criterion.current .score.on", "aria-label") == f"accuracy {expected['val-0'][0]}"
    assert_human_scores(sheet, min_scored=30, min_mean={"accuracy": 1})
    assert "stopped" in s.stop()


def test_a_20_item_ab_by_keyboard_alone_is_on_disk(serve, page, tmp_path) -> None:
    sheet = ab_sheet_file(tmp_path / "ab.json", 20)
    s = serve(sheet, "ab", "--judge", "ana")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 20")
    choices = {}
    for i in range(20):
        key = "abt"[i % 3]
        choices[f"q{i}"] = {"a": "A", "b": "B", "t": "tie"}[key]
        page.keyboard.press(key)
        if i % 4 == 0:
            page.keyboard.type(f"reason {i}: clearer <b>and</b> shorter")
        page.keyboard.press("Enter")  # reason (maybe empty) given: the next item comes
    _saved(page)
    page.wait_for_selector("#done:not([hidden])")
    items = json.loads(sheet.read_text())["items"]
    for it in items:
        [j] = it["judgements"]
        i = int(it["id"][1:])
        assert (j["judge"], j["kind"], j["choice"]) == ("ana", "human", choices[it["id"]])
        assert j["reason"] == (f"reason {i}: clearer <b>and</b> shorter" if i % 4 == 0 else "")
    # change a choice: back to the previous item, choose otherwise
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#progress-text").startswith("item 19 of 20")
    page.keyboard.press("a")
    page.keyboard.press("Escape")
    _saved(page)
    assert [j["choice"] for j in json.loads(sheet.read_text())["items"][18]["judgements"]] == ["A"]
    result = ab_result(sheet)
    assert result.decided + result.ties == 20 and result.humans == ("ana",)
    s.stop()


def test_hostile_answers_are_shown_as_text_never_run(serve, page, tmp_path) -> None:
    sheet = eval_sheet(tmp_path / "s.json", 4)
    s = serve(sheet, "review", "--judge", "ana")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 4")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    text = page.inner_text(".card.answer")
    assert "<script>window.__pwned = 1</script>" in text and "\\x1b[31mRED\\x1b[0m \\x07" in text and "\x1b" not in text
    assert page.evaluate("window.__pwned") is None and page.locator(".card.answer img, .card.answer script").count() == 0
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.locator(".card.answer pre.code code").first.inner_text().startswith("def reverse_words(sentence: str) -> str:")


def test_bidi_overrides_in_a_sheet_are_shown_as_escapes(serve, page, tmp_path) -> None:
    """U+202E and the other bidi controls would reorder what the reviewer reads ("Trojan Source"):
    the page shows them as \\u202e, in the answers, the prompt, the id and the criteria alike."""
    sheet = eval_sheet(tmp_path / "s.json", 2)
    data = json.loads(sheet.read_text())
    trick = "return True\u202e \u2066# admin only\u2069\u202c"
    data["items"][0].update(id="val-0\u202e", prompt=f"check {trick}", generated=f"```python\n{trick}\n```\n\nand {trick}")
    data["criteria"][0] = "accuracy\u2067"
    sheet.write_text(json.dumps(data))
    s = serve(sheet, "review", "--judge", "ana")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 2")
    shown = page.inner_text("body")
    assert not any(c in shown for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert "return True\\u202e \\u2066# admin only\\u2069\\u202c" in page.inner_text(".card.answer")
    assert "id val-0\\u202e" in shown and "check return True\\u202e" in shown
    assert page.locator(".criterion .name").first.text_content() == "accuracy\\u2067"  # (shown in capitals by the style)


def test_two_reviewers_at_once_both_survive(serve, browser, tmp_path) -> None:
    sheet = eval_sheet(tmp_path / "s.json", 6)
    one, two = serve(sheet, "review", "--judge", "ana"), serve(sheet, "review", "--judge", "bo")  # two servers, one sheet
    pages = []
    for s in (one, two):
        pg = browser.new_context().new_page()
        pg.goto(s.url)
        pg.wait_for_selector("text=item 1 of 6")
        pages.append(pg)
    for _ in range(6):  # interleaved, key by key
        for k in range(4):
            pages[0].keyboard.press(str(1 + k))
            pages[1].keyboard.press(str(5 - k))
    for pg in pages:
        _saved(pg)
    for reviews in _reviews(sheet):
        assert reviews["ana"]["scores"] == {"accuracy": 1, "relevance": 2, "fluency": 3, "format": 4}
        assert reviews["bo"]["scores"] == {"accuracy": 5, "relevance": 4, "fluency": 3, "format": 2}
    result = assert_human_scores(sheet, min_scored=6, min_mean={"fluency": 3})
    assert result.reviewers == ("ana", "bo") and result.n_multi == 6
    for pg in pages:
        pg.context.close()


def test_a_name_is_asked_for_before_anything_is_saved(serve, page, tmp_path) -> None:
    sheet = eval_sheet(tmp_path / "s.json", 2)
    before = sheet.read_bytes()
    s = serve(sheet, "review")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 2")
    page.evaluate("localStorage.clear()")
    assert "Type your name first" in page.inner_text("#status")
    page.keyboard.press("Escape")
    page.keyboard.press("3")
    assert sheet.read_bytes() == before
    page.fill("#reviewer", "cy")
    page.press("#reviewer", "Enter")
    page.keyboard.press("3")
    _saved(page)
    assert _reviews(sheet)[0]["cy"]["scores"]["accuracy"] == 3


def test_screenshots_of_both_pages(serve, page, tmp_path) -> None:
    """Pictures of the pages with long answers, code and hostile text, for people to look at
    (FTMODEL_SCREENSHOTS=DIR keeps them)."""
    where = Path(os.environ.get("FTMODEL_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    s = serve(eval_sheet(tmp_path / "s.json", 30), "review", "--judge", "ana")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 30")
    page.keyboard.type("4444" "3")  # item 1 scored, item 2 half way
    page.keyboard.press("ArrowRight")  # item 3: hostile text beside a code block
    page.keyboard.type("25")
    _saved(page)
    page.screenshot(path=str(where / "review.png"))
    ab = serve(ab_sheet_file(tmp_path / "ab.json", 20), "ab", "--judge", "ana")
    page.goto(ab.url)
    page.wait_for_selector("text=item 1 of 20")
    page.keyboard.press("b")
    page.keyboard.type("B runs; A does not answer")
    _saved(page)
    page.screenshot(path=str(where / "ab.png"))
    assert (where / "review.png").stat().st_size > 10_000 and (where / "ab.png").stat().st_size > 10_000


def test_a_chosen_port_and_a_server_killed_mid_save_leave_a_whole_sheet(serve, tmp_path) -> None:
    import socket
    import threading

    from pytest_ftmodel.human import EVAL_FORMAT, read_sheet

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sheet = eval_sheet(tmp_path / "s.json", 30)
    s = serve(sheet, "review", "--port", str(port))
    assert s.base == f"http://127.0.0.1:{port}"
    sent: list[int] = []

    def hammer() -> None:
        for i in range(10_000):
            change = {"item": f"val-{i % 30}", "reviewer": "ana", "scores": {"accuracy": 1 + i % 5}, "notes": "x" * (i % 500)}
            try:
                status, _ = _request(f"{s.base}/api/save", data=json.dumps(change).encode(), headers={"Content-Type": "application/json", "X-Review-Token": s.token})
            except OSError:
                return
            sent.append(status)

    worker = threading.Thread(target=hammer)
    worker.start()
    deadline = time.monotonic() + 20
    while len(sent) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    acknowledged = len(sent)
    s.proc.kill()  # SIGKILL, somewhere in the middle of a save
    worker.join(timeout=20)
    assert acknowledged >= 20 and set(sent) == {200}
    kept = read_sheet(sheet, EVAL_FORMAT)  # whole and valid
    # every save the server acknowledged is on disk
    assert all("ana" in it["reviews"] for it in kept["items"][: min(30, acknowledged)])


def test_the_browser_is_opened_on_the_address_unless_told_not_to(tmp_path) -> None:
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "fake-browser"
    fake.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    fake.chmod(0o755)
    env = {**os.environ, "BROWSER": str(fake)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_ftmodel", "ab", str(ab_sheet_file(tmp_path / "ab.json", 2)), "--web"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        deadline = time.monotonic() + 20
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = re.search(r"http://\S+", line)
        assert url and line.startswith("A/B page for ") and opened.read_text().strip() == url.group()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def _with_judge(path: Path) -> Path:
    """The sheet with an automated judge's review (as judge_sheet writes it) on every item."""
    from pytest_ftmodel.judges.gate import answer_digest

    data = json.loads(path.read_text())
    for it in data["items"]:
        it["reviews"]["robo"] = {
            "kind": "auto", "judge": "f" * 16, "answer": answer_digest(it), "notes": "",
            "scores": {c: 4 for c in data["criteria"]}, "weighted": {c: 3.75 for c in data["criteria"]},
        }
    path.write_text(json.dumps(data))
    return path


def test_the_judges_score_is_sent_only_for_items_the_reviewer_has_scored(serve, tmp_path) -> None:
    sheet = _with_judge(eval_sheet(tmp_path / "s.json", 3))
    s = serve(sheet, "review")
    headers = {"X-Review-Token": s.token}
    post = lambda change: _request(f"{s.base}/api/save", data=json.dumps(change).encode(), headers={"Content-Type": "application/json", **headers})  # noqa: E731
    sheet_for = lambda who: _request(f"{s.base}/api/sheet" + (f"?reviewer={who}" if who else ""), headers=headers)[1]["items"]  # noqa: E731
    assert all(it["judges"] == {} and "robo" not in it["reviews"] for it in sheet_for("ana"))
    assert post({"item": "val-0", "reviewer": "ana", "scores": {"accuracy": 2, "relevance": 3, "fluency": 4}})[1]["judges"] == {}
    done = post({"item": "val-0", "reviewer": "ana", "scores": {"format": 5}})[1]
    assert done["judges"] == {"robo": {"scores": {"accuracy": 3.75, "relevance": 3.75, "fluency": 3.75, "format": 3.75}}}
    assert [bool(it["judges"]) for it in sheet_for("ana")] == [True, False, False]
    assert [bool(it["judges"]) for it in sheet_for("bo")] == [False, False, False]  # bo has not scored it
    assert [bool(it["judges"]) for it in sheet_for("")] == [False, False, False]
    assert "automated judge" in post({"item": "val-1", "reviewer": "robo", "scores": {"accuracy": 1}})[1]["error"]


def test_the_page_shows_the_judge_only_after_the_item_is_scored(serve, page, tmp_path) -> None:
    sheet = _with_judge(eval_sheet(tmp_path / "s.json", 3))
    s = serve(sheet, "review", "--judge", "ana")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 3")
    assert page.inner_text("#judges") == ""
    page.keyboard.type("234")
    _saved(page)
    assert page.inner_text("#judges") == ""
    page.keyboard.type("5")  # the last criterion: the page moves on to item 2, which ana has not scored
    _saved(page)
    assert page.inner_text("#progress-text").startswith("item 2 of 3") and page.inner_text("#judges") == ""
    page.keyboard.press("b")
    assert page.inner_text("#judges") == "judge robo: accuracy 3.8, relevance 3.8, fluency 3.8, format 3.8"


def test_the_page_of_another_reviewer_never_shows_the_judge_of_an_item_they_have_not_scored(serve, page, tmp_path) -> None:
    # the browser remembers "ana" (she reviewed here before) and she scored item 1; the page is opened for
    # bo (--judge bo): the judge's score of item 1 must not reach bo's page before bo has scored it
    sheet = _with_judge(eval_sheet(tmp_path / "s.json", 3))
    data = json.loads(sheet.read_text())
    data["items"][0]["reviews"]["ana"] = {"scores": {c: 2 for c in data["criteria"]}, "notes": ""}
    sheet.write_text(json.dumps(data))
    s = serve(sheet, "review", "--judge", "bo")
    page.add_init_script("localStorage.setItem('ftmodel-reviewer', 'ana')")
    page.goto(s.url)
    page.wait_for_selector("text=item 1 of 3")
    assert page.input_value("#reviewer") == "bo"
    page.wait_for_timeout(300)
    assert page.inner_text("#judges") == ""
    page.keyboard.type("3333")  # bo scores item 1: now bo may see the judge's score
    _saved(page)
    page.keyboard.press("b")
    assert page.inner_text("#judges").startswith("judge robo:")


def test_a_judge_review_broken_by_hand_is_a_one_line_conflict_on_the_page(serve, tmp_path) -> None:
    sheet = _with_judge(eval_sheet(tmp_path / "s.json", 2))
    data = json.loads(sheet.read_text())
    data["items"][0]["reviews"]["ana"] = {"scores": {c: 2 for c in data["criteria"]}, "notes": ""}
    sheet.write_text(json.dumps(data))
    s = serve(sheet, "review", "--judge", "ana")
    data["items"][0]["reviews"]["robo"]["weighted"] = "oops"  # edited by hand while the page is served
    sheet.write_text(json.dumps(data))
    status, answer = _request(f"{s.base}/api/sheet?reviewer=ana", headers={"X-Review-Token": s.token})
    assert status == 409 and "item 'val-0' (judge 'robo') has weighted 'oops'" in answer["error"] and "\n" not in answer["error"]


def test_the_page_never_shows_a_judges_score_of_an_answer_edited_since_it_judged(serve, tmp_path) -> None:
    sheet = _with_judge(eval_sheet(tmp_path / "s.json", 2))
    data = json.loads(sheet.read_text())
    for it in data["items"]:
        it["reviews"]["ana"] = {"scores": {c: 2 for c in data["criteria"]}, "notes": ""}
    data["items"][1]["generated"] = "an answer edited after the judge scored the old one"
    sheet.write_text(json.dumps(data))
    s = serve(sheet, "review", "--judge", "ana")
    status, answer = _request(f"{s.base}/api/sheet?reviewer=ana", headers={"X-Review-Token": s.token})
    assert status == 200 and [bool(it["judges"]) for it in answer["items"]] == [True, False]
