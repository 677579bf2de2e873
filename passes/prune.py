"""prune: structured channel pruning over the channel groups. Lossy.

Scores every unit of every prunable group (:mod:`graphc.passes.channel_groups`) and removes
the weakest physically: weights get smaller, reshape/split/groups attributes follow, and every
touched node is re-typed. Graph inputs and outputs keep their channels (their groups are
frozen), so the emitted model takes the same input and returns the same output shape.

    %c1: f32[1,64,8,8] = conv2d(%x, %w1)             %c1: f32[1,32,8,8] = conv2d(%x, %w1')
    %b1: f32[1,64,8,8] = batch_norm(%c1, ...)  ==>   %b1: f32[1,32,8,8] = batch_norm(%c1, ...')
    %c2: f32[1,16,8,8] = conv2d(%b1, %w2)            %c2: f32[1,16,8,8] = conv2d(%b1, %w2')

Options: ``ratio`` of units removed per group (``scope=local``) or over all groups ranked
together by group-normalised importance (``scope=global``); ``importance`` l1 / l2 (weight
magnitude summed over the group's weight members), ``bn-scale`` (|gamma| of the norms in the
group, l1 where a group has none) or ``random`` (seeded by the context); ``min_channels``
units always stay in a group; kept counts are rounded up to a multiple of ``round_to``;
``protect`` (fnmatch patterns of node names) keeps those nodes' output channels;
``target_macs`` / ``target_params`` (absolute, or a fraction of the current MACs / params when
<= 1) replace ``ratio``: the smallest ratio meeting them is found by bisection on the cost model. ``target_latency`` does the same on the predicted
onnxruntime latency of the calibrated cost model (``3ms``, ``0.004s``, or a bare fraction of the
graph's own predicted latency; ``latency_threads=1`` predicts single-thread CPU time).
``importance=latency`` ranks the units of all groups together by l1 magnitude per predicted
second saved (:mod:`graphc.passes.prune_latency`); ``round_to=simd`` rounds kept counts to this
CPU's SIMD block (8, or 16 with AVX-512), the channel multiple onnxruntime's kernels run
fastest on. ``search=ncs`` (or ``random``; needs data) finds
one ratio per group instead (see :mod:`graphc.passes.prune_search`): with ``target_macs`` the
most accurate ratios within it, without the fewest MACs within ``acc_loss`` of the accuracy.

Invariants: ``ratio=0`` changes nothing (and reports ``changed=False``); a group never loses
all its units; the pass only removes units (never adds or reorders channels).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from graphc.errors import PassError
from graphc.ir.gc_pause import gc_paused
from graphc.ir.graph import Graph

from graphc.ir.ops import ops_with
from graphc.passes.channel_groups import ChannelGroup, channel_groups, prune_groups
from graphc.registry import Pass, PassContext, PassResult, register_pass

WEIGHT_OPS = ops_with("weight")
SCALE_OPS = ops_with("scale")


def _axis_sums(m, p: int, cache: dict | None) -> np.ndarray:
    """Sum of |w| (p=1) or w**2 (p=2) of a param member over every axis but its own. A weight is
    a member of two groups (its rows and its columns): its magnitude is taken once for both."""
    key = (id(m.value), m.axis, p)
    if cache is not None and key in cache:
        return cache[key]
    data = m.value.param.data
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    mag = np.square(data) if p == 2 else np.abs(data)
    # Reduce over the other axes in place: no transposed copy of the weight.
    axes = [m.axis] if cache is None or data.ndim < 2 else sorted({m.axis, 0, 1})
    per = None
    for a in axes:
        s = mag.sum(axis=tuple(b for b in range(data.ndim) if b != a)).astype(np.float64)
        if cache is not None:
            cache[(id(m.value), a, p)] = s
        if a == m.axis:
            per = s
    return per


def _member_scores(group: ChannelGroup, ops: set[str], operand: int | None, p: int,
                   cache: dict | None = None) -> np.ndarray | None:
    score = np.zeros(group.size)
    found = False
    for m in group.members:
        if m.value.param is None:
            continue
        uses = m.value.uses()
        if not any(u.node.op in ops and (operand is None or u.index == operand) for u in uses):
            continue
        np.add.at(score, m.units, _axis_sums(m, p, cache))
        found = True
    if not found:
        return None
    return np.sqrt(score) if p == 2 else score


def importance(group: ChannelGroup, kind: str, rng: np.random.Generator, cache: dict | None = None) -> np.ndarray:
    """One score per unit of ``group``; higher means more important. ``cache`` (a dict shared
    by the groups of one graph state) keeps each weight's per-axis magnitudes between groups.
    ``latency`` scores a unit within its group by l1 (its ranking across groups is
    :func:`graphc.passes.prune_latency.latency_scores`)."""
    if kind == "latency":
        kind = "l1"
    if kind == "random":
        return rng.random(group.size)
    if kind == "bn-scale":
        s = _member_scores(group, SCALE_OPS, 1, 1, cache)
        if s is not None:
            return s
        kind = "l1"
    p = 2 if kind == "l2" else 1
    s = _member_scores(group, WEIGHT_OPS, None, p, cache)
    if s is None:
        s = _member_scores(group, WEIGHT_OPS | SCALE_OPS, None, p, cache)
    return s if s is not None else np.zeros(group.size)


def _kept_count(n: int, remove: int, min_units: int, round_to: int) -> int:
    keep = max(n - remove, min(n, max(1, min_units)))
    if round_to > 1:
        keep = min(n, -(-keep // round_to) * round_to)
    return keep


def _fill_members(group: ChannelGroup, keep: np.ndarray, score: np.ndarray, min_units: int) -> np.ndarray:
    """Give back the best units of any member that would lose (almost) all of its elements: a
    slice of a concat or a split must keep at least one channel for its conv to exist."""
    kept = np.zeros(group.size, bool)
    kept[keep] = True
    floor = max(1, min_units)
    for m in group.members:
        # One kept element is one kept unit: with a floor of 1 that is all to check.
        if floor > 1 or not kept[m.units].any():
            units = np.unique(m.units)
            need = min(len(units), floor) - int(kept[units].sum())
            if need > 0:
                lost = units[~kept[units]]
                kept[lost[np.argsort(-score[lost], kind="stable")[:need]]] = True
    return np.nonzero(kept)[0]


def plan(groups: list[ChannelGroup], ratio: float, kind: str, scope: str, min_units: int, round_to: int,
         rng: np.random.Generator, cache: dict | None = None) -> list[tuple[ChannelGroup, np.ndarray]]:
    """Which units of each prunable group to keep. ``cache``: weight magnitudes kept between
    calls on one graph state (the target-MACs search plans many ratios)."""
    groups = [g for g in groups if g.prunable]
    cache = {} if cache is None else cache
    scores = [importance(g, kind, rng, cache) for g in groups]
    out = []
    if kind == "latency":
        if isinstance(ratio, (list, tuple, np.ndarray)):
            raise PassError("prune: importance=latency ranks all groups together; per-group ratios need another importance")
        if "latency" not in cache:
            raise PassError("prune: importance=latency needs the seconds each group's units save (seconds_per_unit)")
        from graphc.passes.prune_latency import latency_scores

        # one ranking over all groups: that is where time per channel differs
        scope, norm = "global", latency_scores(groups, scores, cache["latency"])
    elif scope == "global":
        norm = [s / (s.max() if s.max() > 0 else 1.0) for s in scores]
    if scope == "global":
        flat = np.concatenate(norm) if norm else np.zeros(0)
        n_remove = int(np.floor(ratio * len(flat)))
        thr = np.sort(flat)[n_remove - 1] if n_remove > 0 else -np.inf
        for g, s, ns in zip(groups, scores, norm):
            remove = int(np.sum(ns <= thr)) if n_remove > 0 else 0
            keep_n = _kept_count(g.size, remove, min_units, round_to)
            out.append((g, _fill_members(g, np.argsort(-s, kind="stable")[:keep_n], s, min_units)))
        return out
    ratios = list(ratio) if isinstance(ratio, (list, tuple, np.ndarray)) else [ratio] * len(groups)
    if len(ratios) != len(groups):
        raise PassError(f"prune: {len(ratios)} ratios for {len(groups)} prunable channel groups")
    for g, s, r in zip(groups, scores, ratios):
        keep_n = _kept_count(g.size, int(np.floor(r * g.size)), min_units, round_to)
        out.append((g, _fill_members(g, np.argsort(-s, kind="stable")[:keep_n], s, min_units)))
    return out


def prune_graph(graph: Graph, *, ratio: float, importance: str = "l1", scope: str = "local", min_channels: int = 1,
                round_to: int = 1, protect=(), seed: int = 0, groups=None, cache: dict | None = None) -> int:
    """Prune ``graph`` in place; returns the number of units removed. ``ratio`` may be a list:
    one ratio per prunable channel group, in order (``scope=local`` only). ``cache``: what
    :func:`plan` keeps per graph state (``importance=latency`` needs its ``"latency"`` entry)."""
    many = isinstance(ratio, (list, tuple, np.ndarray))
    rs = [float(r) for r in ratio] if many else [ratio]
    if not all(0.0 <= r < 1.0 for r in rs):
        raise PassError(f"prune: ratio must be in [0, 1), got {ratio}")
    if many and scope != "local":
        raise PassError("prune: per-group ratios need scope=local")
    if not any(rs):
        return 0
    with gc_paused():
        groups = channel_groups(graph, protect=protect) if groups is None else groups
        steps = plan(groups, ratio, importance, scope, min_channels, round_to, np.random.default_rng(seed), cache)
        return prune_groups(graph, steps)


def _on_copy(group: ChannelGroup, vmap: dict) -> ChannelGroup:
    """``group`` with its members' values replaced by their copies in a cloned graph."""
    return dataclasses.replace(group, members=[dataclasses.replace(m, value=vmap[id(m.value)]) for m in group.members])


