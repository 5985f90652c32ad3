"""Human evaluation sheets and blinded A/B sheets: built by code, filled by people, read by gates.

A sheet belongs to one model version (its fingerprint). Building it again never loses a score: items
already scored for the same fingerprint are kept as they are; when the model changed, the old sheet
is set aside under a new name (never deleted) and a new one is started. Every write goes to a
temporary file first and is then renamed into place, so a crash or Ctrl-C leaves either the old or
the new file, whole. Every change made by a person (the review commands, the review page) re-reads
the sheet under a lock and changes only that person's answer to that item, so several reviewers at
once, in terminals or browser tabs, lose nothing.

An evaluation item keeps one review per reviewer: ``"reviews": {"ana": {"scores": {...}, "notes": ""}}``
(format version 2). Version-1 items (``"scores"``, ``"notes"``, ``"reviewer"``) are read as the
review of that reviewer, and written back as version 2 the next time the sheet is saved.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from pytest_ftmodel import files
from pytest_ftmodel._stack import SessionStack
from pytest_ftmodel.errors import DataError

CRITERIA = ("accuracy", "relevance", "fluency", "format")
EVAL_FORMAT = "pytest-ftmodel/evaluation-sheet"
AB_FORMAT = "pytest-ftmodel/ab-sheet"
CHOICES = ("A", "B", "tie")
JUDGE_KINDS = ("human", "auto")
UNNAMED = "unnamed"  # the reviewer of a version-1 item that recorded none
MAX_NAME = 100
MAX_TEXT = 20_000

T = TypeVar("T")


# ---- files ------------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write the sheet ``data`` as a whole, durably, never through a planted link (see :mod:`pytest_ftmodel.files`);
    private to its owner (0600), as sheets and A/B keys have always been written."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    return files.write_atomic(path, text, mode=0o600, durable=True)


@contextlib.contextmanager
def sheet_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.lock`` beside the sheet (between processes and threads).
    A link planted at that name is refused, never followed to create its target."""
    p = Path(path)
    lock = p.with_name(f".{p.name}.lock")
    try:
        with files.locked(lock):
            yield
    except files.LinkRefused as exc:
        what = "a symbolic link" if exc.errno == errno.ELOOP else "not a regular file"
        raise DataError(f"{lock} is {what}, refused as the sheet's lock: remove it (someone may have planted it)") from exc


def modify_sheet(path: str | os.PathLike[str], kind: str, change: Callable[[dict[str, Any]], T]) -> T:
    """Read the sheet as it is on disk now, apply ``change`` and write it back, all under the lock.
    When ``change`` raises, nothing is written."""
    with sheet_lock(path):
        sheet = read_sheet(path, kind)
        result = change(sheet)
        write_atomic(path, sheet)
    return result


