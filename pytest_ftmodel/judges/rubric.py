"""A judge model that scores one answer 1-5 on each criterion of a written rubric (G-Eval style).

For every answer and criterion the judge is given the rubric, the request, the reference when there
is one, and the answer; it writes its reasoning, and the score is read after the final-score cue:
``scoring="logprobs"`` weights the scores 1..5 by their probabilities at that position (never a digit
inside the reasoning; a judge that gives no log-probabilities is an error, never a silent switch to
the top token), ``scoring="text"`` takes the last score the judge wrote in the final-score slot.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.judges.scores import CUE, JudgeError, weighted_score, written_score

#: how the judge's score is read; a change here makes every cached judge score stale
RULE = "rubric-judge/1"

#: the human sheet's four criteria, with what each level means; replace any of them with rubric=
RUBRICS: dict[str, dict[int, str]] = {
    "accuracy": {
        1: "wrong or made up: contradicts the reference or plain facts",
        2: "mostly wrong: one correct point among errors",
        3: "partly right: the main point is right but with a clear error or omission",
        4: "right, with a minor slip or a small omission",
        5: "fully correct and complete; agrees with the reference where there is one",
    },
    "relevance": {
        1: "does not address the request",
        2: "touches the request but mostly talks about something else",
        3: "addresses the request with notable padding or drift",
        4: "addresses the request with a little that is not needed",
        5: "addresses exactly what was asked, nothing more",
    },
    "fluency": {
        1: "not readable: broken words or sentences",
        2: "hard to read: many grammar errors or repetitions",
        3: "readable with some awkward or repeated phrasing",
        4: "fluent with a minor awkwardness",
        5: "fluent and natural",
    },
    "format": {
        1: "ignores the requested form (length, structure, style)",
        2: "mostly in the wrong form",
        3: "the right kind of form with clear deviations",
        4: "the requested form with a minor deviation",
        5: "exactly the requested form",
    },
}

PROMPT = (
    "You grade one answer to a request on one criterion: {criterion}. Use this rubric:\n{rubric}\n\n"
    "Request:\n{prompt}\n\n{reference}Answer:\n{answer}\n\n"
    "Explain in a few sentences how the answer meets the rubric, then end with the line "
    "'Final score: N', N a whole number from 1 to 5.\n\nReasoning:"
)

SCORINGS = ("logprobs", "text")


def rubric_text(levels: Mapping[int, str] | str) -> str:
    if isinstance(levels, str):
        return levels
    return "\n".join(f"{k}: {levels[k]}" for k in sorted(levels))


@dataclass(frozen=True)
class JudgedAnswer:
    """A judge's scores of one answer: per criterion the score (the mean of its repeats' scores;
    None when no repeat gave one), each repeat's score and reasoning."""

    scores: dict[str, float | None]
    repeats: dict[str, tuple[float | None, ...]]
    reasoning: dict[str, tuple[str, ...]]


