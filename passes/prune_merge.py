"""prune-merge: EDP's Pruning & Merging module on the pairs made by ``decompose``. Exact for
groups that are exactly zero (the default ``threshold=0``); merging is exact.

1. Columns: a column j of A whose norm is <= ``threshold`` is dropped with basis filter j
   (row j of B): the rank of the pair falls to r.
2. Rows: an output channel i whose row (A[i, :], b[i]) is <= ``threshold`` is removed from
   every member of its channel group (via the channel-groups analysis) only when it is zero
   everywhere it is read: every conv/linear producing into the group has a zero weight row
   and bias there, and every op between keeps zero as zero (relu, pooling, reshape, an add of
   zeros; a BatchNorm with a nonzero shift does not), and every reader is one a zero channel
   adds nothing to (conv, linear, matmul, sum). Otherwise it stays, with the reason in
   ``stats["refused"]``.
3. Merge: the pair becomes one conv (linear) with W = A.B wherever the factorised form is not
   cheaper, r(ck^2 + n) >= n ck^2.

    %t = conv2d(%x, %B) {5x5}  # c1.basis    (r = 3 of 20 columns left: 3(25+20) < 20*25)
    %y = conv2d(%t, %A, %b) {1x1}  # c1  ==>  %t = conv2d(%x, %B[:3]) {5x5}  # c1.basis
                                             %y = conv2d(%t, %A[:, :3], %b) {1x1}  # c1

Invariants: a merged pair keeps the coefficient node's name and output value and the basis
node's geometry; every pair keeps at least one column (a pair with all columns zero keeps one
zero column, so its output stays the bias); a second run changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph
from graphc.ir.meta import EDP
from graphc.ir.ops import ops_with
from graphc.passes._rewrite import cast_like
from graphc.passes.decompose import Pair, find_pairs
from graphc.registry import Pass, PassContext, PassResult, register_pass

__all__ = ["PruneMerge", "drop_columns", "merge_pair", "factorised_cheaper", "remove_zero_rows"]


def _mat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1])


def drop_columns(graph: Graph, pair: Pair, keep: np.ndarray) -> None:
    """Keep columns ``keep`` of A and the matching filters of B."""
    pa, pb = pair.coef.input(1).param, pair.basis.input(1).param
    pa.set_data(np.ascontiguousarray(pa.data[:, keep]))
    pb.set_data(np.ascontiguousarray(pb.data[keep]))
    pair.basis.retype()
    pair.coef.retype()


def factorised_cheaper(pair: Pair) -> bool:
    """r(ck^2 + n) < n ck^2: the pair costs fewer MACs and weights than the merged layer."""
    b = pair.basis.input(1).shape
    r, ck2 = b[0], int(np.prod(b[1:]))
    n = pair.coef.input(1).shape[0]
    return r * (ck2 + n) < n * ck2


def _merged_source(pair: Pair) -> str:
    src = pair.coef.input(1).param.source
    for suffix in (".coef.weight", ".coef"):
        if src.endswith(suffix):
            return src[: -len(suffix)] + ".weight"
    return src


def merge_pair(graph: Graph, pair: Pair) -> None:
    """Replace the pair by one layer W = A.B with the basis geometry and the coefficient bias."""
    a, b = pair.coef.input(1).param.data, pair.basis.input(1).param.data
    w = _mat(a).astype(np.float64) @ b.reshape(b.shape[0], -1).astype(np.float64)
    w = cast_like(w.reshape(a.shape[0], *b.shape[1:]), b)
    name = pair.coef.input(1).name
    if name.endswith(".coef"):
        name = name[: -len(".coef")]
    wv = graph.add_param(w, source=_merged_source(pair), name=name)
    coef = pair.coef
    coef.set_input(1, wv)
    coef.set_input(0, pair.basis.input(0))
    coef.attrs.clear()
    coef.attrs.update(pair.basis.attrs)
    coef.meta.pop(EDP.name, None)
    graph.erase(pair.basis)
    coef.retype()


# Ops with f(0) = 0 elementwise, or that only move, pick or pool elements: a channel that is
# zero at every input stays zero at the output.
_KEEPS_ZERO = ops_with("keeps_zero")
# Ops that combine operands: zero only where every operand is zero (mul: where any is).
_COMBINES = {"add", "sub", "sum_n", "maximum", "minimum"}
# Readers for which a zero input channel contributes nothing: removing it (their weight
# columns with it) leaves their output unchanged.
_ABSORBS_ZERO = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "linear", "matmul", "sum"}
_WEIGHTED = {"conv1d", "conv2d", "conv3d", "linear"}


def _rows_zero(data: np.ndarray, axis: int, threshold: float) -> np.ndarray:
    """Per index of ``axis``: is the slice's L2 norm at most ``threshold``."""
    rows = np.moveaxis(np.asarray(data), axis, 0).reshape(data.shape[axis], -1).astype(np.float64)
    return np.sqrt((rows * rows).sum(axis=1)) <= threshold


