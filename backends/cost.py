"""Static cost of a graph: MACs, FLOPs, params, memory; per node and in total.

Every figure is computed from types alone (no weights are read, nothing runs), with the
per-op rules of :mod:`graphc.ir.cost_rules`. Invariants:

- ``totals(g)["macs"] == sum(row.macs for row in per_node(g))`` and likewise for FLOPs;
  FLOPs >= 2 x MACs (equal when no bias, norm, activation or pool adds FLOPs).
- ``params`` counts only ``weight`` params (trainable parameters of the source model, as
  ``sum(p.numel() for p in model.parameters())``); buffers and folded constants are reported
  separately in bytes.
- Batch is the leading dimension of the first graph input; figures are for that batch.
- Peak memory is computed by liveness over the topological order: a node's outputs become live
  when it runs and die after their last use (graph outputs live to the end). Graph inputs and
  params are not in the peak; they are reported as ``input_bytes`` and ``param_bytes`` +
  ``buffer_bytes``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from graphc.ir.cost_rules import OpCost, node_cost

__all__ = ["NodeRow", "per_node", "totals", "peak_memory", "compare", "format_count",
           "format_bytes", "FIGURES"]


@dataclass(frozen=True)
class NodeRow:
    name: str
    op: str
    macs: int
    flops: int
    params: int
    read_bytes: int
    write_bytes: int
    kind: str
    counted: bool
    out_shape: tuple

    def as_dict(self) -> dict:
        d = asdict(self)
        d["out_shape"] = list(self.out_shape)
        return d


def per_node(graph) -> list[NodeRow]:
    """One row per node, in topological order."""
    rows = []
    for n in graph.nodes:
        c: OpCost = node_cost(n)
        params = sum(v.param.data.size for v in n.inputs if v.param is not None and v.param.kind == "weight")
        rows.append(NodeRow(n.name, n.op, c.macs, c.flops, int(params), c.read_bytes, c.write_bytes,
                            c.kind, c.counted, tuple(n.outputs[0].shape) if n.outputs else ()))
    return rows


def peak_memory(graph) -> tuple[int, str]:
    """Peak bytes of live node outputs over the topological order, and the node at the peak."""
    nodes = graph.nodes
    last_use: dict[int, int] = {}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            last_use[id(v)] = i
    end = len(nodes)
    for v in graph.outputs:
        last_use[id(v)] = end
    live = 0
    peak, at = 0, ""
    dying: dict[int, int] = {}
    for i, n in enumerate(nodes):
        for v in n.outputs:
            live += v.type.nbytes
            # an output nobody reads is freed right after the node runs
            dying[last_use.get(id(v), i)] = dying.get(last_use.get(id(v), i), 0) + v.type.nbytes
        if live > peak:
            peak, at = live, n.name
        live -= dying.pop(i, 0)
    return peak, at


def _batch(graph) -> int:
    for v in graph.inputs:
        if v.shape:
            return int(v.shape[0])
    return 1


def totals(graph) -> dict:
    """Whole-graph figures: macs, flops, params, param_bytes, buffer_bytes, input_bytes,
    activation_bytes (all node outputs), peak_bytes (live activations), traffic_bytes, batch,
    nodes, uncounted (ops with no cost, by op name -> count)."""
    macs = flops = act = traffic = 0
    uncounted: dict[str, int] = {}
    for n in graph.nodes:
        c = node_cost(n)
        macs += c.macs
        flops += c.flops
        traffic += c.traffic_bytes
        act += sum(v.type.nbytes for v in n.outputs)
        if not c.counted:
            key = n.attrs.get("target") or n.attrs.get("op_type") or n.op
            uncounted[str(key)] = uncounted.get(str(key), 0) + 1
    weights = [p for p in graph.params.values() if p.kind == "weight"]
    others = [p for p in graph.params.values() if p.kind != "weight"]
    peak, peak_at = peak_memory(graph)
    return {
        "batch": _batch(graph),
        "nodes": len(graph),
        "macs": int(macs),
        "flops": int(flops),
        "params": int(sum(p.value.type.numel for p in weights)),
        "param_bytes": int(sum(p.value.type.nbytes for p in weights)),
        "buffer_bytes": int(sum(p.value.type.nbytes for p in others)),
        "input_bytes": int(sum(v.type.nbytes for v in graph.inputs)),
        "activation_bytes": int(act),
        "peak_bytes": int(peak),
        "peak_at": peak_at,
        "traffic_bytes": int(traffic),
        "uncounted": uncounted,
    }


# Figures shown before -> after, with their unit for formatting.
FIGURES = [("macs", "MACs", "count"), ("flops", "FLOPs", "count"), ("params", "params", "count"),
           ("param_bytes", "param memory", "bytes"), ("activation_bytes", "activation memory", "bytes"),
           ("peak_bytes", "peak live memory", "bytes")]


def compare(before: dict, after: dict) -> list[dict]:
    """Rows ``{key, label, before, after, delta, ratio, text}`` for each figure in both dicts
    (ratio = after / before, None when before is 0)."""
    rows = []
    extra = [(k, k, "bytes" if k.endswith("_bytes") else "count") for k in before if k in after and k not in {f[0] for f in FIGURES}
             and k not in ("peak_at", "uncounted", "batch")]
    for key, label, unit in FIGURES + extra:
        if key not in before or key not in after:
            continue
        b, a = before[key], after[key]
        if not isinstance(b, (int, float)) or not isinstance(a, (int, float)):
            continue
        ratio = (a / b) if b else None
        fmt = format_bytes if unit == "bytes" else format_count
        pct = f" ({(ratio - 1) * 100:+.1f}%)" if ratio is not None else ""
        rows.append({"key": key, "label": label, "before": b, "after": a, "delta": a - b, "ratio": ratio,
                     "text": f"{label}: {fmt(b)} -> {fmt(a)}{pct}"})
    return rows


def format_count(n: float) -> str:
    n = float(n)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:.0f}"


def format_bytes(n: float) -> str:
    n = float(n)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"

