"""Text and plot forms of a cost report: the totals table, top layers, before -> after.

Every count is printed with its unit word (``MACs``, ``FLOPs``, ``params``) so a MAC is never
mistaken for a FLOP; memory is in binary units (KiB, MiB). Plots use matplotlib's Agg backend
and are written to a temporary file, then renamed, so a failed plot leaves no partial file.
"""
from __future__ import annotations

import os
from pathlib import Path

from graphc.backends.cost import NodeRow, compare, format_bytes, format_count

__all__ = ["units", "totals_table", "layers_table", "compare_table", "plot_layers"]


def totals_table(t: dict, latency: dict | None = None) -> str:
    lines = [
        ("MACs", units(t["macs"], "MACs"), "multiply-accumulates of conv, linear, matmul, attention"),
        ("FLOPs", units(t["flops"], "FLOPs"), "2 x MACs + bias, norm, activation, pool, softmax"),
        ("params", units(t["params"], " params").replace("  ", " "), format_bytes(t["param_bytes"])),
        ("buffers + consts", format_bytes(t["buffer_bytes"]), "BN statistics, folded constants"),
        ("input memory", format_bytes(t["input_bytes"]), f"batch {t['batch']}"),
        ("activation memory", format_bytes(t["activation_bytes"]), "every node output, summed"),
        ("peak live memory", format_bytes(t["peak_bytes"]), f"activations only, at {t['peak_at'] or '-'}"),
        ("nodes", str(t["nodes"]), ""),
    ]
    unc = t.get("uncounted") or {}
    lines.append(("uncounted ops", ", ".join(f"{k} x{v}" for k, v in sorted(unc.items())) or "none",
                  "no cost rule: 0 MACs/FLOPs" if unc else ""))
    for label, value, note in (latency or {}).get("lines", []):
        lines.append((label, value, note))
    w0 = max(len(a) for a, _, _ in lines)
    w1 = max(len(b) for _, b, _ in lines)
    return "\n".join(f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in lines)


def units(n: float, word: str) -> str:
    """``4.089 GMACs``, ``25.557 Mparams``, ``12 FLOPs``."""
    s = format_count(n)
    return f"{s}{word}" if s[-1].isalpha() else f"{s} {word}"


def _share(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"  # a graph of no MACs (only activations)


def layers_table(rows: list[NodeRow], title: str, *, latency: dict[str, float] | None = None,
                 latency_label: str = "ms", total_macs: int | None = None, limit: int | None = 10) -> str:
    total_macs = total_macs if total_macs is not None else sum(r.macs for r in rows)
    shown = rows[:limit] if limit else rows
    head = f"{'layer':<34} {'op':<18} {'MACs':>11} {'%MACs':>6} {'FLOPs':>11} {'params':>10}"
    if latency is not None:
        head += f" {latency_label:>10}"
    out = [title, "  " + head]
    for r in shown:
        line = (f"{r.name[:34]:<34} {r.op[:18]:<18} {format_count(r.macs):>11} {_share(r.macs, total_macs):>6}"
                f" {format_count(r.flops):>11} {format_count(r.params):>10}")
        if latency is not None:
            line += f" {latency.get(r.name, 0.0):>10.3f}"
        out.append("  " + line)
    return "\n".join(out)


def compare_table(before: dict, after: dict) -> str:
    return "\n".join("  " + r["text"] for r in compare(before, after))


def plot_layers(path, rows: list[NodeRow], latency: dict[str, float], *, after_rows: list[NodeRow] | None = None,
                after_latency: dict[str, float] | None = None, title: str = "", latency_label: str = "latency (ms)") -> None:
    """Per-layer MACs and latency (bars by layer in topological order); with ``after_*`` the
    second variant is drawn beside the first, matched by layer name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in rows if r.macs or latency.get(r.name)]
    extra = [r.name for r in (after_rows or []) if r.name not in set(names) and (r.macs or (after_latency or {}).get(r.name))]
    names += extra
    bm = {r.name: r.macs for r in rows}
    am = {r.name: r.macs for r in (after_rows or [])}
    x = range(len(names))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(names) * 0.12), 7), sharex=True)
    width = 0.45 if after_rows is not None else 0.9
    axes[0].bar([i - (width / 2 if after_rows is not None else 0) for i in x], [bm.get(n, 0) / 1e6 for n in names],
                width, label="before" if after_rows is not None else None)
    axes[1].bar([i - (width / 2 if after_rows is not None else 0) for i in x], [latency.get(n, 0) for n in names], width,
                label="before" if after_rows is not None else None)
    if after_rows is not None:
        axes[0].bar([i + width / 2 for i in x], [am.get(n, 0) / 1e6 for n in names], width, label="after")
        axes[1].bar([i + width / 2 for i in x], [(after_latency or {}).get(n, 0) for n in names], width, label="after")
        axes[0].legend()
    axes[0].set_ylabel("MMACs")
    axes[1].set_ylabel(latency_label)
    axes[1].set_xlabel("layer (topological order)")
    if len(names) <= 60:
        axes[1].set_xticks(list(x))
        axes[1].set_xticklabels(names, rotation=90, fontsize=6)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