def read_sheet(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Load and check a sheet; any problem is a DataError naming the item and the fix (file untouched).
    Evaluation items come back in the version-2 shape (one review per reviewer)."""
    p = Path(path)
    try:
        sheet = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"no sheet at {str(p)!r}: build it first (evaluation_sheet / ab_sheet)") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix it by hand, the scores in it are kept"
        ) from None
    if not isinstance(sheet, dict) or sheet.get("format") != kind or not isinstance(sheet.get("items"), list):
        raise DataError(f"{p}: not a {kind} file (format field missing or different)")
    seen: set[str] = set()
    for item in sheet["items"]:
        if not isinstance(item, dict) or "id" not in item:
            raise DataError(f"{p}: an item without an id; restore it from version control")
        if item["id"] in seen:
            raise DataError(f"{p}: item id {item['id']!r} appears twice; merge the two items by hand")
        seen.add(item["id"])
        if kind == EVAL_FORMAT:
            _check_reviews(p, item)
        else:
            _check_judgements(p, item)
    if kind == EVAL_FORMAT:
        sheet["version"] = 2
        if not sheet.get("criteria"):
            sheet["criteria"] = list(CRITERIA)
    return sheet


def _check_score_values(path: Path, item_id: Any, who: str, scores: Any) -> None:
    if not isinstance(scores, dict):
        raise DataError(f"{path}: item {item_id!r}{who} has no scores object; restore it as {{\"accuracy\": null, ...}}")
    for criterion, value in scores.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 5 or value != int(value):
            raise DataError(f"{path}: item {item_id!r}{who} scores {criterion} = {value!r}; use a whole number 1-5, or null for not yet scored")


def _is_score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 5


def _check_auto_review(path: Path, item_id: Any, name: str, review: dict[str, Any]) -> None:
    """A judge's review as judge_sheet writes it (a hand edit may have broken it): per criterion a
    score in [1, 5] or null ("weighted"), and a list of such scores ("repeats")."""
    weighted, repeats = review.get("weighted", {}), review.get("repeats", {})
    bad = None
    if not isinstance(weighted, dict):
        bad = f"weighted {weighted!r:.40}"
    elif not isinstance(repeats, dict):
        bad = f"repeats {repeats!r:.40}"
    else:
        bad = next((f"weighted {c} = {v!r:.40}" for c, v in weighted.items() if v is not None and not _is_score(v)), None)
        bad = bad or next(
            (f"repeats {c} = {v!r:.40}" for c, v in repeats.items()
             if not isinstance(v, list) or any(x is not None and not _is_score(x) for x in v)),
            None,
        )
    if bad is not None:
        raise DataError(
            f"{path}: item {item_id!r} (judge {name!r}) has {bad}; a judge's scores are numbers 1-5 or null: "
            "delete that review and run judge_sheet(sheet, judge) again"
        )


def _check_reviews(path: Path, item: dict[str, Any]) -> None:
    """Check an evaluation item and bring a version-1 item to the version-2 shape, in place."""
    if "reviews" not in item:  # version 1: one set of scores, one reviewer (maybe none)
        _check_score_values(path, item["id"], "", item.get("scores"))
        scores = {k: (None if v is None else int(v)) for k, v in item.pop("scores").items()}
        notes = str(item.pop("notes", "") or "")
        reviewer = str(item.pop("reviewer", None) or UNNAMED)
        given = any(v is not None for v in scores.values()) or notes
        item["reviews"] = {reviewer: {"scores": scores, "notes": notes}} if given else {}
        return
    reviews = item["reviews"]
    if "scores" in item or "reviewer" in item:
        raise DataError(
            f"{path}: item {item['id']!r} has both reviews and a version-1 scores/reviewer field; "
            "move those scores into reviews as {\"NAME\": {\"scores\": ..., \"notes\": ...}}"
        )
    if not isinstance(reviews, dict):
        raise DataError(f"{path}: item {item['id']!r} has reviews {reviews!r:.60}; it must map reviewer names to {{\"scores\": ..., \"notes\": ...}}")
    for name, review in reviews.items():
        if not name or not isinstance(review, dict):
            raise DataError(f"{path}: item {item['id']!r} has a review {name!r}: {review!r:.60}; each needs a reviewer name and {{\"scores\": ..., \"notes\": ...}}")
        _check_score_values(path, item["id"], f" (reviewer {name!r})", review.get("scores"))
        if review.get("kind", "human") not in JUDGE_KINDS:
            raise DataError(f"{path}: item {item['id']!r} (reviewer {name!r}) has kind {review.get('kind')!r:.30}; use human or auto")
        if review.get("kind") == "auto":
            _check_auto_review(path, item["id"], name, review)
        review["scores"] = {k: (None if v is None else int(v)) for k, v in review["scores"].items()}
        if not isinstance(review.setdefault("notes", ""), str):
            raise DataError(f"{path}: item {item['id']!r} (reviewer {name!r}) has notes {review['notes']!r:.60}; notes are text")


def _check_judgements(path: Path, item: dict[str, Any]) -> None:
    judgements = item.get("judgements")
    if not isinstance(judgements, list):
        raise DataError(f"{path}: item {item['id']!r} has no judgements list; restore it as []")
    for j in judgements:
        if not isinstance(j, dict) or j.get("choice") not in CHOICES or not j.get("judge") or j.get("kind", "human") not in JUDGE_KINDS:
            raise DataError(
                f"{path}: item {item['id']!r} has judgement {j!r}; each needs a judge name, a choice of A, B or tie "
                "and (optional) a kind of human or auto"
            )


def _set_aside(path: Path, fingerprint: str) -> Path:
    """Keep an outdated sheet under a new name (never deleted) and return that name."""
    target = path.with_name(f"{path.stem}.{fingerprint}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{fingerprint}.{n}{path.suffix}")
        n += 1
    os.replace(path, target)
    return target


def _item_id(item: Any, index: int) -> str:
    if isinstance(item, dict) and item.get("id") is not None:
        return str(item["id"])
    return f"item-{index}"


def _prompt_of(item: Any, prompt_key: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and prompt_key in item:
        return str(item[prompt_key])
    raise DataError(f"item {item!r:.60} has no {prompt_key!r}: pass strings or records with prompt_key")


def _find(sheet: dict[str, Any], item_id: Any) -> dict[str, Any]:
    for item in sheet["items"]:
        if item["id"] == item_id:
            return item
    raise DataError(f"no item {item_id!r} in the sheet")


def check_name(name: Any, what: str = "reviewer") -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise DataError(f"the {what}'s name must be non-empty text of at most {MAX_NAME} characters, not {name!r:.60}")
    return name.strip()


def _check_text(text: Any, what: str) -> str:
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise DataError(f"{what} must be text of at most {MAX_TEXT} characters")
    return text


# ---- evaluation sheets ------------------------------------------------------------------------


def evaluation_sheet(
    model: Any,
    data: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    n: int = 50,
    seed: int = 0,
    prompt_key: str = "instruction",
    reference_key: str = "output",
    criteria: Sequence[str] = CRITERIA,
    max_new_tokens: int = 256,
    **generate_kwargs: Any,
) -> Path:
    """Write (or extend) the evaluation sheet at ``path`` for ``n`` items sampled with ``seed``.

    Items already in a sheet of the same model fingerprint keep their answers and scores; a sheet of
    another fingerprint is set aside as ``NAME.<old fingerprint>.json`` and a new one begun.
    """
    from pytest_ftmodel.generation import generate

    items = list(data)
    if not items:
        raise DataError("no data to sample for the evaluation sheet")
    p = Path(path)
    # a prefix of one seeded permutation: a larger n extends the sample (random.sample's own draws
    # change with its size, so the items of n=5 need not be among those of n=10)
    chosen = sorted(random.Random(seed).sample(range(len(items)), len(items))[: min(n, len(items))])
    have: set[str] = set()
    with sheet_lock(p):
        if p.exists():
            sheet = read_sheet(p, EVAL_FORMAT)
            if sheet.get("model", {}).get("fingerprint") != model.fingerprint:
                _set_aside(p, str(sheet.get("model", {}).get("fingerprint", "unknown")))
            else:
                have = {it["id"] for it in sheet["items"]}
    new = [(i, items[i]) for i in chosen if _item_id(items[i], i) not in have]
    answers = generate(model, [_prompt_of(x, prompt_key) for _, x in new], max_new_tokens=max_new_tokens, **generate_kwargs) if new else []
    fresh = [
        {
            "id": _item_id(x, i),
            "prompt": _prompt_of(x, prompt_key),
            "expected": x.get(reference_key) if isinstance(x, dict) else None,
            "generated": answer,
            "reviews": {},
        }
        for (i, x), answer in zip(new, answers)
    ]
    with sheet_lock(p):  # reviewers may have scored items while the answers were generated: merge
        sheet = read_sheet(p, EVAL_FORMAT) if p.exists() else {}
        if sheet.get("model", {}).get("fingerprint") != model.fingerprint:
            sheet = {
                "format": EVAL_FORMAT,
                "version": 2,
                "model": {"path": str(model.path), "fingerprint": model.fingerprint},
                "seed": seed,
                "criteria": list(criteria),
                "items": [],
            }
        present = {it["id"] for it in sheet["items"]}
        sheet["items"].extend(it for it in fresh if it["id"] not in present)
        write_atomic(p, sheet)
    return p


def complete_reviews(item: dict[str, Any], criteria: Sequence[str], *, kind: str = "human") -> dict[str, dict[str, Any]]:
    """The reviews of an item that score every criterion, by reviewer: people's (``kind="human"``),
    or automated judges' (``"auto"``, written by :func:`~pytest_ftmodel.judges.judge_sheet`)."""
    return {
        name: r for name, r in item["reviews"].items()
        if r.get("kind", "human") == kind and all(r["scores"].get(c) is not None for c in criteria)
    }


def is_scored(item: dict[str, Any], criteria: Sequence[str], reviewer: str | None = None) -> bool:
    """Whether ``reviewer`` (anyone, when None) has scored every criterion of the item."""
    done = complete_reviews(item, criteria)
    return bool(done) if reviewer is None else reviewer in done


def set_review(
    path: str | os.PathLike[str],
    item_id: Any,
    reviewer: str,
    *,
    scores: dict[str, Any] | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """Set some of one reviewer's scores (a value of None clears it) and/or notes on one item, merged
    into the sheet as it is on disk now; returns that reviewer's review of the item. Bad input is a
    DataError and the sheet is not touched."""
    reviewer = check_name(reviewer)
    if notes is not None:
        notes = _check_text(notes, "notes")
    if scores is not None and not isinstance(scores, dict):
        raise DataError("scores must map criteria to a whole number 1-5 or null")

    def change(sheet: dict[str, Any]) -> dict[str, Any]:
        item = _find(sheet, item_id)
        criteria = sheet["criteria"]
        for criterion, value in (scores or {}).items():
            if criterion not in criteria:
                raise DataError(f"no criterion {criterion!r}: the sheet has {', '.join(criteria)}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5):
                raise DataError(f"{criterion} = {value!r}: use a whole number 1-5, or null to clear it")
        if item["reviews"].get(reviewer, {}).get("kind") == "auto":
            raise DataError(f"{reviewer!r} is an automated judge of this sheet; review under your own name")
        review = item["reviews"].setdefault(reviewer, {"scores": {c: None for c in criteria}, "notes": ""})
        review["scores"].update(scores or {})
        if notes is not None:
            review["notes"] = notes
        return dict(review)

    return modify_sheet(path, EVAL_FORMAT, change)


@dataclass(frozen=True)
class HumanScores:
    path: Path
    fingerprint: str
    n_items: int
    n_scored: int  # items that at least one reviewer scored on every criterion
    means: dict[str, float]  # per criterion: the mean over scored items of each item's mean over its reviewers
    lowest: tuple[dict[str, Any], ...]  # {"id", "prompt", "scores" (item means), "notes"}, lowest total first
    reviewers: tuple[str, ...] = ()
    n_multi: int = 0  # scored items with two or more complete reviews
    agreement: dict[str, float | None] | None = None  # Krippendorff's alpha (ordinal) per criterion
    agreement_kind: str | None = None
    #: every scored item, as in ``lowest`` (with "expected"), in the sheet's order
    items: tuple[dict[str, Any], ...] = ()


def krippendorff_alpha_ordinal(matrix: Sequence[Sequence[float | None]]) -> float | None:
    """Krippendorff's alpha, ordinal metric, of a reviewers x items matrix (None = not scored).
    None when it is undefined: fewer than two pairable values, or every pairable value the same."""
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = pairable[~np.isnan(pairable)]
    if values.size < 2 or np.unique(values).size < 2:
        return None
    import krippendorff

    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5]))


