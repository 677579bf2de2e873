"""resconv-wrap: turn conv layers and residual branches into ResConv blocks (Xu et al., "Layer
Pruning via Fusible Residual Convolutional Block", arXiv 2011.14356), exactly.

A **layer block** replaces a conv layer ``t = [bn](conv(x))`` (readers of ``t``, usually a ReLU,
unchanged) by::

    t' = alpha * [bn](conv(x)) + beta * x          alpha = 1, beta = 0 at insertion

and a **residual block** scales the residual branch of ``y = branch(x) + shortcut(x)`` by alpha
(= 1 at insertion). ``alpha`` is the layer scaling factor that ``resconv-train`` drives to zero
with L1; ``beta`` is the ResConv shortcut's information-control factor (trainable, 0 at first so
the wrapped graph computes exactly the source's function). A block whose alpha is zero computes
its shortcut alone, which is what ``layer-prune`` removes the layer down to; the others fold back
into one conv with ``fuse-resconv`` (alpha into the conv, beta into its centre tap).

Readings where the paper leaves the detail open: the shortcut joins *after* BN and *before* the
ReLU (relu(alpha * bn(conv(x)) + beta * x)), the only placement that folds into one conv;
alpha and beta are one scalar per layer (a layer is pruned whole, so its scale is one number;
a per-channel beta would be a second BN on the shortcut).

Eligible conv layers: a conv whose output has the shape of its input (same channels, same
size) with stride 1 and an odd kernel with 'same' zero padding (the identity then sits at the
centre tap, so the block fuses back exactly), constant weights, and a conv output read by one
BN or directly by its readers. Other convs (channel or size changes, strides, even kernels)
are skipped with the reason in ``stats["skipped"]``. Residual blocks: an ``add`` whose two
operands are chains of single-input nodes meeting at one value, the longer chain (more convs)
being the branch; branches of equal depth (RepVGG-style parallel convs) are not residual
blocks.

Invariants: the blocks are recorded as node metadata (``[resconv="scale"]`` on the alpha mul,
``[resconv="shortcut"]`` on the beta mul), never in names; a wrapped block is never wrapped
again, so the pass is idempotent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.meta import RESCONV
from graphc.passes._rewrite import CONV_OPS, conv_attrs, conv_parts, sole_user
from graphc.passes.fuse_resconv import _same_centre
from graphc.registry import Pass, PassContext, PassResult, register_pass

__all__ = ["ResConvWrap", "Block", "find_blocks", "branch_chain"]


@dataclass
class Block:
    """One ResConv block found from its metadata."""

    name: str
    kind: str                # "layer" or "residual"
    scale: Node              # mul(branch, alpha) [resconv="scale"]
    add: Node                # add(scale, shortcut)
    shortcut: Node | None    # mul(x, beta) [resconv="shortcut"] of a layer block

    @property
    def alpha(self) -> Value:
        return self.scale.input(1)

    @property
    def beta(self) -> Value | None:
        return self.shortcut.input(1) if self.shortcut is not None else None

    @property
    def shortcut_value(self) -> Value:
        """What the add reads besides the scaled branch."""
        return self.add.input(1) if self.add.input(0) is self.scale.output else self.add.input(0)


def _block_name(scale: Node) -> str:
    src = scale.input(1).param.source if scale.input(1).param is not None else scale.name
    return src[: -len(".resconv_scale")] if src.endswith(".resconv_scale") else src


def find_blocks(graph: Graph) -> tuple[list[Block], dict[str, str]]:
    """The intact ResConv blocks of ``graph`` (topological order) and, for marked nodes that no
    longer form a block, why (name -> reason)."""
    blocks, broken = [], {}
    for n in graph.nodes:
        if n.meta.get(RESCONV.name) != "scale":
            continue
        add = sole_user(n.output)
        if add is None or add.op != "add" or len(add.inputs) != 2:
            broken[n.name] = "the scaled branch is not read by one add"
            continue
        if n.input(1).param is None or n.input(1).param.data.size != 1:
            broken[n.name] = "the layer scale is not one constant"
            continue
        other = add.input(1) if add.input(0) is n.output else add.input(0)
        sc = other.producer if other.producer is not None and other.producer.meta.get(RESCONV.name) == "shortcut" \
            else None
        blocks.append(Block(_block_name(n), "layer" if sc is not None else "residual", n, add, sc))
    return blocks, broken


def _scalar(graph: Graph, like: np.ndarray, rank: int, value: float, source: str, name: str) -> Value:
    arr = np.full((1,) * rank, value, dtype=like.dtype)
    return graph.add_param(arr, source=source, name=name, kind="weight")


def _source_base(node: Node) -> str:
    src = node.input(1).param.source if node.op in CONV_OPS and node.input(1).param is not None else node.name
    return src[: -len(".weight")] if src.endswith(".weight") else src


def _marked_reader(v: Value) -> bool:
    return any(u.node.meta.get(RESCONV.name) for u in v.uses())


def branch_chain(v: Value, reader: Node) -> tuple[list[Node], Value]:
    """Walk back from ``v`` (read by ``reader``) through nodes with one non-constant input and
    one output, each read only by the next: (the nodes, last first; the value where the chain
    starts, i.e. the first value with other readers or no such producer)."""
    chain: list[Node] = []
    while True:
        p = v.producer
        if p is None or sole_user(v) is not (chain[-1] if chain else reader) or len(p.outputs) != 1:
            return chain, v
        live = [x for x in p.inputs if x.param is None]
        if len(live) != 1:
            return chain, v
        chain.append(p)
        v = live[0]


def _layer_reason(conv: Node) -> str | None:
    parts = conv_parts(conv)
    if parts is None:
        return "weights are not constants"
    x = conv.input(0)
    if x.param is not None:
        return "reads a constant"
    if conv.output.shape != x.shape:
        return "changes the channels or the size"
    a = conv_attrs(conv)
    if any(s != 1 for s in a["stride"]):
        return "is strided"
    if not _same_centre(a, parts[0]):
        return "is not an odd kernel with 'same' zero padding"
    return None


def _layer_tail(conv: Node) -> Value:
    """The conv's output, or that of the inference BN that alone reads it."""
    bn = sole_user(conv.output)
    if bn is not None and bn.op == "batch_norm" and bn.input(0) is conv.output \
            and all(v.param is not None for v in bn.inputs[1:]):
        return bn.output
    return conv.output


