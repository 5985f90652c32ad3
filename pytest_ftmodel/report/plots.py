"""Plots for the HTML report, drawn with matplotlib (the ``report`` extra) as inline SVG.

matplotlib is imported only here, inside the functions, and only when an HTML report is written.
Text is drawn as paths, so a page looks the same on every machine without any font file.
"""

from __future__ import annotations

import importlib.util
import io
import re
from typing import Any

from pytest_ftmodel.report.records import MetricRecord, fmt

INSTALL_HINT = 'pip install "pytest-ftmodel[report]"'
_PASS, _FAIL, _MODEL, _BASE, _GREY = "#1a7f37", "#cf222e", "#0969da", "#bf8700", "#6e7781"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float = 5.2, height: float = 2.9) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
    return fig


def _svg(fig: Any, prefix: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "pytest-ftmodel", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    # several figures share one page: make their ids (clip paths, markers) unique to each
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', svg)
    return svg


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
    ax.set_axisbelow(True)


def _legend(ax: Any) -> None:
    """Above the plot, where it never hides a bar or a point."""
    ax.legend(fontsize=7, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, borderaxespad=0.2)


def curve(details: dict[str, Any], prefix: str) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    train, evals = details.get("train") or [], details.get("eval") or []
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], color=_MODEL, linewidth=1.4, label="train loss")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], color=_BASE, linewidth=1.4, marker="o", markersize=3, label="eval loss")
    best = details.get("best_step")
    if best is not None and details.get("best_eval_loss") is not None:
        ax.axvline(best, color=_GREY, linestyle="--", linewidth=0.9)
        ax.plot([best], [details["best_eval_loss"]], marker="*", markersize=11, color=_PASS, linestyle="none", label=f"best eval (step {best})")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    _legend(ax)
    return _svg(fig, prefix)


def distribution(record: MetricRecord, prefix: str) -> str:
    details = record.details
    compare = details.get("compare") == "base"
    values = [float(i["model" if compare else "value"]) for i in record.items if i.get("model" if compare else "value") is not None]
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    series = [("fine-tuned" if compare else "validation" if details.get("train_values") else record.model or "items", values, _MODEL)]
    if compare:
        series.append(("base", [float(i["base"]) for i in record.items if i.get("base") is not None], _BASE))
    if details.get("train_values"):
        series.append(("training", [float(v) for v in details["train_values"] if v is not None], _BASE))
    everything = [v for _, vs, _ in series for v in vs]
    low, high = (min(everything), max(everything)) if everything else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    bins = [low + (high - low) * k / 20 for k in range(21)]
    shares = len({len(vs) for _, vs, _ in series}) > 1  # samples of different sizes: compare shares, not counts
    ax.hist(  # several series side by side in each bin, not overlaid
        [vs for _, vs, _ in series], bins=bins,
        weights=[[1.0 / len(vs)] * len(vs) if shares and vs else [1.0] * len(vs) for _, vs, _ in series],
        color=[c for _, _, c in series], label=[f"{label} (n={len(vs)})" for label, vs, _ in series],
        edgecolor="white", linewidth=0.4,
    )
    if record.details.get("kind") in ("per-item score", "reference score") and record.threshold is not None:
        # a corpus score (BLEU, chrF) is not the mean of the sentence scores plotted: named as it is
        what = "corpus score" if record.details.get("metric") in ("bleu", "chrf") else "mean"
        ax.axvline(record.value, color=_PASS if record.passed else _FAIL, linewidth=1.4, label=f"{what} {fmt(record.value)}")
        ax.axvline(record.threshold, color=_GREY, linestyle="--", linewidth=1.0, label=f"bar {fmt(record.threshold)}")
    ax.set_xlabel("NLL per token (nats)" if compare else str(details.get("item_value", "value")), fontsize=8)
    ax.set_ylabel("share of items" if shares else "items", fontsize=8)
    if not shares:
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(ax)
    return _svg(fig, prefix)


