"""fuse: every exact fusion as one pattern set, driven by one worklist to a fixed point.

Invariant: each member pattern is exact and only ever lowers node count or cost, so the driver
reaches a fixed point and a second run reports no change. The member passes stay available on
their own (``fold-bn``, ``merge-linear``...); ``fuse`` runs their patterns together, so a fusion
that enables another is picked up where it happened, not in another whole-graph round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphc.ir.rewrite import RewritePattern
from graphc.registry import PatternPass, get_pass, register_pass

# Member passes, in the order their patterns are tried on a node.
FUSE_PASSES = ("fold-constants", "drop-identity", "fold-bn", "fuse-resconv", "fuse-branches", "merge-linear",
               "absorb-pool", "dce")


@register_pass
@dataclass(frozen=True)
class Fuse(PatternPass):
    """Every exact fusion (fold-constants, drop-identity, fold-bn, fuse-resconv, fuse-branches,
    merge-linear, absorb-pool, dce) as one pattern set run to a fixed point. Exact.

        %c = conv2d(%x, %w)                       %c = conv2d(%x, %w'') {as %c}
        %n = batch_norm(%c, ...)            ==>   (readers of %y read %c)
        %y = add(%n, %x)

    ``stats["applied"]`` counts the rewrites per pattern; ``stats["refused"]`` lists, per node
    still in the graph, why no pattern rewrote it.
    """

    name: ClassVar[str] = "fuse"
    exact: ClassVar[bool] = True

    def patterns(self) -> list[RewritePattern]:
        return [p for name in FUSE_PASSES for p in get_pass(name)().patterns()]

    def stats(self, res) -> dict:
        return {"rewrites": sum(res.applied.values()), "applied": dict(sorted(res.applied.items())),
                "refused": res.refused}
