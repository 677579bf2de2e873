"""dce: remove nodes nothing reads and params no node reads.

Invariant: graph outputs and everything they depend on stay; every op of the IR is free of
side effects at inference, so a node without readers can always go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphc.ir.graph import Graph, Node
from graphc.ir.rewrite import RewritePattern, Rewriter, apply_patterns
from graphc.passes._rewrite import PatternPass
from graphc.registry import PassContext, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(PatternPass):
    """Remove unused nodes (readers first, so whole dead chains go) and unused params. Exact.

        %a = relu(%x)                       %b = sigmoid(%x)
        %b = sigmoid(%x)             ==>    return %b
        return %b
    """

    name: ClassVar[str] = "dce"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [EraseDead()]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        res = apply_patterns(graph, self.patterns())
        # Params no node reads go even when no node did.
        params = graph.prune_unused_params()
        nodes = res.counts.get("nodes", 0)
        return PassResult(changed=nodes + params > 0, stats={"nodes": nodes, "params": params})


class EraseDead(RewritePattern):
    """A node no one reads (and no graph output names) goes; its producers are revisited."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if any(v._uses or v.is_output for v in node.outputs):
            return False
        rw.graph.erase(node)
        rw.count("nodes")
        return True