def wrap_layer(graph: Graph, conv: Node) -> Node:
    """t = [bn](conv(x)) -> add(mul(t, alpha=1), mul(x, beta=0)); returns the scale mul."""
    x = conv.input(0)
    t = _layer_tail(conv)
    uses = t.uses()
    base = _source_base(conv)
    w = conv.input(1).param.data
    rank = len(t.shape)
    alpha = _scalar(graph, w, rank, 1.0, f"{base}.resconv_scale", f"{conv.name}.alpha")
    beta = _scalar(graph, w, rank, 0.0, f"{base}.resconv_shortcut", f"{conv.name}.beta")
    scale = graph.add_node("mul", [t, alpha], name=f"{conv.name}.resconv_scale", after=t.producer)
    short = graph.add_node("mul", [x, beta], name=f"{conv.name}.resconv_shortcut", after=scale)
    add = graph.add_node("add", [scale.output, short.output], name=f"{conv.name}.resconv", after=short)
    scale.meta[RESCONV.name] = "scale"
    short.meta[RESCONV.name] = "shortcut"
    for u in uses:
        u.node.set_input(u.index, add.output)
    return scale


def _residual_branch(add: Node) -> tuple[int, list[Node]] | None:
    """(operand index of the branch, its nodes) when ``add`` joins a residual branch and a
    shortcut from one value, else None."""
    if len(add.inputs) != 2 or any(v.param is not None for v in add.inputs) or add.input(0) is add.input(1):
        return None
    if not add.input(0).shape == add.input(1).shape == add.output.shape:
        return None
    if any(v.producer is not None and v.producer.meta.get(RESCONV.name) for v in add.inputs):
        return None
    chains = [branch_chain(v, add) for v in add.inputs]
    if chains[0][1] is not chains[1][1]:
        return None
    convs = [sum(n.op in CONV_OPS for n in c) for c, _ in chains]
    if convs[0] == convs[1]:
        return None
    i = 0 if convs[0] > convs[1] else 1
    return i, chains[i][0]


def wrap_residual(graph: Graph, add: Node, i: int, chain: list[Node]) -> Node:
    """add(branch, shortcut) -> add(mul(branch, alpha=1), shortcut); returns the scale mul."""
    b = add.input(i)
    conv = next(n for n in chain if n.op in CONV_OPS)
    like = conv.input(1).param.data if conv.input(1).param is not None else np.zeros(1, np.float32)
    base = f"{add.name}.branch"
    alpha = _scalar(graph, like, len(b.shape), 1.0, f"{base}.resconv_scale", f"{add.name}.alpha")
    scale = graph.add_node("mul", [b, alpha], name=f"{add.name}.resconv_scale", after=b.producer)
    scale.meta[RESCONV.name] = "scale"
    add.set_input(i, scale.output)
    return scale


@register_pass
@dataclass(frozen=True)
class ResConvWrap(Pass):
    """Make every eligible conv layer a ResConv block and scale every residual branch, so
    ``resconv-train`` can find which layers and blocks to remove. Exact (alpha = 1, beta = 0).

        %c = conv2d(%x, %w) {padding=[1,1]}     %c = conv2d(%x, %w) {padding=[1,1]}
        %b = batch_norm(%c, ...)                 %b = batch_norm(%c, ...)
        %r = relu(%b)                     ==>    %s = mul(%b, %alpha) [resconv="scale"]
                                                 %t = mul(%x, %beta) [resconv="shortcut"]
                                                 %a = add(%s, %t)
                                                 %r = relu(%a)

    ``layers=false`` leaves conv layers alone, ``residual=false`` residual branches. Skipped
    convs are in ``stats["skipped"]`` (name -> why).
    """

    name: ClassVar[str] = "resconv-wrap"
    exact: ClassVar[bool] = True

    layers: bool = True
    residual: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        residual = layers = 0
        skipped: dict[str, str] = {}
        if self.residual:
            for add in graph.find("add"):
                found = _residual_branch(add)
                if found is not None:
                    wrap_residual(graph, add, *found)
                    residual += 1
        if self.layers:
            for conv in graph.find(*CONV_OPS):
                why = _layer_reason(conv)
                if why is None and _marked_reader(_layer_tail(conv)):
                    continue  # the end of a wrapped residual branch, or an already wrapped layer
                if why is None and _layer_tail(conv).is_output:
                    why = "its output is a graph output"
                if why is not None:
                    skipped[conv.name] = why
                    continue
                wrap_layer(graph, conv)
                layers += 1
        return PassResult(changed=bool(residual or layers), stats={
            "layers": layers, "residual": residual, "skipped": skipped})
