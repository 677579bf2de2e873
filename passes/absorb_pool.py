"""absorb-pool: an average pool right after a conv becomes part of the conv.

Invariants: an average pool is a depthwise conv with constant taps, so conv -> avgpool is a
conv pair composed exactly like merge-linear's (kernel k + s*(kp-1), stride s*sp); it happens
only when the pool pads nothing (so its divisor is constant), the conv's output has no other
reader, and the fused conv costs fewer MACs than the conv alone. A global pool -> flatten ->
linear head is reordered only when the reordered head is cheaper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import (CONV_OPS, PatternPass, compose_convs, conv_attrs, conv_parts, f64, node_macs,
                                    replace_output, set_param, sole_user)
from graphc.registry import register_pass

_POOL_RANK = {"avg_pool1d": 1, "avg_pool2d": 2, "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2}


def _ints(x, nd):
    if x is None:
        return None
    x = list(x) if isinstance(x, (list, tuple)) else [x]
    return [int(i) for i in (x * nd if len(x) == 1 else x)]


def _pool_geometry(pool: Node) -> tuple[list[int], list[int]] | str:
    """(kernel, stride) of an average pool equal to a conv with constant taps, or why not."""
    nd = _POOL_RANK[pool.op]
    ins, outs = pool.input(0).shape[2:], pool.output.shape[2:]
    if pool.op.startswith("adaptive"):
        if any(i % o for i, o in zip(ins, outs)):
            return "adaptive pool bins are uneven"
        k = [i // o for i, o in zip(ins, outs)]
        return k, k
    a = pool.attrs
    if any(_ints(a.get("padding", 0), nd)):
        return "the pool pads its input"
    if a.get("divisor_override") is not None:
        return "the pool overrides its divisor"
    k = _ints(a["kernel_size"], nd)
    s = _ints(a.get("stride") or k, nd)
    # ceil_mode adds a partial window only where the floor formula leaves input over.
    if [(i - kk) // ss + 1 for i, kk, ss in zip(ins, k, s)] != list(outs):
        return "the pool has a partial (ceil-mode) window"
    return k, s


def compose_avg_pool(w1: np.ndarray, b1: np.ndarray | None, a1: dict, k: list[int], s: list[int]):
    """:func:`compose_convs` of a conv (weight, bias, attrs) with an average pool of kernel ``k``
    and stride ``s`` that pads nothing, seen as a depthwise conv of constant taps."""
    c = w1.shape[0]
    w2 = np.full((c, 1, *k), 1.0 / float(np.prod(k)))
    a2 = {"stride": s, "padding": [0] * len(k), "dilation": [1] * len(k), "groups": c}
    return compose_convs(f64(w1), f64(b1), a1, w2, None, a2)


def _absorb(graph: Graph, conv: Node, pool: Node, allow_equal: bool) -> str | None:
    geo = _pool_geometry(pool)
    if isinstance(geo, str):
        return geo
    k, s = geo
    w1, b1 = conv_parts(conv)
    res = compose_avg_pool(w1, b1, conv_attrs(conv), k, s)
    if isinstance(res, str):
        return res
    w, bias, attrs = res
    before = node_macs(conv)
    after = int(np.prod(pool.output.shape)) * int(np.prod(w.shape[1:]))
    if after > before or (after == before and not allow_equal):
        return f"fused conv costs {after} MACs, not fewer than the conv's {before}"
    set_param(graph, conv, 1, w)
    if bias is not None:
        set_param(graph, conv, 2, bias)
    conv.attrs.update(attrs)
    conv.retype()
    replace_output(graph, pool, conv.output)
    return None


def _swap_head(graph: Graph, pool: Node) -> str | None:
    """adaptive_avg_pool2d(1) -> flatten -> linear  ==>  conv1x1 -> adaptive_avg_pool2d -> flatten."""
    flat = sole_user(pool.output)
    if flat is None or flat.op not in ("flatten", "reshape") or flat.output.shape != pool.output.shape[:2]:
        return ""
    lin = sole_user(flat.output)
    if lin is None or lin.op != "linear" or lin.input(0) is not flat.output or conv_parts(lin) is None:
        return ""
    w, b = conv_parts(lin)
    n, c, *sp = pool.input(0).shape
    hw = int(np.prod(sp))
    o = w.shape[0]
    before = n * c * hw + node_macs(lin)
    after = n * hw * c * o + n * o * hw
    if after >= before:
        return f"linear first would cost {after} MACs >= {before}"
    x = pool.input(0)
    conv = graph.add_node("conv2d", [x, graph.add_param(w.reshape(o, c, *([1] * len(sp))), source=lin.input(1).param.source,
                                                        name=lin.input(1).name, kind="weight")]
                          + ([lin.input(2)] if b is not None else []),
                          {"stride": [1] * len(sp), "padding": [0] * len(sp), "dilation": [1] * len(sp), "groups": 1},
                          lin.name, before=pool)
    new_pool = graph.add_node(pool.op, [conv.output], dict(pool.attrs), pool.name, before=pool)
    new_flat = graph.add_node("flatten", [new_pool.output], {"start_dim": 1, "end_dim": -1}, flat.name, before=pool)
    replace_output(graph, lin, new_flat.output)
    graph.erase(flat)
    graph.erase(pool)
    return None


@register_pass
@dataclass(frozen=True)
class AbsorbPool(PatternPass):
    """Absorb an average pool into the conv before it (one strided conv) when that costs fewer
    MACs (or as many, with ``allow_equal``); reorder a global-pool -> flatten -> linear head when the linear is cheaper first.
    Exact.

        %c = conv2d(%x, %w) {3x3, padding=[1,1]}    %c = conv2d(%x, %w') {4x4, stride=[2,2], padding=[1,1]}
        %p = avg_pool2d(%c) {kernel_size=[2,2], stride=[2,2]}   ==>   (readers of %p read %c)

    Refusals are listed in ``stats["refused"]`` (node name -> reason).
    """

    name: ClassVar[str] = "absorb-pool"
    exact: ClassVar[bool] = True
    # At equal MACs the fused conv saves only the pool's adds, and a kxk strided conv pays
    # im2col where a 1x1 conv is a plain GEMM: in onnxruntime a 1x1 conv + 2x2 pool runs
    # 2-10 % faster than the equal-MAC 2x2 stride-2 conv, so equal cost is opt-in.
    allow_equal: bool = False

    def patterns(self) -> list[RewritePattern]:
        return [PoolIntoConv(self.allow_equal), LinearBeforeGlobalPool()]

    def stats(self, res) -> dict:
        return {"absorbed": res.counts.get("absorbed", 0), "swapped": res.counts.get("swapped", 0),
                "refused": res.refused}


class PoolIntoConv(RewritePattern):
    """conv -> average pool becomes one strided conv."""

    ops = tuple(_POOL_RANK)

    def __init__(self, allow_equal: bool = False):
        self.allow_equal = allow_equal

    def match_and_rewrite(self, pool: Node, rw: Rewriter) -> bool:
        conv = pool.input(0).producer
        if conv is None or conv.op not in CONV_OPS or len(conv.input(1).shape) - 2 != _POOL_RANK[pool.op]:
            return False
        if conv_parts(conv) is None:
            return rw.refuse(pool, f"{conv.name} weights are not constants")
        if sole_user(conv.output) is not pool:
            return rw.refuse(pool, f"{conv.name} output has other readers")
        return rw.outcome(pool, _absorb(rw.graph, conv, pool, self.allow_equal), "absorbed")


class LinearBeforeGlobalPool(RewritePattern):
    """global pool -> flatten -> linear becomes conv1x1 -> global pool -> flatten when cheaper."""

    ops = ("adaptive_avg_pool2d",)

    def match_and_rewrite(self, pool: Node, rw: Rewriter) -> bool:
        if pool.output.shape[2:] != (1, 1):
            return False
        return rw.outcome(pool, _swap_head(rw.graph, pool), "swapped")