def human_scores(path: str | os.PathLike[str], *, model: Any = None) -> HumanScores:
    """Means per criterion over the scored items of a sheet (checked against ``model``), and the
    agreement between reviewers where items have several."""
    sheet = read_sheet(path, EVAL_FORMAT)
    fp = sheet.get("model", {}).get("fingerprint", "")
    if model is not None and fp != model.fingerprint:
        raise DataError(
            f"{path}: sheet is for model fingerprint {fp}, not {model.fingerprint} (the model changed): "
            "run evaluation_sheet() again to set it aside and start a new one"
        )
    criteria = list(sheet["criteria"])
    per_item = []
    for item in sheet["items"]:
        done = complete_reviews(item, criteria)
        if done:
            item_means = {c: sum(r["scores"][c] for r in done.values()) / len(done) for c in criteria}
            notes = "; ".join(r["notes"] for r in done.values() if r["notes"])
            per_item.append({
                "id": item["id"], "prompt": item["prompt"], "expected": item.get("expected"), "generated": item.get("generated"),
                "scores": item_means, "notes": notes, "n_reviews": len(done),
            })
    means = {c: sum(it["scores"][c] for it in per_item) / len(per_item) for c in criteria} if per_item else {}
    lowest = tuple(sorted(per_item, key=lambda it: (sum(it["scores"].values()), it["id"]))[:3])
    reviewers = tuple(sorted({name for item in sheet["items"] for name in complete_reviews(item, criteria)}))
    n_multi = sum(it["n_reviews"] >= 2 for it in per_item)
    agreement: dict[str, float | None] | None = None
    if n_multi:
        complete = [complete_reviews(item, criteria) for item in sheet["items"]]
        agreement = {
            c: krippendorff_alpha_ordinal([[done[r]["scores"][c] if r in done else None for done in complete] for r in reviewers])
            for c in criteria
        }
    return HumanScores(
        Path(path), fp, len(sheet["items"]), len(per_item), means, lowest,
        reviewers=reviewers, n_multi=n_multi, agreement=agreement,
        agreement_kind="Krippendorff's alpha (ordinal)" if agreement is not None else None,
        items=tuple(per_item),
    )


