"""merge-linear: two linear maps in a row become one, when one is cheaper than two.

Invariants: the first op's output has no other reader; the merged op is built only when its
MACs do not exceed the pair's (both costs are computed here, from shapes); the composition
carries the first bias through the second weight exactly, and zero padding is kept exact by
merging only where the second conv pads nothing (or the first is a bias-free 1x1 conv, which
maps padded zeros to zeros).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node
from graphc.ir.meta import EDP
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import (CONV_OPS, PatternPass, compose_convs, conv_attrs, conv_parts, f64, node_macs,
                                    set_param, sole_user)
from graphc.registry import register_pass


def _set_bias(graph: Graph, node: Node, bias) -> None:
    if bias is None:
        if len(node.inputs) > 2:
            node.set_inputs(list(node.inputs[:2]))
        return
    set_param(graph, node, 2, bias)


def _merge_linears(graph: Graph, first: Node, second: Node) -> str | None:
    (w1, b1), (w2, b2) = conv_parts(first), conv_parts(second)
    rows = int(np.prod(second.output.shape[:-1]))
    before = node_macs(first) + node_macs(second)
    after = rows * w2.shape[0] * w1.shape[1]
    if after > before:
        return f"merged linear costs {after} MACs > {before}"
    W2 = f64(w2)
    w = W2 @ f64(w1)
    bias = None
    if b1 is not None:
        bias = W2 @ f64(b1)
    if b2 is not None:
        bias = f64(b2) if bias is None else bias + b2
    set_param(graph, second, 1, w)
    _set_bias(graph, second, bias)
    second.set_input(0, first.input(0))
    graph.erase(first)
    return None


def _pointwise(a: dict, w: np.ndarray) -> bool:
    return all(k == 1 for k in w.shape[2:]) and all(s == 1 for s in a["stride"]) and not any(a["padding"])


def _merge_convs(graph: Graph, first: Node, second: Node) -> str | None:
    (w1, b1), (w2, b2) = conv_parts(first), conv_parts(second)
    a1, a2 = conv_attrs(first), conv_attrs(second)
    pointwise_first = _pointwise(a1, w1) and (b1 is None or not np.any(b1))
    if any(d != 1 for d in a2["dilation"]) and not pointwise_first:
        return f"{second.name} is dilated"
    if any(a2["padding"]) and not pointwise_first:
        return f"{second.name} pads its input (and {first.name} is not a bias-free 1x1 conv)"
    pointwise_second = _pointwise(a2, w2)
    # A 1x1 second conv adds no taps either: compose undilated and keep the first's geometry.
    a1c = {**a1, "dilation": [1] * len(a1["dilation"])} if pointwise_second else a1
    res = compose_convs(f64(w1), f64(b1), a1c, f64(w2), f64(b2), a2)
    if isinstance(res, str):
        return res
    w, bias, attrs = res
    if pointwise_second:
        attrs = {**attrs, "stride": a1["stride"], "padding": a1["padding"], "dilation": a1["dilation"]}
    elif pointwise_first:
        # The 1x1 conv adds no taps: the merged conv keeps the second's geometry.
        attrs = {**attrs, "stride": a2["stride"], "padding": a2["padding"], "dilation": a2["dilation"]}
    before = node_macs(first) + node_macs(second)
    after = int(np.prod(second.output.shape)) * int(np.prod(w.shape[1:]))
    if after > before:
        return f"merged conv costs {after} MACs > {before}"
    x = first.input(0)
    spatial = []
    for h, k, s, p, d in zip(x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"]):
        spatial.append((h + 2 * p - d * (k - 1) - 1) // s + 1)
    if tuple(spatial) != tuple(second.output.shape[2:]) or w.shape[1] * attrs["groups"] != x.shape[1]:
        return "merged conv would change the output shape"
    set_param(graph, second, 1, w)
    _set_bias(graph, second, bias)
    second.attrs.update(attrs)
    second.set_input(0, x)
    graph.erase(first)
    second.retype()
    return None


@register_pass
@dataclass(frozen=True)
class MergeLinear(PatternPass):
    """Merge linear->linear and conv->conv pairs with nothing between into one op, when that is
    no more MACs than the pair. Exact.

    conv(k1, s1) then conv(k2, s2) with no padding and dilation 1 on the second is one conv of
    kernel k1 + s1*(k2-1) and stride s1*s2; a bias-free 1x1 conv folds into the conv after it
    (EDP's merge of a decomposed pair, W' = A.B) whatever that conv's padding:

        %a = conv2d(%x, %wa) {kernel 1x1}     %b = conv2d(%x, %w') {as %b}
        %b = conv2d(%a, %wb, %bb)        ==>
        %l = linear(%x, %w1, %b1)             %m = linear(%x, %w2.%w1, %w2.%b1 + %b2)
        %m = linear(%l, %w2, %b2)        ==>

    Refusals are listed in ``stats["refused"]`` (node name -> reason).
    """

    name: ClassVar[str] = "merge-linear"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [MergePair()]

    def stats(self, res) -> dict:
        return {"merged": res.counts.get("merged", 0), "refused": res.refused}


class MergePair(RewritePattern):
    """conv -> conv or linear -> linear, rooted at the second."""

    ops = CONV_OPS + ("linear",)

    def match_and_rewrite(self, second: Node, rw: Rewriter) -> bool:
        first = second.input(0).producer
        if first is None or first.op != second.op:
            return False
        if conv_parts(first) is None or conv_parts(second) is None:
            return rw.refuse(second, "weights are not constants")
        if sole_user(first.output) is not second:
            return rw.refuse(second, f"{first.name} output has other readers")
        pair = first.meta.get(EDP.name) == "basis" and second.meta.get(EDP.name) == "coef"
        why = (_merge_linears if second.op == "linear" else _merge_convs)(rw.graph, first, second)
        if why is not None:
            return rw.refuse(second, why)
        if pair:  # an EDP pair merged back is one plain layer again
            del second.meta[EDP.name]
        rw.count("merged")
        return True
