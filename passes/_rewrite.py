"""Shared machinery of the exact fusion passes: the pattern-pass skeleton, pattern queries,
weight math, cost figures.

Each exact pass is a :class:`~graphc.registry.PatternPass`: a list of :class:`~graphc.ir.rewrite.RewritePattern`
driven by :func:`~graphc.ir.rewrite.apply_patterns` to a fixed point, then one sweep of the
params nothing reads. Its stats are the patterns' counters plus ``refused`` (node name ->
why no pattern rewrote it).

Invariants the helpers keep, so every pass built on them keeps them too:

- Weights have one representation, the param's numpy array, and fold math stays in it: it
  reads the arrays as float64 (:func:`f64`) and :func:`set_param` casts the result back to
  the dtype of the operand it replaces, so a fold costs one rounding per weight, not one per
  step, and no fold converts to torch and back.
- A param shared with another node is never edited in place: the rewritten node gets a fresh
  param carrying the same source name, and the other users keep the original.
- When a removed node produced a graph output, its replacement takes over the output's name,
  so emitted models keep their input/output names.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.ops import ops_with
# The passes import their skeleton and graph edits from here with the weight math.
from graphc.ir.rewrite import erase_if_dead, replace_output  # noqa: F401
from graphc.registry import PatternPass  # noqa: F401

CONV_OPS = tuple(sorted(ops_with("conv")))


# -- queries -----------------------------------------------------------------------------------
def const_array(v: Value) -> np.ndarray | None:
    """The array behind a param value, or None for anything computed at run time."""
    return v.param.data if v.param is not None else None


def sole_user(v: Value) -> Node | None:
    """The one node reading ``v`` through exactly one operand, when ``v`` is not an output."""
    uses = v.uses()
    if len(uses) != 1 or v.is_output:
        return None
    return uses[0].node


def _as_list(x, nd: int) -> list[int]:
    if isinstance(x, (list, tuple)):
        out = [int(i) for i in x]
        return out * nd if len(out) == 1 and nd > 1 else out
    return [int(x)] * nd


def conv_attrs(node: Node) -> dict:
    """The conv's attributes with defaults filled in and every spatial option a list."""
    nd = len(node.input(1).shape) - 2
    a = node.attrs
    return {
        "stride": _as_list(a.get("stride", 1), nd),
        "padding": _as_list(a.get("padding", 0), nd),
        "dilation": _as_list(a.get("dilation", 1), nd),
        "groups": int(a.get("groups", 1)),
    }


def conv_parts(node: Node):
    """(weight array, bias array or None) of a conv/linear whose operands are params, else None."""
    if node.op not in CONV_OPS + ("linear",) or len(node.inputs) < 2:
        return None
    w = const_array(node.input(1))
    if w is None or not np.issubdtype(w.dtype, np.floating):
        return None
    b = None
    if len(node.inputs) > 2:
        b = const_array(node.input(2))
        if b is None:
            return None
    return w, b


def channel_vector(arr: np.ndarray, out_shape: tuple, axis: int) -> np.ndarray | None:
    """If ``arr`` broadcast against a tensor of ``out_shape`` varies only along ``axis`` (and
    does not grow that tensor), its per-channel values; else None."""
    rank = len(out_shape)
    if arr.ndim > rank:
        return None
    shape = (1,) * (rank - arr.ndim) + tuple(arr.shape)
    axis = axis % rank
    for i, (s, o) in enumerate(zip(shape, out_shape)):
        if s != 1 and (i != axis or s != o):
            return None
    flat = np.asarray(arr, dtype=np.float64).reshape(-1)
    c = out_shape[axis]
    return np.full(c, flat[0]) if flat.size == 1 else flat.reshape(c)


