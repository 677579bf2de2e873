"""Storage of unified weights (``unify``) in ONNX: one value per block plus packed sign bits,
decoded by standard ops, and what such weights cost.

A weight marked ``[unify="<block>"]`` is cut into its blocks (:mod:`graphc.passes.unify_blocks`)
and each block classified from the numbers themselves: pruned (all zero), unified (one
magnitude, nonzero) or free (anything else). It is stored as:

- ``unified``: a bitmap over the blocks (1 bit per block), packed into uint8;
- ``values``: one float per unified block (its magnitude; with shared patterns, its signed value);
- ``signs``: one bit per weight of each unified block (own signs), or one bit per weight of each
  group's pattern (``-shared`` blocks whose groups really share one pattern), packed;
- only when free blocks exist: a second bitmap and their weights as floats.

Pruned blocks cost their bitmap bit only. The decoder is a subgraph of standard ops (opset 13:
Div/Mod unpack the bits, CumSum turns a bitmap into gather indices, Gather/Mul/Transpose
rebuild the weight) whose output carries the original initializer's name, so the layer reading
it is untouched; onnxruntime folds it into a constant when the session starts. Decoded weights
equal the unified weights bit for bit (a value times +-1.0 is exact).

Blocked ``DequantizeLinear`` (opset 21) was the other candidate: its narrowest code type is
int4, 4 bits per weight where a sign needs one, so the packed-bit form stores 3 bits less per
weight. No standard runtime kernel computes a conv from the block form: the file is smaller,
the arithmetic is a dense conv (:func:`unified_cost` says so per layer); ``unify-realize``
is what lowers the MACs, where patterns are shared.
"""
from __future__ import annotations

import numpy as np
import torch

from graphc.passes.unify_blocks import BlockSpec, parse_block, to_blocks

__all__ = ["structure", "layer_bits", "graph_bits", "planned_bits", "encode_unified", "unified_cost"]


def structure(w: np.ndarray, spec: BlockSpec) -> dict:
    """Blocks of ``w`` by class, with what the encoding stores for them."""
    b = to_blocks(torch.from_numpy(np.array(w)), spec).numpy()
    a = np.abs(b)
    pruned = ~b.any(1)
    unified = ~pruned & (a == a[:, :1]).all(1)
    free = ~pruned & ~unified
    out = {"blocks": b, "unified": unified, "pruned": pruned, "free": free, "k": b.shape[1], "pattern": None}
    if spec.shared and unified.any():
        groups = spec.group_shape(w.shape)[0]
        norm = np.where(b >= 0, 1, -1) * np.where(b[:, :1] >= 0, 1, -1)  # pattern with a leading +1
        g_of = _group_index(w.shape, spec)
        pattern = np.ones((groups, b.shape[1]), dtype=np.int64)
        ok = True
        for g in range(groups):
            rows = norm[unified & (g_of == g)]
            if len(rows):
                pattern[g] = rows[0]
                ok &= bool((rows == rows[0]).all())
        if ok:
            out["pattern"] = pattern
    return out


def _group_index(shape, spec: BlockSpec) -> np.ndarray:
    """The sign-pattern group of every block, in ``to_blocks`` order."""
    o = shape[0]
    groups, per = spec.group_shape(shape)
    if spec.kind == "cin":
        taps = per // o
        return np.broadcast_to(np.arange(groups)[None, :, None], (o, groups, taps)).reshape(-1)
    return np.broadcast_to(np.arange(groups)[None, :], (o, groups)).reshape(-1)


def _bits(n: int, k: int, n_u: int, n_f: int, sign_bits: int, value_bits: int = 32) -> int:
    return n + (n if n_f else 0) + value_bits * (n_u + k * n_f) + sign_bits


def layer_bits(w: np.ndarray, spec: BlockSpec) -> dict:
    s = structure(w, spec)
    n, k = s["blocks"].shape
    n_u, n_f = int(s["unified"].sum()), int(s["free"].sum())
    signs = s["pattern"].size if s["pattern"] is not None else k * n_u
    return {"weights": int(w.size), "bits": _bits(n, k, n_u, n_f, signs), "unified": n_u, "free": n_f,
            "pruned": int(s["pruned"].sum()), "blocks": n}


def _conv_linear_weights(graph):
    from graphc.passes.dns import prunable_layers

    return [(graph.node(L.node), graph.params[L.weight]) for L in prunable_layers(graph)]


