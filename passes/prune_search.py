"""Per-group channel ratios for ``prune`` found by a derivative-free search (``search=ncs``).

Uniform-ratio pruning removes the same share of every channel group; some layers can lose far
more than others. The search variable is one ratio per prunable channel group, in
[0, ``max_ratio``]; a candidate is scored by pruning a copy of the graph with those ratios and
measuring it on ``search_batch`` training images (no fine-tuning: the search ranks candidates,
the caller fine-tunes the winner):

- with ``target_macs``: maximise the batch accuracy subject to MACs <= target (a candidate over
  the budget scores 1 + its excess fraction, so the search is led back under it);
- without: minimise the MACs fraction subject to accuracy >= accuracy of the unpruned graph
  minus ``acc_loss`` (an infeasible candidate scores 1.1), as OLMP does with weights.

The searcher is :func:`graphc.ncs.ncs` (or random search of the same budget), starting from
the uniform ratio that meets the target when there is one, else from 0.
"""
from __future__ import annotations

import numpy as np
import torch

from graphc.data import resolve_data
from graphc.errors import PassError
from graphc.ir.graph import Graph
from graphc.progress import bar as progress_bar

__all__ = ["search_ratios", "prunable_group_count"]


def prunable_group_count(graph: Graph, protect=()) -> int:
    from graphc.passes.channel_groups import channel_groups

    return sum(1 for g in channel_groups(graph, protect=protect) if g.prunable)


@torch.no_grad()
def _accuracy(graph: Graph, x: torch.Tensor, y: torch.Tensor) -> float:
    from graphc.backends.torch import emit_torch

    mod = emit_torch(graph).to(x.device)
    correct = 0
    for i in range(0, len(y), 500):
        correct += int((mod(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum())
    return correct / max(1, len(y))


def search_ratios(graph: Graph, ctx, *, opts: dict, target: float | None, uniform: float, search: str,
                  acc_loss: float, evaluations: int, max_ratio: float, batch: int, device: str = "auto"):
    """The per-group ratios the search found and its stats (see the module docstring).
    ``uniform``: the uniform ratio meeting ``target`` (the start point), 0 without a target."""
    from graphc.ncs import SEARCHERS
    from graphc.passes.dns import device_for
    from graphc.passes.olmp import search_batch
    from graphc.passes.prune import _macs, prune_graph

    if search not in SEARCHERS:
        raise PassError(f"prune: unknown search {search!r} ({', '.join(SEARCHERS)}, none)")
    data = resolve_data(ctx, "prune(search=...)")
    dev = device_for(device)
    n = prunable_group_count(graph, opts.get("protect", ()))
    if n == 0:
        return None, {"prune.search": search, "prune.groups": 0}
    x, y = search_batch(data, batch, dev)
    full_macs = _macs(graph)
    base = _accuracy(graph, x, y)
    bar = progress_bar(total=evaluations, desc="prune search", quiet=getattr(ctx, "quiet", False))
    seen: dict[bytes, float] = {}

    def fitness(r: np.ndarray) -> float:
        key = np.round(r, 4).tobytes()
        if key in seen:
            bar.update(1)
            return seen[key]
        g = graph.clone()
        prune_graph(g, ratio=[float(v) for v in r], **opts)
        frac = _macs(g) / full_macs
        if target is not None:
            f = 1 + (frac - target) if frac > target else -_accuracy(g, x, y)
        else:
            acc = _accuracy(g, x, y)
            f = frac if acc >= base - acc_loss else 1.1
        seen[key] = f
        bar.update(1)
        return f

    def shown(used, best_f, best_x):
        if target is not None and best_f <= 0:
            bar.set_postfix(acc=f"{-best_f:.3f}", base=f"{base:.3f}")
        elif target is None and best_f < 1.1:
            bar.set_postfix(macs=f"{100 * best_f:.1f}%", base=f"{base:.3f}")

    popsize = min(10, max(2, evaluations // 10))
    try:
        res = SEARCHERS[search](fitness, 0.0, max_ratio, x0=np.full(n, uniform), sigma=max_ratio / 10,
                                popsize=popsize, evaluations=evaluations, seed=getattr(ctx, "seed", 0), callback=shown)
    finally:
        bar.close()
    feasible = res.f <= 0 if target is not None else res.f < 1.1
    if not feasible:
        if target is not None:
            raise PassError(f"prune: the search found no ratios within {target:.4g} of the MACs")
        return [0.0] * n, {"prune.search": search, "prune.groups": n, "prune.search_feasible": False}
    ratios = [round(float(v), 4) for v in res.x]
    return ratios, {"prune.search": search, "prune.groups": n, "prune.ratios": ratios,
                    "prune.search_acc_before": round(base, 4), "prune.evaluations": res.evaluations,
                    "prune.search_fitness": round(res.f, 5)}
