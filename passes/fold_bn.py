"""fold-bn: fold inference batch norms and constant per-channel affines into convs/linears.

Invariant: a fold happens only when the folded node's output has no other reader (else the
unfolded value would still be needed), and only with weights that are params; the folded
weights equal the original composition up to one float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import (CONV_OPS, PatternPass, bn_scale_shift, channel_vector, conv_attrs,
                                    conv_parts, replace_output, set_param, sole_user)
from graphc.registry import register_pass

__all__ = ["FoldBN", "fold_bn_after", "fold_bn_before", "fold_affine"]

_AFFINE = ("mul", "div", "add", "sub")
NO_READER = "no conv reads it"


def _out_axis(node: Node) -> int | None:
    """Axis of the producer's output that its weight rows index (None: no such fold)."""
    if node.op in CONV_OPS:
        return 1
    if node.op == "linear":
        return -1
    return None


def _weighted_producer(src) -> tuple[Node, int] | None:
    """(conv or linear with constant weights, the axis of ``src`` its output channels are on)
    when ``src`` is that op's output, or a permute of it read by nothing else (ConvNeXt's layer
    scale multiplies a permuted linear output)."""
    prod = src.producer
    if prod is None:
        return None
    axis = _out_axis(prod)
    if axis is not None:
        return (prod, axis) if conv_parts(prod) is not None else None
    if prod.op != "permute" or sole_user(prod.input(0)) is not prod:
        return None
    inner = prod.input(0).producer
    if inner is None or _out_axis(inner) is None or conv_parts(inner) is None:
        return None
    rank = len(inner.output.shape)
    dims = [int(d) % rank for d in prod.attrs["dims"]]
    return inner, dims.index(_out_axis(inner) % rank)


def _scale_shift_into(graph: Graph, node: Node, scale, shift) -> None:
    """node(x)*scale + shift per output channel, folded into node's weight and bias."""
    w, b = conv_parts(node)
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    set_param(graph, node, 1, w.astype(np.float64) * s)
    bias = shift if b is None else b.astype(np.float64) * scale + shift
    if b is not None or np.any(bias != 0):
        set_param(graph, node, 2, bias)


def _affine_operand(node: Node, producer_out) -> np.ndarray | None:
    """The constant of a binary affine node applied to ``producer_out`` (c - x and c / x are
    not affine in x the same way, so the constant must come second for sub and div)."""
    a, b = node.inputs
    if a is producer_out and b.param is not None:
        return b.param.data
    if b is producer_out and a.param is not None and node.op in ("mul", "add"):
        return a.param.data
    return None


@register_pass
@dataclass(frozen=True)
class FoldBN(PatternPass):
    """Fold inference batch norms and per-channel constant affines into convs and linears. Exact.

    A BN (or a mul/div/add/sub by a per-channel constant, as Caffe2 scale layers export) after
    a conv or linear folds into its weight and bias:

        %c = conv2d(%x, %w, %b)             %c = conv2d(%x, %w', %b')
        %y = batch_norm(%c, %g, %be, %m, %v)  ==>  (readers of %y read %c)

    A BN before a conv folds into the conv's input side when the conv pads nothing, or the BN
    maps zero to zero (so padded zeros stay zero):

        %n = batch_norm(%x, ...)            %c = conv2d(%x, %w', %b')
        %c = conv2d(%n, %w, %b)       ==>

    Refusals are listed in ``stats["refused"]`` (node name -> reason).
    """

    name: ClassVar[str] = "fold-bn"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [BNAfterConv(), BNBeforeConv(), AffineIntoConv()]

    def stats(self, res) -> dict:
        folded = {k: res.counts.get(k, 0) for k in ("bn_after", "bn_before", "affine")}
        return {"folded": sum(folded.values()), **folded, "refused": res.refused}


