"""What a pipeline run did: one record per pass run, totals before and after, the numeric
check, and optional measured rows (latency, accuracy), as a text table or JSON.

Invariants: a record's deltas are ``after - before`` of that one pass run (0 when it changed
nothing); ``Report.changed`` is true iff some record changed the graph; ``to_dict`` holds only
JSON types so ``--report`` and ``--json`` write exactly it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PassRecord:
    name: str
    options: dict[str, Any]
    exact: bool
    changed: bool
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    delta: dict[str, int] = field(default_factory=dict)  # nodes, params, macs
    group: str | None = None  # the fixpoint group it ran in
    round: int | None = None  # its round in that group (1-based)
    group_index: int | None = None  # which run of a group (a pipeline may hold the same group twice)
    # " (after: a, b)": the passes before it, for error messages (not part of the JSON form)
    after: str = field(default="", repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.name if self.round is None else f"{self.name} [round {self.round}]"


@dataclass
class CheckResult:
    """N random inputs through the source model and the result."""

    inputs: int
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool  # every output element within atol * max(1, max|reference|) + rtol * |reference|
    enforced: bool  # failure is an error (exact-only pipeline)
    reference: str = ""  # what ran the source model
    result: str = ""  # what ran the optimized graph

    def line(self) -> str:
        verdict = "ok" if self.ok else ("FAILED" if self.enforced else "exceeds tolerance (lossy pipeline: reported only)")
        return (f"check: {self.inputs} random input{'s' if self.inputs != 1 else ''}, {self.reference} vs {self.result}: "
                f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g} "
                f"(criterion per output: |result - reference| <= {self.atol:g} * max(1, max|reference|) "
                f"+ {self.rtol:g} * |reference|): {verdict}")


@dataclass
class Report:
    pipeline: str
    exact: bool
    passes: list[PassRecord] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    check: CheckResult | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {before, after, unit}
    notes: list[str] = field(default_factory=list)
    # per-layer figures before/after (graphc.report_layers.merge); empty unless collected
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.passes)

    def add_metric(self, name: str, before, after, unit: str = "") -> None:
        """A measured before -> after row (e.g. ``latency``, ``accuracy``) for the table."""
        self.metrics[name] = {"before": before, "after": after, "unit": unit}

    def to_dict(self) -> dict:
        return _jsonable({
            "pipeline": self.pipeline, "exact": self.exact, "changed": self.changed, "seconds": self.seconds,
            "passes": [{k: v for k, v in dict(asdict(p), label=p.label).items() if k != "after"}
                       for p in self.passes],
            "before": self.before, "after": self.after,
            "check": asdict(self.check) if self.check else None, "metrics": self.metrics, "notes": self.notes,
            **({"layers": self.layers} if self.layers else {}),
        })

    def to_html(self, title: str | None = None) -> str:
        """This run as a self-contained HTML page (:mod:`graphc.report_html`)."""
        from graphc.report_html import render_html

        return render_html([self.to_dict()], title)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        return format_table(self)

    def refusals(self) -> str:
        """Per pass, the nodes its rewrites left alone and why (``--explain``)."""
        return format_refusals(self)

    def __str__(self) -> str:
        return self.table()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):  # numpy scalars
        return _jsonable(x.item())
    return str(x)


def _count(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _signed(n) -> str:
    if n is None:
        return "-"
    if n == 0:
        return "0"
    return ("+" if n > 0 else "-") + _count(abs(n))


def _pct(b, a) -> str:
    if not isinstance(b, (int, float)) or not isinstance(a, (int, float)) or not b:
        return ""
    return f"{(a / b - 1) * 100:+.1f}%"


def _render(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def _grouped(records: list[PassRecord]) -> list[tuple[str, list[PassRecord]]]:
    """Table rows: a pass outside any group is its own row; inside a fixpoint group, all rounds
    of one pass share a row (the JSON report keeps every round)."""
    rows: list[tuple[str, list[PassRecord]]] = []
    where: dict[tuple, int] = {}
    for r in records:
        if r.group is None:
            rows.append((r.name, [r]))
            continue
        key = (r.group_index, r.group, r.name, json.dumps(r.options, sort_keys=True, default=str))
        if key not in where:
            where[key] = len(rows)
            rows.append((r.name, []))
        rows[where[key]][1].append(r)
    out = []
    for label, recs in rows:
        if recs[0].group is not None:
            n = len(recs)
            label = f"{label} (fixpoint, {n} round{'s' if n != 1 else ''})"
        out.append((label, recs))
    return out


def format_refusals(report: Report) -> str:
    lines = []
    for r in report.passes:
        refused = r.stats.get("refused") or {}
        if not refused:
            continue
        where = f" (fixpoint round {r.round})" if r.round is not None else ""
        lines.append(f"{r.name}{where}: {len(refused)} node{'s' if len(refused) != 1 else ''} not rewritten")
        lines += [f"  {name}: {why}" for name, why in refused.items()]
    return "\n".join(lines) if lines else "no pass refused a rewrite"


def format_table(report: Report) -> str:
    rows = [["pass", "changed", "time", "Δnodes", "Δparams", "ΔMACs"]]
    for label, recs in _grouped(report.passes):
        secs = sum(r.seconds for r in recs)

        def total(key):
            vals = [r.delta.get(key) for r in recs]
            return None if any(v is None for v in vals) else sum(vals)

        rows.append([label, "yes" if any(r.changed for r in recs) else "no",
                     f"{secs * 1000:.1f}ms" if secs < 1 else f"{secs:.2f}s",
                     _signed(total("nodes")), _signed(total("params")), _signed(total("macs"))])
    lines = [f"pipeline: {report.pipeline} ({'exact' if report.exact else 'lossy'})"]
    lines += _render(rows, right={2, 3, 4, 5})
    lines.append("")
    tot = [["total", "before", "after", "change"]]
    for key, label in (("nodes", "nodes"), ("params", "params"), ("macs", "MACs"), ("flops", "FLOPs")):
        b, a = report.before.get(key), report.after.get(key)
        if b is None and a is None:
            continue
        tot.append([label, _count(b), _count(a), _pct(b, a)])
    for name, m in report.metrics.items():
        unit = f" ({m['unit']})" if m.get("unit") else ""
        fmt = (lambda v: "-" if v is None else f"{v:.4g}") if name != "params" else _count
        if m.get("unit") == "%":
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        b, a = m.get("before"), m.get("after")
        # a percentage metric changes by points, not by a percent of itself
        change = (f"{a - b:+.2f} pt" if b is not None and a is not None else "-") if m.get("unit") == "%" \
            else _pct(b, a)
        tot.append([name + unit, fmt(b), fmt(a), change])
    lines += _render(tot, right={1, 2, 3})
    lines.append(f"time: {report.seconds:.2f}s")
    if report.check is not None:
        lines.append(report.check.line())
    lines += report.notes
    return "\n".join(lines)