# ---- A/B sheets -------------------------------------------------------------------------------


def _key_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.key{path.suffix}")


def ab_sheet(
    model: Any,
    base: Any,
    prompts: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    prompt_key: str = "instruction",
    reference_key: str = "output",
    max_new_tokens: int = 256,
    **generate_kwargs: Any,
) -> Path:
    """A blinded A/B sheet: both answers per prompt, in an order shuffled per item with ``seed``.

    Which side is the fine-tuned model is stored in ``NAME.key.json`` beside the sheet, not in it, so
    reviewers who open the sheet do not see it. Judgements already given for the same two models are
    kept; when either model changed, both files are set aside and a new sheet begun.
    """
    from pytest_ftmodel.generation import generate

    items = list(prompts)
    if not items:
        raise DataError("no prompts for the A/B sheet")
    p, key_path = Path(path), _key_path(Path(path))
    pair = {"model": model.fingerprint, "base": base.fingerprint}
    have: set[str] = set()
    with sheet_lock(p):
        if p.exists():
            sheet = read_sheet(p, AB_FORMAT)
            key = json.loads(key_path.read_text()) if key_path.exists() else {}
            if key.get("fingerprints") != pair:
                tag = f"{key.get('fingerprints', {}).get('model', 'unknown')}"
                _set_aside(p, tag)
                if key_path.exists():
                    _set_aside(key_path, tag)
            else:
                have = {it["id"] for it in sheet["items"]}
    new = [(i, x) for i, x in enumerate(items) if _item_id(x, i) not in have]
    texts = [_prompt_of(x, prompt_key) for _, x in new]
    mine = generate(model, texts, max_new_tokens=max_new_tokens, **generate_kwargs) if new else []
    theirs = generate(base, texts, max_new_tokens=max_new_tokens, **generate_kwargs) if new else []
    with sheet_lock(p):  # reviewers may have judged items meanwhile: merge
        if p.exists():
            sheet = read_sheet(p, AB_FORMAT)
            key = json.loads(key_path.read_text()) if key_path.exists() else {"fingerprints": pair, "a_is": {}}
        else:
            sheet = {"format": AB_FORMAT, "version": 2, "seed": seed, "items": []}
            key = {"fingerprints": pair, "a_is": {}}
        present = {it["id"] for it in sheet["items"]}
        for (i, x), prompt, m, b in zip(new, texts, mine, theirs):
            item_id = _item_id(x, i)
            if item_id in present:
                continue
            a_is_model = random.Random(f"{seed}:{item_id}").random() < 0.5
            key["a_is"][item_id] = "model" if a_is_model else "base"
            sheet["items"].append(
                {
                    "id": item_id,
                    "prompt": prompt,
                    "expected": x.get(reference_key) if isinstance(x, dict) else None,
                    "A": m if a_is_model else b,
                    "B": b if a_is_model else m,
                    "judgements": [],
                }
            )
        write_atomic(key_path, key)
        write_atomic(p, sheet)
    return p