@dataclass(eq=False)
class RubricJudge:
    """Made by :func:`rubric_judge`. :meth:`score` judges answers; ``calls`` counts the judge
    model's calls (generations and score reads), which a warm run leaves at zero."""

    model: Any
    criteria: tuple[str, ...]
    rubric: dict[str, str]
    scoring: str
    repeats: int
    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int
    cue: str
    chat: bool | str
    prompt_template: str
    name: str
    cache: Any = "auto"
    calls: int = field(default=0, compare=False)

    @property
    def settings(self) -> dict[str, Any]:
        """Everything beside the prompt that decides a score (the cache key's settings)."""
        return {
            "rule": RULE, "scoring": self.scoring, "cue": self.cue, "repeats": self.repeats,
            "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
            "max_new_tokens": self.max_new_tokens, "chat": self.chat, **getattr(self.model, "numerics", {}),
        }

    @property
    def fingerprint(self) -> str:
        """The judge model's fingerprint with its rubric, prompt, scoring rule and sampling settings:
        scores given under another fingerprint are stale."""
        payload = json.dumps(
            {"model": self.model.fingerprint, "rubric": self.rubric, "prompt": self.prompt_template, **self.settings},
            sort_keys=True, ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def prompt_for(self, criterion: str, prompt: str, answer: str, reference: str | None = None) -> str:
        ref = f"Reference answer:\n{reference}\n\n" if reference else ""
        return self.prompt_template.format(
            criterion=criterion, rubric=self.rubric[criterion], prompt=prompt, reference=ref, answer=answer
        )

    def score(self, items: Sequence[Mapping[str, Any]]) -> list[JudgedAnswer]:
        """Score ``items`` (each ``{"prompt", "answer", "reference"?}``) on every criterion."""
        from pytest_ftmodel.cache import entry_key, resolve_cache
        from pytest_ftmodel.judges._access import reasoning_texts, score_logprobs

        store = resolve_cache(self.cache)
        judges: Any = getattr(store, "judges", store)
        jobs = []  # (item index, criterion, judge prompt, key)
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("prompt"), str) or not isinstance(item.get("answer"), str):
                raise DataError(f"item {i} to judge is {item!r:.60}: give {{'prompt': text, 'answer': text, 'reference'?: text}}")
            for c in self.criteria:
                text = self.prompt_for(c, item["prompt"], item["answer"], item.get("reference"))
                jobs.append((i, c, text, entry_key(self.model.fingerprint, text, self.settings)))
        found: dict[int, dict[str, Any]] = {}
        for j, (_, _, _, key) in enumerate(jobs):
            hit = judges.get(key) if judges is not None else None
            if hit is not None and len(hit["repeats"]) == self.repeats:
                found[j] = hit
        todo = [j for j in range(len(jobs)) if j not in found]
        if todo:
            # the reasoning stops where the judge starts writing its score, in any usual case or at the cue itself
            slots = ["Final score", "Final Score", "final score", "FINAL SCORE", self.cue.strip()]
            stop = list(dict.fromkeys(slots)) if self.scoring == "logprobs" else []
            texts = reasoning_texts(
                self.model, [jobs[j][2] for j in todo], samples=self.repeats, temperature=self.temperature,
                top_p=self.top_p, seed=self.seed, max_new_tokens=self.max_new_tokens, stop=stop, chat=self.chat,
            )
            self.calls += len(todo) * (self.repeats if self.temperature > 0 else 1)
            for j, reasonings in zip(todo, texts):
                reasonings = list(reasonings)
                scores: list[float | None] = []
                for r in reasonings:
                    if self.scoring == "logprobs":
                        self.calls += 1
                        got = weighted_score(
                            score_logprobs(self.model, jobs[j][2], r.rstrip(), self.cue, chat=self.chat),
                            where=f"the judge {self.name!r}",
                        )
                        scores.append(got.score)
                    else:
                        scores.append(written_score(r))
                found[j] = {"repeats": scores, "reasoning": [r.rstrip() for r in reasonings]}
                if judges is not None:
                    judges.put(jobs[j][3], found[j])
        out: list[JudgedAnswer] = [JudgedAnswer({}, {}, {}) for _ in items]
        for j, (i, c, _, _) in enumerate(jobs):
            reps = tuple(found[j]["repeats"])
            valid = [s for s in reps if s is not None]
            out[i].scores[c] = sum(valid) / len(valid) if valid else None
            out[i].repeats[c] = reps
            out[i].reasoning[c] = tuple(found[j]["reasoning"])
        return out

    def __call__(self, prompt: str, answer: str, reference: str | None = None) -> JudgedAnswer:
        return self.score([{"prompt": prompt, "answer": answer, "reference": reference}])[0]


