"""The ``fuse`` preset: every exact fusion, repeated until none applies.

Invariant: each member pass is exact and only ever lowers node count or cost, so the group
reaches a fixed point and a second run reports no change.
"""
from graphc.registry import register_preset

FUSE_PASSES = ("fold-constants", "drop-identity", "fold-bn", "fuse-resconv", "merge-linear", "absorb-pool", "dce")

register_preset("fuse", "fixpoint(" + ",".join(FUSE_PASSES) + ")")