def pass_at_k(record: MetricRecord, prefix: str) -> str:
    by_k = {int(k): float(v) for k, v in (record.details.get("pass_at") or {}).items()}
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    if by_k:
        ks = sorted(by_k)
        ax.plot(ks, [by_k[k] for k in ks], color=_MODEL, marker="o", markersize=4, linewidth=1.4, label="pass@k")
    gated = int(record.name.split("@", 1)[1]) if "@" in record.name and record.name.split("@", 1)[1].isdigit() else None
    if gated is not None and record.interval is not None:
        lo, hi = record.interval
        ax.errorbar([gated], [record.value], yerr=[[record.value - lo], [hi - record.value]], color=_PASS if record.passed else _FAIL,
                    marker="s", markersize=5, capsize=4, linewidth=1.2, label=f"pass@{gated} with 95% CI")
    if record.threshold is not None:
        ax.axhline(record.threshold, color=_GREY, linestyle="--", linewidth=1.0, label=f"bar {fmt(record.threshold)}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("k (samples per problem)", fontsize=8)
    ax.set_ylabel("pass@k", fontsize=8)
    _legend(ax)
    if by_k:
        ax.set_xticks(sorted(by_k))
    return _svg(fig, prefix)


def ab(record: MetricRecord, prefix: str) -> str:
    d = record.details
    wins, ties, losses = int(d.get("model_wins", 0)), int(d.get("ties", 0)), int(d.get("base_wins", 0))
    fig = _figure(5.2, 2.4)
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.2])
    total = max(wins + ties + losses, 1)
    left = 0
    for count, label, colour in ((wins, "fine-tuned wins", _PASS), (ties, "ties", _GREY), (losses, "base wins", _FAIL)):
        top.barh([0], [count], left=left, color=colour, height=0.6, label=f"{label}: {count}")
        if count:
            top.text(left + count / 2, 0, str(count), ha="center", va="center", color="white", fontsize=8)
        left += count
    top.set_xlim(0, total)
    top.set_yticks([])
    top.tick_params(labelsize=7)
    top.legend(fontsize=7, frameon=False, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    for side in ("top", "right", "left"):
        top.spines[side].set_visible(False)
    _style(bottom)
    colour = _PASS if record.passed else _FAIL
    if record.interval is not None:
        lo, hi = record.interval
        bottom.errorbar([record.value], [0], xerr=[[record.value - lo], [hi - record.value]], color=colour, marker="o", capsize=4)
    else:
        bottom.plot([record.value], [0], marker="o", color=colour)
    bottom.axvline(0.5, color=_GREY, linewidth=0.8, linestyle=":")
    if record.threshold is not None:
        bottom.axvline(record.threshold, color=_GREY, linestyle="--", linewidth=1.0)
    bottom.set_xlim(0, 1)
    bottom.set_yticks([])
    bottom.set_xlabel(f"win rate of decided comparisons, 95% CI (dashed: bar {fmt(record.threshold)}; dotted: 50%)", fontsize=7)
    return _svg(fig, prefix)


def judge_vs_human(record: MetricRecord, prefix: str) -> str | None:
    """The judge's score against people's mean on the items both scored, with the diagonal."""
    d = record.details
    pairs = [p for p in d.get("pairs") or [] if isinstance(p, list) and len(p) == 2]
    if not pairs:
        return None
    fig = _figure(4.2, 3.4)
    ax = fig.subplots()
    _style(ax)
    ax.plot([1, 5], [1, 5], color=_GREY, linewidth=0.8, linestyle=":")
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=14, color=_MODEL, alpha=0.7)
    if record.threshold is not None:
        ax.axhline(record.threshold, color=_GREY, linestyle="--", linewidth=1.0)
    ax.set_xlim(0.8, 5.2)
    ax.set_ylim(0.8, 5.2)
    alpha = d.get("alpha")
    shown = "undefined" if alpha is None else f"{alpha:.2f}"
    ax.set_xlabel(f"people's mean {_shown_text(d.get('criterion', ''))} (alpha {shown} on {len(pairs)} items)", fontsize=7)
    ax.set_ylabel(f"judge {_shown_text(d.get('judge', ''))}", fontsize=7)
    return _svg(fig, prefix)


