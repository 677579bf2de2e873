"""decompose: each conv becomes EDP's compressed-aware block, a basis conv and a 1x1 coefficient
conv that together compute exactly what the conv did. Exact.

    %y = conv2d(%x, %w, %b) {k x k, s, p, d}  # c1       %t = conv2d(%x, %B) {k x k, s, p, d}  # c1.basis
                                               ==>       %y = conv2d(%t, %A, %b) {1x1}          # c1

W (n x c x k x k), read as a matrix n x ck^2, is split as W = A.B with A (n x m) and
B (m x ck^2): ``init=identity`` takes A = I, B = W (m = n); ``init=svd`` takes the thin SVD
W = U S V^T, A = U, B = S V^T (m = min(n, ck^2)); ``init=balanced`` splits S evenly,
A = U S^1/2, B = S^1/2 V^T, so A's column norms rank the basis filters by energy;
``init=random`` takes a random orthogonal A (n x n) and B = A^T W.

A linear layer splits the same way into two linear layers (``linear=True``).

Invariants: the coefficient conv keeps the original node's name and output value, so every
reader and the graph outputs are untouched; the basis conv is named ``<name>.basis`` and
feeds only the coefficient conv; both carry the node metadata ``edp`` (``basis`` / ``coef``),
which is how edp-train and prune-merge find the pairs again, through any clone, text or JSON
round trip, whatever the nodes are called; the bias stays on the coefficient conv; only ungrouped
conv2d nodes with constant weights are split (others are listed in ``stats["skipped"]`` with
the reason); a pair is never split again, so a second run changes nothing.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from graphc.ir.graph import Graph, Node
from graphc.ir.meta import EDP
from graphc.passes._rewrite import cast_like, conv_attrs, conv_parts
from graphc.registry import Pass, PassContext, PassResult, register_pass

BASIS = ".basis"

__all__ = ["Decompose", "Pair", "find_pairs", "split_weight", "BASIS"]


@dataclass(frozen=True)
class Pair:
    """A decomposed conv: ``basis`` (c -> m, k x k) feeding ``coef`` (m -> n, 1x1)."""

    basis: Node
    coef: Node

    @property
    def name(self) -> str:
        return self.coef.name


def _is_pointwise(node: Node) -> bool:
    if node.op == "linear":
        return True
    a = conv_attrs(node)
    return (node.input(1).shape[2:] == (1, 1) and a["stride"] == [1, 1] and a["padding"] == [0, 0]
            and a["groups"] == 1)


def find_pairs(graph: Graph) -> list[Pair]:
    """Every decomposed pair still in the graph, in topological order: a layer marked
    ``edp=basis`` whose only reader is a pointwise layer of its kind marked ``edp=coef``."""
    pairs = []
    for b in graph.find("conv2d", "linear"):
        if b.meta.get(EDP.name) != "basis" or len(b.inputs) != 2 or b.output.is_output:
            continue
        users = b.output.uses()
        if len(users) != 1 or users[0].index != 0:
            continue
        a = users[0].node
        if (a.op == b.op and a.meta.get(EDP.name) == "coef" and _is_pointwise(a) and conv_parts(a) is not None
                and conv_parts(b) is not None):
            pairs.append(Pair(b, a))
    return pairs


def split_weight(w: np.ndarray, init: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A as n x m [x 1 x 1], B as m x c [x k x k]) with A.B == W, computed in float64."""
    n = w.shape[0]
    mat = w.reshape(n, -1).astype(np.float64)
    if init == "identity":
        a, b = np.eye(n), mat
    elif init == "random":
        # A random orthogonal A keeps the split exact (B = A^T W) with no ordering by energy.
        q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
        a = q * np.sign(np.diag(r))[None, :]
        b = a.T @ mat
    else:
        u, s, vt = np.linalg.svd(mat, full_matrices=False)
        if init == "svd":
            a, b = u, s[:, None] * vt
        else:
            r = np.sqrt(s)
            a, b = u * r[None, :], r[:, None] * vt
    m = a.shape[1]
    tail = (1,) * (w.ndim - 2)
    return cast_like(a.reshape(n, m, *tail), w), cast_like(b.reshape(m, *w.shape[1:]), w)


