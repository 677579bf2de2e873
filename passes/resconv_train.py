"""resconv-train: train a graph wrapped by ``resconv-wrap`` with L1 on the layer scales of its
ResConv blocks, applied as a proximal step, so unimportant layers get a scale of exactly zero
(ResConv layer pruning, Xu et al., arXiv 2011.14356). Lossy; needs data.

After every optimiser step each layer scale alpha becomes sign(alpha) * max(|alpha| - lr *
lambda, 0): the exact proximal operator of ``lambda * |alpha|`` for the step just taken, so a
scale that reaches zero is exactly zero (plain subgradients of L1 only oscillate around it).
Every weight of the graph trains, shortcut factors and layer scales included.

The shortcut factor of a layer block is read as beta = (1 - alpha) + beta', with beta' the
trainable information-control term (0 at insertion, so the wrapped graph is exact): the
proximal step is taken in (alpha, beta') coordinates, so whatever a scale loses to the L1
shrinkage its shortcut gains, and a layer whose scale reaches zero leaves an open shortcut
(beta near 1) instead of a closed one. Residual blocks have an identity shortcut already.

``target_macs`` (a fraction of the graph's MACs when <= 1) replaces hand-tuning lambda: every
``adapt_every`` steps lambda doubles while the blocks with a zero scale would, removed,
leave more MACs than the target, and halves once they leave fewer, so training ends
near the target; ``layer-prune(target-macs=...)`` then makes it exact by scale ranking.

Invariants: the graph's structure is untouched (only weight values change); the training is
the shared loop (progress bar, torchrun, CUDA when present); the validation accuracy before
and after is in the stats, with the scales per block.

BN runs with its frozen running statistics (the graph's inference form), as in every graphc
training pass: from a briefly trained source, whose statistics lag its weights, SGD at the
default lr can diverge (on the reference nets after half an epoch of MNIST it does at 0.003 and
not at 0.0003); lower ``lr`` then, or re-estimate the statistics first (``recalibrate=N``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from graphc.data import resolve_data
from graphc.ir.graph import Graph
from graphc.passes.resconv_wrap import find_blocks
from graphc.registry import Pass, PassContext, PassResult, register_pass
from graphc.training.graph_module import graph_module_on
from graphc.training.hooks import Hook

__all__ = ["ResConvTrain", "l1_prox"]


@torch.no_grad()
def l1_prox(scales: list[torch.Tensor], t: float, shortcuts: list[torch.Tensor | None] | None = None) -> None:
    """In place: soft-thresholding of each scale by ``t`` (the proximal operator of t * |a|);
    what a scale loses its block's shortcut factor gains (see the module docstring)."""
    for i, a in enumerate(scales):
        new = torch.sign(a) * torch.clamp(a.abs() - t, min=0)
        b = shortcuts[i] if shortcuts is not None else None
        if b is not None:
            b.add_(a - new)
        a.copy_(new)


class _L1Prox(Hook):
    """The proximal step on the layer scales, with lambda adapted towards a MACs target."""

    def __init__(self, scales, shortcuts, lam: float, costs: list[int], goal: int | None, total: int, every: int):
        self.scales, self.shortcuts, self.lam, self.costs, self.goal, self.total, self.every = (
            scales, shortcuts, lam, costs, goal, total, every)

    def _zeros(self) -> list[bool]:
        return [float(a.detach().reshape(-1)[0]) == 0.0 for a in self.scales]

    def zero(self) -> int:
        return sum(self._zeros())

    def left(self) -> int:
        return self.total - sum(c for z, c in zip(self._zeros(), self.costs) if z)

    def after_step(self, model, step, lr):
        l1_prox(self.scales, lr * self.lam, self.shortcuts)
        if self.goal is not None and step % self.every == 0:
            self.lam = self.lam * 2 if self.left() > self.goal else self.lam / 2

    def status(self):
        out = {"zero": f"{self.zero()}/{len(self.scales)}"}
        if self.goal is not None:
            out["lambda"] = f"{self.lam:.3g}"
        return out