def judge_ab(
    path: str | os.PathLike[str],
    compare: Callable[[str, str, str, str | None], str],
    *,
    name: str,
) -> int:
    """Judge every item this judge has not judged yet, with ``compare(prompt, first, second, expected)``
    returning "first", "second" or "tie". Each item is compared in both orders; when the two orders
    disagree (position bias) the judgement is a tie. The judgements are recorded as an automated
    judge's (``"kind": "auto"``), merged into the sheet as it is on disk when judging ends. Returns
    how many items were judged."""
    p = Path(path)
    sheet = read_sheet(p, AB_FORMAT)
    verdicts: dict[str, dict[str, str]] = {}
    for item in sheet["items"]:
        if any(j["judge"] == name for j in item["judgements"]):
            continue
        forward = compare(item["prompt"], item["A"], item["B"], item.get("expected"))
        backward = compare(item["prompt"], item["B"], item["A"], item.get("expected"))
        as_a = {"first": "A", "second": "B", "tie": "tie"}[forward]
        as_b = {"first": "B", "second": "A", "tie": "tie"}[backward]
        choice = as_a if as_a == as_b else "tie"
        reason = "" if as_a == as_b else f"orders disagree ({as_a} first, {as_b} swapped): position bias"
        verdicts[item["id"]] = {"judge": name, "kind": "auto", "choice": choice, "reason": reason}

    def add(current: dict[str, Any]) -> int:
        added = 0
        for item in current["items"]:
            if item["id"] in verdicts and not any(j["judge"] == name for j in item["judgements"]):
                item["judgements"].append(verdicts[item["id"]])
                added += 1
        return added

    return modify_sheet(p, AB_FORMAT, add)


