"""Cost rules: what the ``cost`` field of an OpDef names.

A rule is a pure function of the node's input types, output types and attrs
(``rule(ins, outs, attrs) -> OpCost``), so it prices a node without running it and works on
any graph whose types are known. Every op definition names one (tests/ir/test_opdefs.py).

Conventions (docs/cost_model.md explains them and where other counters differ):

- MACs are counted only for multiply-accumulate ops: convolutions (transposed included),
  ``linear``, ``matmul`` and attention. FLOPs = 2 x MACs for those ops, plus 1 FLOP per output
  element for a bias add.
- Every other op has 0 MACs and FLOPs by a fixed per-element rate: elementwise ops 1 per
  output element (whatever the function: relu, gelu and add all count 1), ``sum_n`` n-1,
  inference ``batch_norm`` 2 (a scale and a shift), ``layer_norm``/``group_norm``/
  ``instance_norm`` 5 (+2 when affine), softmax 5, pools ``prod(kernel)`` per output element,
  adaptive and global pools and reductions 1 per input element.
- Data-movement ops (reshape, permute, concat, pad...) have 0 FLOPs. View-like ops (reshape,
  flatten, squeeze, unsqueeze, identity, dropout) also move 0 bytes; the rest read their
  inputs and write their outputs.
- ``opaque`` nodes get 0 MACs and 0 FLOPs and ``counted=False``: totals list them as uncounted
  instead of pretending to know what they cost.
- Memory traffic of a node = bytes of every operand read (weights included) + bytes written.
- ``kind`` names the latency class a node falls in for the roofline model
  (:mod:`graphc.backends.latency`): conv, dwconv, gemm, elementwise, reduce, movement, view,
  opaque.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from graphc.ir.types import TensorType


@dataclass(frozen=True)
class OpCost:
    macs: int = 0
    flops: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    kind: str = "elementwise"
    counted: bool = True

    @property
    def traffic_bytes(self) -> int:
        return self.read_bytes + self.write_bytes


Types = Sequence[TensorType]
Rule = Callable[[Types, Types, dict], OpCost]


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


def _rw(ins: Types, outs: Types) -> tuple[int, int]:
    return sum(t.nbytes for t in ins), sum(t.nbytes for t in outs)


def _out_numel(outs: Types) -> int:
    return sum(t.numel for t in outs)


def _cost(ins, outs, macs=0, flops=0, kind="elementwise") -> OpCost:
    r, w = _rw(ins, outs)
    return OpCost(int(macs), int(flops), r, w, kind)


# -- multiply-accumulate ops ----------------------------------------------------------------
def conv_rule(ins, outs, attrs) -> OpCost:
    """Each output element is a dot product of length (C_in / groups) * prod(kernel)."""
    w, y = ins[1], outs[0]
    macs = y.numel * _prod(w.shape[1:])
    bias = y.numel if len(ins) > 2 else 0
    groups = int(attrs["groups"])
    depthwise = groups > 1 and w.shape[1] == 1
    return _cost(ins, outs, macs, 2 * macs + bias, "dwconv" if depthwise else "conv")


def conv_transpose_rule(ins, outs, attrs) -> OpCost:
    """Each input element is scattered into (C_out / groups) * prod(kernel) outputs; weight
    is [C_in, C_out / groups, *kernel]. This is torch.utils.flop_counter's and fvcore's count."""
    x, w, y = ins[0], ins[1], outs[0]
    macs = x.numel * _prod(w.shape[1:])
    bias = y.numel if len(ins) > 2 else 0
    return _cost(ins, outs, macs, 2 * macs + bias, "conv")


def linear_rule(ins, outs, attrs) -> OpCost:
    w, y = ins[1], outs[0]
    macs = y.numel * w.shape[1]
    bias = y.numel if len(ins) > 2 else 0
    return _cost(ins, outs, macs, 2 * macs + bias, "gemm")


def matmul_rule(ins, outs, attrs) -> OpCost:
    a, y = ins[0], outs[0]
    macs = max(y.numel, 1) * a.shape[-1]
    return _cost(ins, outs, macs, 2 * macs, "gemm")


def einsum_rule(ins, outs, attrs) -> OpCost:
    """One MAC per point of the joint index space (every letter of the equation once)."""
    lhs = attrs["equation"].replace(" ", "").split("->")[0].split(",")
    sizes = {}
    for spec, t in zip(lhs, ins):
        for letter, d in zip(spec, t.shape):
            sizes[letter] = d
    macs = _prod(sizes.values())
    return _cost(ins, outs, macs, 2 * macs, "gemm")


def _attention_core(batch_heads: int, lq: int, lk: int, e: int, ev: int) -> tuple[int, int]:
    """q k^T then p v: MACs and the softmax/scale FLOPs on the score matrix."""
    macs = batch_heads * lq * lk * (e + ev)
    extra = batch_heads * lq * lk * (5 + 1)  # softmax + scaling
    return macs, extra


def sdpa_rule(ins, outs, attrs) -> OpCost:
    q, k, v = ins[0], ins[1], ins[2]
    bh = _prod(q.shape[:-2])
    macs, extra = _attention_core(bh, q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1])
    if len(ins) > 3:
        extra += bh * q.shape[-2] * k.shape[-2]  # mask add
    return _cost(ins, outs, macs, 2 * macs + extra, "gemm")


def mha_rule(ins, outs, attrs) -> OpCost:
    q, k = ins[0], ins[1]
    batch_first = bool(attrs["batch_first"])
    if batch_first:
        n, lq, e = q.shape
        lk = k.shape[1]
    else:
        lq, n, e = q.shape
        lk = k.shape[0]
    proj = n * (lq * e * e + 2 * lk * e * e + lq * e * e)
    core, extra = _attention_core(n, lq, lk, e, e)
    macs = proj + core
    bias = n * (lq * e + 2 * lk * e + lq * e)
    return _cost(ins, outs, macs, 2 * macs + bias + extra, "gemm")


# -- per-element ops ------------------------------------------------------------------------
def per_output(rate: float, kind: str = "elementwise") -> Rule:
    def rule(ins, outs, attrs):
        return _cost(ins, outs, 0, rate * _out_numel(outs), kind)

    rule.__doc__ = f"{rate} FLOP(s) per output element"
    return rule


def per_input(rate: float, kind: str = "reduce") -> Rule:
    def rule(ins, outs, attrs):
        return _cost(ins, outs, 0, rate * ins[0].numel, kind)

    rule.__doc__ = f"{rate} FLOP(s) per element of the first operand"
    return rule


def sum_n_rule(ins, outs, attrs) -> OpCost:
    return _cost(ins, outs, 0, max(len(ins) - 1, 0) * _out_numel(outs))


def norm_rule(ins, outs, attrs) -> OpCost:
    """mean, variance, normalise: 5 per element, plus scale and shift when affine."""
    affine = 2 if len(ins) > 1 else 0
    return _cost(ins, outs, 0, (5 + affine) * ins[0].numel)


def lrn_rule(ins, outs, attrs) -> OpCost:
    size = int(attrs["size"])
    return _cost(ins, outs, 0, (size + 3) * ins[0].numel)


def pool_rule(ins, outs, attrs) -> OpCost:
    k = attrs["kernel_size"]
    k = [k] if isinstance(k, int) else k
    return _cost(ins, outs, 0, _prod(k) * _out_numel(outs), "reduce")


def interpolate_rule(ins, outs, attrs) -> OpCost:
    mode = attrs["mode"]
    if mode in ("nearest", "nearest-exact"):
        return _cost(ins, outs, 0, 0, "movement")
    # a weighted sum of 2^d neighbours per output element (4 for bilinear, 16 for bicubic)
    d = max(outs[0].rank - 2, 1)
    taps = 4 ** d if mode == "bicubic" else 2 ** d
    return _cost(ins, outs, 0, 2 * taps * _out_numel(outs))


def movement_rule(ins, outs, attrs) -> OpCost:
    return _cost(ins, outs, 0, 0, "movement")


def view_rule(ins, outs, attrs) -> OpCost:
    return OpCost(0, 0, 0, 0, "view")


def opaque_rule(ins, outs, attrs) -> OpCost:
    r, w = _rw(ins, outs)
    return OpCost(0, 0, r, w, "opaque", counted=False)


def node_cost(node) -> OpCost:
    """The cost of one IR node (uncounted where its op names no rule)."""
    rule = node.opdef.cost or opaque_rule
    return rule([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs)