def graph_bits(graph) -> dict:
    """Bits of the conv/linear weights as stored: unified layers encoded, the others f32.
    ``bits_per_weight`` over the unified layers, ``model_bits_per_weight`` over all."""
    ub = uw = tb = tw = 0
    for node, p in _conv_linear_weights(graph):
        spec = node.meta.get("unify")
        if spec is None:
            tb, tw = tb + 32 * p.data.size, tw + p.data.size
            continue
        lb = layer_bits(p.data, parse_block(spec))
        ub, uw = ub + lb["bits"], uw + lb["weights"]
    return {"bits_per_weight": ub / max(1, uw), "model_bits_per_weight": (ub + tb) / max(1, uw + tw),
            "bits": ub + tb, "weights": uw + tw}


def planned_bits(layers, graph) -> float:
    """Bits per conv/linear weight a budget (``UnifyLayer`` list) will store, before training:
    shared patterns counted as shared, the other layers as f32."""
    planned = {L.node: L for L in layers}
    bits = weights = 0
    for node, p in _conv_linear_weights(graph):
        L = planned.get(node.name)
        weights += p.data.size
        if L is None:
            bits += 32 * p.data.size
            continue
        k = L.spec.block_size(p.data.shape)
        n_f = L.n_blocks - L.n_unify - L.n_prune
        signs = L.spec.group_shape(p.data.shape)[0] * k if L.spec.shared else k * L.n_unify
        bits += _bits(L.n_blocks, k, L.n_unify, n_f, signs)
    return bits / max(1, weights)


def _pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(bits, dtype=np.uint8).reshape(-1), bitorder="little")


class _Decoder:
    """Builds the decode subgraph for one initializer (ONNX nodes and initializers)."""

    def __init__(self, name: str):
        self.name, self.nodes, self.inits, self.i = name, [], [], 0

    def const(self, arr, tag: str) -> str:
        from onnx import numpy_helper

        n = f"{self.name}.unify.{tag}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op_type: str, inputs, out: str | None = None, **attrs) -> str:
        from onnx import helper

        self.i += 1
        out = out or f"{self.name}.unify.t{self.i}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.name}.unify.{op_type}{self.i}", **attrs))
        return out

    def unpack(self, packed: str, count: int) -> str:
        """uint8 packed bits -> int64 0/1 vector of ``count``."""
        x = self.op("Cast", [packed], to=7)  # int64
        x = self.op("Unsqueeze", [x, self.const(np.array([1], np.int64), f"ax{self.i}")])
        x = self.op("Div", [x, self.const((2 ** np.arange(8, dtype=np.int64))[None, :], f"pow{self.i}")])
        x = self.op("Mod", [x, self.const(np.array(2, np.int64), f"two{self.i}")])
        x = self.op("Reshape", [x, self.const(np.array([-1], np.int64), f"flat{self.i}")])
        return self.op("Slice", [x, self.const(np.array([0], np.int64), f"s0{self.i}"),
                                 self.const(np.array([count], np.int64), f"s1{self.i}")])

    def gather_rows(self, bitmap: str, table) -> str:
        """Rows of ``table`` (one per set bit, in order) at the set bits; zero rows elsewhere."""
        idx = self.op("Mul", [self.op("CumSum", [bitmap, self.const(np.array(0, np.int64), f"cax{self.i}")]), bitmap])
        return self.op("Gather", [table, idx], axis=0)


