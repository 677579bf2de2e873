"""BatchNorm recalibration: re-estimate the running statistics of a graph's ``batch_norm`` nodes
on training data, after a lossy rewrite (channel or layer pruning) has made them stale.

graphc trains with BN in its inference form (frozen running statistics, see
:mod:`graphc.training.graph_module`). After surgery the activations reaching a BN no longer
have the mean and variance it normalises with, and in a deep plain net the error compounds
layer by layer. The standard fix (as in train-mode BN with ``momentum=None``): run ``batches``
training batches through the graph with every BN normalising by its batch statistics, and write
the cumulative average of the batch means and (unbiased) batch variances into its ``mean`` and
``var`` params. Weights are untouched.

Invariants: only the ``mean``/``var`` params of ``batch_norm`` nodes change, in their own
dtypes; a BN whose statistics are shared with another node, or that are not params, is left
alone (and counted in the result); deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from graphc.data import load_data
from graphc.ir.graph import Graph

__all__ = ["recalibrate_bn"]


def _stat_params(graph: Graph):
    """The batch_norm nodes whose mean and var are params of their own (name, name)."""
    own, skipped = {}, 0
    for n in graph.nodes:
        if n.op != "batch_norm":
            continue
        m, v = n.input(3), n.input(4)
        if m.param is not None and v.param is not None and len(m.uses()) == 1 and len(v.uses()) == 1:
            own[n] = (m.param.value.name, v.param.value.name)
        else:
            skipped += 1
    return own, skipped


@torch.no_grad()
def recalibrate_bn(module, data, batches: int, *, batch_size: int = 64, seed: int = 0) -> dict:
    """Re-estimate the BN running statistics of ``module`` (a
    :class:`~graphc.training.graph_module.GraphModule`) from ``batches`` batches of the training
    split of ``data``; writes them into the module and its graph. Returns
    ``{"bn": updated, "bn_skipped": n, "batches": used}``."""
    if batches < 1:
        raise ValueError(f"recalibrate must be >= 1 batches, got {batches}")
    graph = module.graph
    own, skipped = _stat_params(graph)
    if not own:
        return {"bn": 0, "bn_skipped": skipped, "batches": 0}
    train_loader, _ = load_data(data).loaders(batch_size, seed=seed)
    dev = next(iter(module._fixed.values()), None)
    dev = dev.device if dev is not None else torch.device("cpu")
    sums = {n: None for n in own}
    used = 0
    for x, _y in train_loader:
        if used >= batches:
            break
        x = x.to(dev)
        params = module.feeds()
        batch = x.shape[0]
        env = {id(graph.inputs[0]): x}
        for name, p in graph.params.items():
            env[id(p.value)] = params[name] if name in params else p.tensor().to(dev)
        for n in graph.nodes:
            ins = [env[id(v)] for v in n.inputs]
            if n in own:
                xb, w, b = ins[0], ins[1], ins[2]
                dims = [d for d in range(xb.dim()) if d != 1]
                xd = xb.double()  # float64 sums: a batch may hold millions of elements
                mean = xd.mean(dims)
                var = xd.var(dims, unbiased=False)
                count = xb.numel() // xb.shape[1]
                unbiased = var * (count / max(1, count - 1))
                s = sums[n]
                sums[n] = (mean, unbiased) if s is None else (s[0] + mean, s[1] + unbiased)
                out = F.batch_norm(xb, mean.to(xb.dtype), var.to(xb.dtype), w, b, False, 0.0, n.attrs.get("eps", 1e-5))
            else:
                out = n.opdef.run(ins, module._attrs(n, batch))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for v, t in zip(n.outputs, outs):
                env[id(v)] = t
        used += 1
    for n, (mname, vname) in own.items():
        mean, var = (t / used for t in sums[n])
        for name, t in ((mname, mean), (vname, var)):
            p = graph.params[name]
            p.set_data(t.cpu().numpy().astype(p.data.dtype, copy=True))
            if name in module._fixed:
                module._fixed[name] = torch.from_numpy(np.array(p.data, copy=True)).to(dev)
            elif name in module._index:
                module.param(name).copy_(t.to(module.param(name).dtype))
    return {"bn": len(own), "bn_skipped": skipped, "batches": used}
