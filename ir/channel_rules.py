"""Channel rules: what the ``channels`` field of an OpDef names.

A rule says how the axes of a node's operands and outputs are tied to each other, element by
element, so that the channel-group analysis (:mod:`graphc.passes.channel_groups`) can find
which slices must be removed together. A rule is ``rule(node, t: Ties)`` and records, for an
axis reference ``(io, index, axis)`` (``io`` is ``IN`` or ``OUT``, ``axis`` non-negative):

- ``t.tie(a, b, ia, ib)``: element ``ia[k]`` of axis ``a`` is the same channel as element
  ``ib[k]`` of axis ``b`` (``None`` means ``arange``: an identity tie). Ties with the same
  reference on both sides couple elements of one axis (a conv group, a GroupNorm group).
- ``t.absorb(a)``: removing elements of ``a`` changes no other operand's shape and keeps the
  op valid (a reduced axis, a size-1 broadcast axis).
- ``t.freeze(a, why)``: elements of ``a`` must not be removed, and why.

Any axis a rule leaves unmentioned is frozen with a generic reason, so an op without a
precise rule blocks pruning instead of breaking the graph. ``opaque`` freezes everything.

A rule may also own a ``resize`` hook, ``resize(node, old_in, new_in, new_out)`` (shapes),
that rewrites the attributes that spell sizes (reshape's shape, split's sizes, conv groups)
once channels were removed; the node is then re-typed.

Invariants: every op definition names its rule (tests/ir/test_opdefs.py); rules only read
shapes and attributes, never weights; every tie is exact for the op's semantics, so removing
the elements of one connected channel set from every tied axis keeps every node valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

IN, OUT = 0, 1


class Ties:
    """What one node's rule says about its axes."""

    __slots__ = ("ties", "absorbed", "frozen")

    def __init__(self):
        self.ties: list[tuple] = []
        self.absorbed: set[tuple] = set()
        self.frozen: dict[tuple, str] = {}

    def tie(self, a, b, ia=None, ib=None) -> None:
        self.ties.append((a, b, ia, ib))

    def absorb(self, a) -> None:
        self.absorbed.add(a)

    def freeze(self, a, why: str) -> None:
        self.frozen.setdefault(a, why)


@dataclass(frozen=True)
class ChannelRule:
    ties: Callable
    resize: Callable | None = None


def _shapes(node):
    return [v.shape for v in node.inputs], [v.shape for v in node.outputs]


# -- generic rules ------------------------------------------------------------------------------
def same(node, t: Ties) -> None:
    """Output 0 has the shape of input 0, axis by axis (activations, softmax, dropout, norms)."""
    ins, outs = _shapes(node)
    for a in range(min(len(ins[0]), len(outs[0]))):
        if ins[0][a] == outs[0][a]:
            t.tie((IN, 0, a), (OUT, 0, a))


def broadcast(node, t: Ties, operands=None) -> None:
    """Numpy broadcasting: operand axes align to the output from the right."""
    ins, outs = _shapes(node)
    out = outs[0]
    for i in (range(len(ins)) if operands is None else operands):
        s = ins[i]
        for a in range(len(s)):
            oa = a + len(out) - len(s)
            if s[a] == 1 and out[oa] != 1:
                t.absorb((IN, i, a))
            elif s[a] == out[oa]:
                t.tie((IN, i, a), (OUT, 0, oa))


def frozen(why: str):
    def rule(node, t: Ties) -> None:
        for i, v in enumerate(node.inputs):
            for a in range(len(v.shape)):
                t.freeze((IN, i, a), why)
        for j, v in enumerate(node.outputs):
            for a in range(len(v.shape)):
                t.freeze((OUT, j, a), why)
    return rule


def opaque(node, t: Ties) -> None:
    what = node.attrs.get("target") or node.attrs.get("op_type") or "?"
    frozen(f"opaque op {what}: graphc cannot see how it uses its channels")(node, t)


def keep_axes(node, t: Ties, axes, shift: dict | None = None) -> None:
    """Tie the listed input-0 axes to the output axes they become (``shift``: in -> out)."""
    ins, outs = _shapes(node)
    for a in axes:
        oa = a if shift is None else shift[a]
        if oa is not None and ins[0][a] == outs[0][oa]:
            t.tie((IN, 0, a), (OUT, 0, oa))