def _source(node: Node) -> str:
    src = node.input(1).param.source
    return src[: -len(".weight")] if src.endswith(".weight") else src


def decompose_node(graph: Graph, node: Node, init: str, seed: int = 0) -> Pair:
    w = node.input(1).param.data
    a, b = split_weight(w, init, seed)
    src = _source(node)
    wb = graph.add_param(b, source=f"{src}{BASIS}.weight", name=f"{node.input(1).name}{BASIS}")
    basis = graph.add_node(node.op, [node.input(0), wb], dict(node.attrs), f"{node.name}{BASIS}", before=node)
    basis.meta[EDP.name] = "basis"
    node.meta[EDP.name] = "coef"
    wa = graph.add_param(a, source=f"{src}.coef.weight", name=f"{node.input(1).name}.coef")
    old = node.input(1).param
    node.set_input(0, basis.output)
    node.set_input(1, wa)
    if node.op == "conv2d":
        node.attrs.update(stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1)
    if not old.value.uses() and not old.value.is_output:
        graph.remove_param(old)
    node.retype()
    return Pair(basis, node)


def _skip_reason(node: Node, paired: set[str]) -> str | None:
    if node.name in paired:
        return "already decomposed"
    parts = conv_parts(node)
    if parts is None:
        return "weights are not constants"
    if node.op == "conv2d" and conv_attrs(node)["groups"] != 1:
        return f"grouped conv (groups={conv_attrs(node)['groups']}): the basis would mix groups"
    return None


@register_pass
@dataclass(frozen=True)
class Decompose(Pass):
    """Split each conv2d into a basis conv and a 1x1 coefficient conv (EDP's compressed-aware
    block). Exact.

        %y = conv2d(%x, %w, %b) {k x k}  # c1       %t = conv2d(%x, %B) {k x k}  # c1.basis
                                          ==>       %y = conv2d(%t, %A, %b) {1x1} # c1

    Options: ``init`` = svd (A = U, B = S V^T; default: the basis is ordered by energy, so the
    group lasso of edp-train finds the unimportant directions first), balanced (A = U S^1/2,
    B = S^1/2 V^T), identity (A = I, B = W) or random (A a random orthogonal n x n matrix
    seeded by the context, B = A^T W: the basis in no particular order); ``layers``: fnmatch patterns of node names to
    split (default: every ungrouped conv2d); ``min_kernel``: leave convs with a smaller kernel
    area alone (default 1: split 1x1 convs too); ``linear``: split linear layers the same way
    (W = A.B as plain matrices; default on, since fully connected layers hold most of the
    weights of LeNet-style models).
    """

    name: ClassVar[str] = "decompose"
    exact: ClassVar[bool] = True

    init: Literal["svd", "balanced", "identity", "random"] = "svd"
    layers: tuple[str, ...] = ()
    min_kernel: int = 1
    linear: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        paired = set()
        for p in find_pairs(graph):
            paired.update((p.basis.name, p.coef.name))
        done, skipped = [], {}
        for node in graph.find(*(("conv2d", "linear") if self.linear else ("conv2d",))):
            if self.layers and not any(fnmatch.fnmatchcase(node.name, pat) for pat in self.layers):
                continue
            if node.name in paired:
                continue
            if node.op == "conv2d" and int(np.prod(node.input(1).shape[2:])) < self.min_kernel:
                continue
            why = _skip_reason(node, paired)
            if why is not None:
                skipped[node.name] = why
                continue
            decompose_node(graph, node, self.init, getattr(ctx, "seed", 0))
            done.append(node.name)
        return PassResult(changed=bool(done), stats={"decomposed": len(done), "layers": done, "skipped": skipped})
