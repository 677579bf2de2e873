"""dce: remove nodes nothing reads and params no node reads.

Invariant: graph outputs and everything they depend on stay; every op of the IR is free of
side effects at inference, so a node without readers can always go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphc.ir.graph import Graph
from graphc.registry import Pass, PassContext, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove unused nodes (readers first, so whole dead chains go) and unused params. Exact.

        %a = relu(%x)                       %b = sigmoid(%x)
        %b = sigmoid(%x)             ==>    return %b
        return %b
    """

    name: ClassVar[str] = "dce"
    exact: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        nodes = 0
        for node in reversed(graph.nodes):
            if not any(v.uses() or v.is_output for v in node.outputs):
                graph.erase(node)
                nodes += 1
        params = graph.prune_unused_params()
        return PassResult(changed=nodes + params > 0, stats={"nodes": nodes, "params": params})