# -- layers -------------------------------------------------------------------------------------
def conv(node, t: Ties) -> None:
    ins, outs = _shapes(node)
    x, w = ins[0], ins[1]
    g = int(node.attrs["groups"])
    cin, o = x[1], w[0]
    t.tie((IN, 0, 0), (OUT, 0, 0))
    t.tie((IN, 1, 0), (OUT, 0, 1))
    if len(ins) > 2:
        t.tie((IN, 2, 0), (IN, 1, 0))
    if g == 1:
        t.tie((IN, 0, 1), (IN, 1, 1))
        return
    # Grouped: a whole group (its inputs and its outputs) goes at once, so every group keeps
    # the same width and the weight stays rectangular.
    cg, og = cin // g, o // g
    e_in, e_out = np.arange(cin), np.arange(o)
    t.tie((IN, 0, 1), (OUT, 0, 1), e_in, (e_in // cg) * og)
    if og > 1:
        t.tie((OUT, 0, 1), (OUT, 0, 1), e_out, (e_out // og) * og)
    if cg > 1:
        t.tie((IN, 0, 1), (IN, 0, 1), e_in, (e_in // cg) * cg)
    t.freeze((IN, 1, 1), "grouped conv: the per-group input width is kept")


def conv_resize(node, old_in, new_in, new_out) -> None:
    g = int(node.attrs["groups"])
    if g > 1:
        node.attrs["groups"] = new_in[0][1] // new_in[1][1]


def conv_transpose(node, t: Ties) -> None:
    if int(node.attrs["groups"]) != 1:
        frozen("grouped transposed conv")(node, t)
        return
    t.tie((IN, 0, 0), (OUT, 0, 0))
    t.tie((IN, 0, 1), (IN, 1, 0))
    t.tie((IN, 1, 1), (OUT, 0, 1))
    if len(node.inputs) > 2:
        t.tie((IN, 2, 0), (IN, 1, 1))


def linear(node, t: Ties) -> None:
    ins, outs = _shapes(node)
    r = len(ins[0])
    for a in range(r - 1):
        t.tie((IN, 0, a), (OUT, 0, a))
    t.tie((IN, 0, r - 1), (IN, 1, 1))
    t.tie((IN, 1, 0), (OUT, 0, r - 1))
    if len(ins) > 2:
        t.tie((IN, 2, 0), (IN, 1, 0))


def matmul(node, t: Ties) -> None:
    ins, outs = _shapes(node)
    a, b, out = ins[0], ins[1], outs[0]
    if len(a) < 2 or len(b) < 2:
        frozen("matmul of a vector")(node, t)
        return
    ro = len(out)
    for i, s in enumerate((a, b)):
        for ax in range(len(s) - 2):
            oa = ax + ro - len(s)
            if s[ax] == 1 and out[oa] != 1:
                t.absorb((IN, i, ax))
            elif s[ax] == out[oa]:
                t.tie((IN, i, ax), (OUT, 0, oa))
    t.tie((IN, 0, len(a) - 2), (OUT, 0, ro - 2))
    t.tie((IN, 1, len(b) - 1), (OUT, 0, ro - 1))
    t.tie((IN, 0, len(a) - 1), (IN, 1, len(b) - 2))


def batch_norm(node, t: Ties) -> None:
    same(node, t)
    for i in range(1, len(node.inputs)):
        if node.inputs[i].shape:
            t.tie((IN, i, 0), (OUT, 0, 1))


def layer_norm(node, t: Ties) -> None:
    same(node, t)
    r = len(node.inputs[0].shape)
    for i in range(1, len(node.inputs)):
        k = len(node.inputs[i].shape)
        for a in range(k):
            t.tie((IN, i, a), (OUT, 0, r - k + a))


def layer_norm_resize(node, old_in, new_in, new_out) -> None:
    k = len(node.attrs["normalized_shape"])
    node.attrs["normalized_shape"] = list(new_in[0][len(new_in[0]) - k:])


def group_norm(node, t: Ties) -> None:
    same(node, t)
    c = node.inputs[0].shape[1]
    groups = int(node.attrs["num_groups"])
    per = c // groups
    if per > 1 and groups > 1:  # a whole normalisation group goes at once
        e = np.arange(c)
        t.tie((OUT, 0, 1), (OUT, 0, 1), e, (e // per) * per)
    for i in range(1, len(node.inputs)):
        t.tie((IN, i, 0), (OUT, 0, 1))


def group_norm_resize(node, old_in, new_in, new_out) -> None:
    # One group (PoolFormer's GroupNorm1) normalises over all channels, like a layer norm over
    # (C, H, W): its channels go one by one, and it stays one group.
    if int(node.attrs["num_groups"]) == 1:
        return
    per = old_in[0][1] // int(node.attrs["num_groups"])
    node.attrs["num_groups"] = new_in[0][1] // per


def norm_per_channel(node, t: Ties) -> None:
    same(node, t)
    for i in range(1, len(node.inputs)):
        t.tie((IN, i, 0), (OUT, 0, 1))


def pool(node, t: Ties) -> None:
    keep_axes(node, t, (0, 1))


def reduction(node, t: Ties) -> None:
    ins, outs = _shapes(node)
    r = len(ins[0])
    dims = node.attrs.get("dims", node.attrs.get("dim"))
    dims = [dims] if isinstance(dims, int) else list(dims if dims is not None else range(r))
    dims = {d % r for d in dims} if r else set()
    keepdim = bool(node.attrs["keepdim"])
    shift, k = {}, 0
    for a in range(r):
        if a in dims:
            t.absorb((IN, 0, a))
            shift[a] = None
            if keepdim:
                k += 1
        else:
            shift[a] = k
            k += 1
    keep_axes(node, t, [a for a in range(r) if a not in dims], shift)


def multi_head_attention(node, t: Ties) -> None:
    frozen("multi_head_attention splits its embedding into heads inside the op; "
           "its inputs, packed projections and output keep their width")(node, t)


def sdpa(node, t: Ties) -> None:
    ins, outs = _shapes(node)
    q, k, v, out = ins[0], ins[1], ins[2], outs[0]
    ro = len(out)
    for i, s in enumerate(ins[:3]):
        for ax in range(len(s) - 2):
            oa = ax + ro - len(s)
            if s[ax] == 1 and out[oa] != 1:
                t.absorb((IN, i, ax))
            elif s[ax] == out[oa]:
                t.tie((IN, i, ax), (OUT, 0, oa))
    t.tie((IN, 0, len(q) - 2), (OUT, 0, ro - 2))
    t.tie((IN, 0, len(q) - 1), (IN, 1, len(k) - 1))
    t.tie((IN, 1, len(k) - 2), (IN, 2, len(v) - 2))
    t.tie((IN, 2, len(v) - 1), (OUT, 0, ro - 1))


def sdpa_resize(node, old_in, new_in, new_out) -> None:
    # The default scale is 1/sqrt(E) of the query width: pin the original one.
    if node.attrs.get("scale") is None and new_in[0][-1] != old_in[0][-1]:
        node.attrs["scale"] = 1.0 / math.sqrt(old_in[0][-1])


# -- data movement ----------------------------------------------------------------------------
def _segments(s, t_):
    """Pair up runs of axes whose products match (the axes a reshape merges or splits)."""
    segs, i, j = [], 0, 0
    while i < len(s) and j < len(t_):
        i0, j0, pi, pj = i, j, s[i], t_[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(s):
                pi *= s[i]
                i += 1
            elif j < len(t_):
                pj *= t_[j]
                j += 1
            else:
                return None
        segs.append([list(range(i0, i)), list(range(j0, j))])
    if not segs:
        return None
    segs[-1][0].extend(range(i, len(s)))
    segs[-1][1].extend(range(j, len(t_)))
    return segs


# Axes this short at the front of a merged run are read as structure (see reshape).
_STRUCTURAL = 4


def reshape(node, t: Ties) -> None:
    """Within a run of axes that a reshape merges, the leading axis carries the channels (a
    channel becomes a block of features: flatten into a linear); within a run it splits, the
    trailing axis does (channel shuffle, heads of width d): elements of the split axis that
    land on the same trailing index go together."""
    ins, outs = _shapes(node)
    s, o = ins[0], outs[0]
    segs = _segments(s, o)
    if segs is None:
        frozen("reshape with no axis correspondence")(node, t)
        return
    for ia, oa in segs:
        i_big = [a for a in ia if s[a] != 1]
        o_big = [a for a in oa if o[a] != 1]
        for a in ia:
            if s[a] == 1:
                t.absorb((IN, 0, a))
        if len(i_big) == 1 and len(o_big) == 1:
            t.tie((IN, 0, i_big[0]), (OUT, 0, o_big[0]))
        elif len(i_big) == 1 and len(o_big) > 1:
            last = o_big[-1]
            e = np.arange(s[i_big[0]])
            t.tie((IN, 0, i_big[0]), (OUT, 0, last), e, e % o[last])
        elif len(i_big) > 1 and len(o_big) == 1:
            e = np.arange(o[o_big[0]])
            first, last = i_big[0], i_big[-1]
            if s[first] <= _STRUCTURAL and s[last] > s[first]:
                # A short leading axis (a radix, q/k/v, a few heads) is structure, not channels:
                # the merge undoes a split (ResNeSt's radix softmax, heads back to features),
                # and the trailing axis carries the channels, as the split's rule ties them.
                t.tie((OUT, 0, o_big[0]), (IN, 0, last), e, e % s[last])
            else:
                block = math.prod(s[a] for a in i_big[1:])
                t.tie((OUT, 0, o_big[0]), (IN, 0, first), e, e // block)


def reshape_resize(node, old_in, new_in, new_out) -> None:
    if node.op == "reshape":
        node.attrs["shape"] = list(new_out[0])
    elif node.op == "expand":
        node.attrs["shape"] = list(new_out[0])


def permute(node, t: Ties) -> None:
    for j, a in enumerate(node.attrs["dims"]):
        t.tie((IN, 0, a % len(node.attrs["dims"])), (OUT, 0, j))


def squeeze(node, t: Ties) -> None:
    s = node.inputs[0].shape
    r = len(s)
    dims = {d % r for d in node.attrs["dims"]} if r else set()
    shift, k = {}, 0
    for a in range(r):
        if a in dims and s[a] == 1:
            t.absorb((IN, 0, a))
            shift[a] = None
        else:
            shift[a] = k
            k += 1
    keep_axes(node, t, [a for a in range(r) if shift[a] is not None], shift)


def unsqueeze(node, t: Ties) -> None:
    r_out = len(node.outputs[0].shape)
    dims = {d % r_out for d in node.attrs["dims"]}
    kept = [a for a in range(r_out) if a not in dims]
    keep_axes(node, t, range(len(kept)), {i: a for i, a in enumerate(kept)})


def expand(node, t: Ties) -> None:
    broadcast(node, t, operands=[0])


def tile(node, t: Ties) -> None:
    s = node.inputs[0].shape
    reps = list(node.attrs["repeats"])
    off = len(reps) - len(s)
    keep_axes(node, t, [a for a in range(len(s)) if reps[a + off] == 1], {a: a + off for a in range(len(s))})


def concat(node, t: Ties) -> None:
    r = len(node.outputs[0].shape)
    d = node.attrs["dim"] % r
    _end_to_end(t, IN, [v.shape[d] for v in node.inputs], OUT, r, d)


def split(node, t: Ties) -> None:
    r = len(node.inputs[0].shape)
    d = node.attrs["dim"] % r
    _end_to_end(t, OUT, [v.shape[d] for v in node.outputs], IN, r, d)


def _end_to_end(t: Ties, side: int, sizes: list[int], whole: int, r: int, d: int) -> None:
    """Parts laid end to end along axis ``d`` of one whole tensor (concat's inputs, split's
    outputs): every other axis of a part tied to the whole's, axis ``d`` element by element
    to its slice."""
    off = 0
    for i, n in enumerate(sizes):
        for a in range(r):
            if a != d:
                t.tie((side, i, a), (whole, 0, a))
        if n:
            t.tie((side, i, d), (whole, 0, d), np.arange(n), off + np.arange(n))
        off += n


def split_resize(node, old_in, new_in, new_out) -> None:
    d = node.attrs["dim"] % len(new_in[0])
    node.attrs["sizes"] = [int(s[d]) for s in new_out]


def _along(attr: str, why: str, full_ok=None):
    """Ops that pick or move elements along one axis: other axes pass through."""
    def rule(node, t: Ties) -> None:
        s = node.inputs[0].shape
        r = len(s)
        dims = node.attrs[attr]
        dims = {d % r for d in ([dims] if isinstance(dims, int) else dims)}
        removed = node.op == "select"
        shift, k = {}, 0
        for a in range(r):
            if a in dims and removed:
                shift[a] = None
                continue
            shift[a] = k
            k += 1
        for a in range(r):
            if a in dims and not (full_ok and full_ok(node, a)):
                t.freeze((IN, 0, a), why)
                if shift[a] is not None:
                    t.freeze((OUT, 0, shift[a]), why)
        keep_axes(node, t, [a for a in range(r) if shift[a] is not None and (a not in dims or (full_ok and full_ok(node, a)))], shift)
    return rule


def _full_slice(node, a) -> bool:
    n = node.inputs[0].shape[a]
    end = node.attrs["end"]
    return node.attrs["start"] in (0, None) and (end is None or end >= n) and node.attrs["step"] == 1


def pad(node, t: Ties) -> None:
    s = node.inputs[0].shape
    p = list(node.attrs["pad"])
    padded = set()
    for k in range(len(p) // 2):
        if p[2 * k] or p[2 * k + 1]:
            padded.add(len(s) - 1 - k)
    for a in padded:
        t.freeze((IN, 0, a), "padded axis")
    keep_axes(node, t, [a for a in range(len(s)) if a not in padded])


def channel_shuffle(node, t: Ties) -> None:
    """Input channel (gi, ki) becomes output channel ki*g + gi. The same ki of every group
    goes at once, so the pruned tensor is still a g-way shuffle."""
    s = node.inputs[0].shape
    for a in range(len(s)):
        if a != 1:
            t.tie((IN, 0, a), (OUT, 0, a))
    g = int(node.attrs["groups"])
    c = s[1]
    k = c // g
    e = np.arange(c)
    gi, ki = e // k, e % k
    t.tie((IN, 0, 1), (OUT, 0, 1), e, ki * g + gi)
    if g > 1:
        t.tie((IN, 0, 1), (IN, 0, 1), e, ki)


def where(node, t: Ties) -> None:
    broadcast(node, t)


def index_select(node, t: Ties) -> None:
    _along("dim", "index_select picks fixed indices on this axis")(node, t)
    t.freeze((IN, 1, 0), "index vector")


def gather(node, t: Ties) -> None:
    frozen("gather reads data-dependent positions")(node, t)


# -- the rules the op definitions name ----------------------------------------------------------
def rule(ties, resize=None) -> ChannelRule:
    return ChannelRule(ties, resize)


SAME = rule(same)
BROADCAST = rule(broadcast)
REDUCTION = rule(reduction)
OPAQUE = rule(opaque)
CONV = rule(conv, conv_resize)
CONV_TRANSPOSE = rule(conv_transpose)
LINEAR = rule(linear)
MATMUL = rule(matmul)
BATCH_NORM = rule(batch_norm)
LAYER_NORM = rule(layer_norm, layer_norm_resize)
GROUP_NORM = rule(group_norm, group_norm_resize)
INSTANCE_NORM = rule(norm_per_channel)
POOL = rule(pool)
MULTI_HEAD_ATTENTION = rule(multi_head_attention)
SDPA = rule(sdpa, sdpa_resize)
RESHAPE = rule(reshape, reshape_resize)
PERMUTE = rule(permute)
SQUEEZE = rule(squeeze)
UNSQUEEZE = rule(unsqueeze)
EXPAND = rule(expand, reshape_resize)
TILE = rule(tile)
CONCAT = rule(concat)
SPLIT = rule(split, split_resize)
SLICE = rule(_along("dim", "slice keeps a fixed range of this axis", _full_slice))
SELECT = rule(_along("dim", "select picks one fixed index of this axis"))
INDEX_SELECT = rule(index_select)
GATHER = rule(gather)
ROLL = rule(_along("dims", "roll moves elements along this axis"))
PAD = rule(pad)
CHANNEL_SHUFFLE = rule(channel_shuffle)
WHERE = rule(where)


def rule_for(opdef) -> ChannelRule:
    """The op's rule; an op defined without one freezes its axes."""
    return opdef.channels or ChannelRule(frozen(f"op {opdef.name} has no channel rule"))
