"""Files the plugin writes on shared machines: never through a planted link, never believed when
another user could have written them.

Each writer is run with a symbolic link planted at every name it uses that someone else could
predict (the file itself, the lock beside it, the ``<pid>.tmp`` names older versions used), each
link pointing at a file outside the folder: that file must stay as it was, or not come into being.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import pytest

from pytest_ftmodel import files
from pytest_ftmodel import cache as gen_cache
from pytest_ftmodel.cache import CacheWarning, GenerationCache
from pytest_ftmodel.errors import DataError

sys.path.insert(0, os.path.dirname(__file__))
from as_nobody import NOBODY, SETPRIV, interpreter_for_nobody  # noqa: E402 - beside the tests that use it

PRECIOUS = "root-only contents\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder the writers never name: the planted links point into it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def victim(outside: Path, name: str) -> Path:
    target = outside / name
    target.write_text(PRECIOUS)
    return target


# ---- writers that replace a file: (what it writes, the names to plant links at) ---------------------


def _memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    import hashlib

    from pytest_ftmodel import model

    monkeypatch.setenv("PYTEST_FTMODEL_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    memo = tmp_path / "cache" / "fingerprints" / (hashlib.sha1(str(weights.resolve()).encode()).hexdigest() + ".json")
    return (lambda: model._remembered_sha256(weights)), [memo, memo.with_suffix(f".{os.getpid()}.tmp")], memo


def _remember_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    cache = GenerationCache(tmp_path / "gen")
    path = tmp_path / "gen" / "models" / "k.json"
    return (lambda: cache.remember_load("k", {"device": "cpu", "dtype": "float32"})), [path, path.with_name(f".k.json.{os.getpid()}.tmp")], path


def _cache_put(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    cache = GenerationCache(tmp_path / "gen")
    key = "ab" + "0" * 62
    outputs = ["an answer"]
    path = cache._path(key)
    return (lambda: cache.put(key, outputs)), [path, path.with_name(f".{path.name}.{os.getpid()}.{id(outputs)}.tmp")], path


def _jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    from pytest_ftmodel.data import write_jsonl

    path = tmp_path / "data" / "train.jsonl"
    return (lambda: write_jsonl(path, [{"text": "a"}])), [path, path.with_name(f"train.jsonl.{os.getpid()}.tmp")], path


def _sheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    from pytest_ftmodel.human import write_atomic

    path = tmp_path / "review" / "sheet.json"
    return (lambda: write_atomic(path, {"items": []})), [path], path


def _baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    from pytest_ftmodel.baseline import store

    path = tmp_path / "ftmodel-baseline.json"
    return (lambda: store.write(path, {})), [path], path


def _broken_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    from pytest_ftmodel.baseline import store

    path = tmp_path / "ftmodel-baseline.json"
    path.write_text("{broken")
    copy = path.with_name(path.name + store.BROKEN)
    return (lambda: store.keep_aside(path)), [copy], copy


def _report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[[], object], list[Path], Path]:
    from pytest_ftmodel.report.document import write_json

    path = tmp_path / "report.json"
    return (lambda: write_json(path, [])), [path], path


WRITERS = {
    "fingerprint memo": _memo, "remember_load": _remember_load, "cache entry": _cache_put, "write_jsonl": _jsonl,
    "review sheet": _sheet, "baseline": _baseline, "baseline .broken copy": _broken_copy, "JSON report": _report,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_link_planted_where_a_file_is_written_is_replaced_not_written_through(writer, tmp_path, outside, monkeypatch):
    write, names, final = WRITERS[writer](tmp_path, monkeypatch)
    targets = [victim(outside, f"victim-{i}") for i in range(len(names))]
    for name, target in zip(names, targets):
        plant(name, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a write that failed would only warn: it must succeed
        written = write()
    assert [t.read_text() for t in targets] == [PRECIOUS] * len(targets)
    if writer == "baseline .broken copy":
        final = written  # the name taken by a link is skipped: the copy goes to .broken.2
    assert not final.is_symlink() and final.is_file()
    assert final.read_text() != PRECIOUS


def test_a_link_planted_at_the_sheet_lock_is_refused_and_its_target_not_created(tmp_path, outside):
    from pytest_ftmodel.human import modify_sheet

    sheet = tmp_path / "review" / "sheet.json"
    nologin = outside / "nologin"  # a stand-in for /etc/nologin
    plant(sheet.with_name(".sheet.json.lock"), nologin)
    with pytest.raises(DataError, match=r"\.sheet\.json\.lock is a symbolic link, refused as the sheet's lock: remove it"):
        modify_sheet(sheet, "evaluation", lambda s: None)
    assert not nologin.exists()
    assert not sheet.exists()


def test_a_link_planted_at_the_demo_lock_is_refused_and_its_target_not_created(tmp_path, outside):
    from pytest_ftmodel import demo

    nologin = outside / "nologin"
    plant(tmp_path / "demo" / ".byte.lock", nologin)
    with pytest.raises(files.LinkRefused), demo._lock(tmp_path / "demo" / ".byte.lock"):
        pass
    assert not nologin.exists()


def test_a_link_planted_at_the_job_summary_is_refused(tmp_path, outside):
    target = victim(outside, "victim")
    plant(tmp_path / "summary.md", target)
    with pytest.raises(files.LinkRefused):
        files.append_text(tmp_path / "summary.md", "## gates\n")
    assert target.read_text() == PRECIOUS


def test_write_atomic_keeps_a_mode_and_leaves_no_temporary_file(tmp_path):
    path = files.write_atomic(tmp_path / "a" / "x.json", b"{}", mode=0o640, durable=True)
    assert path.read_bytes() == b"{}"
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from pytest_ftmodel import files
from pytest_ftmodel.cache import GenerationCache
from pytest_ftmodel.human import sheet_lock, write_atomic
from pytest_ftmodel.errors import DataError
root, outside = Path(sys.argv[1]), Path(sys.argv[2])
cache = GenerationCache(root / "gen")
key = "cd" + "0" * 62
cache.put(key, ["answer"])                   # the cache entry's link is replaced
write_atomic(root / "sheet.json", {"items": []})
try:
    with sheet_lock(root / "sheet.json"):
        print("lock followed")
except DataError:
    print("lock refused")
print(json.dumps({"entry_is_link": cache._path(key).is_symlink(), "sheet_is_link": (root / "sheet.json").is_symlink()}))
"""


