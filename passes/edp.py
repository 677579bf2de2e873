"""The ``edp`` preset (EDP, Ruan et al., IEEE TNNLS 2020) and its data-free variant.

    edp = fold-bn, decompose, edp-train(no-data=svd), prune-merge

Options given to the preset configure its ``edp-train`` (``edp(target-macs=0.5)``).

``fold-bn`` runs first so a conv's output channel is zero exactly when its coefficient row and
bias are (a BatchNorm after it would turn a zero channel into a constant). With data,
``edp-train`` runs the group-lasso stage; without data it runs :func:`svd_truncate` instead
and says so in its stats (``mode: data-free``) and in the context log.

Invariants of the data-free variant: per pair it keeps the fewest leading singular directions
of the merged weight A.B whose squared singular values reach ``energy`` of the total, writes
them as A = U_r, B = S_r V_r^T and zeroes the remaining columns of A and rows of B (so
``prune-merge`` removes them and merges back where the pair is not cheaper); it never touches
rows, so no output channel is removed without data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph
from graphc.passes._rewrite import cast_like
from graphc.passes.decompose import Pair, find_pairs
from graphc.registry import Pass, PassContext, PassResult, register_pass, register_preset

__all__ = ["SVDTruncate", "svd_truncate", "EDP_PIPELINE"]

EDP_PIPELINE = "fold-bn,decompose,edp-train(no-data=svd),prune-merge"


def _rank_for(s: np.ndarray, energy: float) -> int:
    e = np.cumsum(s.astype(np.float64) ** 2)
    if e[-1] <= 0:
        return 1
    return int(min(len(s), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


def svd_truncate(graph: Graph, pairs: list[Pair], energy: float, ctx: PassContext | None = None,
                 who: str = "svd-truncate") -> PassResult:
    kept, layers = 0, {}
    total = 0
    for p in pairs:
        pa, pb = p.coef.input(1).param, p.basis.input(1).param
        a, b = pa.data, pb.data
        n, m = a.shape[0], a.shape[1]
        merged = a.reshape(n, m).astype(np.float64) @ b.reshape(m, -1).astype(np.float64)
        u, s, vt = np.linalg.svd(merged, full_matrices=False)
        r = _rank_for(s, energy)
        na = np.zeros((n, m))
        nb = np.zeros((m, merged.shape[1]))
        na[:, :r] = u[:, :r]
        nb[:r] = s[:r, None] * vt[:r]
        pa.set_data(cast_like(na.reshape(a.shape), a))
        pb.set_data(cast_like(nb.reshape(b.shape), b))
        layers[p.name] = f"rank {r}/{min(merged.shape)}"
        kept += r
        total += min(merged.shape)
    msg = (f"{who}: no data given, ran the data-free EDP variant (SVD truncation keeping "
           f"{energy:.0%} of the spectral energy): rank {kept}/{total} over {len(pairs)} layers")
    if ctx is not None:
        ctx.info(msg)
    return PassResult(changed=bool(pairs), stats={"mode": "data-free", "energy": energy, "pairs": len(pairs),
                                                  "rank_kept": kept, "rank_total": total, "layers": layers,
                                                  "note": msg})


@register_pass
@dataclass(frozen=True)
class SVDTruncate(Pass):
    """Data-free EDP: truncate each decomposed pair to the singular directions holding
    ``energy`` (default 0.95) of its squared spectrum. Lossy; needs no data.

        %t = conv2d(%x, %B)  # c1.basis          %t = conv2d(%x, %B')  # c1.basis
        %y = conv2d(%t, %A, %b)  # c1      ==>   %y = conv2d(%t, %A', %b)  # c1
                                                 (columns r.. of A' and rows r.. of B' zero)
    """

    name: ClassVar[str] = "svd-truncate"
    exact: ClassVar[bool] = False

    energy: float = 0.95

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs = find_pairs(graph)
        if not pairs:
            return PassResult(changed=False, stats={"pairs": 0})
        return svd_truncate(graph, pairs, self.energy, ctx, who=self.name)


register_preset("edp", EDP_PIPELINE, options_to="edp-train")
