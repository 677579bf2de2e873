"""Shared pieces of ``stream-merge``'s patterns and of ``rebirth``: what a merged layer stands
for (its ``stream`` metadata), merge plans costed before they are made, and the hand-over of the
graph stream-merge received (rebirth's teacher) within one run.

Invariants: a plan edits nothing until ``apply()``; a refused ``apply()`` has edited nothing;
the teacher is kept per :class:`~graphc.registry.PassContext`, so two runs never share one.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, ClassVar

from graphc.ir.graph import Graph, Node
from graphc.ir.meta import STREAM, STREAM_INIT
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import CONV_OPS
from graphc.registry import PassContext

KINDS = ("chain", "pool", "relu", "branch")
LAYER_OPS = CONV_OPS + ("linear",)
# Activations that are the identity on their positive side: dropping one is the merge's
# approximation; monotone ones also commute with a max pool.
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hardswish")
MONOTONE = ("relu", "relu6", "leaky_relu")
POOLS = {"max_pool1d": 1, "max_pool2d": 2, "avg_pool1d": 1, "avg_pool2d": 2}

# The graph each context's stream-merge received, for rebirth's teachers (a context is one run).
_TEACHERS: "weakref.WeakKeyDictionary[PassContext, Graph]" = weakref.WeakKeyDictionary()


def teacher_for(ctx: PassContext) -> Graph | None:
    """The graph the last stream-merge of this context received, if any."""
    return _TEACHERS.get(ctx)


def origin(node: Node) -> list[str]:
    """The original nodes a layer stands for: its ``stream`` metadata, or itself."""
    return list(node.meta.get(STREAM.name) or [node.name])


def _is_exact(node: Node) -> bool:
    return node.meta.get(STREAM_INIT.name, "exact") == "exact"


def _mark(node: Node, parts: list[Node | str], exact: bool) -> None:
    names: list[str] = []
    for p in parts:
        for n in ([p] if isinstance(p, str) else origin(p)):
            if n not in names:
                names.append(n)
    if len(names) < 2:
        return
    node.meta[STREAM.name] = names
    node.meta[STREAM_INIT.name] = "exact" if exact else "approx"


@dataclass
class Plan:
    """A merge found and costed but not yet made: ``apply()`` makes it (None) or says why not."""

    kind: str
    before: int
    after: int
    exact: bool
    apply: Callable[[], str | None]

    @property
    def saving(self) -> int:
        return self.before - self.after


class _Planned(RewritePattern):
    """A pattern made of ``plan(node, graph)`` (None: not a candidate; a string: why refused)
    and the plan's ``apply``; it applies when the merged layer costs at most ``max_growth`` x the
    MACs it replaces (pool and branch merges; 1 x for the others)."""

    kind: ClassVar[str] = ""

    def __init__(self, opts: "StreamMerge"):
        self.opts = opts

    def plan(self, node: Node, graph: Graph) -> Plan | str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        p = self.plan(node, rw.graph)
        if p is None:
            return False
        if isinstance(p, str):
            return rw.refuse(node, p)
        limit = self.opts.max_growth if self.kind in ("pool", "branch") else 1.0
        if p.after > limit * p.before:
            return rw.refuse(node, f"merged layer costs {p.after} MACs > {limit:g} x {p.before}")
        why = p.apply()
        if why is not None:
            return rw.refuse(node, why)
        rw.count(self.kind)
        return True



def out_size(shape, k, s, p, d) -> list[int]:
    return [(h + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for h, kk, ss, pp, dd in zip(shape, k, s, p, d)]


def remember_teacher(ctx: PassContext, graph: Graph) -> None:
    _TEACHERS[ctx] = graph