class _ZeroChannels:
    """Which units of one channel group are zero wherever the group is read.

    Walks the group's node outputs in topological order; an output element is zero when its
    producer provably makes it so: a conv/linear whose weight row and bias are zero, an op that
    keeps zero as zero (relu, pooling, add of zeros, reshape...) fed by zeros, or a product
    with a zero operand. Everything else (BatchNorm with a nonzero shift, sigmoid, softmax, an
    add of another value...) may be nonzero. A unit is removable when it is zero in every
    value a reader outside the group reads (a conv, linear, matmul or sum, to which a zero
    channel adds nothing); values read only inside the group lose the unit together with their
    readers' outputs. ``why[u]`` names the first node where unit u may stop being zero."""

    def __init__(self, graph: Graph, group, threshold: float):
        self.group, self.threshold = group, threshold
        self.members: dict[int, list] = {}
        for m in group.members:
            self.members.setdefault(id(m.value), []).append(m)
        self.zero: dict[tuple[int, int], np.ndarray] = {}
        self.unit_zero = np.ones(group.size, bool)
        self.why: list[str | None] = [None] * group.size
        self.absorb_reason = None
        for node in graph.nodes:
            outs = [m for v in node.outputs for m in self.members.get(id(v), ()) if not m.is_param]
            for m in outs:
                z, why = self._output_zero(node, m)
                self.zero[(id(m.value), m.axis)] = z
                for u in np.unique(m.units[~z]):
                    if self.why[u] is None:
                        self.why[u] = why
                if self._read_outside(m):
                    self.unit_zero &= self._units_zero(m)

    def _read_outside(self, m) -> bool:
        """Does a node whose outputs are not in the group read ``m``? Records a reader that a
        zero channel does not leave unchanged."""
        outside = False
        for use in m.value.uses():
            node = use.node
            if any(id(v) in self.members for v in node.outputs):
                continue
            outside = True
            if node.op not in _ABSORBS_ZERO and self.absorb_reason is None:
                self.absorb_reason = f"{node.op} {node.name} reads these channels; removing zero ones would change it"
        return outside

    def _units_zero(self, m) -> np.ndarray:
        """Per unit: every element of ``m`` in that unit is zero (vacuous for units not in ``m``)."""
        if m.is_param:
            z = _rows_zero(m.value.param.data, m.axis, self.threshold)
        else:
            z = self.zero.get((id(m.value), m.axis))
            if z is None:
                return np.zeros(self.group.size, bool)
        out = np.ones(self.group.size, bool)
        np.logical_and.at(out, m.units, z)
        return out

    def _operand_zero(self, v) -> np.ndarray | None:
        """Per unit zero mask of operand ``v``; None when ``v`` is not in the group."""
        ms = self.members.get(id(v))
        if not ms:
            return None
        z = np.ones(self.group.size, bool)
        for m in ms:
            z &= self._units_zero(m)
        return z

    def _output_zero(self, node, m) -> tuple[np.ndarray, str]:
        """(per element of output member ``m``: provably zero, why an element may not be)."""
        nonzero = np.zeros(m.size, bool)
        op = node.op
        weight = node.input(1) if op in _WEIGHTED and len(node.inputs) > 1 else None
        if weight is not None and any(w.axis == 0 for w in self.members.get(id(weight), ())):
            bias = node.input(2) if len(node.inputs) > 2 else None
            if weight.param is None or (bias is not None and bias.param is None):
                return nonzero, f"{op} {node.name}: its weights are not constants"
            w = weight.param.data
            rows = w.reshape(w.shape[0], -1).astype(np.float64)
            sq = (rows * rows).sum(axis=1)
            if bias is not None:
                sq = sq + bias.param.data.astype(np.float64) ** 2
            z = np.sqrt(sq) <= self.threshold
            return (z if z.size == m.size else nonzero), f"{op} {node.name}: nonzero weight row or bias"
        if op == "batch_norm":
            zin = self._operand_zero(node.input(0))
            ps = [v.param for v in node.inputs[1:5]]
            if zin is None or len(ps) != 4 or any(p is None for p in ps):
                return nonzero, f"batch_norm {node.name}: its parameters are not constants"
            gamma, beta, mean, var = (p.data.astype(np.float64) for p in ps)
            shift = beta - gamma * mean / np.sqrt(var + float(node.attrs.get("eps", 1e-5)))
            why = (f"batch_norm {node.name} maps a zero channel to its shift beta - gamma*mean/sqrt(var+eps), "
                   f"not zero (fold-bn first)")
            if shift.size != m.size:
                return nonzero, why
            return zin[m.units] & (np.abs(shift) <= self.threshold), why
        if op == "mul":
            z = np.zeros(self.group.size, bool)
            for v in node.inputs:
                zv = self._operand_zero(v)
                if zv is not None:
                    z |= zv
            return z[m.units], f"mul {node.name}: no operand is zero there"
        if op not in _KEEPS_ZERO:
            return nonzero, f"{op} {node.name} does not keep a zero channel zero"
        if op == "pad" and node.attrs.get("mode", "constant") == "constant" and node.attrs.get("value", 0.0) != 0:
            return nonzero, f"pad {node.name} pads with a nonzero value"
        z = np.ones(self.group.size, bool)
        for v in node.inputs:
            zv = self._operand_zero(v)
            if zv is not None:
                z &= zv
            elif op in _COMBINES:
                if v.param is None or np.any(np.abs(v.param.data) > self.threshold):
                    return nonzero, f"{op} {node.name} adds %{v.name}, which is not zero there"
        return z[m.units], f"{op} {node.name}: an operand is not zero there"


