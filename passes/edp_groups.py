"""What each group-lasso group of an EDP pair costs, and the exact cut to a cost target.

A pair (see :mod:`graphc.passes.decompose`) has two kinds of groups on its coefficient matrix
A (n x m): column j (basis filter j with it) and row i (output channel i with its bias).

- A column costs (c k^2 + n) MACs per output position: the basis filter and the coefficient
  column. Its weights are c k^2 + n.
- A row costs what its output channel costs wherever the channel group takes it: the
  coefficient row and every reader's input slice (the next basis conv's c-slice, a linear's
  block of flattened features), each times its node's output positions. Rows whose channel
  group is frozen (the classifier's outputs, a graph output) cannot be removed, so they carry
  no penalty and are never cut.

These costs weight the group lasso (``edp-train(weighting=macs)``: a group is shrunk in
proportion to what removing it saves) and order the final cut of ``edp-train(target-...)``.
The cost is linear per group; the merge rule of ``prune-merge`` (a pair merges back where the
factorised form is not cheaper) makes the real total piecewise, which is why targets are met by
measuring the pruned-and-merged copy with the cost model, never by summing these estimates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ir.graph import Graph
from graphc.passes.decompose import Pair

__all__ = ["GroupCost", "group_costs", "cost_after", "zero_groups"]


@dataclass(frozen=True)
class GroupCost:
    """Per-group costs of one pair (MACs and weights per column / per row) and whether its
    rows can be removed at all."""

    col_macs: float
    col_params: float
    row_macs: float
    row_params: float
    rows_removable: bool


def _positions(node) -> int:
    """Output positions per channel of a conv (H x W) or linear (1 per leading element)."""
    shape = node.output.shape
    if node.op == "conv2d":
        return int(np.prod(shape[2:]))
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def _channel_axis(node) -> int:
    return 1 if node.op == "conv2d" else len(node.output.shape) - 1


def group_costs(graph: Graph, pairs: list[Pair]) -> list[GroupCost]:
    from graphc.passes.channel_groups import channel_groups

    nodes = {n.name: n for n in graph.nodes}
    groups = {}
    for g in channel_groups(graph):
        for m in g.members:
            if not m.is_param:
                groups[(id(m.value), m.axis)] = g
    out = []
    for p in pairs:
        b = p.basis.input(1).shape
        n = p.coef.input(1).shape[0]
        ck2 = int(np.prod(b[1:]))
        pos = _positions(p.basis)
        g = groups.get((id(p.coef.output), _channel_axis(p.coef)))
        row_macs = row_params = 0.0
        removable = g is not None and g.prunable
        if g is not None:
            for m in g.members:
                v = m.value
                if not m.is_param or v.param.data.ndim < 2:
                    continue
                per_unit = m.size / g.size * v.param.data.size / v.shape[m.axis]
                reader = nodes.get(m.node)
                row_params += per_unit
                row_macs += per_unit * (_positions(reader) if reader is not None else 1)
        out.append(GroupCost(col_macs=float((ck2 + n) * pos), col_params=float(ck2 + n),
                             row_macs=row_macs, row_params=row_params, rows_removable=removable))
    return out


def cost_after(graph: Graph) -> dict[str, float]:
    """MACs and params of ``graph`` once ``prune-merge`` has removed its zero groups (measured
    on a copy with the cost model)."""
    from graphc.backends.cost import totals
    from graphc.passes.prune_merge import PruneMerge
    from graphc.registry import PassContext

    g = graph.clone()
    PruneMerge().run(g, PassContext(quiet=True))
    t = totals(g)
    return {"macs": float(t["macs"]), "params": float(t["params"])}


def zero_groups(graph: Graph, pairs: list[Pair], picks) -> None:
    """Set the picked groups exactly to zero: ``picks`` is (pair index, "col" | "row", index)."""
    by_pair: dict[int, list] = {}
    for i, kind, j in picks:
        by_pair.setdefault(i, []).append((kind, j))
    for i, items in by_pair.items():
        p = pairs[i]
        pa = p.coef.input(1).param
        a = pa.data.copy()
        bias = p.coef.input(2).param if len(p.coef.inputs) > 2 else None
        bd = None if bias is None else bias.data.copy()
        for kind, j in items:
            if kind == "col":
                a[:, j] = 0
            else:
                a[j] = 0
                if bd is not None:
                    bd[j] = 0
        pa.set_data(a)
        if bias is not None:
            bias.set_data(bd)