def bn_scale_shift(bn: Node):
    """(scale, shift) in float64 with bn(x) = x*scale + shift per channel, or None when the BN's
    statistics are not params."""
    arrs = [const_array(v) for v in bn.inputs[1:5]]
    if len(arrs) != 4 or any(a is None for a in arrs):
        return None
    w, b, mean, var = (np.asarray(a, dtype=np.float64) for a in arrs)
    scale = w / np.sqrt(var + float(bn.attrs.get("eps", 1e-5)))
    return scale, b - mean * scale


# -- cost ----------------------------------------------------------------------------------------
def conv_macs(out_shape, w_shape) -> int:
    """Multiply-accumulates of a conv: every output element reads one group's inputs x kernel."""
    return int(np.prod(out_shape)) * int(np.prod(w_shape[1:]))


def linear_macs(out_shape, w_shape) -> int:
    return int(np.prod(out_shape)) * int(w_shape[1])


def node_macs(node: Node) -> int:
    if node.op in CONV_OPS:
        return conv_macs(node.output.shape, node.input(1).shape)
    if node.op == "linear":
        return linear_macs(node.output.shape, node.input(1).shape)
    return 0


# -- edits ---------------------------------------------------------------------------------------
def set_param(graph: Graph, node: Node, index: int, arr: np.ndarray) -> None:
    """Give operand ``index`` of ``node`` the array ``arr``, appending it when the node has
    fewer operands (a bias added to a conv that had none). The array is cast to the dtype of
    the operand it replaces (an appended one takes the weight's), so folds compute in float64
    and the graph's types do not change."""
    v = node.input(index) if index < len(node.inputs) else None
    like = v if v is not None and v.param is not None else node.input(1)
    arr = np.ascontiguousarray(arr, dtype=like.param.data.dtype)
    if v is not None:
        if v.param is not None and len(v.uses()) == 1 and not v.is_output:
            v.param.set_data(arr)
            return
        source = v.param.source if v.param is not None else f"{node.name}.{index}"
        kind = v.param.kind if v.param is not None else "weight"
        nv = graph.add_param(arr, source=source, name=v.name, kind=kind)
        node.set_input(index, nv)
        return
    if index != len(node.inputs):
        raise ValueError(f"{node.name}: operand {index} would leave a gap")
    nv = graph.add_param(arr, source=f"{node.name}.bias", name=f"{node.name}.bias", kind="weight")
    node.set_inputs(list(node.inputs) + [nv])


def f64(arr: np.ndarray | None) -> np.ndarray | None:
    """The array in float64, the precision fold math runs in (no copy when it already is)."""
    return None if arr is None else np.asarray(arr, dtype=np.float64)