def _keep_per_member(group, keep: np.ndarray, prefer: np.ndarray) -> np.ndarray:
    """Give back one unit (the most ``prefer``-red) to any member that would lose every element
    (a whole group, or one slice of a concat): a layer keeps at least one channel."""
    kept = np.zeros(group.size, bool)
    kept[keep] = True
    for m in group.members:
        units = np.unique(m.units)
        if units.size and not kept[units].any():
            kept[units[np.argmax(prefer[units])]] = True
    return np.flatnonzero(kept)


def remove_zero_rows(graph: Graph, pairs: list[Pair], threshold: float = 0.0) -> tuple[int, dict[str, str]]:
    """Remove the output channels of ``pairs`` that are zero everywhere they are read, from
    every member of their channel groups. Returns (channels removed, {pair: why some zero
    rows stayed})."""
    from graphc.passes.channel_groups import channel_groups, prune_groups

    refused: dict[str, str] = {}
    candidates = {}
    for p in pairs:
        a = p.coef.input(1).param.data
        mat = a.reshape(a.shape[0], a.shape[1]).astype(np.float64)
        sq = (mat * mat).sum(axis=1)
        if len(p.coef.inputs) > 2:
            sq = sq + p.coef.input(2).param.data.astype(np.float64) ** 2
        zero = np.sqrt(sq) <= threshold
        if zero.any():
            # The rows are the output's channel axis; the output is also a member of other
            # groups along other axes (a flatten ties a conv's spatial axes to features).
            axis = 1 if p.coef.op == "conv2d" else len(p.coef.output.shape) - 1
            candidates[id(p.coef.output)] = (p, zero, axis)
    if not candidates:
        return 0, refused
    plan = []
    for g in channel_groups(graph):
        hits = [(m, candidates[id(m.value)][:2]) for m in g.members
                if not m.is_param and id(m.value) in candidates and m.axis == candidates[id(m.value)][2]]
        if not hits:
            continue
        wanted = np.zeros(g.size, bool)
        for m, (_, zero) in hits:
            wanted[m.units[zero]] = True
        names = sorted({p.name for _, (p, _) in hits})

        def refuse(reason: str, n: int) -> None:
            for name in names:
                refused.setdefault(name, f"{n} zero rows kept: {reason}")

        if not g.prunable:
            refuse(f"channel group #{g.id} is frozen ({g.reason})", int(wanted.sum()))
            continue
        zc = _ZeroChannels(graph, g, threshold)
        if zc.absorb_reason:
            refuse(zc.absorb_reason, int(wanted.sum()))
            continue
        blocked = wanted & ~zc.unit_zero
        if blocked.any():
            reasons = sorted({zc.why[u] for u in np.flatnonzero(blocked) if zc.why[u]})
            refuse("; ".join(reasons) or "not zero everywhere it is read", int(blocked.sum()))
        removable = wanted & zc.unit_zero
        if not removable.any():
            continue
        keep = _keep_per_member(g, np.flatnonzero(~removable), (~removable).astype(np.float64))
        if keep.size < g.size:
            plan.append((g, keep))
    return (prune_groups(graph, plan) if plan else 0), refused


