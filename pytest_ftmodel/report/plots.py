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
    if record.details.get("kind") == "per-item score" and record.threshold is not None:
        ax.axvline(record.value, color=_PASS if record.passed else _FAIL, linewidth=1.4, label=f"mean {fmt(record.value)}")
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
    return None