def share(record: MetricRecord, prefix: str) -> str:
    """A pass share (format, exact match) with its 95% interval against the bar; for the format gate,
    the failing answers counted by why they failed."""
    reasons = {str(k): int(v) for k, v in (record.details.get("reasons") or {}).items()}
    fig = _figure(5.2, 2.4 if reasons else 1.6)
    axes = fig.subplots(2, 1, height_ratios=[1, 1.4]) if reasons else [fig.add_subplot()]
    top = axes[0]
    _style(top)
    colour = _PASS if record.passed else _FAIL
    if record.interval is not None:
        lo, hi = record.interval
        top.errorbar([record.value], [0], xerr=[[record.value - lo], [hi - record.value]], color=colour, marker="o", capsize=4,
                     label=f"{record.name} {fmt(record.value)} with 95% CI (n={record.n})")
    else:
        top.plot([record.value], [0], marker="o", color=colour, label=f"{record.name} {fmt(record.value)}")
    if record.threshold is not None:
        top.axvline(record.threshold, color=_GREY, linestyle="--", linewidth=1.0, label=f"bar {fmt(record.threshold)}")
    top.set_xlim(-0.02, 1.02)
    top.set_yticks([])
    top.set_xlabel(f"share of {record.unit} that pass", fontsize=8)
    _legend(top)
    if reasons:
        bottom = axes[1]
        _style(bottom)
        names = sorted(reasons, key=lambda k: (-reasons[k], k))[:6]
        from pytest_ftmodel.escaping import visible

        bottom.barh(range(len(names)), [reasons[k] for k in names], color=_FAIL, height=0.6)
        bottom.set_yticks(range(len(names)), [visible(k)[:30] for k in names], fontsize=7)
        bottom.invert_yaxis()
        bottom.set_xlabel("failing answers by reason", fontsize=8)
        from matplotlib.ticker import MaxNLocator

        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _svg(fig, prefix)


