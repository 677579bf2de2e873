"""prune-merge: EDP's Pruning & Merging module on the pairs made by ``decompose``. Exact for
groups that are exactly zero (the default ``threshold=0``); merging is exact.

1. Columns: a column j of A whose norm is <= ``threshold`` is dropped with basis filter j
   (row j of B): the rank of the pair falls to r.
2. Rows: an output channel i whose row (A[i, :], b[i]) is <= ``threshold`` is removed from
   every member of its channel group (via the channel-groups analysis) when every producer in
   the group has that channel zero; otherwise it stays, with the reason in ``stats``.
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
from graphc.passes._rewrite import cast_like
from graphc.passes.decompose import Pair, find_pairs
from graphc.registry import Pass, PassContext, PassResult, register_pass

__all__ = ["PruneMerge", "drop_columns", "merge_pair", "factorised_cheaper"]


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
    graph.erase(pair.basis)
    coef.retype()


def _prune_rows(graph: Graph, pairs: list[Pair], threshold: float, ctx: PassContext) -> tuple[int, dict]:
    """Remove zero output channels through their channel groups; (channels removed, refusals)."""
    try:
        from graphc.passes import channel_groups as cg
    except ImportError:
        return 0, {"*": "the channel-groups analysis is not available"}
    return cg.remove_zero_channels(graph, [p.coef for p in pairs], threshold=threshold, ctx=ctx)


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
    exact: ClassVar[bool] = True

    threshold: float = 0.0
    rows: bool = True
    merge: bool = True

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
            removed, refused = _prune_rows(graph, pairs, self.threshold, ctx)
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