@register_pass
@dataclass(frozen=True)
class PruneMerge(Pass):
    """Drop zero columns and zero output channels of EDP pairs, then merge each pair back into
    one layer where the factorised form is not cheaper. Exact when ``threshold`` is 0.

        %t = conv2d(%x, %B)  # c1.basis          %y = conv2d(%x, %W, %b)  # c1
        %y = conv2d(%t, %A, %b)  # c1      ==>   (W = A.B when r(ck^2 + n) >= n ck^2)

    ``threshold``: groups with an L2 norm at most this are treated as zero (0: only exact
    zeros, so the pass is exact; above 0 the pass is lossy by the dropped groups' size);
    ``rows``: also remove zero output channels through their channel groups (default on);
    ``merge``: merge pairs back (default on).
    """

    name: ClassVar[str] = "prune-merge"

    threshold: float = 0.0
    rows: bool = True
    merge: bool = True

    @property
    def exact(self) -> bool:
        """Only exact zeros are removed at threshold 0; above it, the dropped groups' weights are lost."""
        return self.threshold == 0

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs = find_pairs(graph)
        if not pairs:
            return PassResult(changed=False, stats={"pairs": 0})
        dropped = 0
        ranks = {}
        for p in pairs:
            norms = np.linalg.norm(_mat(p.coef.input(1).param.data).astype(np.float64), axis=0)
            keep = np.flatnonzero(norms > self.threshold)
            if keep.size == 0:
                keep = np.array([int(np.argmax(norms))])
            if keep.size < norms.size:
                drop_columns(graph, p, keep)
                dropped += norms.size - keep.size
            ranks[p.name] = int(keep.size)
        removed, refused = (0, {})
        if self.rows:
            removed, refused = remove_zero_rows(graph, pairs, self.threshold)
        merged = kept = 0
        if self.merge:
            for p in find_pairs(graph):
                if factorised_cheaper(p):
                    kept += 1
                else:
                    merge_pair(graph, p)
                    merged += 1
        if dropped or merged or removed:
            graph.prune_unused_params()
        return PassResult(changed=bool(dropped or merged or removed), stats={
            "pairs": len(pairs), "columns_dropped": dropped, "channels_removed": removed, "merged": merged,
            "kept_factorised": kept, "ranks": ranks, "refused": refused})
