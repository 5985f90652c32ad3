"""The HTML report (``--ftmodel-html PATH``): one self-contained page that opens offline.

Sections: a summary, the metrics table (pass/fail colour), the comparison with the baseline when
there is one (a plot of each metric's change with its interval and the margin, the table of the
comparisons, the items that got worse), plots (inline SVG; with matplotlib, the ``report`` extra),
the worst items of each gate with prompt, expected and answer, and the failing gates' diagnoses. No script, stylesheet, font or image is fetched: everything is in the file. Every
text from the run is HTML-escaped.
"""

from __future__ import annotations

from typing import Any

from pytest_ftmodel.escaping import html_text
from pytest_ftmodel.report import versus
from pytest_ftmodel.report.records import MetricRecord, display_names, fmt, model_label

WORST = 5

_CSS = """
:root { color-scheme: light; --pass: #1a7f37; --fail: #cf222e; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1280px; color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 32px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 18px 0 6px; }
.muted { color: var(--muted); } code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600; }
.verdict.pass { background: var(--pass); } .verdict.fail { background: var(--fail); }
dl.session { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 12px 0 0; }
dl.session dt { color: var(--muted); } dl.session dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pass td.result { color: var(--pass); font-weight: 600; } tr.fail td.result { color: var(--fail); font-weight: 700; }
tr.fail { background: #ffebe9; } tr.pass td:first-child { border-left: 4px solid var(--pass); } tr.fail td:first-child { border-left: 4px solid var(--fail); }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; background: #fff; }
figure.fail { border-color: var(--fail); }
figcaption { font-size: 12.5px; margin-bottom: 4px; } figure svg { display: block; width: 100%; height: auto; }
.interrupted { background: #ffebe9; border: 1px solid var(--fail); border-radius: 6px; padding: 8px 12px; font-weight: 600; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; }
.items td.key, .items th.key { width: 1%; white-space: nowrap; }
.items td.text { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 380px; font-size: 12.5px; }
.vd { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; font-weight: 600; white-space: nowrap;
      border: 1px solid currentColor; }
.vd.regressed { color: #fff; background: var(--fail); border-color: var(--fail); }
.vd.mismatch { color: #fff; background: #8250df; border-color: #8250df; }
.vd.inconclusive { color: #7d4e00; background: #fff8c5; } .vd.within-noise { color: var(--muted); background: #f6f8fa; }
.vd.improved { color: var(--pass); background: #dafbe1; } .vd.new { color: #0969da; background: #ddf4ff; }
.vd-counts .vd { margin-right: 6px; }
figure.wide { max-width: 980px; } table.compare { margin-top: 14px; }
details.worse { margin: 12px 0 6px; } details.worse summary { cursor: pointer; font-size: 14px; }
.compare td.reason { color: #6639ba; }
pre.diagnosis { background: #f6f8fa; border: 1px solid var(--line); border-left: 4px solid var(--fail); padding: 10px; white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def _e(value: Any) -> str:
    """``value`` as HTML text; control characters (terminal escapes) shown as ``\\x1b``, never kept raw."""
    return html_text(value)


def _verdict(b: dict[str, Any] | None) -> str:
    verdict = versus.verdict_of(b)
    if not b:
        return "-"
    return f'<span class="vd {_e(verdict.replace(" ", "-"))}">{_e(verdict)}</span>'


def _baseline_path(session: dict[str, Any]) -> Any:
    info = session.get("baseline")
    return info.get("path") if isinstance(info, dict) else info


def _bar(r: MetricRecord) -> str:
    return "-" if r.threshold is None else ("≥ " if r.op == ">=" else "≤ ") + fmt(r.threshold)


def _test_of(r: MetricRecord, *, full: bool = False) -> str:
    if not r.test:
        return ""
    return f' · <span class="mono" title="{_e(r.test)}">{_e(r.test if full else r.test.rsplit("::", 1)[-1])}</span>'


def _session(records: list[MetricRecord], session: dict[str, Any], names: dict[str, str]) -> str:
    failed = sum(versus.failed(r) for r in records)
    verdict = "fail" if failed else "pass"
    badge = f'<span class="verdict {verdict}">{len(records) - failed} passed, {failed} failed</span>'
    rows = []
    for role, info in (session.get("models") or {}).items():
        if info:
            fp = f' <span class="muted">fingerprint {_e(info.get("fingerprint"))}</span>' if info.get("fingerprint") else ""
            rows.append(f"<dt>{_e(role)}</dt><dd class=\"mono\">{_e(info.get('path'))}{fp}</dd>")
    for path, short in sorted(names.items()):
        fps = sorted({f for r in records for p, f in zip(r.model_paths, r.fingerprints) if p == path and f})
        if not any(path == (info or {}).get("path") for info in (session.get("models") or {}).values()):
            rows.append(f"<dt>{_e(short)}</dt><dd class=\"mono\">{_e(path)} {_e(' '.join(fps))}</dd>")
    if versus.verdict_counts(records):
        rows.append(f"<dt>baseline</dt><dd>{_e(versus.baseline_source(records, _baseline_path(session))[len('baseline '):] or '-')}</dd>")
    for key in ("device", "dtype", "sandbox", "created", "duration_s"):
        if session.get(key) not in (None, ""):
            rows.append(f"<dt>{_e(key.replace('_s', ' (s)'))}</dt><dd>{_e(session[key])}</dd>")
    return f'<p>{len(records)} metrics recorded {badge}</p>\n<dl class="session">{"".join(rows)}</dl>'


def _table(records: list[MetricRecord], names: dict[str, str]) -> str:
    with_baseline = any(r.baseline for r in records)
    extra = "<th>baseline</th><th>Δ [95% CI]</th><th>vs baseline</th>" if with_baseline else ""
    head = f"<tr><th>test</th><th>metric</th><th>model</th><th>value</th><th>bar</th><th>95% CI</th><th>n</th>{extra}<th>result</th></tr>"
    body = []
    for r in records:
        failed = versus.failed(r)
        cls = "fail" if failed else "pass"
        ci = "-" if r.interval is None else f"[{fmt(r.low)}, {fmt(r.high)}]"
        cells = ""
        if with_baseline:
            b = r.baseline
            cells = (
                f'<td class="num">{_e(versus.baseline_value_text(b))}</td><td class="num">{_e(versus.delta_text(b))}</td>'
                f"<td>{_verdict(b)}</td>"
            )
        body.append(
            f'<tr class="{cls}"><td class="mono" title="{_e(r.test)}">{_e(r.test.rsplit("::", 1)[-1] or "-")}</td>'
            f"<td>{_e(r.name)}</td><td>{_e(model_label(r, names) or '-')}</td><td class=\"num\">{_e(fmt(r.value))}</td>"
            f'<td class="num">{_e(_bar(r))}</td><td class="num">{_e(ci)}</td><td class="num">{r.n} {_e(r.unit)}</td>'
            f'{cells}<td class="result"{_differs_title(r)}>{_e(versus.result_text(r))}</td></tr>'
        )
    note = f'<p class="muted">{_e(versus.DIFFERS_NOTE)}</p>' if any(versus.differs(r) for r in records) else ""
    return f'<table class="metrics">\n{head}\n' + "\n".join(body) + "\n</table>" + note


def _differs_title(r: MetricRecord) -> str:
    return f' title="the gate\'s own verdict: {versus.gate_verdict(r)}"' if versus.differs(r) else ""


def _against_baseline(records: list[MetricRecord], session: dict[str, Any]) -> str:
    """The comparison with the baseline: verdict counts, the plot of changes, the table, worse items."""
    from pytest_ftmodel.report import plots

    counts = versus.verdict_counts(records)
    source = versus.baseline_source(records, _baseline_path(session))
    parts = [
        f'<p class="vd-counts">Compared with {_e(source)}: '
        + "".join(f'<span class="vd {_e(v.replace(" ", "-"))}">{n} {_e(v)}</span>' for v, n in counts.items())
        + "</p>"
    ]
    if any(versus.compared(r.baseline) for r in records):
        if not plots.available():
            parts.append(f'<p class="note">The plot of the changes needs matplotlib: <code>{_e(plots.INSTALL_HINT)}</code>. The table below is complete without it.</p>')
        else:
            try:
                svg = plots.baseline_deltas(records, "bl")
            except Exception as exc:  # noqa: BLE001 - a plot that fails leaves its note, never a failed run
                svg, parts = None, parts + [f'<p class="note">plot failed ({_e(type(exc).__name__)}: {_e(exc)})</p>']
            unplotted = [r.name for r in records if versus.compared(r.baseline) and not float((r.baseline or {}).get("margin") or 0) > 0]
            if unplotted:
                parts.append(f'<p class="muted">Not plotted (no margin to scale by): {_e(", ".join(unplotted))}.</p>')
            if svg:
                caption = (
                    "Each metric's change against the baseline, <b>in units of its own margin</b> (so absolute changes and "
                    "relative ones, such as perplexity's, share the axis), turned so that <b>better is to the right</b>. "
                    "Bars: 95% intervals. Dashed line: the margin; a change is a regression when it is significantly "
                    "worse and beyond it. At the right: the change in the metric's own units (relative ones in %)."
                )
                parts.append(f'<figure class="wide"><figcaption>{caption}</figcaption>{svg}</figure>')
    head = (
        "<tr><th>test</th><th>metric</th><th>baseline</th><th>now</th><th>Δ [95% CI]</th><th>p (worse)</th>"
        "<th>margin</th><th>test used</th><th>paired</th><th>verdict</th></tr>"
    )
    rows = []
    for r in records:
        b = r.baseline
        if not b:
            continue
        test = f'<td class="mono" title="{_e(r.test)}">{_e(r.test.rsplit("::", 1)[-1] or "-")}</td><td>{_e(r.name)}</td>'
        if not versus.compared(b):
            note = (
                f"not compared: {b.get('reason') or 'the settings differ'}" if versus.verdict_of(b) == "mismatch"
                else "no entry in the baseline file: the update option adds it" if versus.verdict_of(b) == "new"
                else "not compared"
            )
            rows.append(f'<tr>{test}<td colspan="7" class="reason">{_e(note)}</td><td>{_verdict(b)}</td></tr>')
            continue
        paired = f"{b['n_paired']}" + (f" of {b['baseline_n']}" if isinstance(b.get("baseline_n"), int) else "") if isinstance(b.get("n_paired"), int) else "-"
        rows.append(
            f'<tr>{test}<td class="num">{_e(versus.baseline_value_text(b))}</td>'
            f'<td class="num">{_e(versus.candidate_text(b))}</td>'
            f'<td class="num">{_e(versus.delta_text(b))}</td><td class="num">{_e(versus.p_text(b))}</td>'
            f'<td class="num">{_e(versus.margin_text(b))}{" (relative)" if b.get("relative") else ""}</td>'
            f'<td>{_e(b.get("test") or "-")}{_e(" · " + str(b["mode"])) if b.get("mode") == "noninferiority" else ""}</td>'
            f'<td class="num">{_e(paired)}</td><td>{_verdict(b)}</td></tr>'
        )
        notes = versus.verdict_notes(b)
        if notes:
            rows.append(f'<tr class="notes"><td></td><td></td><td colspan="8" class="reason">note: {_e("; ".join(notes))}</td></tr>')
    parts.append(f'<table class="compare">{head}{"".join(rows)}</table>')
    # the items of failing comparisons first and open; those of passing ones folded away
    for r in sorted(records, key=lambda r: not versus.baseline_failed(r.baseline)):
        items = (r.baseline or {}).get("worse_items") or []
        if not items:
            continue
        shown = "".join(
            f'<tr><td class="key mono">{_e(i.get("id"))}</td>'
            + "".join(f'<td class="text">{_e(i.get(k))}</td>' for k in ("prompt", "expected", "before", "after"))
            + "</tr>"
            for i in items
        )
        worse = (r.baseline or {}).get("n_worse") or len((r.baseline or {}).get("worse") or items)
        title = (
            f"{_e(r.name)}{_test_of(r)} {_verdict(r.baseline)} "
            f'<span class="muted">(items that got worse, worst first: {len(items)} of {worse})</span>'
        )
        table = (
            '<table class="items"><tr><th class="key">item</th><th>prompt</th><th>expected</th><th>before (baseline)</th>'
            f"<th>after (now)</th></tr>{shown}</table>"
        )
        if versus.baseline_failed(r.baseline):
            parts.append(f"<h3>{title}</h3>\n{table}")
        else:
            parts.append(f'<details class="worse"><summary><b>{title}</b></summary>\n{table}</details>')
    return "\n".join(parts)


def _plots(records: list[MetricRecord]) -> str:
    from pytest_ftmodel.report import plots

    wanted = [r for r in records if r.details.get("kind") in ("training curve", "per-text NLL", "per-item score", "pass@k", "A/B", "judge", "format", "reference score", "length")]
    if not wanted:
        return '<p class="muted">No gate in this run has a figure to plot.</p>'
    if not plots.available():
        return (
            f'<p class="note">Plots need matplotlib: <code>{_e(plots.INSTALL_HINT)}</code>, then run again. '
            "The tables below are complete without it.</p>"
        )
    figures = []
    for i, r in enumerate(wanted):
        try:
            svg = plots.plot_record(r, f"f{i}")
        except Exception as exc:  # noqa: BLE001 - a plot that fails leaves its note, never a failed run
            figures.append(f'<figure><figcaption>{_e(r.name)}: plot failed ({_e(type(exc).__name__)}: {_e(exc)})</figcaption></figure>')
            continue
        if svg:
            caption = f"<b>{_e(r.name)}</b>{_test_of(r)} · {_e(fmt(r.value))} (bar {_e(_bar(r))})"
            figures.append(f'<figure class="{"pass" if r.passed else "fail"}"><figcaption>{caption}</figcaption>{svg}</figure>')
    return '<div class="plots">\n' + "\n".join(figures) + "\n</div>"


_COLUMNS = (("prompt / text", ("prompt", "text"), "text"), ("expected", ("expected",), "text"),
            ("answer", ("answer",), "text"), ("why it failed", ("reason",), "text"), ("stderr", ("stderr",), "text mono"))


def _worst(records: list[MetricRecord]) -> str:
    sections, seen = [], set()
    for r in records:
        texts = [i for i in r.items if any(i.get(k) for k in ("prompt", "text", "answer"))]
        # the same items judged twice in one test (rouge1 and rougeL alike, accuracy and macro-F1) show once
        key = (r.test, tuple((i.get("index"), i.get("value")) for i in texts))
        if not texts or key in seen:
            continue
        seen.add(key)
        better = r.details.get("better", "higher")
        heading = f"<h3>{_e(r.name)}{_test_of(r)} "
        perfect = r.details.get("perfect")
        if perfect is not None:
            texts = [i for i in texts if float(i.get("value") or 0.0) < perfect]
            if not texts:
                sections.append(heading + f'<span class="muted">(every one of {len(r.items)} {_e(r.unit)} right)</span></h3>')
                continue
        shown = sorted(texts, key=lambda i: float(i.get("value") or 0.0), reverse=better == "lower")[:WORST]
        columns = [c for c in _COLUMNS if any(i.get(k) for i in shown for k in c[1])]
        head = '<tr><th class="key">item</th><th class="key">value</th>' + "".join(f"<th>{_e(c[0])}</th>" for c in columns) + "</tr>"
        rows = []
        for i in shown:
            label = i.get("task_id") or i.get("sheet_id") or i.get("index")
            cells = [f'<td class="key mono">{_e(label)}</td>', f'<td class="key num">{_e(fmt(float(i.get("value") or 0.0)))}</td>']
            for _, keys, cls in columns:
                cells.append(f'<td class="{cls}">{_e(next((i[k] for k in keys if i.get(k)), ""))}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        what = _e(r.details.get("item_value", "value"))
        order = "lowest" if better == "higher" else "highest"
        sections.append(
            heading + f'<span class="muted">({order} {what} first, {len(shown)} of {len(r.items)})</span></h3>\n'
            f'<table class="items">{head}{"".join(rows)}</table>'
        )
    return "\n".join(sections) or '<p class="muted">No gate in this run kept per-item texts.</p>'


def _failures(records: list[MetricRecord]) -> str:
    failed = [r for r in records if versus.failed(r)]
    if not failed:
        return '<p class="muted">Every gate passed.</p>'
    parts = []
    for r in failed:
        mark = f" {_verdict(r.baseline)}" if versus.baseline_failed(r.baseline) else ""
        parts.append(f"<h3>{_e(r.name)}{_test_of(r, full=True)}{mark}</h3>")
        if not versus.gate_failed(r):
            parts.append(f"<p>The gate passed ({_e(fmt(r.value))}, bar {_e(_bar(r))}); its test failed.</p>")
        if r.diagnosis and versus.baseline_failed(r.baseline) and versus.compared(r.baseline):  # (else explain() says it)
            b = r.baseline or {}
            parts.append(
                f"<p>Against the baseline: {_e(versus.baseline_value_text(b))} → {_e(versus.candidate_text(b, r.value))}, "
                f"Δ {_e(versus.delta_text(b))} (95% CI), {_e(b.get('test') or 'paired test')} p = {_e(versus.p_text(b))}, "
                f"margin {_e(versus.margin_text(b))}</p>"
            )
        diagnosis = r.diagnosis or (versus.explain(r) if versus.baseline_failed(r.baseline) else "")
        if diagnosis:
            parts.append(f'<pre class="diagnosis">{_e(diagnosis)}</pre>')
    return "\n".join(parts)


def _repeats(records: list[MetricRecord]) -> str:
    """The stability of every sampled figure, and its flaky items (every one, escaped)."""
    rows = []
    for r in records:
        rep = (r.details or {}).get("repeats")
        if not isinstance(rep, dict):
            continue
        binary = bool(rep.get("binary"))
        flaky = "".join(
            f'<li><span class="mono">{_e(f.get("index"))}</span> (mean {_e(fmt(f.get("mean")))}) {_e(f.get("prompt") or "")}</li>'
            for f in rep.get("flaky") or []
        )
        rows.append(
            f"<tr><td>{_e(r.name)}{_test_of(r)}</td><td class=\"num\">{_e(rep.get('samples'))}</td>"
            f"<td class=\"num\">{_e(fmt(rep.get('pass_at_k')) if binary else '-')}</td>"
            f"<td class=\"num\">{_e(fmt(rep.get('pass_hat_k')) if binary else '-')}</td>"
            f"<td class=\"num\">{_e(fmt(rep.get('flip_rate')))}</td>"
            f"<td>{_e(len(rep.get('flaky') or []))} of {_e(rep.get('n'))}<ul>{flaky}</ul></td></tr>"
        )
    if not rows:
        return ""
    head = "<tr><th>metric</th><th>samples</th><th>pass@k</th><th>pass^k</th><th>flip rate</th><th>flaky items</th></tr>"
    return f'<section id="repeats"><h2>Repeated sampling</h2><table class="items">{head}{"".join(rows)}</table></section>'


def _judged(records: list[MetricRecord]) -> str:
    judged = versus.judged_text(records)
    scored = versus.scored_text(records)
    return (f'<p class="judged">Code samples {_e(judged)}</p>' if judged else "") + (f'<p class="judged">{_e(scored)}</p>' if scored else "")


def render_html(records: list[MetricRecord], session: dict[str, Any] | None = None, *, title: str = "pytest-ftmodel report") -> str:
    session = session or {}
    names = display_names(records)
    stopped = versus.interruption(session)
    body = [
        f"<h1>{_e(title)}</h1>",
        *([f'<p class="interrupted">Interrupted ({_e(stopped)}): {_e(versus.INTERRUPTED_NOTE)}.</p>'] if stopped else []),
        f'<section id="summary">{_session(records, session, names)}{_judged(records)}</section>',
        f'<section id="metrics"><h2>Metrics</h2>{_table(records, names) if records else "<p>No metrics were recorded.</p>"}</section>',
        *([f'<section id="baseline"><h2>Against the baseline</h2>{_against_baseline(records, session)}</section>']
          if any(r.baseline for r in records) else []),
        *([_repeats(records)] if _repeats(records) else []),
        f'<section id="plots"><h2>Plots</h2>{_plots(records)}</section>',
        f'<section id="worst-items"><h2>Worst items</h2>{_worst(records)}</section>',
        f'<section id="failures"><h2>Failing gates</h2>{_failures(records)}</section>',
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