class BNAfterConv(RewritePattern):
    """conv/linear -> batch_norm: the BN's scale and shift go into the weight and bias."""

    ops = ("batch_norm",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        return rw.outcome(node, fold_bn_after(rw.graph, node), "bn_after")


class BNBeforeConv(RewritePattern):
    """batch_norm -> conv/linear: the BN goes into the input side of the weight."""

    ops = ("batch_norm",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        why = fold_bn_before(rw.graph, node)
        if why is not None:
            return False if why == NO_READER else rw.refuse(node, why)
        rw.count("bn_before")
        return True


class AffineIntoConv(RewritePattern):
    """conv/linear -> mul/div/add/sub by a per-channel constant."""

    ops = _AFFINE

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if len(node.inputs) != 2:
            return False
        return rw.outcome(node, fold_affine(rw.graph, node), "affine")


# conv/linear -> batch_norm
def fold_bn_after(graph: Graph, bn: Node) -> str | None:
    """Fold a BN into the conv or linear before it; None when folded, else why not."""
    prod = bn.input(0).producer
    if prod is None or _out_axis(prod) is None:
        return "not after a conv or linear"
    if prod.op == "linear" and len(prod.output.shape) != 2:
        return "linear output is not [N, C], BN axis is not its feature axis"
    if conv_parts(prod) is None:
        return f"{prod.name} weights are not constants"
    if sole_user(prod.output) is not bn:
        return f"{prod.name} output has other readers"
    ss = bn_scale_shift(bn)
    if ss is None:
        return "BN statistics are not constants"
    _scale_shift_into(graph, prod, *ss)
    replace_output(graph, bn, prod.output)
    return None

# batch_norm -> conv/linear
def fold_bn_before(graph: Graph, bn: Node) -> str | None:
    """Fold a BN into the conv or linear that alone reads it; None when folded, else why not
    (``NO_READER`` when no conv or linear reads it: not a candidate)."""
    conv = sole_user(bn.output)
    if conv is None or conv.input(0) is not bn.output or _out_axis(conv) is None:
        return NO_READER
    if conv.op == "linear" and len(bn.output.shape) != 2:
        return f"{conv.name} is a linear over a non-channel axis"
    parts = conv_parts(conv)
    if parts is None:
        return f"{conv.name} weights are not constants"
    ss = bn_scale_shift(bn)
    if ss is None:
        return "BN statistics are not constants"
    scale, shift = ss
    w, b = parts
    w64 = w.astype(np.float64)
    if conv.op == "linear":
        new_w = w64 * scale[None, :]
        extra = w64 @ shift
    else:
        a = conv_attrs(conv)
        if any(a["padding"]) and np.any(shift != 0):
            return f"{conv.name} pads with zeros and the BN does not map zero to zero"
        g = a["groups"]
        cin_g = w.shape[1]
        o_g = w.shape[0] // g
        # Output channel o of group k reads input channels k*cin_g .. (k+1)*cin_g - 1.
        grp = np.arange(w.shape[0]) // o_g
        idx = grp[:, None] * cin_g + np.arange(cin_g)[None, :]
        bshape = idx.shape + (1,) * (w.ndim - 2)
        new_w = w64 * scale[idx].reshape(bshape)
        extra = (w64 * shift[idx].reshape(bshape)).reshape(w.shape[0], -1).sum(1)
    set_param(graph, conv, 1, new_w)
    bias = extra if b is None else b.astype(np.float64) + extra
    if b is not None or np.any(bias != 0):
        set_param(graph, conv, 2, bias)
    conv.set_input(0, bn.input(0))
    graph.erase(bn)
    return None

# conv/linear -> mul/div/add/sub by a per-channel constant
def fold_affine(graph: Graph, node: Node) -> str | None:
    """Fold a mul/div/add/sub by a per-channel constant into the conv or linear before it:
    None when folded, "" when the node is not a candidate, else the reason."""
    for src in node.inputs:
        found = _weighted_producer(src)
        if found is None:
            continue
        prod, axis = found
        arr = _affine_operand(node, src)
        if arr is None or not np.issubdtype(arr.dtype, np.floating):
            continue
        if node.output.shape != src.shape:
            return "the constant broadcasts the conv output to a larger shape"
        vec = channel_vector(arr, src.shape, axis)
        if vec is None:
            return "the constant is not per-channel"
        if sole_user(src) is not node:
            return f"{prod.name} output has other readers"
        c = vec.size
        if node.op == "mul":
            scale, shift = vec, np.zeros(c)
        elif node.op == "div":
            if np.any(vec == 0):
                return "division by zero"
            scale, shift = 1.0 / vec, np.zeros(c)
        elif node.op == "add":
            scale, shift = np.ones(c), vec
        else:
            scale, shift = np.ones(c), -vec
        _scale_shift_into(graph, prod, scale, shift)
        replace_output(graph, node, src)
        return None
    return ""