def set_judgement(
    path: str | os.PathLike[str],
    item_id: Any,
    judge: str,
    *,
    choice: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Set a person's choice and/or reason on one item (one judgement per person and item, others'
    untouched), merged into the sheet as it is on disk now; returns that judgement."""
    judge = check_name(judge, "judge")
    if choice is not None and choice not in CHOICES:
        raise DataError(f"choice {choice!r:.20}: use A, B or tie")
    if reason is not None:
        reason = _check_text(reason, "the reason")

    def change(sheet: dict[str, Any]) -> dict[str, Any]:
        item = _find(sheet, item_id)
        mine = next((j for j in item["judgements"] if j["judge"] == judge), None)
        if mine is None:
            if choice is None:
                raise DataError(f"item {item_id!r}: choose A, B or tie before giving a reason")
            mine = {"judge": judge, "kind": "human", "choice": choice, "reason": ""}
            item["judgements"].append(mine)
        if mine.get("kind") == "auto":
            raise DataError(f"{judge!r} is an automated judge of this sheet; judge under your own name")
        if choice is not None:
            mine["choice"] = choice
        if reason is not None:
            mine["reason"] = reason
        return dict(mine)

    return modify_sheet(path, AB_FORMAT, change)


def reference_judge(margin: float = 0.02) -> Callable[[str, str, str, str | None], str]:
    """The answer closer to the expected output by ROUGE-L wins; within ``margin``, a tie."""
    from pytest_ftmodel.metrics.text import rouge_scores

    def compare(prompt: str, first: str, second: str, expected: str | None) -> str:
        if expected is None:
            raise DataError("the reference judge needs an expected output per item: build the A/B sheet from records with one")
        f, s = (x["rougeL"] for x in rouge_scores([first, second], [expected, expected]))
        return "tie" if abs(f - s) <= margin else ("first" if f > s else "second")

    return compare


JUDGE_PROMPT = (
    "You compare two answers to the same request.\n\nRequest:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
    "Which answer is better? Reply with exactly one of: A, B, tie."
)


def model_judge(judge: Any, *, max_new_tokens: int = 8) -> Callable[[str, str, str, str | None], str]:
    """Any local causal LM (an FTModel from load_model) asked a fixed comparison prompt, greedily."""
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.text import extract_label

    def compare(prompt: str, first: str, second: str, expected: str | None) -> str:
        [answer] = generate(judge, [JUDGE_PROMPT.format(prompt=prompt, first=first, second=second)], max_new_tokens=max_new_tokens)
        choice = extract_label(answer, ["A", "B", "tie"])
        return {"A": "first", "B": "second"}.get(choice or "tie", "tie")

    return compare


@dataclass(frozen=True)
class JudgeAgreement:
    """How an automated judge agrees with people: Cohen's kappa against the human majority verdict
    on the ``overlap`` items both judged (None when there is no overlap)."""

    judge: str
    kappa: float | None
    overlap: int


@dataclass(frozen=True)
class ABResult:
    model_wins: int
    base_wins: int
    ties: int
    win_rate: float  # model wins / decided comparisons
    interval: tuple[float, float]  # Clopper-Pearson 95%
    p_value: float  # two-sided binomial (sign) test against 50%
    judges: tuple[str, ...]
    agreement: float | None  # Cohen's kappa (two judges) or Fleiss' kappa (more)
    agreement_kind: str | None
    judge: str | None = None  # whose verdicts the counts are; None: every judge's
    calibration: tuple[JudgeAgreement, ...] = ()  # one per automated judge
    humans: tuple[str, ...] = ()
    #: per sheet item: {"id", "prompt", "expected", "model", "base", "tie"} (the counted verdicts)
    items: tuple[dict[str, Any], ...] = ()

    @property
    def decided(self) -> int:
        return self.model_wins + self.base_wins

    def calibration_of(self, judge: str) -> JudgeAgreement | None:
        return next((c for c in self.calibration if c.judge == judge), None)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of a subjects x categories table of rating counts (equal raters per subject)."""
    rows = [list(map(float, r)) for r in table]
    n = sum(rows[0])
    N = len(rows)
    p_j = [sum(r[j] for r in rows) / (N * n) for j in range(len(rows[0]))]
    P_i = [(sum(x * x for x in r) - n) / (n * (n - 1)) for r in rows]
    P_bar, P_e = sum(P_i) / N, sum(p * p for p in p_j)
    return 1.0 if P_e == 1 else (P_bar - P_e) / (1 - P_e)