@register_pass
@dataclass(frozen=True)
class ResConvTrain(Pass):
    """Train with L1 on the ResConv layer scales (proximal step: exact zeros). Lossy; needs data.

        %s = mul(%b, %alpha) [resconv="scale"]     ==>   %s = mul(%b, %alpha') [resconv="scale"]
                                                         (alpha' = 0 for the layers to remove)

    Defaults (the paper's schedule is not published in full; these suit the reference nets on
    MNIST-sized data in an epoch or two): ``lambda=0.05``, ``epochs=2``, SGD ``lr=0.01`` with
    ``momentum=0.9``, cosine decay, ``batch_size=64``, ``weight_decay=0`` (decay would shrink
    the scales on top of the L1). ``target_macs``: adapt lambda towards that many MACs left
    (fraction when <= 1) every ``adapt_every`` steps. ``recalibrate=N``: re-estimate the BN
    statistics on N training batches before training (off by default). ``device``: ``auto`` (CUDA when present),
    ``cpu`` or ``cuda``.
    """

    name: ClassVar[str] = "resconv-train"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    lambda_: float = 0.05
    epochs: float = 2.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    max_steps: int = 0
    target_macs: float | None = None
    adapt_every: int = 5
    recalibrate: int = 0
    device: str = "auto"

    def __post_init__(self):
        if not self.lambda_ >= 0:
            raise ValueError(f"lambda must be >= 0, got {self.lambda_}")
        if not self.epochs > 0 or not self.lr > 0:
            raise ValueError(f"epochs and lr must be > 0, got epochs={self.epochs}, lr={self.lr}")
        if self.target_macs is not None and not self.target_macs > 0:
            raise ValueError(f"target-macs must be > 0, got {self.target_macs}")
        if self.adapt_every < 1 or self.max_steps < 0 or self.recalibrate < 0:
            raise ValueError("adapt-every must be >= 1, max-steps and recalibrate >= 0")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        blocks, _ = find_blocks(graph)
        if not blocks:
            ctx.info(f"{self.name}: no ResConv blocks (run resconv-wrap first)")
            return PassResult(changed=False, stats={"blocks": 0})
        data = resolve_data(ctx, self.name)
        from graphc.backends.cost import totals
        from graphc.passes.layer_prune import block_cost
        from graphc.training import CosineLR, evaluate, train

        module = graph_module_on(graph, self.device)
        scales = [module.param(b.alpha.name) for b in blocks]
        shortcuts = [module.param(b.beta.name) if b.beta is not None else None for b in blocks]
        order = {n: i for i, n in enumerate(graph.nodes)}
        costs = [block_cost(graph, b, order)[0] for b in blocks]
        total = totals(graph)["macs"]
        goal = None
        if self.target_macs is not None:
            goal = int(self.target_macs * total) if self.target_macs <= 1 else int(self.target_macs)
        prox = _L1Prox(scales, shortcuts, self.lambda_, costs, goal, total, self.adapt_every)
        before = evaluate(module, data)
        recal = {}
        if self.recalibrate > 0:
            from graphc.training import recalibrate_bn

            recalibrate_bn(module, data, self.recalibrate, batch_size=self.batch_size, seed=ctx.seed)
            recal = {"acc_recalibrated": round(evaluate(module, data), 4)}
        res = train(module, data, epochs=self.epochs, lr=self.lr, momentum=self.momentum,
                    weight_decay=self.weight_decay, batch_size=self.batch_size, hooks=[prox, CosineLR()],
                    seed=ctx.seed, quiet=ctx.quiet, max_steps=self.max_steps or None, desc=self.name)
        module.write_back(graph)
        alphas = {b.name: round(float(b.alpha.param.data.reshape(-1)[0]), 5) for b in blocks}
        zero = [b.name for b in blocks if float(b.alpha.param.data.reshape(-1)[0]) == 0.0]
        left = total - sum(c for b, c in zip(blocks, costs) if b.name in set(zero))
        ctx.info(f"{self.name}: {res.steps} steps on {data}; val acc {before:.4f} -> {res.val_acc:.4f}; "
                 f"{len(zero)}/{len(blocks)} layer scales exactly zero ({left:,} of {total:,} MACs left once removed)")
        return PassResult(changed=True, stats={
            "blocks": len(blocks), "steps": res.steps, "data": str(data), "split": data.split,
            "device": str(next(module.parameters()).device), "acc_before": round(before, 4),
            "acc_after": round(res.val_acc, 4), "zero_scales": len(zero), "macs_left_if_removed": left,
            "lambda_final": prox.lam, "scales": alphas, **recal})
