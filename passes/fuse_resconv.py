"""fuse-resconv: a conv plus a (scaled) identity shortcut, or parallel convs on one input,
become one conv.

Invariants: a branch is absorbed only when the add is its sole reader; the identity goes in
at the kernel's centre tap, which is exact only for stride 1, odd kernels and 'same' zero
padding (output pixel i reads input pixel i at the centre); parallel convs merge only when
their kernels share one centre, stride, dilation and grouping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import (CONV_OPS, PatternPass, bn_scale_shift, channel_vector, conv_attrs,
                                    conv_parts, replace_output, set_param, sole_user)
from graphc.passes.fold_bn import fold_affine, fold_bn_after
from graphc.registry import register_pass


def _absorb_branch_affine(graph: Graph, v: Value) -> tuple[Value, int]:
    """If ``v`` is conv followed by BNs and constant scales, each read only by the next, fold
    them into the conv (as fold-bn would): (the conv's output, folds done); else (``v``, 0)."""
    chain = []
    start = v
    while v.producer is not None and v.producer.op not in CONV_OPS:
        node = v.producer
        if node.op == "batch_norm":
            src = node.input(0)
        elif node.op in ("mul", "div") and len(node.inputs) == 2:
            src = node.input(0) if node.input(1).param is not None else node.input(1)
        else:
            return start, 0
        if sole_user(src) is not node:
            return start, 0
        chain.append(node)
        v = src
    if v.producer is None or not chain:
        return start, 0
    folds = 0
    for node in reversed(chain):
        why = fold_bn_after(graph, node) if node.op == "batch_norm" else fold_affine(graph, node)
        if why is not None:
            break
        folds += 1
    return (v if folds == len(chain) else None), folds


def _identity_of(v: Value, shape) -> tuple[Value, np.ndarray, np.ndarray] | None:
    """(x, scale, shift) with v = x*scale + shift per channel, for v = x, x*c, c*x, BN(x)."""
    node = v.producer
    c = shape[1]
    if node is not None and sole_user(v) is not None:
        if node.op == "batch_norm":
            ss = bn_scale_shift(node)
            if ss is not None:
                return node.input(0), ss[0], ss[1]
        if node.op == "mul" and len(node.inputs) == 2:
            for x, k in ((node.input(0), node.input(1)), (node.input(1), node.input(0))):
                if k.param is not None and x.param is None and np.issubdtype(k.param.data.dtype, np.floating) \
                        and x.shape == v.shape:
                    vec = channel_vector(k.param.data, v.shape, 1)
                    if vec is not None:
                        return x, vec, np.zeros(c)
    return v, np.ones(c), np.zeros(c)


def _same_centre(a: dict, w: np.ndarray) -> bool:
    return all(k % 2 == 1 and p == d * (k - 1) // 2
               for k, p, d in zip(w.shape[2:], a["padding"], a["dilation"]))


def _fuse_identity(graph: Graph, add: Node, conv: Node, other: Value) -> str | None:
    parts = conv_parts(conv)
    if parts is None:
        return f"{conv.name} weights are not constants"
    ident = _identity_of(other, conv.output.shape)
    x, scale, shift = ident
    if x is not conv.input(0):
        return "the other branch is not the conv's input"
    w, b = parts
    a = conv_attrs(conv)
    if conv.output.shape != x.shape:
        return f"{conv.name} changes the shape"
    if any(s != 1 for s in a["stride"]):
        return f"{conv.name} is strided"
    if not _same_centre(a, w):
        return f"{conv.name} is not an odd kernel with 'same' zero padding"
    cin_g = w.shape[1]
    o = np.arange(w.shape[0])
    centre = tuple(k // 2 for k in w.shape[2:])
    w64 = w.astype(np.float64)
    # Output channel o reads input channel o, which is local channel o % cin_g of its group.
    w64[(o, o % cin_g) + centre] += scale
    set_param(graph, conv, 1, w64)
    bias = shift if b is None else b.astype(np.float64) + shift
    if b is not None or np.any(bias != 0):
        set_param(graph, conv, 2, bias)
    branch = other.producer if other is not x else None
    replace_output(graph, add, conv.output)
    if branch is not None:
        graph.erase(branch)
    return None


def _fuse_parallel(graph: Graph, add: Node, c1: Node, c2: Node) -> str | None:
    p1, p2 = conv_parts(c1), conv_parts(c2)
    if p1 is None or p2 is None:
        return "weights are not constants"
    a1, a2 = conv_attrs(c1), conv_attrs(c2)
    if c1.input(0) is not c2.input(0):
        return "the convs read different inputs"
    if (a1["stride"], a1["dilation"], a1["groups"]) != (a2["stride"], a2["dilation"], a2["groups"]):
        return "the convs differ in stride, dilation or groups"
    if c1.output.shape != c2.output.shape or p1[0].shape[:2] != p2[0].shape[:2]:
        return "the convs differ in shape"
    if any(k % 2 == 0 for k in p1[0].shape[2:] + p2[0].shape[2:]):
        return "even kernels have no centre"
    off1 = [p - d * (k - 1) // 2 for k, p, d in zip(p1[0].shape[2:], a1["padding"], a1["dilation"])]
    off2 = [p - d * (k - 1) // 2 for k, p, d in zip(p2[0].shape[2:], a2["padding"], a2["dilation"])]
    if off1 != off2:
        return "the kernels are not centred alike"
    big, small = (c1, c2) if np.prod(p1[0].shape[2:]) >= np.prod(p2[0].shape[2:]) else (c2, c1)
    (wb, bb), (ws, bs) = conv_parts(big), conv_parts(small)
    if any(s > t for s, t in zip(ws.shape[2:], wb.shape[2:])):
        return "neither kernel contains the other"
    w = wb.astype(np.float64)
    region = tuple(slice((t - s) // 2, (t - s) // 2 + s) for s, t in zip(ws.shape[2:], wb.shape[2:]))
    w[(slice(None), slice(None)) + region] += ws
    set_param(graph, big, 1, w)
    if bb is not None or bs is not None:
        bias = np.zeros(wb.shape[0]) + (0 if bb is None else bb.astype(np.float64)) + (0 if bs is None else bs)
        set_param(graph, big, 2, bias)
    replace_output(graph, add, big.output)
    graph.erase(small)
    return None


@register_pass
@dataclass(frozen=True)
class FuseResConv(PatternPass):
    """Fuse y = a*conv(x) + b*x (BN allowed on either branch) into one conv with the identity
    at the centre tap, and add(conv_kxk(x), conv_1x1(x)) into one kxk conv (RepVGG's three
    branches, in two steps). Exact.

        %c = conv2d(%x, %w) {padding=[1,1]}      %c = conv2d(%x, %w + b.I) {padding=[1,1]}
        %s = mul(%x, %b)                    ==>  (readers of %y read %c)
        %y = add(%c, %s)

    Refusals are listed in ``stats["refused"]`` (node name -> reason).
    """

    name: ClassVar[str] = "fuse-resconv"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [ResConvAdd()]

    def stats(self, res) -> dict:
        fused = {k: res.counts.get(k, 0) for k in ("identity", "parallel", "branch_affine")}
        return {"fused": fused["identity"] + fused["parallel"], **fused, "refused": res.refused}


class ResConvAdd(RewritePattern):
    """add(conv(x), x-ish) or add(conv(x), conv'(x)) becomes one conv."""

    ops = ("add",)

    def match_and_rewrite(self, add: Node, rw: Rewriter) -> bool:
        graph = rw.graph
        if len(add.inputs) != 2 or add.input(0) is add.input(1):
            return False
        if any(v.param is not None for v in add.inputs) or add.input(0).shape != add.input(1).shape:
            return False
        ins = []
        folded = 0
        for v in add.inputs:
            if sole_user(v) is add:
                nv, folds = _absorb_branch_affine(graph, v)
                folded += folds
                v = nv if nv is not None else add.inputs[len(ins)]
            ins.append(v)
        if folded:
            rw.count("branch_affine", folded)
        convs = [v.producer if v.producer is not None and v.producer.op in CONV_OPS
                 and sole_user(v) is add else None for v in ins]
        why = why_parallel = None
        if convs[0] is not None and convs[1] is not None:
            why_parallel = _fuse_parallel(graph, add, convs[0], convs[1])
            if why_parallel is None:
                rw.count("parallel")
                return True
        for i in (0, 1):
            if convs[i] is None:
                continue
            why_i = _fuse_identity(graph, add, convs[i], ins[1 - i])
            if why_i is None:
                rw.count("identity")
                return True
            why = why_i
        if why is not None and any(convs):
            # Two convs on one input are a parallel pair first: say why that failed.
            rw.refuse(add, why_parallel or why)
        return folded > 0