def cast_like(arr: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``arr`` in ``like``'s dtype, for results written with ``Param.set_data``."""
    return np.ascontiguousarray(arr, dtype=like.dtype)


# -- conv composition ------------------------------------------------------------------------
def dilate_kernel(w: np.ndarray, dilation: list[int]) -> np.ndarray:
    """The same taps as a dilation-1 kernel (zeros between taps)."""
    if all(d == 1 for d in dilation):
        return w
    k = w.shape[2:]
    out = np.zeros((*w.shape[:2], *[d * (s - 1) + 1 for s, d in zip(k, dilation)]), w.dtype)
    out[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = w
    return out


def dense_kernel(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped kernel [O, I/g, k..] as the equivalent dense [O, I, k..] (zeros off-block)."""
    if groups == 1:
        return w
    o, ig = w.shape[:2]
    og = o // groups
    out = np.zeros((o, ig * groups, *w.shape[2:]), w.dtype)
    for g in range(groups):
        out[g * og:(g + 1) * og, g * ig:(g + 1) * ig] = w[g * og:(g + 1) * og]
    return out


def compose_taps(w1: np.ndarray, w2: np.ndarray, s1: list[int]) -> np.ndarray:
    """Kernel of conv(w2, stride s2) after conv(w1, stride s1), both dense and dilation 1:
    W[o,c,u] = sum_{m,j} w2[o,m,j] w1[m,c,u - s1*j]; size k1 + s1*(k2-1) per axis."""
    k1, k2 = w1.shape[2:], w2.shape[2:]
    size = [a + s * (b - 1) for a, b, s in zip(k1, k2, s1)]
    out = np.zeros((w2.shape[0], w1.shape[1], *size), w1.dtype)
    for j in itertools.product(*[range(k) for k in k2]):
        tap = w2[(slice(None), slice(None)) + j]
        region = tuple(slice(s * jj, s * jj + k) for s, jj, k in zip(s1, j, k1))
        out[(slice(None), slice(None)) + region] += np.tensordot(tap, w1, axes=(1, 0))
    return out


def compose_depthwise(w1: np.ndarray, w2: np.ndarray, s1: list[int]) -> np.ndarray:
    """As :func:`compose_taps` when the second conv is depthwise (w2 is [O, 1, k2..]) over the
    first's O output channels: each output channel keeps the first conv's input channels."""
    k1, k2 = w1.shape[2:], w2.shape[2:]
    size = [a + s * (b - 1) for a, b, s in zip(k1, k2, s1)]
    out = np.zeros((w1.shape[0], w1.shape[1], *size), w1.dtype)
    shape = (-1,) + (1,) * (w1.ndim - 1)
    for j in itertools.product(*[range(k) for k in k2]):
        tap = w2[(slice(None), 0) + j].reshape(shape)
        region = tuple(slice(s * jj, s * jj + k) for s, jj, k in zip(s1, j, k1))
        out[(slice(None), slice(None)) + region] += tap * w1
    return out


# Bytes of float64 kernel a dense composition of two differently grouped convs may build:
# beyond it the merged conv would be far bigger (and costlier) than the pair anyway.
_DENSE_LIMIT = 1 << 28


def compose_convs(w1, b1, a1: dict, w2, b2, a2: dict):
    """Weight, bias and attrs of one conv equal to conv2(conv1(x)), where conv2 reads only
    conv1's output, has no padding and dilation 1. Takes and returns float64 arrays:
    (w, b, attrs), or a string saying why the pair cannot be composed."""
    g1, g2 = a1["groups"], a2["groups"]
    o1 = w1.shape[0]
    w1 = dilate_kernel(w1, a1["dilation"])
    s1 = a1["stride"]
    if g1 == g2:
        og1, og2 = o1 // g1, w2.shape[0] // g2
        parts = [compose_taps(w1[g * og1:(g + 1) * og1], w2[g * og2:(g + 1) * og2], s1) for g in range(g1)]
        w, groups = np.concatenate(parts, 0), g1
    elif g2 == o1 and w2.shape[0] == o1:
        w, groups = compose_depthwise(w1, w2, s1), g1
    else:
        cin = w1.shape[1] * g1
        size = [k1 + s * (k2 - 1) for k1, k2, s in zip(w1.shape[2:], w2.shape[2:], s1)]
        if 8 * max(w2.shape[0] * cin * math.prod(size), w2.shape[0] * o1 * math.prod(w2.shape[2:])) > _DENSE_LIMIT:
            return f"groups {g1} then {g2} would need a dense kernel too large to build"
        w = compose_taps(dense_kernel(w1, g1), dense_kernel(w2, g2), s1)
        groups = 1
    bias = None
    if b1 is not None:
        # conv2 sees conv1's bias at every tap of every channel it reads: it adds
        # sum_{m in its group, j} w2[o, m, j] * b1[m].
        o2, ig = w2.shape[:2]
        taps = w2.reshape(g2, o2 // g2, ig, -1).sum(-1)
        bias = (taps * b1.reshape(g2, 1, ig)).sum(-1).reshape(o2)
    if b2 is not None:
        bias = b2.copy() if bias is None else bias + b2
    attrs = {
        "stride": [x * y for x, y in zip(s1, a2["stride"])],
        "padding": list(a1["padding"]),
        "dilation": [1] * len(s1),
        "groups": groups,
    }
    return w, bias, attrs
