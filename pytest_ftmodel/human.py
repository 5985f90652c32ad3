"""Human evaluation sheets and blinded A/B sheets: built by code, filled by people, read by gates.

A sheet belongs to one model version (its fingerprint). Building it again never loses a score: items
already scored for the same fingerprint are kept as they are; when the model changed, the old sheet
is set aside under a new name (never deleted) and a new one is started. Every write goes to a
temporary file first and is then renamed into place, so a crash or Ctrl-C leaves either the old or
the new file, whole.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pytest_ftmodel._stack import SessionStack
from pytest_ftmodel.errors import DataError

CRITERIA = ("accuracy", "relevance", "fluency", "format")
EVAL_FORMAT = "pytest-ftmodel/evaluation-sheet"
AB_FORMAT = "pytest-ftmodel/ab-sheet"
CHOICES = ("A", "B", "tie")


# ---- files ------------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


def read_sheet(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Load and check a sheet; any problem is a DataError naming the item and the fix (file untouched)."""
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
    for item in sheet["items"]:
        if not isinstance(item, dict) or "id" not in item:
            raise DataError(f"{p}: an item without an id; restore it from version control")
        (_check_scores if kind == EVAL_FORMAT else _check_judgements)(p, item)
    return sheet


def _check_scores(path: Path, item: dict[str, Any]) -> None:
    scores = item.get("scores")
    if not isinstance(scores, dict):
        raise DataError(f"{path}: item {item['id']!r} has no scores object; restore it as {{\"accuracy\": null, ...}}")
    for criterion, value in scores.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 5 or value != int(value):
            raise DataError(f"{path}: item {item['id']!r} scores {criterion} = {value!r}; use a whole number 1-5, or null for not yet scored")


