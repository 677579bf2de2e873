"""unify-realize: an exact rewrite of a unified conv into standard convs with fewer MACs.

A unified block computes v * sum_i s_i x_i. Where blocks line up across output channels — a
``cin`` group (k input channels) is read by every filter at every tap, a ``kernel`` group (one
input channel) by every filter — and the group's blocks use few sign patterns P (one, when
``unify`` ran with a ``-shared`` block), the signed sums are computed once per group and
pattern, and the conv reads those instead:

    cin<k>:   z = conv2d(x, S) {1x1, groups=G}           S: [G*P, k, 1, 1], entries +-1
              y = conv2d(z, V, b) {the conv's own attrs}  V: [O, G*P, kh, kw], one value per block
    kernel:   z = conv2d(x, S) {kh x kw, groups=I, the conv's stride/padding/dilation}
              y = conv2d(z, V, b) {1x1}                   V: [O, I*P, 1, 1]

Groups whose blocks are all pruned drop physically: an ``index_select`` keeps only the input
channels some block still reads. Exact: the outputs equal the source's up to float summation
order (a padded zero of x is a zero of z: the signed sum has no bias). A conv is rewritten only
when the two convs (and the gather) cost fewer MACs than it, and never when a block is free
(not unified) or the conv is grouped; refusals are listed with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node
from graphc.passes.unify_blocks import parse_block
from graphc.registry import Pass, PassContext, PassResult, register_pass

__all__ = ["UnifyRealize", "plan"]


def _conv_macs(n_out_positions: int, cout: int, cin_per_group: int, taps: int) -> int:
    return n_out_positions * cout * cin_per_group * taps


def plan(node: Node) -> tuple[dict | None, str | None]:
    """The realization of ``node`` (weights and MACs) or why there is none."""
    from graphc.backends.onnx_unify import structure

    spec = parse_block(node.meta["unify"])
    w = node.input(1).param.data
    if node.attrs["groups"] != 1:
        return None, f"grouped conv (groups={node.attrs['groups']})"
    s = structure(w, spec)
    if s["free"].any():
        return None, f"{int(s['free'].sum())} blocks are not unified"
    b, uni = s["blocks"], s["unified"]
    o, i, kh, kw = w.shape
    k = b.shape[1]
    groups = i // k if spec.kind == "cin" else i
    # per block: group, pattern (leading +1) and signed value
    if spec.kind == "cin":
        taps = kh * kw
        g_of = np.broadcast_to(np.arange(groups)[None, :, None], (o, groups, taps)).reshape(-1)
    else:
        g_of = np.broadcast_to(np.arange(groups)[None, :], (o, groups)).reshape(-1)
    lead = np.where(b[:, :1] >= 0, 1.0, -1.0)
    pat = np.where(b >= 0, 1.0, -1.0) * lead
    val = b[:, 0].astype(np.float64)
    pats: list[dict] = [dict() for _ in range(groups)]
    p_of = np.full(len(b), -1)
    for j in np.flatnonzero(uni):
        d = pats[g_of[j]]
        p_of[j] = d.setdefault(pat[j].tobytes(), len(d))
    kept = [g for g in range(groups) if pats[g]]
    if not kept:
        return None, "every block is pruned"
    pm = max(len(pats[g]) for g in kept)
    n, _, ho, wo = node.output.shape
    hi, wi = node.input(0).shape[2:]
    c = len(kept)
    old = _conv_macs(n * ho * wo, o, i, kh * kw)
    if spec.kind == "cin":
        new = _conv_macs(n * hi * wi, c * pm, k, 1) + _conv_macs(n * ho * wo, o, c * pm, kh * kw)
    else:
        new = _conv_macs(n * ho * wo, c * pm, 1, kh * kw) + _conv_macs(n * ho * wo, o, c * pm, 1)
    if new >= old:
        return None, f"{pm} sign patterns per group: {new:,} MACs would not beat {old:,}"
    col = {g: j for j, g in enumerate(kept)}
    sw = np.zeros((c * pm, k), np.float32)
    for g in kept:
        for key, p in pats[g].items():
            sw[col[g] * pm + p] = np.frombuffer(key, dtype=np.float64)
    vw = np.zeros((o, c * pm) + ((kh, kw) if spec.kind == "cin" else (1, 1)), np.float32)
    for j in np.flatnonzero(uni):
        g = g_of[j]
        if spec.kind == "cin":
            oo, t = j // (groups * kh * kw), j % (kh * kw)
            vw[oo, col[g] * pm + p_of[j], t // kw, t % kw] = val[j]
        else:
            vw[j // groups, col[g] * pm + p_of[j], 0, 0] = val[j]
    sw = sw.reshape(c * pm, k, 1, 1) if spec.kind == "cin" else sw.reshape(c * pm, 1, kh, kw)
    channels = np.concatenate([np.arange(g * k, g * k + k) if spec.kind == "cin" else [g] for g in kept])
    return {"S": sw.astype(w.dtype), "V": vw.astype(w.dtype), "channels": channels.astype(np.int64),
            "drop": c < groups, "kind": spec.kind, "groups": c, "patterns": pm, "macs": (old, new)}, None


@register_pass
@dataclass(frozen=True)
class UnifyRealize(Pass):
    """Rewrite unified convs (``unify``, best with ``-shared`` blocks) into a signed input
    summation conv and a narrower conv; all-pruned groups drop their input channels. Exact.

        %y = conv2d(%x, %w) {3x3} [unify="cin4-shared"]   ==>   %z = conv2d(%x, %S) {1x1, groups=G}
                                                                %y = conv2d(%z, %V) {3x3}
    """

    name: ClassVar[str] = "unify-realize"
    exact: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        done, refused, saved = 0, {}, 0
        for node in list(graph.find("conv2d")):
            if "unify" not in node.meta or node.input(1).param is None:
                continue
            p, why = plan(node)
            if p is None:
                refused[node.name] = why
                continue
            self._rewrite(graph, node, p)
            done += 1
            saved += p["macs"][0] - p["macs"][1]
        return PassResult(changed=done > 0, stats={"realized": done, "macs_saved": saved, "refused": refused})

    @staticmethod
    def _rewrite(graph: Graph, node: Node, p: dict) -> None:
        x = node.input(0)
        src = node.input(1).param.source.removesuffix(".weight")
        if p["drop"]:
            idx = graph.add_const(p["channels"], name=f"{node.name}.kept_channels")
            x = graph.add_node("index_select", [x, idx], {"dim": 1}, f"{node.name}.gather", before=node).output
        s = graph.add_param(p["S"], source=f"{src}.signs.weight", name=f"{node.input(1).name}.signs")
        attrs = dict(node.attrs)
        if p["kind"] == "cin":
            first = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": p["groups"]}
            second = attrs
        else:
            first = {**attrs, "groups": p["groups"]}
            second = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
        summed = graph.add_node("conv2d", [x, s], first, f"{node.name}.signs", before=node)
        v = graph.add_param(p["V"], source=f"{src}.weight", name=f"{node.input(1).name}.values")
        old = node.input(1).param
        node.set_input(0, summed.output)
        node.set_input(1, v)
        node.attrs.update(second)
        node.meta.pop("unify", None)
        if not old.value.uses() and not old.value.is_output:
            graph.remove_param(old)
        node.retype()
