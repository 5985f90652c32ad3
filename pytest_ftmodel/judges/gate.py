"""An automated reviewer on an evaluation sheet: :func:`judge_sheet` fills it as the judge's review
(``"kind": "auto"``), merged into the sheet on disk as people's reviews are (nothing a person wrote
is touched); :func:`judge_scores` reads the judge's means, its agreement with people on the items
both scored, its agreement with itself under repeats, and its biases. The gate
(:func:`~pytest_ftmodel.assertions.assert_judge_scores`) rests on the judge's means only once that
agreement is shown."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.human import EVAL_FORMAT, check_name, complete_reviews, modify_sheet, read_sheet
from pytest_ftmodel.judges.calibration import Calibration, calibrate, self_agreement, to_level

#: the reasoning kept in the sheet per criterion (enough to see why; the cache keeps it whole)
REASONING_CHARS = 2000


def answer_digest(item: dict[str, Any]) -> str:
    """What the judge's review remembers of what it read (the request, the reference and the answer):
    an item with any of them edited is judged again."""
    read = [str(item.get("prompt") or ""), item.get("expected"), str(item.get("generated") or "")]
    return hashlib.sha256(json.dumps(read, default=str, ensure_ascii=False).encode()).hexdigest()[:16]


def _is_current(review: dict[str, Any] | None, item: dict[str, Any], fingerprint: str | None) -> bool:
    return (
        review is not None and review.get("kind") == "auto" and review.get("answer") == answer_digest(item)
        and (fingerprint is None or review.get("judge") == fingerprint)
    )


def _check_judge(judge: Any, *, name_ok: bool) -> None:
    if name_ok and isinstance(judge, str):
        return
    if not all(hasattr(judge, a) for a in ("name", "fingerprint", "criteria", "score")):
        what = "the judge's name on the sheet or " if name_ok else ""
        raise DataError(f"judge={judge!r:.40}: pass {what}a judge made by rubric_judge(judge_model, ...)")


def judge_sheet(sheet: str | os.PathLike[str], judge: Any, *, name: str | None = None) -> int:
    """Score every item of the evaluation sheet that ``judge`` (a :func:`rubric_judge`) has not scored
    yet, or scored for another answer or under other settings, as the reviewer ``name`` (the judge's
    name by default) of kind "auto"; merged into the sheet as it is on disk when judging ends.
    Returns how many items were judged."""
    p = Path(sheet)
    _check_judge(judge, name_ok=False)
    name = check_name(name if name is not None else judge.name, "judge")
    data = read_sheet(p, EVAL_FORMAT)
    unknown = [c for c in judge.criteria if c not in data["criteria"]]
    if unknown:
        raise DataError(f"{p}: the judge scores {unknown}, which the sheet has no column for (it has {', '.join(data['criteria'])}): pass criteria=")
    fp = judge.fingerprint
    todo = []
    for item in data["items"]:
        mine = item["reviews"].get(name)
        if mine is not None and mine.get("kind", "human") != "auto":
            raise DataError(f"{p}: {name!r} reviews item {item['id']!r} as a person; give the judge another name=")
        if not _is_current(mine, item, fp):
            todo.append(item)
    if not todo:
        return 0
    judged = judge.score([{"prompt": str(it.get("prompt") or ""), "answer": str(it.get("generated") or ""), "reference": it.get("expected")} for it in todo])
    reviews = {}
    for item, got in zip(todo, judged):
        reviews[item["id"]] = {
            "kind": "auto", "judge": fp, "answer": answer_digest(item),
            "scores": {c: (None if got.scores.get(c) is None else to_level(got.scores[c])) for c in data["criteria"]},  # type: ignore[arg-type]
            "weighted": {c: got.scores.get(c) for c in judge.criteria},
            "repeats": {c: list(got.repeats[c]) for c in judge.criteria},
            "reasoning": {c: got.reasoning[c][0][:REASONING_CHARS] for c in judge.criteria},
            "notes": "",
        }

    def merge(current: dict[str, Any]) -> int:
        added = 0
        for item in current["items"]:
            review = reviews.get(item["id"])
            if review is None or review["answer"] != answer_digest(item):
                continue  # the answer changed while the judge worked: judged next time
            mine = item["reviews"].get(name)
            if mine is not None and mine.get("kind", "human") != "auto":
                raise DataError(f"{p}: {name!r} now reviews item {item['id']!r} as a person; give the judge another name=")
            item["reviews"][name] = review
            added += 1
        return added

    return modify_sheet(p, EVAL_FORMAT, merge)


@dataclass(frozen=True)
class JudgeScores:
    """An automated reviewer's scores on a sheet, and how far to trust them."""

    path: Path
    judge: str
    n_items: int
    n_judged: int
    unjudged: tuple[str, ...]  # item ids the judge has not scored (new, or changed since judging)
    means: dict[str, float]  # per criterion, over the judged items that got a score
    intervals: dict[str, tuple[float, float]]  # 95%, for a mean of values in [1, 5]
    n_scored: dict[str, int]  # per criterion: the items that got a score (a judge may give none)
    calibration: dict[str, Calibration]
    humans: tuple[str, ...]
    repeats: int  # the most repeats of an item's score
    self_agreement: dict[str, float | None] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)  # mean over items of (max - min) of the repeats
    length_bias: dict[str, float | None] = field(default_factory=dict)  # Spearman's rho of score with answer length
    position_bias: dict[str, float | None] = field(default_factory=dict)  # Spearman's rho of score with sheet position
    #: the judge's fingerprint (model, rubric, scoring, sampling) its reviews were given under; "mixed" when several
    fingerprint: str = ""
    #: per judged item: {"id", "prompt", "generated", "judge": {c: score}, "repeats": {c: [...]}, "human": {c: mean} or None}
    items: tuple[dict[str, Any], ...] = ()