def test_as_an_unprivileged_user_planted_links_are_not_followed():
    python = interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root and setpriv to run as uid 65534")
    tmp_path = Path(tempfile.mkdtemp(prefix="ftmodel-nobody-"))  # pytest's own folders are root's alone
    root, outside = tmp_path / "shared", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    victim_file = victim(outside, "victim")
    entry = GenerationCache(root / "gen")._path("cd" + "0" * 62)
    plant(entry, victim_file)
    plant(root / "sheet.json", victim_file)
    plant(root / ".sheet.json.lock", outside / "nologin")
    for folder in (tmp_path, root, outside, *root.rglob("*")):
        if not folder.is_symlink():
            os.chown(folder, NOBODY, NOBODY)
    victim_file.chmod(0o666)  # the unprivileged user could write it: only following the link would
    package = str(Path(files.__file__).parents[1])
    done = subprocess.run(
        [*SETPRIV, python, "-c", _AS_NOBODY, str(root), str(outside)], capture_output=True, text=True,
        env={"PYTHONPATH": package, "PATH": os.environ.get("PATH", "")}, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "lock refused"
    assert json.loads(lines[1]) == {"entry_is_link": False, "sheet_is_link": False}
    assert victim_file.read_text() == PRECIOUS
    assert not (outside / "nologin").exists()
    shutil.rmtree(tmp_path)


# ---- what another user could have written is not believed ------------------------------------------


def _weights_and_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Weights, and a memo beside them as another user would forge it: the right stamp, a false hash."""
    import hashlib

    from pytest_ftmodel import model

    monkeypatch.setenv("PYTEST_FTMODEL_CACHE", str(tmp_path / "cache"))
    from pytest_ftmodel.engines import common

    monkeypatch.setattr(common, "_memo_warned", set())
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"the real weights")
    st = weights.stat()
    memo = tmp_path / "cache" / "fingerprints" / (hashlib.sha1(str(weights.resolve()).encode()).hexdigest() + ".json")
    memo.parent.mkdir(parents=True)
    memo.write_text(json.dumps({"stamp": [st.st_size, st.st_mtime_ns, st.st_ino], "sha256": "0" * 64}))
    return weights, memo


def test_a_memo_we_wrote_in_our_own_folder_is_believed(tmp_path, monkeypatch):
    """The control for the two below: the same memo, ours, is what saves re-reading the weights."""
    from pytest_ftmodel import model

    weights, _ = _weights_and_memo(tmp_path, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model._remembered_sha256(weights) == "0" * 64


def test_a_memo_folder_others_can_write_is_not_believed(tmp_path, monkeypatch):
    import hashlib

    from pytest_ftmodel import model

    weights, memo = _weights_and_memo(tmp_path, monkeypatch)
    memo.parent.chmod(0o777)
    with pytest.warns(CacheWarning, match=r"ignoring remembered fingerprints: .*fingerprints is writable by others \(mode 777\), so another user could have written them; the weights are hashed afresh"):
        assert model._remembered_sha256(weights) == hashlib.sha256(b"the real weights").hexdigest()
    assert json.loads(memo.read_text())["sha256"] == "0" * 64  # and nothing is written where others write


def test_a_memo_another_user_owns_is_not_believed(tmp_path, monkeypatch):
    import hashlib

    from pytest_ftmodel import model

    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to uid 65534")
    weights, memo = _weights_and_memo(tmp_path, monkeypatch)
    os.chown(memo, NOBODY, NOBODY)
    with pytest.warns(CacheWarning, match=rf"ignoring remembered fingerprints: .*\.json is owned by uid {NOBODY}, not by us"):
        assert model._remembered_sha256(weights) == hashlib.sha256(b"the real weights").hexdigest()
    # rewritten as ours: the next run trusts the true hash
    assert json.loads(memo.read_text())["sha256"] == hashlib.sha256(b"the real weights").hexdigest()
    assert memo.stat().st_uid == os.geteuid()


def test_a_cache_folder_others_can_write_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    assert gen_cache.distrust(shared) == ""
    shared.chmod(0o777)
    assert gen_cache.distrust(shared / "ftmodel").startswith(f"not using the cache {shared / 'ftmodel'}: {shared} is writable by others (mode 777)")
    shared.chmod(0o775)
    assert "writable by its group (mode 775)" in gen_cache.distrust(shared)
    shared.chmod(0o1777)  # sticky, as /tmp: no one can replace what we make in it, so fine above ours
    assert gen_cache.distrust(shared / "ours") == ""
    # ... but not as the cache itself: others may add names to it (a `metrics` link, say) that we would use
    assert "writable by others (mode 1777)" in gen_cache.distrust(shared)


def test_a_link_another_user_planted_in_a_sticky_folder_is_not_trusted(tmp_path, outside):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    link = sticky / "cache"
    os.symlink(outside, link)
    assert files.untrusted(link) == ""  # our own link to our own folder
    os.lchown(link, NOBODY, NOBODY)  # as if uid 65534 had planted it (root may lchown)
    assert files.untrusted(link) == f"{link} is a link owned by uid {NOBODY}, not by us (uid 0)"
    assert files.untrusted(link / "models") != ""
    assert "link owned by uid" in gen_cache.distrust(link)


def test_a_fifo_at_the_sheet_lock_is_refused_not_waited_on(tmp_path):
    import threading

    from pytest_ftmodel.human import modify_sheet

    sheet = tmp_path / "review" / "sheet.json"
    sheet.parent.mkdir()
    os.mkfifo(sheet.with_name(".sheet.json.lock"))
    raised: list[BaseException] = []

    def review() -> None:
        try:
            modify_sheet(sheet, "evaluation", lambda s: None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            raised.append(exc)

    worker = threading.Thread(target=review, daemon=True)  # a blocked open must not hold the test run
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening the lock waited on a FIFO"
    assert len(raised) == 1 and isinstance(raised[0], DataError)
    assert "is not a regular file, refused as the sheet's lock: remove it" in str(raised[0])


def test_the_demo_command_writes_no_file_through_a_planted_link(tmp_path, outside):
    """`pytest-ftmodel demo DIR` into a folder another user could write: a link at one of the model's
    files is replaced, a link where a model folder belongs is refused, and their targets stay as they were."""
    from pytest_ftmodel import demo

    config = victim(outside, "config")
    fresh = outside / "new-file"
    out = tmp_path / "demo"
    plant(out / "bpe" / "base" / "config.json", config)
    plant(out / "bpe" / "base" / "tokenizer.json", fresh)
    pair = demo.build_demo("bpe", out)
    assert config.read_text() == PRECIOUS and not fresh.exists()
    assert not (out / "bpe" / "base" / "config.json").is_symlink()
    shipped = demo.shipped_demo("bpe")
    assert (pair.base / "config.json").read_bytes() == (shipped.base / "config.json").read_bytes()

    elsewhere = outside / "models"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "demo2")  # the folder the user names may be a link: theirs to make
    (tmp_path / "demo2" / "byte").symlink_to(elsewhere)  # a link where a model folder belongs is not
    with pytest.raises(files.LinkRefused):
        demo.build_demo("byte", tmp_path / "demo2")
    assert [p.name for p in elsewhere.iterdir()] == ["byte"]  # nothing written into it but the planted link
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "demo", str(tmp_path / "demo2"), "--family", "byte"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"pytest-ftmodel demo: {tmp_path / 'demo2' / 'byte'}: a symbolic link where a folder is created (refused, not followed)"
    )


def test_a_cache_entry_another_user_owns_is_not_served(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to uid 65534")
    cache = GenerationCache(tmp_path / "gen")
    cache.put("ab" + "0" * 62, ["ours"])
    assert cache.get("ab" + "0" * 62) == ["ours"]
    os.chown(cache._path("ab" + "0" * 62), NOBODY, NOBODY)
    with pytest.warns(CacheWarning, match=rf"ignoring generation cache file .*: owned by uid {NOBODY}, not by us .*; it will be rebuilt"):
        assert cache.get("ab" + "0" * 62) is None


def test_the_plugin_does_not_use_a_cache_folder_others_can_write(pytester, tmp_path):
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(0o777)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--ftmodel-cache-dir", str(shared / "answers"), "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*CacheWarning: not using the cache {shared / 'answers'}: {shared} is writable by others (mode 777)*"])
    assert not (shared / "answers").exists()