OUTCOMES = ("model", "base", "tie")


def _kappa(a: list[str], b: list[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    return 1.0 if a == b else float(cohen_kappa_score(a, b, labels=list(OUTCOMES)))


def human_majority(verdicts: Sequence[str]) -> str | None:
    """The verdict more people gave than any other; None when the most given is shared (no majority)."""
    counts = {v: verdicts.count(v) for v in set(verdicts)}
    if not counts:
        return None
    top = max(counts.values())
    leaders = [v for v, c in counts.items() if c == top]
    return leaders[0] if len(leaders) == 1 else None


def ab_result(path: str | os.PathLike[str], *, judge: str | None = None) -> ABResult:
    """Win rate of the fine-tuned model over decided comparisons, across all judges and items (only
    ``judge``'s verdicts when given), and every automated judge's agreement with people."""
    from pytest_ftmodel.metrics.stats import proportion_interval, sign_test_p

    p = Path(path)
    sheet = read_sheet(p, AB_FORMAT)
    key_path = _key_path(p)
    try:
        a_is = json.loads(key_path.read_text())["a_is"]
    except (OSError, ValueError, KeyError):
        raise DataError(f"{key_path}: the A/B key (which side is the fine-tuned model) is missing or broken; rebuild with ab_sheet()") from None
    outcome: dict[str, dict[str, str]] = {}
    automated: set[str] = set()
    counts = {"model": 0, "base": 0, "tie": 0}
    per_item: list[dict[str, Any]] = []
    for item in sheet["items"]:
        side_a = a_is.get(item["id"])
        if side_a is None:
            raise DataError(f"{p}: item {item['id']!r} is not in the key {key_path.name}; rebuild with ab_sheet()")
        mine = {"id": item["id"], "prompt": item.get("prompt"), "expected": item.get("expected"), "model": 0, "base": 0, "tie": 0}
        per_item.append(mine)
        for j in item["judgements"]:
            who = "tie" if j["choice"] == "tie" else (side_a if j["choice"] == "A" else ("base" if side_a == "model" else "model"))
            if judge is None or j["judge"] == judge:
                counts[who] += 1
                mine[who] += 1
            outcome.setdefault(j["judge"], {})[item["id"]] = who
            if j.get("kind") == "auto":
                automated.add(j["judge"])
    if judge is not None:
        automated.add(judge)  # the judge a gate rests on is never counted among the people
        if judge not in outcome:
            raise DataError(f"{p}: no judgement by {judge!r} (judges: {', '.join(sorted(outcome)) or 'none'}); run judge_ab(sheet, ..., name={judge!r})")
    decided = counts["model"] + counts["base"]
    judges = tuple(sorted(outcome))
    humans = tuple(j for j in judges if j not in automated)
    agreement, kind = None, None
    common = set.intersection(*(set(v) for v in outcome.values())) if len(judges) >= 2 else set()
    if len(judges) == 2 and common:
        ids = sorted(common)
        agreement = _kappa([outcome[judges[0]][i] for i in ids], [outcome[judges[1]][i] for i in ids])
        kind = "Cohen's kappa"
    elif len(judges) > 2 and common:
        table = [[sum(outcome[j][i] == c for j in judges) for c in OUTCOMES] for i in sorted(common)]
        agreement, kind = fleiss_kappa(table), "Fleiss' kappa"
    majority = {}
    for item in sheet["items"]:
        verdict = human_majority([outcome[h][item["id"]] for h in humans if item["id"] in outcome[h]])
        if verdict is not None:
            majority[item["id"]] = verdict
    calibration = []
    for name in sorted(automated):
        ids = sorted(set(outcome.get(name, {})) & set(majority))
        kappa = _kappa([outcome[name][i] for i in ids], [majority[i] for i in ids]) if ids else None
        calibration.append(JudgeAgreement(name, kappa, len(ids)))
    return ABResult(
        model_wins=counts["model"],
        base_wins=counts["base"],
        ties=counts["tie"],
        win_rate=counts["model"] / decided if decided else float("nan"),
        interval=proportion_interval(counts["model"], decided),
        p_value=sign_test_p(counts["model"], decided),
        judges=judges,
        agreement=agreement,
        agreement_kind=kind,
        judge=judge,
        calibration=tuple(calibration),
        humans=humans,
        items=tuple(per_item),
    )


# ---- the session's strictness about unfinished review -----------------------------------------

_require: SessionStack[bool] = SessionStack(False)


def require_human() -> bool:
    """Whether the running session fails (rather than skips) unfinished human review."""
    return _require.current()


push_require, pop_require = _require.push, _require.pop


def human_require_message(result: HumanScores, min_scored: int) -> str:
    waiting = result.n_items - result.n_scored
    return (
        f"{waiting} items await review ({result.n_scored} of {result.n_items} scored, {min_scored} needed): "
        f"run python -m pytest_ftmodel review {result.path} (add --web for the review page)"
    )
