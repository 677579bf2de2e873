"""stream-merge: fold non-tensor layers and parallel branches into the tensor layers along the
data stream (DeepRebirth's streamline and branch merging, as used by Xie et al. 2020), exactly
where that is possible and approximately where it is not; ``rebirth`` then retrains the
approximate ones.

Kinds (``kinds=[...]``, default all):

- ``chain``: norm/affine/conv chains with nothing non-linear between: the exact patterns of
  ``fold-bn`` and ``merge-linear`` (reused, not restated), each merge recorded in metadata;
- ``pool``: conv [-> activation] -> max/avg pool becomes one strided conv. ``pool_kernel=grow``
  composes the conv with the pool's window (kernel k + s*(kp-1), stride s*sp): exact for an
  average pool; for a max pool the initial weights are those of the average pool over the same
  window (the window's mean as the linear stand-in for its max). ``pool_kernel=keep`` keeps the
  conv's kernel and multiplies its stride (the window's top-left output stands for it; cheaper,
  always approximate). A monotone activation between (relu, relu6, leaky_relu) commutes with a
  max pool, so it moves after the merged conv;
- ``relu``: conv -> activation -> conv (and linear -> activation -> linear) becomes one layer
  when the cost model (MACs) says it is cheaper; the initial weights are the composition with the
  activation dropped (exact wherever the pre-activations are on its linear side);
- ``branch``: parallel branches reading one input and joined by a channel concat (inception
  style) become one wider conv: each branch (convs, pools and activations in a row) is composed
  into one conv from the shared input (interior activations dropped, a max pool as its average,
  interior padding treated as if applied at the input), the kernels are zero-padded to the
  widest and aligned by their padding, and the filters are stacked. Exact when every branch is
  one conv (plus the same final activation on every branch).

Each merged layer carries ``[stream=[original node names], stream_init="exact"|"approx"]`` (see
:mod:`graphc.ir.meta`), and the graph as the pass received it is kept for a later ``rebirth`` in
the same run (the teacher of its stage 1).

Invariants: a merge happens only when the merged layer costs at most ``max_growth`` x the MACs of
what it replaces (``relu`` and ``chain`` merges: never more); graph inputs and outputs keep their
names; with ``target_macs``/``target_params`` the exact merges run first, then the others one
at a time, exact ones (an average pool) before approximate ones, the largest predicted MAC
saving first, until the target is met (this
re-plans after every merge: O(merges x nodes), for the targets only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from graphc.errors import PassError
from graphc.ir.graph import Graph, Node
from graphc.ir.meta import STREAM
from graphc.ir.rewrite import RewritePattern, Rewriter, apply_patterns, replace_output
from graphc.passes._rewrite import CONV_OPS, cast_like, conv_attrs, conv_parts, node_macs, set_param, sole_user
from graphc.passes._stream import (ACTIVATIONS, KINDS, LAYER_OPS, MONOTONE, POOLS, Plan, _is_exact, _mark, _Planned,
                                   origin, out_size, remember_teacher, teacher_for)
from graphc.passes._stream_branch import BranchMerge
from graphc.passes.absorb_pool import _ints, compose_avg_pool
from graphc.passes.fold_bn import FoldBN
from graphc.passes.merge_linear import MergePair, _merge_convs, _merge_linears
from graphc.registry import Pass, PassContext, PassResult, register_pass

__all__ = ["StreamMerge", "KINDS", "origin", "teacher_for"]


# -- chain: the exact passes' patterns, with the merge recorded --------------------------------
class Tracked(RewritePattern):
    """Runs an exact pattern and records on the surviving layer the nodes it absorbed."""

    def __init__(self, inner: RewritePattern):
        self.inner = inner
        self.ops = inner.ops

    @property
    def label(self) -> str:
        return "chain"

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        near = [v.producer for v in node.inputs if v.producer is not None] + [node] + [
            u.node for v in node.outputs for u in v.uses()]
        seen: list[Node] = []
        for n in near:
            if n not in seen:
                seen.append(n)
        weights = {id(n): (n.input(1), n.input(1).param.data if n.input(1).param is not None else None)
                   for n in seen if n.op in LAYER_OPS and len(n.inputs) > 1}
        before = {id(n): (origin(n), _is_exact(n)) for n in seen}
        if not self.inner.match_and_rewrite(node, rw):
            return False
        changed = [n for n in seen if n.alive and id(n) in weights and (
            n.input(1) is not weights[id(n)][0] or (n.input(1).param is not None
                                                     and n.input(1).param.data is not weights[id(n)][1]))]
        gone = [n for n in seen if not n.alive]
        if len(changed) == 1 and gone:
            keep = changed[0]
            parts = [p for n in seen if n is keep or n in gone for p in before[id(n)][0]]
            _mark(keep, parts, all(before[id(n)][1] for n in seen if n is keep or n in gone))
        return True




# -- pool ---------------------------------------------------------------------------------------
# -- pool ---------------------------------------------------------------------------------------
def _window(pool: Node) -> tuple[list[int], list[int]] | str:
    """(kernel, stride) of a pool that reads every input once per window, or why not."""
    nd = POOLS[pool.op]
    a = pool.attrs
    if any(_ints(a.get("padding", 0), nd)):
        return "the pool pads its input"
    if any(d != 1 for d in _ints(a.get("dilation", 1), nd)):
        return "the pool is dilated"
    if a.get("divisor_override") is not None:
        return "the pool overrides its divisor"
    k = _ints(a["kernel_size"], nd)
    s = _ints(a.get("stride") or k, nd)
    if [(i - kk) // ss + 1 for i, kk, ss in zip(pool.input(0).shape[2:], k, s)] != list(pool.output.shape[2:]):
        return "the pool has a partial (ceil-mode) window"
    return k, s


class PoolMerge(_Planned):
    """conv [-> activation] -> pool  ==>  strided conv [-> activation]."""

    kind = "pool"
    ops = tuple(POOLS)

    def plan(self, pool: Node, graph: Graph):
        act = None
        src = pool.input(0).producer
        if src is not None and src.op in ACTIVATIONS:
            act, src = src, src.input(0).producer
            if sole_user(act.output) is not pool:
                return f"{act.name} output has other readers"
        if src is None or src.op not in CONV_OPS or len(src.input(1).shape) - 2 != POOLS[pool.op]:
            return None
        conv = src
        if conv_parts(conv) is None:
            return f"{conv.name} weights are not constants"
        if sole_user(conv.output) is not (act or pool):
            return f"{conv.name} output has other readers"
        geo = _window(pool)
        if isinstance(geo, str):
            return geo
        k, s = geo
        maxpool = pool.op.startswith("max")
        if act is not None and maxpool and act.op not in MONOTONE:
            return f"{act.op} does not commute with a max pool"
        a1 = conv_attrs(conv)
        w1 = conv.input(1).shape
        keep = self.opts.pool_kernel == "keep"
        kern = list(w1[2:]) if keep else [(kk - 1) * d + 1 + s1 * (kp - 1)
                                          for kk, kp, s1, d in zip(w1[2:], k, a1["stride"], a1["dilation"])]
        stride = [s1 * sp for s1, sp in zip(a1["stride"], s)]
        if keep and out_size(conv.input(0).shape[2:], w1[2:], stride, a1["padding"], a1["dilation"]) != list(
                pool.output.shape[2:]):
            return "a kept kernel at the pooled stride gives another output size"
        before = node_macs(conv)
        after = int(np.prod(pool.output.shape)) * int(w1[1]) * int(np.prod(kern))
        exact = not maxpool and act is None and not keep

        def apply() -> str | None:
            w, b = conv_parts(conv)
            if keep:
                conv.attrs["stride"] = stride
            else:
                res = compose_avg_pool(w, b, a1, k, s)
                if isinstance(res, str):
                    return res
                nw, nb, attrs = res
                set_param(graph, conv, 1, cast_like(nw, w))
                if nb is not None:
                    set_param(graph, conv, 2, cast_like(nb, w))
                conv.attrs.update(attrs)
            conv.retype()
            if act is not None:
                act.retype()
            _mark(conv, [conv] + ([act] if act else []) + [pool.name], exact and _is_exact(conv))
            replace_output(graph, pool, (act or conv).output)
            return None

        return Plan(self.kind, before, after, exact, apply)


# -- relu: layer -> activation -> layer ---------------------------------------------------------
class ActMerge(_Planned):
    """conv -> activation -> conv (or linear -> activation -> linear)  ==>  one layer."""

    kind = "relu"
    ops = LAYER_OPS

    def plan(self, second: Node, graph: Graph):
        act = second.input(0).producer
        if act is None or act.op not in ACTIVATIONS:
            return None
        first = act.input(0).producer
        if first is None or first.op != second.op:
            return None
        if conv_parts(first) is None or conv_parts(second) is None:
            return "weights are not constants"
        if sole_user(first.output) is not act or sole_user(act.output) is not second:
            return f"{first.name} -> {act.name} has other readers"
        before = node_macs(first) + node_macs(second)
        w1, w2 = first.input(1).shape, second.input(1).shape
        if second.op == "linear":
            after = int(np.prod(second.output.shape[:-1])) * w2[0] * w1[1]
        else:
            s1 = conv_attrs(first)["stride"]
            kern = [a + s * (b - 1) for a, b, s in zip(w1[2:], w2[2:], s1)]
            after = int(np.prod(second.output.shape)) * w1[1] * int(np.prod(kern))
        if after > before:
            return f"merged layer costs {after} MACs > {before}"

        def apply() -> str | None:
            # merge-linear's rules decide on a scratch copy of the pair, so a refusal edits nothing.
            res = _merged_copy(first, second)
            if isinstance(res, str):
                return res
            parts = origin(first) + [act.name] + origin(second)
            w, b, attrs = res
            set_param(graph, second, 1, w)
            if b is None:
                second.set_inputs(list(second.inputs[:2]))
            else:
                set_param(graph, second, 2, b)
            second.attrs.update(attrs)
            second.set_input(0, first.input(0))
            graph.erase(act)
            graph.erase(first)
            second.retype()
            _mark(second, parts, False)
            return None

        return Plan(self.kind, before, after, False, apply)


def _merged_copy(first: Node, second: Node):
    """(weight, bias or None, attrs) of merge-linear's merge of ``first`` -> ``second`` as if
    nothing stood between them, computed on a scratch copy of the pair; or why not."""
    sg = Graph("scratch")
    x = sg.add_input("x", first.input(0).type)
    f = sg.add_node(first.op, [x] + [sg.add_param(v.param.data.copy(), name=v.name) for v in first.inputs[1:]],
                    dict(first.attrs), first.name)
    s = sg.add_node(second.op, [f.output] + [sg.add_param(v.param.data.copy(), name=v.name)
                                             for v in second.inputs[1:]], dict(second.attrs), second.name)
    sg.set_outputs([s.output])
    why = (_merge_linears if second.op == "linear" else _merge_convs)(sg, f, s)
    if why is not None:
        return why
    return (s.input(1).param.data, s.input(2).param.data if len(s.inputs) > 2 else None,
            {k: s.attrs[k] for k in s.attrs})


def _macs(graph: Graph) -> int:
    return sum(node_macs(n) for n in graph.nodes)


def _params(graph: Graph) -> int:
    return int(sum(p.data.size for p in graph.params.values() if p.kind == "weight"))


@register_pass
@dataclass(frozen=True)
class StreamMerge(Pass):
    """Merge non-tensor layers (pools, norms, activations) and parallel branches into the conv or
    linear layers along the data stream (DeepRebirth's streamline and branch merging). Exact
    where possible, approximate otherwise (retrain with ``rebirth``).

        %conv1: f32[1,20,24,24] = conv2d(%x, %w, %b) {stride=[1,1], padding=[0,0], ...}  # conv1
        %pool1: f32[1,20,12,12] = max_pool2d(%conv1) {kernel_size=[2,2], stride=[2,2], ...}  # pool1
      ==> (pool-kernel=keep)
        %conv1: f32[1,20,12,12] = conv2d(%x, %w, %b) {stride=[2,2], padding=[0,0], ...}
                                  [stream=["conv1","pool1"], stream_init="approx"]  # conv1

        %fc1: f32[1,500] = linear(%h, %w1, %b1)  # fc1
        %relu: f32[1,500] = relu(%fc1)  # relu
        %fc2: f32[1,10] = linear(%relu, %w2, %b2)  # fc2
      ==>
        %fc2: f32[1,10] = linear(%h, %w2.%w1, %w2.%b1 + %b2) [stream=["fc1","relu","fc2"], stream_init="approx"]  # fc2

        %b1: f32[1,8,14,14] = relu(conv2d(%x, ...) 1x1)                       # inc1.b1.*
        %b3: f32[1,16,14,14] = relu(conv2d(relu(conv2d(%x, ...) 1x1), ...) 3x3)  # inc1.b3.*
        %b5: f32[1,8,14,14] = relu(conv2d(relu(conv2d(%x, ...) 1x1), ...) 5x5)   # inc1.b5.*
        %bp: f32[1,8,14,14] = relu(conv2d(max_pool2d(%x) 3x3, ...) 1x1)        # inc1.bp.*
        %inc1.cat: f32[1,40,14,14] = concat(%b1, %b3, %b5, %bp) {dim=1}  # inc1.cat
      ==> (kinds=[branch], max-growth=8)
        %inc1.cat.merged: f32[1,40,14,14] = conv2d(%x, %w, %b) {stride=[1,1], padding=[2,2], ...}
            [stream=["inc1.b1.0","inc1.b1.1",...,"inc1.cat"], stream_init="approx"]  # inc1.cat.merged (5x5)
        %inc1.cat.merged.relu: f32[1,40,14,14] = relu(%inc1.cat.merged)  # inc1.cat.merged.relu

    ``kinds``: which merges (``chain``, ``pool``, ``relu``, ``branch``; default all).
    ``pool_kernel``: ``grow`` (compose the window; exact for avg pools) or ``keep`` (same kernel,
    pooled stride). ``max_growth``: a pool or branch merge may cost up to this many times the MACs
    it replaces (relu and chain merges never cost more). ``target_macs`` / ``target_params``
    (a fraction of the graph's when <= 1, else a count): merge only until the graph is that small,
    exact merges first, then the largest predicted MAC saving first. Refusals are listed in
    ``stats["refused"]``.
    """

    name: ClassVar[str] = "stream-merge"
    kinds: tuple[Literal["chain", "pool", "relu", "branch"], ...] = KINDS
    pool_kernel: Literal["grow", "keep"] = "grow"
    max_growth: float = 1.0
    target_macs: float | None = None
    target_params: float | None = None

    @property
    def exact(self) -> bool:  # the chain merges alone are the exact passes
        return tuple(self.kinds) == ("chain",)

    def _check(self) -> None:
        kinds = [self.kinds] if isinstance(self.kinds, str) else list(self.kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise PassError(f"{self.name}: unknown kinds {bad or kinds}: expected some of {', '.join(KINDS)}")
        if self.pool_kernel not in ("grow", "keep"):
            raise PassError(f"{self.name}: pool-kernel must be grow or keep, got {self.pool_kernel!r}")
        if not self.max_growth >= 1:
            raise PassError(f"{self.name}: max-growth must be >= 1, got {self.max_growth}")
        for k in ("target_macs", "target_params"):
            v = getattr(self, k)
            if v is not None and not v > 0:
                raise PassError(f"{self.name}: {k.replace('_', '-')} must be > 0 (a fraction up to 1, or a count), "
                                f"got {v}")

    def _patterns(self, exact: bool | None = None) -> list[RewritePattern]:
        kinds = [self.kinds] if isinstance(self.kinds, str) else list(self.kinds)
        out: list[RewritePattern] = []
        if "chain" in kinds and exact is not False:
            out += [Tracked(p) for p in FoldBN().patterns() + [MergePair()]]
        if exact is not True:
            out += [cls(self) for kind, cls in (("pool", PoolMerge), ("branch", BranchMerge), ("relu", ActMerge))
                    if kind in kinds]
        return out

    def _plans(self, graph: Graph, patterns: list) -> list[Plan]:
        plans = []
        for n in graph.nodes:
            for p in patterns:
                if n.op in p.ops:
                    pl = p.plan(n, graph)
                    limit = self.max_growth if p.kind in ("pool", "branch") else 1.0
                    if isinstance(pl, Plan) and pl.after <= limit * pl.before:
                        plans.append(pl)
        return plans

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        self._check()
        teacher = graph.clone()
        macs0, params0 = _macs(graph), _params(graph)
        counts: dict[str, int] = {}
        refused: dict[str, str] = {}

        def drive(patterns) -> bool:
            res = apply_patterns(graph, patterns)
            for k, v in res.counts.items():
                key = k if k in KINDS else "chain"  # the exact patterns count under their own names
                counts[key] = counts.get(key, 0) + v
            refused.update(res.refused)
            return res.changed

        goals = [(t * base if t <= 1 else t, fn) for t, base, fn in
                 ((self.target_macs, macs0, _macs), (self.target_params, params0, _params)) if t is not None]
        if not goals:
            drive(self._patterns())
        else:
            drive(self._patterns(exact=True))
            lossy = [p for p in self._patterns(exact=False) if isinstance(p, _Planned)]
            while not all(fn(graph) <= goal for goal, fn in goals):
                done = next((pl for pl in sorted(self._plans(graph, lossy), key=lambda q: (not q.exact, -q.saving))
                             if pl.apply() is None), None)
                if done is None:
                    break
                counts[done.kind] = counts.get(done.kind, 0) + 1
                drive(self._patterns(exact=True))
        changed = bool(counts)
        if changed:
            graph.prune_unused_params()
            remember_teacher(ctx, teacher)
        merged = [n for n in graph.nodes if STREAM.name in n.meta]
        stats = {**{k: counts.get(k, 0) for k in KINDS}, "layers": {n.name: "+".join(origin(n)) for n in merged},
                 "approx": sum(1 for n in merged if not _is_exact(n)), "macs_before": macs0, "macs_after": _macs(graph),
                 "params_before": params0, "params_after": _params(graph), "refused": refused}
        if goals:
            stats["target_reached"] = all(fn(graph) <= goal for goal, fn in goals)
        ctx.info(f"{self.name}: merged {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
                 f"MACs {macs0} -> {stats['macs_after']}")
        return PassResult(changed=changed, stats=stats)
