"""fuse-branches: any sum of scaled conv / BN / identity branches on one input becomes one conv.

A tree of ``add`` / ``sub`` nodes whose leaves are convs of one input ``x``, ``x`` itself, and
per-channel affine maps of them (``batch_norm``, ``mul`` / ``div`` by a per-channel or scalar
constant, ``add`` / ``sub`` of a per-channel constant) is an affine map of ``x``; when it
holds at least one conv, it is one conv of ``x``. FastViT's RepMixer,
``x + gamma * (mixer(x) - BN(x))`` with the mixer a sum of depthwise kxk, 1x1 and BN branches,
folds to one depthwise conv, as timm's own reparameterisation does; RepVGG, MobileOne and
RepGhost blocks are other instances.

Invariants: every node folded into the conv is read only by the next node of the tree (the
root may be read by anything); every conv of the tree reads ``x`` with the same stride and
grouping and a kernel centred alike (odd size, zero padding ``dilation*(k-1)/2`` plus one common
offset), so summing the kernels at their centres is exact; the identity goes in at the centre
tap of output channel o, input channel o (which needs stride 1 and as many outputs as inputs).
The weight math runs in float64 and is rounded once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import (CONV_OPS, PatternPass, bn_scale_shift, cast_like, channel_vector, conv_attrs,
                                    conv_parts, replace_output, set_param, sole_user)
from graphc.registry import register_pass


class _NoFold(Exception):
    """The tree is not an affine map of one input that one conv computes (the message says why)."""


@dataclass
class _Affine:
    """y = sum of conv(x) terms + scale * x + shift, per output channel.

    ``w`` (float64, [O, I/g, k..]) is None while no conv is in; ``conv`` is the conv node whose
    kernel is the largest so far (the node the fold reuses)."""

    x: Value
    scale: np.ndarray
    shift: np.ndarray
    w: np.ndarray | None = None
    attrs: dict | None = None
    conv: Node | None = None
    offset: tuple = ()
    nodes: list = field(default_factory=list)

    def mul(self, s: np.ndarray) -> "_Affine":
        self.scale = self.scale * s
        self.shift = self.shift * s
        if self.w is not None:
            self.w = self.w * s.reshape((-1,) + (1,) * (self.w.ndim - 1))
        return self


def _vector(v: Value, like: Value) -> np.ndarray | None:
    if v.param is None or not np.issubdtype(v.param.data.dtype, np.floating) or len(like.shape) < 2:
        return None
    return channel_vector(v.param.data, like.shape, 1)


def _conv_leaf(node: Node) -> _Affine:
    parts = conv_parts(node)
    if parts is None or node.op not in CONV_OPS:
        raise _NoFold(f"{node.name}'s weights are not constants")
    w, b = parts
    a = conv_attrs(node)
    if any(k % 2 == 0 for k in w.shape[2:]):
        raise _NoFold(f"{node.name} has an even kernel (no centre)")
    if node.attrs.get("padding_mode", "zeros") not in (None, "zeros"):
        raise _NoFold(f"{node.name} pads with {node.attrs['padding_mode']}")
    offset = tuple(p - d * (k - 1) // 2 for k, p, d in zip(w.shape[2:], a["padding"], a["dilation"]))
    from graphc.passes._rewrite import dilate_kernel

    wd = dilate_kernel(np.asarray(w, dtype=np.float64), a["dilation"])
    c = node.output.shape[1]
    bias = np.zeros(c) if b is None else np.asarray(b, dtype=np.float64)
    return _Affine(node.input(0), np.zeros(c), bias, wd, {**a, "dilation": [1] * len(a["dilation"])}, node, offset,
                   [node])


def _identity_into(f: _Affine) -> None:
    """Move f's ``scale * x`` into its kernel's centre taps."""
    if not np.any(f.scale):
        return
    if any(s != 1 for s in f.attrs["stride"]):
        raise _NoFold(f"{f.conv.name} is strided: the identity branch has no kernel tap")
    o, cin_g = f.w.shape[:2]
    if f.conv.input(0).shape[1] != o:
        raise _NoFold(f"{f.conv.name} changes the channel count: the identity branch has no kernel tap")
    centre = tuple(k // 2 for k in f.w.shape[2:])
    idx = np.arange(o)
    f.w[(idx, idx % cin_g) + centre] += f.scale
    f.scale = np.zeros(o)


def _add(a: _Affine, b: _Affine, sign: float) -> _Affine:
    if a.x is not b.x:
        raise _NoFold("the branches read different inputs")
    if b.w is not None and a.w is None:
        a, b, sign_b = b.mul(np.full(len(b.shift), sign)), a, 1.0
    else:
        sign_b = sign
    out = _Affine(a.x, a.scale + sign_b * b.scale, a.shift + sign_b * b.shift, a.w, a.attrs, a.conv, a.offset,
                  a.nodes + b.nodes)
    if b.w is None:
        return out
    if (a.attrs["stride"], a.attrs["groups"]) != (b.attrs["stride"], b.attrs["groups"]) or a.offset != b.offset:
        raise _NoFold(f"{a.conv.name} and {b.conv.name} differ in stride, grouping or centring")
    if a.w.shape[:2] != b.w.shape[:2]:
        raise _NoFold(f"{a.conv.name} and {b.conv.name} differ in channels")
    big, small, conv, attrs = (a.w, b.w * sign_b, a.conv, a.attrs)
    if np.prod(b.w.shape[2:]) > np.prod(a.w.shape[2:]):
        big, small, conv, attrs = b.w * sign_b, a.w, b.conv, b.attrs
    if any(s > t for s, t in zip(small.shape[2:], big.shape[2:])):
        raise _NoFold(f"neither kernel of {a.conv.name} and {b.conv.name} contains the other")
    w = big.copy()
    region = tuple(slice((t - s) // 2, (t - s) // 2 + s) for s, t in zip(small.shape[2:], big.shape[2:]))
    w[(slice(None), slice(None)) + region] += small
    out.w, out.conv, out.attrs = w, conv, attrs
    return out


def _form(v: Value, parent: Node | None, root: Node) -> _Affine:
    """The affine form of ``v``; a value no rule reads further is the input itself."""
    node = v.producer
    c = v.shape[1] if len(v.shape) > 1 else 0
    inner = node is not None and (parent is None or sole_user(v) is parent)

    def leaf() -> _Affine:
        return _Affine(v, np.ones(c), np.zeros(c))

    if not inner or not c:
        return leaf()
    op = node.op
    if op in CONV_OPS:
        try:
            return _conv_leaf(node)
        except _NoFold:
            if node is root:
                raise
            return leaf()
    if op == "batch_norm":
        ss = bn_scale_shift(node)
        if ss is None:
            return leaf()
        f = _form(node.input(0), node, root).mul(ss[0])
        f.shift = f.shift + ss[1]
        f.nodes.append(node)
        return f
    if op in ("mul", "div", "add", "sub") and len(node.inputs) == 2:
        a, b = node.input(0), node.input(1)
        if a.param is None and b.param is None:
            if op in ("add", "sub") and a.shape == b.shape == v.shape:
                f = _add(_form(a, node, root), _form(b, node, root), 1.0 if op == "add" else -1.0)
                f.nodes.append(node)
                return f
            return leaf()
        const, var = (b, a) if b.param is not None else (a, b)
        vec = _vector(const, v)
        if vec is None or var.param is not None or var.shape != v.shape:
            return leaf()
        if op == "div":
            if const is a or not np.all(vec):
                return leaf()
            vec = 1.0 / vec
        f = _form(var, node, root)
        if op in ("mul", "div"):
            f.mul(vec)
        elif op == "add":
            f.shift = f.shift + vec
        elif const is b:  # f - c
            f.shift = f.shift - vec
        else:  # c - f
            f.mul(np.full(c, -1.0))
            f.shift = f.shift + vec
        f.nodes.append(node)
        return f
    return leaf()


def fold_branches(graph: Graph, root: Node) -> str | None:
    """Fold the tree under ``root`` into one conv; None when done, else why not."""
    try:
        f = _form(root.output, None, root)
    except _NoFold as e:
        return str(e)
    if f.w is None:
        return "no conv branch"
    if len(f.nodes) < 2:
        return "nothing to fold"
    if root.output.shape != f.conv.output.shape:
        return "the sum broadcasts past the conv's output"
    try:
        _identity_into(f)
    except _NoFold as e:
        return str(e)
    conv = f.conv
    w0, _ = conv_parts(conv)
    set_param(graph, conv, 1, cast_like(f.w, w0))
    set_param(graph, conv, 2, cast_like(f.shift, w0))
    # The reused conv keeps its stride and grouping; its padding now centres the biggest kernel
    # (a dilated kernel was spread out with zeros between its taps).
    conv.attrs.update(padding=[(k - 1) // 2 + off for k, off in zip(f.w.shape[2:], f.offset)],
                      dilation=[1] * (f.w.ndim - 2))
    conv.retype()
    replace_output(graph, root, conv.output)
    for n in reversed(f.nodes):
        if n is not conv and n in graph and not any(v.num_uses for v in n.outputs):
            graph.erase(n)
    return None


# Not refusals worth listing: most adds are residual joins of two different inputs.
_QUIET = ("no conv branch", "nothing to fold", "the branches read different inputs")


class BranchSum(RewritePattern):
    """add/sub trees of affine conv / BN / identity branches of one input -> one conv."""

    ops = ("add", "sub")

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if len(node.inputs) != 2 or any(v.param is not None for v in node.inputs):
            return False
        if not any(v.producer is not None for v in node.inputs):
            return False
        why = fold_branches(rw.graph, node)
        if why is None:
            rw.count("folded")
            return True
        if why not in _QUIET:
            rw.refuse(node, why)
        return False


@register_pass
@dataclass(frozen=True)
class FuseBranches(PatternPass):
    """Fold any sum of scaled conv / BN / identity branches on one input into one conv. Exact.

        %k = conv2d(%x, %wk) {groups=C, padding=[1,1]}
        %s = conv2d(%x, %w1) {groups=C}                 %k = conv2d(%x, %w') {groups=C, padding=[1,1]}
        %m = add(add(%k, %s), batch_norm(%x))    ==>    (readers of %y read %k)
        %d = sub(%m, batch_norm(%x))
        %y = add(%x, mul(%d, %gamma))

    ``stats["folded"]`` counts the trees folded; refusals name why (``stats["refused"]``).
    """

    name: ClassVar[str] = "fuse-branches"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [BranchSum()]

    def stats(self, res) -> dict:
        return {"folded": res.counts.get("folded", 0), "refused": res.refused}