def _is_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_arguments(
    criteria: Any, rubric: Any, temperature: Any, top_p: Any, seed: Any, max_new_tokens: Any, cue: Any, prompt: Any,
) -> None:
    """One line for an argument of the wrong type or value, before the judge model is asked anything."""
    if criteria is not None and (isinstance(criteria, str) or not all(isinstance(c, str) and c for c in criteria)):
        raise DataError(f"criteria={criteria!r:.60}: pass a list of criterion names, e.g. criteria=['accuracy']")
    if temperature is not None and not (_is_number(temperature) and temperature >= 0):
        raise DataError(f"temperature={temperature!r:.40}: pass a number >= 0 (0 is greedy)")
    if not (_is_number(top_p) and 0 < top_p <= 1):
        raise DataError(f"top_p={top_p!r:.40}: pass a number in (0, 1]")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed={seed!r:.40}: pass a whole number")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise DataError(f"max_new_tokens={max_new_tokens!r:.40}: pass a whole number >= 1 (the reasoning's length)")
    for c, levels in dict(rubric or {}).items():
        ok = isinstance(levels, str) or (
            isinstance(levels, Mapping) and bool(levels)
            and all(type(k) is int and 1 <= k <= 5 and isinstance(v, str) for k, v in levels.items())
        )
        if not ok:
            raise DataError(f"rubric={{{c!r}: {levels!r:.60}}}: give a text, or {{1: '...', 5: '...'}} with levels 1-5 as whole numbers")
    if not isinstance(cue, str) or not cue.strip():
        raise DataError(f"cue={cue!r:.40}: the judge needs a final-score cue such as '\\nFinal score:'")
    try:
        ok = isinstance(prompt, str) and "{answer}" in prompt and "{rubric}" in prompt
        if ok:
            prompt.format(criterion="", rubric="", prompt="", reference="", answer="")
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(
            f"prompt= has the placeholder {exc}: it may use {{criterion}}, {{rubric}}, {{prompt}}, {{reference}} and "
            "{answer} (write literal braces as {{ and }})"
        ) from None
    if not ok:
        raise JudgeError("prompt= must contain {answer} and {rubric} (and may use {criterion}, {prompt}, {reference})")


def rubric_judge(
    judge_model: Any,
    *,
    criteria: Sequence[str] | None = None,
    rubric: Mapping[str, Mapping[int, str] | str] | None = None,
    scoring: str = "logprobs",
    repeats: int = 1,
    temperature: float | None = None,
    top_p: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 128,
    cue: str = CUE,
    chat: bool | str = "auto",
    prompt: str = PROMPT,
    name: str | None = None,
    cache: Any = "auto",
) -> RubricJudge:
    """A judge that scores single answers 1-5 per criterion with ``judge_model`` (an in-process
    checkpoint from ``load_model`` or a served one, ``load_model("http://host/v1")``).

    ``criteria`` default to the sheet's four (accuracy, relevance, fluency, format), each with the
    written rubric in :data:`RUBRICS`; ``rubric={criterion: {1: ..., 5: ...} or text}`` replaces or
    adds rubrics. ``repeats=k`` samples the reasoning ``k`` times (seeded, ``temperature`` 0.7 unless
    given) and keeps each repeat's score. A served judge under ``scoring="logprobs"`` is sent raw text
    (``/completions``, no chat template), as the score position must follow its own reasoning.
    """
    from pytest_ftmodel.served import is_served

    _check_arguments(criteria, rubric, temperature, top_p, seed, max_new_tokens, cue, prompt)
    if scoring not in SCORINGS:
        raise DataError(f"scoring={scoring!r}: use 'logprobs' (probability-weighted) or 'text' (the score the judge wrote)")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise DataError(f"repeats={repeats!r}: use a whole number >= 1")
    if temperature is None:
        temperature = 0.7 if repeats > 1 else 0.0
    if repeats > 1 and temperature == 0:
        raise DataError(f"repeats={repeats} with temperature=0 repeats the same greedy reasoning: give a temperature > 0")
    chosen = tuple(criteria) if criteria is not None else tuple(RUBRICS)
    if not chosen:
        raise DataError("criteria=[]: name at least one criterion")
    given = dict(rubric or {})
    texts: dict[str, str] = {}
    for c in chosen:
        if c in given:
            texts[c] = rubric_text(given[c])
        elif c in RUBRICS:
            texts[c] = rubric_text(RUBRICS[c])
        else:
            raise DataError(f"criterion {c!r} has no rubric: pass rubric={{{c!r}: {{1: '...', 5: '...'}}}} (built in: {', '.join(RUBRICS)})")
    unused = sorted(set(given) - set(chosen))
    if unused:
        raise DataError(f"rubric names criteria {unused} that are not judged (criteria: {', '.join(chosen)})")
    if scoring == "logprobs" and is_served(judge_model):
        chat = False
    model_name = getattr(judge_model, "name", None) or str(getattr(judge_model, "path", "judge")).rstrip("/").rsplit("/", 1)[-1]
    judge = RubricJudge(
        judge_model, chosen, texts, scoring, repeats, float(temperature), float(top_p), int(seed), int(max_new_tokens),
        cue, chat, prompt, name or f"judge-{model_name}", cache,
    )
    return judge
