"""drop-identity: remove ops that compute nothing at inference.

Invariant: a node is dropped only when its output equals one of its inputs element for
element (same shape, same dtype, same values); chains of reshapes or permutes are first
collapsed into one, which is removed when it turns out to be a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.ops import ops_with
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import PatternPass, const_array, erase_if_dead, replace_output
from graphc.registry import register_pass

_ALWAYS = ("dropout", "identity")
_VIEWS = tuple(sorted(ops_with("reshape")))
_POOLS = ("avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d")


def _all(xs, v) -> bool:
    return all(int(x) == v for x in (xs if isinstance(xs, (list, tuple)) else [xs]))


def _noop_source(node: Node) -> Value | None:
    """The input this node passes through unchanged, if it does."""
    if not node.inputs or len(node.outputs) != 1:
        return None
    x = node.input(0)
    out = node.output
    if out.type != x.type and node.op not in ("mul", "add", "sub", "div"):
        return None
    op, a = node.op, node.attrs
    if op in _ALWAYS or op in _VIEWS or op == "expand":
        return x
    if op == "permute":
        return x if list(a["dims"]) == list(range(len(a["dims"]))) or _trivial_permute(x.shape, a["dims"]) else None
    if op == "cast":
        return x
    if op == "pad":
        return x if _all(a.get("pad", []), 0) else None
    if op in _POOLS:
        ok = _all(a.get("kernel_size", 1), 1) and _all(a.get("padding", 0), 0)
        return x if ok and _all(a.get("stride") or 1, 1) and _all(a.get("dilation", 1), 1) else None
    if op in ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d"):
        return x
    if op == "slice":
        return x
    if op in ("concat", "sum_n") and len(node.inputs) == 1:
        return x
    if op in ("mul", "div", "add", "sub"):
        return _neutral_binary(node)
    return None


def _trivial_permute(shape, dims) -> bool:
    """A permute that moves only size-1 axes keeps the memory order: it is a reshape."""
    moved = [d for i, d in enumerate(dims) if d != i]
    return all(shape[d] == 1 for d in moved)


def _neutral_binary(node: Node) -> Value | None:
    """x*1, x/1, x+0, x-0 (the constant may be any shape of ones/zeros that does not grow x)."""
    a, b = node.inputs
    unit = 1.0 if node.op in ("mul", "div") else 0.0
    for x, c, ok in ((a, b, True), (b, a, node.op in ("mul", "add"))):
        arr = const_array(c)
        if not ok or arr is None or x.type != node.output.type:
            continue
        if arr.size and np.all(arr == unit) and not (unit == 0.0 and np.any(np.signbit(arr))):
            return x
    return None


def _collapse_chain(graph: Graph, node: Node) -> bool:
    """reshape-like(reshape-like(x)) -> reshape(x); permute(permute(x)) -> permute(x)."""
    src = node.input(0)
    prev = src.producer
    if prev is None or len(prev.outputs) != 1:
        return False
    if node.op in _VIEWS and prev.op in _VIEWS:
        new = graph.add_node("reshape", [prev.input(0)], {"shape": list(node.output.shape)},
                             node.name + ".reshape", before=node)
    elif node.op == "permute" and prev.op == "permute":
        p1, p2 = prev.attrs["dims"], node.attrs["dims"]
        new = graph.add_node("permute", [prev.input(0)], {"dims": [int(p1[d]) for d in p2]},
                             node.name + ".permute", before=node)
    else:
        return False
    replace_output(graph, node, new.output)
    erase_if_dead(graph, prev)
    return True


@register_pass
@dataclass(frozen=True)
class DropIdentity(PatternPass):
    """Remove inference no-ops: dropout, identity, no-op reshape/permute/cast/pad/slice/pool,
    x*1 and x+0, and inverse reshape or permute pairs. Exact.

        %f = flatten(%x) {start_dim=1}      (f32[1,8] -> f32[1,8])
        %d = dropout(%f) {p=0.5}      ==>   readers of %d read %x
        %p = permute(%a) {dims=[0,2,1]}
        %q = permute(%p) {dims=[0,2,1]}  ==>  readers of %q read %a
    """

    name: ClassVar[str] = "drop-identity"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [CollapseViews(), DropNoop()]

    def stats(self, res) -> dict:
        by_op = res.groups.get("by_op", {})
        return {"dropped": sum(by_op.values()), "collapsed": res.counts.get("collapsed", 0), "by_op": dict(by_op)}


class CollapseViews(RewritePattern):
    """reshape-like(reshape-like(x)) and permute(permute(x)) become one op."""

    ops = _VIEWS + ("permute",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if not node.inputs or not _collapse_chain(rw.graph, node):
            return False
        rw.count("collapsed")
        return True


class DropNoop(RewritePattern):
    """An op whose output equals one of its inputs goes; its readers read that input."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        src = _noop_source(node)
        if src is None:
            return False
        # An output that would become a graph input or a weight keeps its node: emitters
        # need every graph output to be computed.
        if node.output.is_output and (src.producer is None or src.is_output):
            return False
        rw.replace(node, src)
        rw.count(node.op, group="by_op")
        return True