def _ranks(x: Any) -> Any:
    """Ranks 1..n, ties given their average rank (as Spearman's rho needs)."""
    import numpy as np

    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of the average ranks), in numpy: importing scipy.stats costs seconds.
    None for fewer than three pairs or a constant side."""
    import numpy as np

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def judge_scores(sheet: str | os.PathLike[str], *, judge: Any) -> JudgeScores:
    """The judge's (a name, or a :func:`rubric_judge`, whose reviews under other settings then count
    as not judged) scores on the sheet, with its calibration against people, stability and biases."""
    from pytest_ftmodel.metrics.stats import bounded_mean_interval

    p = Path(sheet)
    _check_judge(judge, name_ok=True)
    name = judge if isinstance(judge, str) else judge.name
    fp = None if isinstance(judge, str) else judge.fingerprint
    data = read_sheet(p, EVAL_FORMAT)
    criteria = list(data["criteria"])
    if not any(it["reviews"].get(name, {}).get("kind") == "auto" for it in data["items"]):
        auto = sorted({n for it in data["items"] for n, r in it["reviews"].items() if r.get("kind") == "auto"})
        raise DataError(f"{p}: no review by the judge {name!r} (automated reviewers: {', '.join(auto) or 'none'}); run judge_sheet(sheet, judge)")
    items, unjudged = [], []
    for position, item in enumerate(data["items"]):
        review = item["reviews"].get(name)
        if not _is_current(review, item, fp):
            unjudged.append(str(item["id"]))
            continue
        assert review is not None
        people = complete_reviews(item, criteria)
        items.append({
            "id": item["id"], "prompt": item.get("prompt"), "generated": item.get("generated"), "position": position,
            "judge": {c: v for c, v in review.get("weighted", {}).items() if v is not None},
            "repeats": {c: list(v) for c, v in review.get("repeats", {}).items()},
            "human": {c: sum(r["scores"][c] for r in people.values()) / len(people) for c in criteria} if people else None,
        })
    means, intervals, n_scored, calibration, agree, spread, length, position_bias = {}, {}, {}, {}, {}, {}, {}, {}
    for c in criteria:
        got = [it for it in items if c in it["judge"]]
        if not got:
            continue
        values = [it["judge"][c] for it in got]
        means[c] = sum(values) / len(values)
        low, high = bounded_mean_interval([(v - 1) / 4 for v in values])
        intervals[c] = (1 + 4 * low, 1 + 4 * high)
        n_scored[c] = len(values)
        both = [it for it in got if it["human"] is not None]
        calibration[c] = calibrate(c, [it["human"][c] for it in both], [it["judge"][c] for it in both])
        reps = [it["repeats"].get(c, []) for it in got]
        agree[c] = self_agreement(reps)
        spreads = [max(v for v in r if v is not None) - min(v for v in r if v is not None) for r in reps if len([v for v in r if v is not None]) >= 2]
        spread[c] = sum(spreads) / len(spreads) if spreads else 0.0
        length[c] = spearman_rho([float(len(str(it["generated"] or ""))) for it in got], values)
        position_bias[c] = spearman_rho([float(it["position"]) for it in got], values)
    humans = tuple(sorted({n for it in data["items"] for n in complete_reviews(it, criteria)}))
    fps = {str(it["reviews"][name].get("judge")) for it in data["items"] if _is_current(it["reviews"].get(name), it, fp)}
    k = max((len(r) for it in items for r in it["repeats"].values()), default=1)
    return JudgeScores(
        p, name, len(data["items"]), len(items), tuple(unjudged), means, intervals, n_scored, calibration, humans, k,
        self_agreement=agree, spread=spread, length_bias=length, position_bias=position_bias,
        fingerprint=fps.pop() if len(fps) == 1 else ("mixed" if fps else ""), items=tuple(items),
    )


def repeat_verdict(rows: Sequence[Sequence[float | None]], bar: float) -> dict[str, Any]:
    """The gate's view of a judge's repeats (``rows[i]``: item ``i``'s score per repeat): the mean of
    each repeat over the items, the verdict on the mean over all repeats (each item's mean over its
    repeats, then over items: ``mean >= bar``), the share of repeats whose own verdict agrees with it,
    and the items whose repeats fall on both sides of the bar (their indices). The gate calls it
    inconclusive when that share is below ``min_stable``; ``bench/judge_repeats.py`` shows why the
    rule is on the repeats' verdicts rather than on the share of straddling items."""
    k = max((len(r) for r in rows), default=0)
    means = []
    for j in range(k):
        values = [v for v in (r[j] for r in rows if j < len(r)) if v is not None]
        if values:
            means.append(sum(values) / len(values))
    item_means: list[float] = []
    for r in rows:
        valid = [v for v in r if v is not None]
        if valid:
            item_means.append(sum(valid) / len(valid))
    mean = sum(item_means) / len(item_means) if item_means else float("nan")
    passed = mean >= bar
    agreeing = sum((m >= bar) == passed for m in means) / len(means) if means else 1.0
    straddling = []
    for i, r in enumerate(rows):
        valid = [v for v in r if v is not None]
        if len(valid) >= 2 and min(valid) < bar <= max(valid):
            straddling.append(i)
    return {"means": means, "mean": mean, "passed": passed, "agreeing": agreeing, "straddling": straddling}