def _encode_one(init, spec: BlockSpec):
    """(nodes, initializers) decoding to ``init`` exactly, or None when nothing is unified."""
    from onnx import numpy_helper

    w = numpy_helper.to_array(init)
    if w.dtype != np.float32:
        return None
    s = structure(w, spec)
    b, uni, free = s["blocks"], s["unified"], s["free"]
    if not uni.any() and not s["pruned"].any():
        return None
    n, k = b.shape
    d = _Decoder(init.name)
    zero_row = np.zeros((1, k), np.float32)
    ubits = d.unpack(d.const(_pack(uni), "unified"), n)
    if s["pattern"] is not None:
        vals = np.concatenate([[0.0], b[uni, 0]]).astype(np.float32)
        pat = d.const(_pack(s["pattern"] > 0), "signs")
        groups = s["pattern"].shape[0]
        sg = d.op("Sub", [d.op("Cast", [d.unpack(pat, groups * k)], to=1), d.const(np.float32(0.5), "half")])
        sg = d.op("Add", [sg, sg])  # 0/1 -> -1/+1, exactly
        o = w.shape[0]
        if spec.kind == "cin":
            taps = b.shape[0] // (o * groups)
            sg = d.op("Reshape", [sg, d.const(np.array([1, groups, 1, k], np.int64), "pshape")])
            sg = d.op("Expand", [sg, d.const(np.array([o, groups, taps, k], np.int64), "pexp")])
        else:
            sg = d.op("Reshape", [sg, d.const(np.array([1, groups, k], np.int64), "pshape")])
            sg = d.op("Expand", [sg, d.const(np.array([o, groups, k], np.int64), "pexp")])
        signs = d.op("Reshape", [sg, d.const(np.array([n, k], np.int64), "bshape")])
        v = d.gather_rows(ubits, d.const(vals, "values"))
    else:
        vals = np.concatenate([[0.0], np.abs(b[uni, 0])]).astype(np.float32)
        sb = d.const(_pack(b[uni] >= 0), "signs")
        sg = d.op("Sub", [d.op("Cast", [d.unpack(sb, int(uni.sum()) * k)], to=1), d.const(np.float32(0.5), "half")])
        sg = d.op("Add", [sg, sg])
        sg = d.op("Reshape", [sg, d.const(np.array([-1, k], np.int64), "sshape")])
        sg = d.op("Concat", [d.const(zero_row, "zrow"), sg], axis=0)
        signs = d.gather_rows(ubits, sg)
        v = d.gather_rows(ubits, d.const(vals, "values"))
    blocks = d.op("Mul", [signs, d.op("Unsqueeze", [v, d.const(np.array([1], np.int64), "vax")])])
    if s["pattern"] is not None:  # a pruned block is (+-1) * 0 = -0 where its pattern is -1; -0 + 0 = +0
        blocks = d.op("Add", [blocks, d.const(np.float32(0.0), "zero")])
    if free.any():
        fbits = d.unpack(d.const(_pack(free), "free"), n)
        table = d.const(np.concatenate([zero_row, b[free]]).astype(np.float32), "free_values")
        blocks = d.op("Add", [blocks, d.gather_rows(fbits, table)])
    shape = np.array(w.shape, np.int64)
    if spec.kind == "cin":
        o, i = w.shape[0], w.shape[1]
        taps = int(np.prod(w.shape[2:])) if w.ndim > 2 else 1
        x = d.op("Reshape", [blocks, d.const(np.array([o, i // k, taps, k], np.int64), "v4")])
        x = d.op("Transpose", [x], perm=[0, 1, 3, 2])
        d.op("Reshape", [x, d.const(shape, "shape")], out=init.name)
    else:
        d.op("Reshape", [blocks, d.const(shape, "shape")], out=init.name)
    return d.nodes, d.inits


def encode_unified(model, specs: dict[str, str]):
    """Replace the initializers named in ``specs`` (name -> block spec) by their block
    encoding and its decoder (in place; returns the model). An initializer with nothing
    unified or pruned, or not float32, stays as it is."""
    if not specs:
        return model
    g = model.graph
    keep, new_inits, new_nodes = [], [], []
    for t in g.initializer:
        spec = specs.get(t.name)
        enc = _encode_one(t, parse_block(spec)) if spec is not None else None
        if enc is None:
            keep.append(t)
            continue
        new_nodes.extend(enc[0])
        new_inits.extend(enc[1])
    if new_nodes:
        nodes = list(g.node)
        del g.initializer[:]
        g.initializer.extend(keep + new_inits)
        del g.node[:]
        g.node.extend(new_nodes + nodes)
    return model


def unified_cost(graph) -> dict:
    """Per unified layer: dense MACs (what a standard Conv/Gemm kernel computes from the
    decoded weight), the multiplies the block form needs (one per unified block and output
    position, y = v * sum(s_i x_i); one per weight of a free block) and its adds (one per
    non-pruned weight), and which runtime realises the saving."""
    rows = {}
    for node, p in _conv_linear_weights(graph):
        spec = node.meta.get("unify")
        if spec is None:
            continue
        lb = layer_bits(p.data, parse_block(spec))
        k = p.data.size // lb["blocks"]
        oshape = node.output.shape
        positions = int(np.prod(oshape)) // oshape[1] if node.op != "linear" else int(np.prod(oshape[:-1]))
        realised = "none: onnxruntime and torch run a dense kernel on the decoded weight (storage saving only)"
        if node.op == "conv2d":
            from graphc.passes.unify_realize import plan

            pl, why = plan(node)
            realised = (f"unify-realize: {pl['macs'][1]:,} MACs in standard convs (any runtime)" if pl else
                        f"{realised}; unify-realize refuses: {why}")
        rows[node.name] = {
            "block": spec, "dense_macs": positions * p.data.size,
            "multiplies": positions * (lb["unified"] + k * lb["free"]),
            "adds": positions * k * (lb["unified"] + lb["free"]), "realised_by": realised}
    return rows