def lengths(record: MetricRecord, prefix: str) -> str:
    """Answer lengths of the model and of its base (model or baseline), side by side per bin."""
    d = record.details
    model = [float(v) for v in d.get("model_lengths") or [] if v is not None]
    base = [float(v) for v in d.get("base_lengths") or [] if v is not None]
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    everything = model + base
    low, high = (min(everything), max(everything)) if everything else (0.0, 1.0)
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    bins = [low + (high - low) * k / 20 for k in range(21)]
    against = str(d.get("against") or "base")
    ax.hist([model, base], bins=bins, color=[_MODEL, _BASE], edgecolor="white", linewidth=0.4,
            label=[f"model (n={len(model)}, mean {fmt(d.get('mean_length'))})", f"{against} (n={len(base)}, mean {fmt(d.get('mean_base_length'))})"])
    ax.set_xlabel(f"answer length ({d.get('unit', 'tokens')}); ratio {fmt(record.value)} (bar {record.op} {fmt(record.threshold)})", fontsize=8)
    ax.set_ylabel("items", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(ax)
    return _svg(fig, prefix)


def plot_record(record: MetricRecord, prefix: str) -> str | None:
    """The SVG for ``record``, or None when it has nothing worth plotting."""
    kind = record.details.get("kind")
    if kind == "training curve":
        return curve(record.details, prefix)
    if kind in ("per-text NLL", "per-item score") and len(record.items) >= 2:
        return distribution(record, prefix)
    if kind == "pass@k":
        return pass_at_k(record, prefix)
    if kind == "A/B":
        return ab(record, prefix)
    if kind == "judge":
        return judge_vs_human(record, prefix)
    if kind == "format" or (kind == "reference score" and record.details.get("compare_kind") == "binary"):
        return share(record, prefix)
    if kind == "reference score" and len(record.items) >= 2:
        return distribution(record, prefix)
    if kind == "length":
        return lengths(record, prefix)
    return None


#: verdict -> colour, shared by the plot and the page's verdict labels
VERDICT_COLOURS = {
    "regressed": _FAIL, "mismatch": "#8250df", "inconclusive": _BASE, "within noise": _GREY, "improved": _PASS, "new": _MODEL,
}


def baseline_deltas(records: list[MetricRecord], prefix: str) -> str | None:
    """One row per compared metric: its change against the baseline with the 95% interval, in units
    of its own margin and turned so that better is to the right. Absolute changes (accuracy, ROUGE)
    and relative ones (perplexity) then share one axis honestly; each row's change in the metric's
    own units is written at the right. None when no record has a change to plot."""
    from pytest_ftmodel.report import versus

    points = baseline_points(records)
    if not points:
        return None
    rows = [p[0] for p in points]
    fig = _figure(8.6, 0.95 + 0.42 * len(rows))
    ax = fig.add_subplot()
    _style(ax)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#d0d7de", linewidth=0.6)
    spans = [-1.5, 1.5]
    for y, (r, x, ends) in enumerate(points):
        colour = VERDICT_COLOURS.get(versus.verdict_of(r.baseline), _GREY)
        if ends is not None:
            lo, hi = ends
            ax.errorbar([x], [y], xerr=[[max(x - lo, 0)], [max(hi - x, 0)]], color=colour, marker="o", markersize=6,
                        capsize=4, linewidth=1.6)
            spans += [lo, hi]
        else:
            ax.plot([x], [y], marker="o", markersize=6, color=colour)
        spans.append(x)
    ax.axvline(0, color="#1f2328", linewidth=0.9)
    ax.axvline(-1, color=_FAIL, linestyle="--", linewidth=1.1)
    lo, hi = min(spans), max(spans)
    wide = max(-lo, hi) > 4
    if wide:  # a change of many margins would squeeze the rest against the zero line: linear within 2 margins, log beyond
        ax.set_xscale("symlog", linthresh=2, linscale=1.5)
        ticks = [t for t in (-1000, -100, -10, -2, -1, 0, 1, 2, 10, 100, 1000) if lo * 1.05 <= t <= hi * 1.05]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlim(lo * 1.15 if lo < 0 else lo, hi * 1.15 if hi > 0 else hi)
    else:
        pad = 0.06 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
    ax.text(-1, 1.0, " margin ", transform=ax.get_xaxis_transform(), ha="right", va="bottom", fontsize=7, color=_FAIL)
    ax.text(0, 1.0, " no change", transform=ax.get_xaxis_transform(), ha="left", va="bottom", fontsize=7, color="#1f2328")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_row_label(r) for r in rows], fontsize=8)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(len(rows)))
    right.set_yticklabels([f"{versus.delta_text(r.baseline)}  {versus.verdict_of(r.baseline)}" for r in rows], fontsize=8)
    for label, r in zip(right.get_yticklabels(), rows):
        label.set_color(VERDICT_COLOURS.get(versus.verdict_of(r.baseline), _GREY))
    right.tick_params(length=0)
    for side in ("top", "right", "left"):
        right.spines[side].set_visible(False)
    scale = "; log scale beyond ±2" if wide else ""
    ax.set_xlabel(f"← worse   change against the baseline, in margins (95% CI; -1 = the margin{scale})   better →", fontsize=8)
    return _svg(fig, prefix)


def baseline_points(records: list[MetricRecord]) -> list[tuple[MetricRecord, float, tuple[float, float] | None]]:
    """Each compared record's change and 95% interval in units of its own margin, positive = better."""
    from pytest_ftmodel.report import versus

    points = []
    for r in records:
        b = r.baseline or {}
        if not versus.compared(b) or not isinstance(b.get("margin"), (int, float)) or float(b["margin"]) <= 0:
            continue
        turn = (-1.0 if versus.worse_is_higher(r) else 1.0) / float(b["margin"])
        ends = [turn * float(b[k]) for k in ("low", "high") if isinstance(b.get(k), (int, float))]
        points.append((r, turn * float(b["delta"]), (min(ends), max(ends)) if len(ends) == 2 else None))
    return points


def _shown_text(text: Any, limit: int = 60) -> str:
    """Text read from a sheet (a judge's name, a criterion) as a plot shows it: escaped, cut, no mathematics."""
    from pytest_ftmodel.report.terminal import cut_middle
    from pytest_ftmodel.report.versus import visible

    return cut_middle(visible(str(text)), limit).replace("$", r"\$")


def _row_label(record: MetricRecord, limit: int = 42) -> str:
    from pytest_ftmodel.report.terminal import cut_middle
    from pytest_ftmodel.report.versus import visible

    test = record.test.rsplit("::", 1)[-1]
    label = cut_middle(visible(f"{record.name} · {test}" if test else record.name), limit)
    return label.replace("$", r"\$")  # matplotlib would read text between dollars as mathematics
