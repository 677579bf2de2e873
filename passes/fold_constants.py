"""fold-constants: evaluate nodes whose every operand is a param, once, at compile time.

Invariant: a folded value is computed by the op's own torch semantics (the op table), so it
is bit-identical to what the model computed at run time; nodes whose result would be much
larger than their operands (an expand of a scalar) stay, so folding never bloats a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from graphc.ir.graph import Graph, Node
from graphc.ir.rewrite import RewritePattern, Rewriter
from graphc.passes._rewrite import PatternPass
from graphc.registry import register_pass

# Results this small are always folded; larger ones only if no bigger than their operands.
_SMALL = 4096


def _foldable(node: Node) -> str | None:
    """None when the node can be evaluated now, else why not."""
    if not node.inputs or any(v.param is None for v in node.inputs):
        return "reads a run-time value"
    if any(v.is_output for v in node.outputs):
        return "a graph output"
    if node.op == "opaque" or node.opdef.torch is None:
        return "no torch semantics to evaluate it"
    size = sum(int(np.prod(v.shape)) for v in node.outputs)
    if size > max(_SMALL, sum(v.param.data.size for v in node.inputs)):
        return "result much larger than its operands"
    return None


@register_pass
@dataclass(frozen=True)
class FoldConstants(PatternPass):
    """Replace nodes computed from params alone by their value (ONNX-style constant subgraphs:
    shape arithmetic, weights built by transposes or casts). Exact.

        %t = permute(%w) {dims=[1,0]}            %t = const f32[8,4]  (the permuted array)
        %y = linear(%x, %t)               ==>    %y = linear(%x, %t)
    """

    name: ClassVar[str] = "fold-constants"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [FoldConstant()]

    def stats(self, res) -> dict:
        return {"folded": res.counts.get("folded", 0), "refused": res.refused}


class FoldConstant(RewritePattern):
    """A node whose every operand is a param becomes params holding its results."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if not node.inputs or any(v.param is None for v in node.inputs):
            return False
        graph = rw.graph
        why = _foldable(node)
        if why is not None:
            return rw.refuse(node, why)
        try:
            with torch.no_grad():
                out = node.opdef.run([v.param.tensor() for v in node.inputs], node.attrs)
        except Exception as e:  # an op that cannot run on these constants stays as it is
            return rw.refuse(node, f"evaluation failed: {type(e).__name__}")
        outs = out if isinstance(out, (tuple, list)) else (out,)
        params = [v.param for v in node.inputs]
        weights = [p for p in params if p.kind == "weight"]
        # A value built from weights is still a weight: parameter counts stay honest and
        # reports still name the source layer.
        kind = "weight" if weights else ("buffer" if any(p.kind == "buffer" for p in params) else "const")
        source = max(weights, key=lambda p: p.data.size).source if weights else ""
        if len(outs) != len(node.outputs):
            return rw.refuse(node, "evaluation gave the wrong number of results")
        ins = [v.param.data for v in node.inputs]
        # The operands are views of the params' arrays (no copy); a result that is a view of one
        # (a reshape, a slice) is copied, so the new param never aliases another's array.
        arrs = [t.detach().contiguous().numpy() for t in outs]
        arrs = [a.copy() if any(np.may_share_memory(a, i) for i in ins) else a for a in arrs]
        if any(tuple(a.shape) != v.shape for a, v in zip(arrs, node.outputs)):
            return rw.refuse(node, "evaluation gave a different shape")
        for v, arr in zip(node.outputs, arrs):
            v.replace_all_uses_with(graph.add_param(arr, source=source, name=v.name + ".folded", kind=kind))
        graph.erase(node)
        rw.count("folded")
        return True