def _macs(graph: Graph) -> float:
    from graphc.backends.cost import totals

    return float(totals(graph)["macs"])


def _params(graph: Graph) -> float:
    from graphc.backends.cost import totals

    return float(totals(graph)["params"])


@register_pass
@dataclass(frozen=True)
class Prune(Pass):
    """Structured channel pruning over coupled channel groups (lossy)."""

    name: ClassVar[str] = "prune"
    exact: ClassVar[bool] = False
    ratio: float = 0.5
    importance: Literal["l1", "l2", "bn-scale", "random", "latency"] = "l1"
    scope: Literal["local", "global"] = "local"
    min_channels: int = 1
    round_to: int | Literal["simd"] = 1
    protect: tuple[str, ...] = ()
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: str | None = None
    latency_threads: int | None = None
    search: Literal["none", "ncs", "ncs-released", "random"] = "none"
    acc_loss: float = 0.02
    evaluations: int = 200
    max_ratio: float = 0.9
    search_batch: int = 1000

    @property
    def needs_data(self) -> bool:  # only the per-group search measures accuracy
        return self.search != "none"

    def __post_init__(self):
        # Checked on construction, so a pipeline string with them fails before a model loads.
        if self.min_channels < 1:
            raise ValueError(f"min-channels must be >= 1, got {self.min_channels}")
        if self.round_to != "simd" and self.round_to < 1:
            raise ValueError(f"round-to must be >= 1 (or simd: this CPU's SIMD block), got {self.round_to}")
        if self.target_latency is not None:
            from graphc.passes.prune_latency import parse_target_latency

            parse_target_latency(self.target_latency)
            if self.target_macs is not None or self.target_params is not None:
                raise ValueError("give target-macs / target-params or target-latency, not both")
        if self.latency_threads is not None and self.latency_threads < 1:
            raise ValueError(f"latency-threads must be >= 1, got {self.latency_threads}")
        if self.target_macs is not None and not self.target_macs > 0:
            raise ValueError(f"target-macs must be > 0 (a fraction up to 1, or a MAC count), got {self.target_macs}")
        if self.target_params is not None and not self.target_params > 0:
            raise ValueError(f"target-params must be > 0 (a fraction up to 1, or a count), got {self.target_params}")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        round_to = self.round_to
        if round_to == "simd":
            from graphc.passes.prune_latency import simd_block

            round_to = simd_block()
        opts = dict(importance=self.importance, scope=self.scope, min_channels=self.min_channels,
                    round_to=round_to, seed=getattr(ctx, "seed", 0))
        if self.importance not in ("l1", "l2", "bn-scale", "random", "latency"):
            raise PassError(f"prune: unknown importance {self.importance!r} (l1, l2, bn-scale, random, latency)")
        if self.scope not in ("local", "global"):
            raise PassError(f"prune: unknown scope {self.scope!r} (local, global)")
        ratio = self.ratio
        stats = {}
        protect = tuple(self.protect)
        # One channel-group analysis serves the whole search and the final cut: the search
        # prunes copies, which never change this graph.
        groups = ctx.analysis("channel-groups", graph, lambda g: channel_groups(g, protect=protect), key=protect)
        cache: dict = {}
        calib = None
        if self.importance == "latency" or self.target_latency is not None:
            from graphc.passes.prune_latency import calibration_for, seconds_per_unit

            calib = calibration_for(self.latency_threads)
            if self.importance == "latency":
                cache["latency"] = seconds_per_unit(graph, groups, calib)
        if self.target_macs is not None:
            ratio, reached = self._search(graph, opts, groups, cache, _macs, self.target_macs, "MACs")
            stats.update({"prune.ratio": round(ratio, 4), "prune.macs": reached})
        if self.target_params is not None:
            # Both targets: the larger ratio meets both (the cost falls as the ratio grows).
            r, reached = self._search(graph, opts, groups, cache, _params, self.target_params, "params")
            ratio = max(ratio, r) if self.target_macs is not None else r
            stats.update({"prune.ratio": round(ratio, 4), "prune.params": reached})
        if self.target_latency is not None:
            from graphc.passes.prune_latency import parse_target_latency, predicted_seconds

            def seconds(g):
                return predicted_seconds(g, calib)

            value, absolute = parse_target_latency(self.target_latency)
            ratio, reached = self._search(graph, opts, groups, cache, seconds, value, "seconds", fraction=not absolute)
            stats.update({"prune.ratio": round(ratio, 4), "prune.predicted_ms": round(reached * 1e3, 4),
                          "prune.target_ms": round((value if absolute else value * seconds(graph)) * 1e3, 4)})
        if self.search != "none":
            if self.target_params is not None:
                raise PassError("prune: search= takes target-macs (or none), not target-params")
            if self.target_latency is not None or self.importance == "latency":
                raise PassError("prune: search= finds per-group ratios for a MACs target; use it with target-macs "
                                "and a per-group importance, not target-latency or importance=latency")
            if self.scope != "local":
                raise PassError("prune: search= finds per-group ratios and needs scope=local")
            from graphc.passes.prune_search import search_ratios

            target = None
            if self.target_macs is not None:
                target = self.target_macs if self.target_macs <= 1 else self.target_macs / _macs(graph)
            found, st = search_ratios(graph, ctx, opts=dict(opts, protect=protect), target=target, uniform=ratio if target else 0.0,
                                      search=self.search, acc_loss=self.acc_loss, evaluations=self.evaluations,
                                      max_ratio=self.max_ratio, batch=self.search_batch)
            stats.update(st)
            if found is not None:
                stats.pop("prune.ratio", None)
                stats["prune.start_ratio"] = round(ratio, 4)
                ratio = found
        removed = prune_graph(graph, ratio=ratio, groups=groups, cache=cache, **opts)
        if self.search != "none":
            stats["prune.macs"] = _macs(graph)
        stats["prune.units_removed"] = removed
        return PassResult(changed=removed > 0, stats=stats)

    def _search(self, graph: Graph, opts, groups: list[ChannelGroup], magnitudes: dict, measure, goal: float,
                unit: str, fraction: bool | None = None) -> tuple[float, float]:
        """The smallest ratio (to 1/256) whose pruned graph's ``measure`` reaches ``goal`` (a
        fraction of the graph's own figure when ``fraction``, or, left None, when <= 1); each
        step plans on ``groups`` (of this graph) and cuts a copy through the same groups mapped
        to it. ``magnitudes``: the plan cache of this graph state, shared by every step."""
        full = measure(graph)
        if fraction is None:
            fraction = goal <= 1
        target = goal * full if fraction else goal
        if full <= target:
            return 0.0, full

        def macs_at(r: float) -> float:
            vmap: dict = {}
            g = graph.clone(value_map=vmap)
            steps = plan(groups, r, opts["importance"], opts["scope"], opts["min_channels"], opts["round_to"],
                         np.random.default_rng(opts["seed"]), magnitudes)
            prune_groups(g, [(_on_copy(grp, vmap), keep) for grp, keep in steps])
            return measure(g)

        lo, hi = 0.0, 0.99
        hi_macs = macs_at(hi)
        if hi_macs > target:
            raise PassError(f"prune: target {target:.4g} {unit} is out of reach (at ratio 0.99: {hi_macs:.4g})")
        while hi - lo > 1 / 256:
            mid = (lo + hi) / 2
            m = macs_at(mid)
            if m <= target:
                hi, hi_macs = mid, m
            else:
                lo = mid
        return hi, hi_macs
