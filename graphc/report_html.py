"""A run's report as one self-contained HTML page: tables and inline SVG bar charts.

    html = render_html([report.to_dict()])              # one run
    html = render_html([run1, run2, run3], title=...)   # a target sweep: accuracy vs MACs / latency

The page holds the pipeline (one box per pass run), the per-pass deltas with a chart of MACs
after each pass, totals and measured metrics (accuracy, latency) before and after, and, when the
run collected per-layer figures (:mod:`graphc.report_layers`), bar charts of channels, MACs and
predicted vs measured time per layer. With two runs or more it opens with accuracy vs MACs and
accuracy vs latency over the runs, the source as the first point.

Invariants: the page loads nothing (no script, style sheet, font or image from outside; the
only ``<script>`` is a JSON data block); every string from a model or a user (node names,
pipeline, notes) is escaped; the runs it was drawn from are embedded as JSON
(``<script type="application/json" id="graphc-runs">``), so :func:`runs_from_file` reads a page
back as well as a saved JSON run.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

from graphc.errors import InputError
from graphc.report import _count

__all__ = ["render_html", "runs_from_file", "MAX_LAYERS"]

# Past this many layers, the charts show the layers with the most MACs (and say so).
MAX_LAYERS = 120
BEFORE, AFTER, PRED, MEAS = "#9aa5b1", "#2b6cb0", "#dd6b20", "#2f855a"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#1a202c;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #edf2f7;text-align:right}
td:first-child,th:first-child,td.l,th.l{text-align:left}th{background:#f7fafc}
.flow{display:flex;flex-wrap:wrap;gap:4px;align-items:center}.box{border:1px solid #cbd5e0;border-radius:6px;padding:4px 8px;background:#f7fafc}
.box.changed{border-color:#2b6cb0;background:#ebf4ff}.arrow{color:#a0aec0}.muted{color:#718096}.ok{color:#2f855a}.bad{color:#c53030}
svg{display:block;margin:6px 0}svg text{font:11px system-ui,sans-serif;fill:#2d3748}details{margin:10px 0}summary{cursor:pointer;font-weight:600}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    v = float(v)
    return _count(v) if abs(v) >= 1e3 else f"{v:.{digits}g}"


def _finite(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


# -- charts -----------------------------------------------------------------------------------------
def hbar_chart(title: str, labels: list[str], series: list[tuple[str, list, str]], unit: str = "") -> str:
    """Grouped horizontal bars: one row per label, one bar per series (None or a non-finite
    figure: no bar)."""
    series = [(name, [_finite(v) for v in vs], colour) for name, vs, colour in series]
    vals = [v for _, vs, _ in series for v in vs if v is not None]
    top = max(vals) if vals and max(vals) > 0 else 1.0
    left, width, bar = 230, 560, 7
    row = bar * len(series) + 6
    legend = 22
    h = legend + row * len(labels) + 24
    out = [f'<svg role="img" aria-label="{_e(title)}" width="{left + width + 90}" height="{h}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>']
    x = left
    for name, _, colour in series:
        out.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/><text x="{x + 14}" y="13">{_e(name)}</text>')
        x += 24 + 7 * len(name)
    for i, label in enumerate(labels):
        y0 = legend + i * row
        short = label if len(label) <= 34 else "…" + label[-33:]
        out.append(f'<text x="{left - 6}" y="{y0 + row / 2 + 3:.1f}" text-anchor="end"><title>{_e(label)}</title>{_e(short)}</text>')
        for j, (name, vs, colour) in enumerate(series):
            v = vs[i]
            if v is None:
                continue
            w = max(0.0, float(v)) / top * width
            y = y0 + 3 + j * bar
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 1}" fill="{colour}">'
                       f'<title>{_e(label)} {_e(name)}: {_e(_num(v))}{_e(unit)}</title></rect>')
    yb = legend + row * len(labels) + 4
    out.append(f'<line x1="{left}" y1="{legend}" x2="{left}" y2="{yb}" stroke="#a0aec0"/>')
    for k in range(5):
        xv = left + k * width / 4
        out.append(f'<text x="{xv:.1f}" y="{yb + 14}" text-anchor="middle">{_e(_num(top * k / 4))}{_e(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def scatter_chart(title: str, points: list[tuple[float, float, str]], xlabel: str, ylabel: str) -> str:
    """Points joined in x order, each labelled; the first point is the source."""
    pts = [(float(x), float(y), lab) for x, y, lab in points
           if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    w, h, pad = 640, 320, 56
    out = [f'<svg role="img" aria-label="{_e(title)}" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
           f'<title>{_e(title)}</title>']
    if not pts:
        out.append(f'<text x="{pad}" y="{h / 2}">no run has both figures</text></svg>')
        return "".join(out)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(0.0, min(xs)), max(xs) * 1.05 or 1.0
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    y0, y1 = y0 - 0.1 * (y1 - y0), y1 + 0.1 * (y1 - y0)

    def sx(v):
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(v):
        return h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)

    out.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#a0aec0"/>'
               f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#a0aec0"/>')
    for k in range(5):
        xv, yv = x0 + (x1 - x0) * k / 4, y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{h - pad + 14}" text-anchor="middle">{_e(_num(xv))}</text>'
                   f'<text x="{pad - 4}" y="{sy(yv) + 3:.1f}" text-anchor="end">{_e(_num(yv))}</text>')
    out.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">{_e(xlabel)}</text>'
               f'<text x="14" y="{h / 2}" text-anchor="middle" transform="rotate(-90 14 {h / 2})">{_e(ylabel)}</text>')
    order = sorted(range(len(pts)), key=lambda i: pts[i][0])
    path = " ".join(f"{'M' if k == 0 else 'L'}{sx(pts[i][0]):.1f},{sy(pts[i][1]):.1f}" for k, i in enumerate(order))
    out.append(f'<path d="{path}" fill="none" stroke="{AFTER}" stroke-width="1.5"/>')
    for i, (x, y, lab) in enumerate(pts):
        colour = BEFORE if i == 0 else AFTER
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"><title>{_e(lab)}: '
                   f'{_e(_num(x))}, {_e(_num(y))}</title></circle>'
                   f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}">{_e(lab if len(lab) <= 28 else lab[:27] + "…")}</text>')
    out.append("</svg>")
    return "".join(out)


# -- sections ---------------------------------------------------------------------------------------
def _pipeline(run: dict) -> str:
    boxes = []
    for p in run.get("passes", []):
        opts = ", ".join(f"{k}={v}" for k, v in (p.get("options") or {}).items())
        label = p.get("label") or p.get("name", "?")
        boxes.append(f'<span class="box{" changed" if p.get("changed") else ""}" title="{_e(opts)}">{_e(label)}</span>')
    return '<div class="flow">' + '<span class="arrow">→</span>'.join(boxes or ['<span class="muted">no passes</span>']) + "</div>"


def _passes(run: dict) -> str:
    rows = ["<tr><th>pass</th><th>changed</th><th>time</th><th>Δnodes</th><th>Δparams</th><th>ΔMACs</th></tr>"]
    macs = run.get("before", {}).get("macs")
    labels, after_macs = [], []
    for p in run.get("passes", []):
        d = p.get("delta") or {}
        secs = float(p.get("seconds") or 0.0)
        rows.append(f"<tr><td>{_e(p.get('label') or p.get('name'))}</td><td>{'yes' if p.get('changed') else 'no'}</td>"
                    f"<td>{f'{secs * 1e3:.1f} ms' if secs < 1 else f'{secs:.2f} s'}</td><td>{_e(_signed(d.get('nodes')))}</td><td>{_e(_signed(d.get('params')))}</td>"
                    f"<td>{_e(_signed(d.get('macs')))}</td></tr>")
        if macs is not None and d.get("macs") is not None:
            macs += d["macs"]
            labels.append(p.get("label") or p.get("name", "?"))
            after_macs.append(macs)
    out = "<table>" + "".join(rows) + "</table>"
    if labels:
        out += hbar_chart("MACs after each pass", ["(source)"] + labels,
                          [("MACs", [run["before"]["macs"]] + after_macs, AFTER)])
    return out


def _signed(v) -> str:
    if v is None:
        return "-"
    return "0" if v == 0 else ("+" if v > 0 else "-") + _num(abs(v))


def _totals(run: dict) -> str:
    rows = ["<tr><th></th><th>before</th><th>after</th><th>change</th></tr>"]
    b, a = run.get("before", {}), run.get("after", {})
    for key, label in (("nodes", "nodes"), ("params", "params"), ("macs", "MACs"), ("flops", "FLOPs"),
                       ("peak_bytes", "peak live bytes")):
        if key in b or key in a:
            rows.append(f"<tr><td>{label}</td><td>{_num(b.get(key))}</td><td>{_num(a.get(key))}</td><td>{_pct(b.get(key), a.get(key))}</td></tr>")
    for name, m in (run.get("metrics") or {}).items():
        unit = m.get("unit") or ""
        mb, ma = m.get("before"), m.get("after")
        change = (f"{ma - mb:+.2f} pt" if isinstance(mb, (int, float)) and isinstance(ma, (int, float)) else "-") \
            if unit == "%" else _pct(mb, ma)
        rows.append(f"<tr><td>{_e(name)}{f' ({_e(unit)})' if unit else ''}</td><td>{_num(mb, 4)}</td><td>{_num(ma, 4)}</td>"
                    f"<td>{_e(change)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _pct(b, a) -> str:
    if not isinstance(b, (int, float)) or not isinstance(a, (int, float)) or not b:
        return ""
    return f"{(a / b - 1) * 100:+.1f}%"


def _layers(run: dict) -> str:
    layers = run.get("layers") or []
    if not layers:
        return ('<p class="muted">No per-layer figures in this run (written by <code>graphc optimize '
                '--report FILE.html</code>; per-layer measured time with <code>--measure</code>).</p>')
    shown = layers
    note = ""
    if len(layers) > MAX_LAYERS:
        top = sorted(layers, key=lambda r: -max(_finite(r.get("macs_before")) or 0, _finite(r.get("macs_after")) or 0))[:MAX_LAYERS]
        keep = {id(r) for r in top}
        shown = [r for r in layers if id(r) in keep]
        note = f'<p class="muted">{len(layers) - MAX_LAYERS} layers with the fewest MACs not shown.</p>'
    names = [r["name"] for r in shown]

    def col(key):
        return [r.get(key) for r in shown]

    out = [note, "<h3>Channels per layer</h3>",
           hbar_chart("output channels per layer", names, [("before", col("channels_before"), BEFORE),
                                                           ("after", col("channels_after"), AFTER)])]
    out += ["<h3>MACs per layer</h3>",
            hbar_chart("MACs per layer", names, [("before", col("macs_before"), BEFORE), ("after", col("macs_after"), AFTER)])]
    has_pred = any(v is not None for v in col("predicted_ms_after") + col("predicted_ms_before"))
    has_meas = any(v is not None for v in col("measured_ms_after") + col("measured_ms_before"))
    if has_pred or has_meas:
        for when in ("before", "after"):
            series = []
            if has_pred:
                series.append((f"predicted ({when})", col(f"predicted_ms_{when}"), PRED))
            if has_meas:
                series.append((f"measured ({when})", col(f"measured_ms_{when}"), MEAS))
            out += [f"<h3>Time per layer, {when} (ms)</h3>", hbar_chart(f"time per layer {when}", names, series, " ms")]
    else:
        out.append('<p class="muted">No per-layer time: calibrate this machine (<code>graphc calibrate</code>) for '
                   'predictions, add <code>--measure</code> for onnxruntime\'s profile.</p>')
    return "".join(out)


def _latency(run: dict, when: str):
    """Measured latency when the run measured it, else the predicted; (ms, which)."""
    metrics = run.get("metrics") or {}
    for name, m in metrics.items():
        if name.startswith("latency") and m.get(when) is not None:
            return float(m[when]), name
    m = metrics.get("predicted latency")
    if m and m.get(when) is not None:
        return float(m[when]), "predicted latency"
    return None, None


def _accuracy(run: dict, when: str):
    m = (run.get("metrics") or {}).get("accuracy")
    return None if not m or m.get(when) is None else float(m[when])


def _sweep(runs: list[dict]) -> str:
    src = runs[0]
    acc_macs = [(src.get("before", {}).get("macs"), _accuracy(src, "before"), "source")]
    lat0, which = _latency(src, "before")
    acc_lat = [(lat0, _accuracy(src, "before"), "source")]
    for i, r in enumerate(runs):
        label = r.get("label") or f"run {i + 1}"
        acc_macs.append((r.get("after", {}).get("macs"), _accuracy(r, "after"), label))
        acc_lat.append((_latency(r, "after")[0], _accuracy(r, "after"), label))
    rows = ['<tr><th>run</th><th class="l">pipeline</th><th>MACs</th><th>latency (ms)</th><th>accuracy (%)</th></tr>']
    for (m, a, lab), (lt, _, _), r in zip(acc_macs, acc_lat, [None] + runs):
        rows.append(f"<tr><td>{_e(lab)}</td><td class=\"l\"><code>{_e(r['pipeline']) if r else '-'}</code></td><td>{_num(m)}</td>"
                    f"<td>{_num(lt, 4)}</td><td>{_num(a, 4)}</td></tr>")
    return ("<h2>Target sweep</h2><table>" + "".join(rows) + "</table>"
            + "<h3>Accuracy vs MACs</h3>" + scatter_chart("accuracy vs MACs", acc_macs, "MACs", "accuracy (%)")
            + f"<h3>Accuracy vs latency ({_e(which or 'no latency in these runs')})</h3>"
            + scatter_chart("accuracy vs latency", acc_lat, f"{which or 'latency'} (ms)", "accuracy (%)"))


def _run(run: dict) -> str:
    check = run.get("check")
    check_line = ""
    if check:
        ok = check.get("ok")
        check_line = (f'<p>check: {check.get("inputs")} random inputs, max abs err {_num(check.get("max_abs"))}, '
                      f'max rel err {_num(check.get("max_rel"))}: <span class="{"ok" if ok else "bad"}">'
                      f'{"ok" if ok else "outside tolerance"}</span></p>')
    notes = "".join(f"<li>{_e(n)}</li>" for n in run.get("notes") or [])
    return (f"<h2>Pipeline</h2><p><code>{_e(run.get('pipeline', ''))}</code> "
            f"({'exact' if run.get('exact') else 'lossy'}, {float(run.get('seconds') or 0):.2f} s)</p>{_pipeline(run)}"
            f"<h2>Per-pass deltas</h2>{_passes(run)}<h2>Before and after</h2>{_totals(run)}{check_line}"
            + (f"<ul>{notes}</ul>" if notes else "") + f"<h2>Layers</h2>{_layers(run)}")


def render_html(runs: list[dict], title: str | None = None) -> str:
    """The page for one run, or for a sweep of runs of one source (in the order given)."""
    if not runs:
        raise InputError("no run to report")
    title = title or (f"graphc: {runs[0].get('pipeline', '')}" if len(runs) == 1 else f"graphc: sweep of {len(runs)} runs")
    body = [f"<h1>{_e(title)}</h1>"]
    if len(runs) > 1:
        body.append(_sweep(runs))
        for i, r in enumerate(runs):
            body.append(f"<details{' open' if i == 0 else ''}><summary>{_e(r.get('label') or f'run {i + 1}')}: "
                        f"<code>{_e(r.get('pipeline', ''))}</code></summary>{_run(r)}</details>")
    else:
        body.append(_run(runs[0]))
    data = json.dumps(runs).replace("</", "<\\/")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}"
            f'<script type="application/json" id="graphc-runs">{data}</script></body></html>\n')


def _number(v) -> bool:
    # a report writes a non-finite float as its name (JSON has no inf or nan)
    return v is None or v in ("inf", "-inf", "nan") or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check_run(run, where: str) -> dict:
    """The shape the page reads, checked up front: a hand-edited or foreign file is one clear
    line, never a traceback from deep inside a chart."""
    if not isinstance(run, dict) or "pipeline" not in run or not isinstance(run.get("passes"), list):
        raise InputError(f"{where} is not a saved graphc run (expected what `graphc optimize --report FILE` writes)")

    def bad(what):
        return InputError(f"{where}: {what} is malformed (expected what `graphc optimize --report FILE` writes)")

    for p in run["passes"]:
        if not isinstance(p, dict) or not isinstance(p.get("delta", {}), dict) \
                or not all(_number(v) for v in (p.get("delta") or {}).values()) or not _number(p.get("seconds")):
            raise bad("a pass record")
    for key in ("before", "after"):
        if not isinstance(run.get(key, {}), dict) or not all(_number(run.get(key, {}).get(k)) for k in ("macs", "params", "nodes", "flops")):
            raise bad(f"'{key}'")
    metrics = run.get("metrics") or {}
    if not isinstance(metrics, dict) or not all(isinstance(m, dict) and _number(m.get("before")) and _number(m.get("after"))
                                                for m in metrics.values()):
        raise bad("'metrics'")
    layers = run.get("layers") or []
    if not isinstance(layers, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("op"), str)
            and all(_number(v) for k, v in r.items() if k not in ("name", "op")) for r in layers):
        raise bad("'layers'")
    if not isinstance(run.get("notes") or [], list) or not isinstance(run.get("check") or {}, dict):
        raise bad("'notes' or 'check'")
    return run


def runs_from_file(path: str | Path) -> list[dict]:
    """The runs saved in ``path``: a JSON report (``--report run.json``) or a page this module
    wrote (its embedded runs)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") from None
    if p.suffix.lower() in (".html", ".htm"):
        start = text.find('<script type="application/json" id="graphc-runs">')
        end = text.find("</script>", start)
        if start < 0 or end < 0:
            raise InputError(f"{path} is not a page graphc wrote (no embedded runs)")
        text = text[start + len('<script type="application/json" id="graphc-runs">'):end]
    try:
        data = json.loads(text)
    except ValueError:
        raise InputError(f"{path} is not JSON (expected what `graphc optimize --report FILE` writes)") from None
    runs = data if isinstance(data, list) else [data]
    if not runs:
        raise InputError(f"{path} holds no run")
    return [_check_run(r, str(path)) for r in runs]