def _check_judgements(path: Path, item: dict[str, Any]) -> None:
    judgements = item.get("judgements")
    if not isinstance(judgements, list):
        raise DataError(f"{path}: item {item['id']!r} has no judgements list; restore it as []")
    for j in judgements:
        if not isinstance(j, dict) or j.get("choice") not in CHOICES or not j.get("judge"):
            raise DataError(
                f"{path}: item {item['id']!r} has judgement {j!r}; each needs a judge name and a choice of A, B or tie"
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
    chosen = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    sheet: dict[str, Any]
    if p.exists():
        sheet = read_sheet(p, EVAL_FORMAT)
        if sheet.get("model", {}).get("fingerprint") != model.fingerprint:
            _set_aside(p, str(sheet.get("model", {}).get("fingerprint", "unknown")))
            sheet = {}
    else:
        sheet = {}
    if not sheet:
        sheet = {
            "format": EVAL_FORMAT,
            "version": 1,
            "model": {"path": str(model.path), "fingerprint": model.fingerprint},
            "seed": seed,
            "criteria": list(criteria),
            "items": [],
        }
    have = {it["id"] for it in sheet["items"]}
    new = [(i, items[i]) for i in chosen if _item_id(items[i], i) not in have]
    if new:
        answers = generate(model, [_prompt_of(x, prompt_key) for _, x in new], max_new_tokens=max_new_tokens, **generate_kwargs)
        for (i, x), answer in zip(new, answers):
            sheet["items"].append(
                {
                    "id": _item_id(x, i),
                    "prompt": _prompt_of(x, prompt_key),
                    "expected": x.get(reference_key) if isinstance(x, dict) else None,
                    "generated": answer,
                    "scores": {c: None for c in sheet["criteria"]},
                    "notes": "",
                    "reviewer": None,
                }
            )
    write_atomic(p, sheet)
    return p


def is_scored(item: dict[str, Any]) -> bool:
    return all(v is not None for v in item["scores"].values())


@dataclass(frozen=True)
class HumanScores:
    path: Path
    fingerprint: str
    n_items: int
    n_scored: int
    means: dict[str, float]
    lowest: tuple[dict[str, Any], ...]


def human_scores(path: str | os.PathLike[str], *, model: Any = None) -> HumanScores:
    """Means per criterion over the fully scored items of a sheet (checked against ``model``)."""
    sheet = read_sheet(path, EVAL_FORMAT)
    fp = sheet.get("model", {}).get("fingerprint", "")
    if model is not None and fp != model.fingerprint:
        raise DataError(
            f"{path}: sheet is for model fingerprint {fp}, not {model.fingerprint} (the model changed): "
            "run evaluation_sheet() again to set it aside and start a new one"
        )
    scored = [it for it in sheet["items"] if is_scored(it)]
    criteria = sheet.get("criteria") or list(CRITERIA)
    means = {c: sum(it["scores"][c] for it in scored) / len(scored) for c in criteria} if scored else {}
    lowest = tuple(sorted(scored, key=lambda it: (sum(it["scores"].values()), it["id"]))[:3])
    return HumanScores(Path(path), fp, len(sheet["items"]), len(scored), means, lowest)


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
    sheet: dict[str, Any] = {}
    key: dict[str, Any] = {}
    if p.exists():
        sheet = read_sheet(p, AB_FORMAT)
        key = json.loads(key_path.read_text()) if key_path.exists() else {}
        if key.get("fingerprints") != pair:
            tag = f"{key.get('fingerprints', {}).get('model', 'unknown')}"
            _set_aside(p, tag)
            if key_path.exists():
                _set_aside(key_path, tag)
            sheet, key = {}, {}
    if not sheet:
        sheet = {"format": AB_FORMAT, "version": 1, "seed": seed, "items": []}
        key = {"fingerprints": pair, "a_is": {}}
    have = {it["id"] for it in sheet["items"]}
    new = [(i, x) for i, x in enumerate(items) if _item_id(x, i) not in have]
    if new:
        texts = [_prompt_of(x, prompt_key) for _, x in new]
        mine = generate(model, texts, max_new_tokens=max_new_tokens, **generate_kwargs)
        theirs = generate(base, texts, max_new_tokens=max_new_tokens, **generate_kwargs)
        for (i, x), prompt, m, b in zip(new, texts, mine, theirs):
            item_id = _item_id(x, i)
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
    disagree (position bias) the judgement is a tie. Returns how many items were judged."""
    p = Path(path)
    sheet = read_sheet(p, AB_FORMAT)
    done = 0
    for item in sheet["items"]:
        if any(j["judge"] == name for j in item["judgements"]):
            continue
        forward = compare(item["prompt"], item["A"], item["B"], item.get("expected"))
        backward = compare(item["prompt"], item["B"], item["A"], item.get("expected"))
        as_a = {"first": "A", "second": "B", "tie": "tie"}[forward]
        as_b = {"first": "B", "second": "A", "tie": "tie"}[backward]
        choice = as_a if as_a == as_b else "tie"
        reason = "" if as_a == as_b else f"orders disagree ({as_a} first, {as_b} swapped): position bias"
        item["judgements"].append({"judge": name, "choice": choice, "reason": reason})
        done += 1
    write_atomic(p, sheet)
    return done


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

    @property
    def decided(self) -> int:
        return self.model_wins + self.base_wins


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of a subjects x categories table of rating counts (equal raters per subject)."""
    rows = [list(map(float, r)) for r in table]
    n = sum(rows[0])
    N = len(rows)
    p_j = [sum(r[j] for r in rows) / (N * n) for j in range(len(rows[0]))]
    P_i = [(sum(x * x for x in r) - n) / (n * (n - 1)) for r in rows]
    P_bar, P_e = sum(P_i) / N, sum(p * p for p in p_j)
    return 1.0 if P_e == 1 else (P_bar - P_e) / (1 - P_e)


def ab_result(path: str | os.PathLike[str]) -> ABResult:
    """Win rate of the fine-tuned model over decided comparisons, across all judges and items."""
    from scipy.stats import binomtest

    from pytest_ftmodel.metrics.stats import proportion_interval

    p = Path(path)
    sheet = read_sheet(p, AB_FORMAT)
    key_path = _key_path(p)
    try:
        a_is = json.loads(key_path.read_text())["a_is"]
    except (OSError, ValueError, KeyError):
        raise DataError(f"{key_path}: the A/B key (which side is the fine-tuned model) is missing or broken; rebuild with ab_sheet()") from None
    outcome: dict[str, dict[str, str]] = {}
    counts = {"model": 0, "base": 0, "tie": 0}
    for item in sheet["items"]:
        side_a = a_is.get(item["id"])
        if side_a is None:
            raise DataError(f"{p}: item {item['id']!r} is not in the key {key_path.name}; rebuild with ab_sheet()")
        for j in item["judgements"]:
            who = "tie" if j["choice"] == "tie" else (side_a if j["choice"] == "A" else ("base" if side_a == "model" else "model"))
            counts[who] += 1
            outcome.setdefault(j["judge"], {})[item["id"]] = who
    decided = counts["model"] + counts["base"]
    judges = tuple(sorted(outcome))
    agreement, kind = None, None
    common = set.intersection(*(set(v) for v in outcome.values())) if len(judges) >= 2 else set()
    if len(judges) == 2 and common:
        from sklearn.metrics import cohen_kappa_score

        ids = sorted(common)
        a, b = [outcome[judges[0]][i] for i in ids], [outcome[judges[1]][i] for i in ids]
        agreement = 1.0 if a == b else float(cohen_kappa_score(a, b, labels=["model", "base", "tie"]))
        kind = "Cohen's kappa"
    elif len(judges) > 2 and common:
        cats = ["model", "base", "tie"]
        table = [[sum(outcome[j][i] == c for j in judges) for c in cats] for i in sorted(common)]
        agreement, kind = fleiss_kappa(table), "Fleiss' kappa"
    return ABResult(
        model_wins=counts["model"],
        base_wins=counts["base"],
        ties=counts["tie"],
        win_rate=counts["model"] / decided if decided else float("nan"),
        interval=proportion_interval(counts["model"], decided),
        p_value=float(binomtest(counts["model"], decided, 0.5).pvalue) if decided else 1.0,
        judges=judges,
        agreement=agreement,
        agreement_kind=kind,
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
        f"run python -m pytest_ftmodel review {result.path}"
    )
