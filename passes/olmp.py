"""olmp: Optimization-based Layer-wise Magnitude-based Pruning (Li, Qian et al., IJCAI 2018).
Lossy; needs data.

DNS (:mod:`graphc.passes.dns`) prunes each layer at t = max(mu + c sigma, 0) with splicing;
OLMP chooses the per-layer knobs c by a derivative-free search of a constrained problem:

    minimise   kept weights / all weights
    subject to accuracy(batch) >= accuracy_now(batch) - acc_loss

A candidate's fitness is its kept fraction when feasible and 1.1 otherwise. Training follows
the released code's adaptive surgery: at step i each layer is chosen with probability
(1 + gamma * i)^-1; every ``search_every`` steps, when more than one layer is chosen, the
searcher (NCS by default, see :mod:`graphc.ncs`) looks for the chosen layers' c in
[0, ``c_max``] with ``popsize`` searchers and ``evaluations`` candidates, starting from their
current c with step ``step`` (times 0.1 at each point of ``step_at``, fractions of the run:
the released solver's 50 with tenfold drops at iterations 0 and 10,000 of 30,000); chosen
layers then undergo surgery with their c. Surgery stops after ``prune_until`` of the steps and
training continues with frozen masks.

``target_params`` (a fraction of the prunable weights when <= 1, else a count) turns the
objective around: kept fractions at or under the target tie, and among them the more accurate
candidate wins, so the search stops compressing once the target is met.

Candidates are scored on ``search_batch`` images of the training split (never the validation
split, which reports the result).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from graphc.data import Data, resolve_data
from graphc.errors import PassError
from graphc.ir.graph import Graph
from graphc.passes.dns import (MaskedModel, SurgeryHook, SurgeryTraining, device_for, finish, prunable_layers, target_count,
                               train_masked)
from graphc.progress import bar as progress_bar
from graphc.registry import PassContext, PassResult, register_pass

__all__ = ["OLMP", "search_batch"]

INFEASIBLE = 1.1


def search_batch(data: Data, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training examples (fixed, so every candidate meets the same batch)."""
    if data.tensors:
        return data.x_train[:n].to(device), data.y_train[:n].to(device)
    xs, ys, got = [], [], 0
    for x, y in data.train_loader:
        xs.append(x)
        ys.append(y)
        got += len(y)
        if got >= n:
            break
    return torch.cat(xs)[:n].to(device), torch.cat(ys)[:n].to(device)


class SearchSurgery(SurgeryHook):
    """Surgery whose knobs are searched every ``every`` steps (see the module docstring)."""

    def __init__(self, mm: MaskedModel, opts: "OLMP", batch, ctx: PassContext, stop: int):
        super().__init__(mm, [float(opts.c0)] * len(mm.layers), opts.gamma_conv, opts.gamma_fc, stop, ctx.seed)
        self.opts, self.batch, self.ctx = opts, batch, ctx
        self.target = None
        if opts.target_params is not None:
            self.target = target_count(opts.target_params, mm.total, opts.name) / mm.total
        self.searches = self.evaluations = 0
        self.acc = float("nan")
        self.log: list[dict] = []

    @torch.no_grad()
    def accuracy(self) -> float:
        x, y = self.batch
        was = self.mm.module.training
        self.mm.module.eval()
        correct = 0
        for i in range(0, len(y), 1000):
            correct += int((self.mm.module(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
        self.mm.module.train(was)
        return correct / max(1, len(y))

    def step_size(self, step: int) -> float:
        drops = sum(1 for f in self.opts.step_at if step >= f * self.opts.iterations)
        return self.opts.step * 0.1 ** drops

    @torch.no_grad()
    def search(self, chosen: list[int], step: int) -> None:
        from graphc.ncs import SEARCHERS

        mm, opts = self.mm, self.opts
        base = self.accuracy()
        saved = {n: mm.masks[n].clone() for i in chosen for n in mm.names(i)}
        others = mm.kept() - sum(mm.kept(i) for i in chosen)
        bar = progress_bar(total=opts.evaluations, desc=f"{opts.name} search @{step}", quiet=self.ctx.quiet)

        def fitness(c: np.ndarray) -> float:
            # The candidate's surgery goes into the live masks (restored from ``saved`` below),
            # so the accuracy is that of the model as the forward runs it.
            for i, ci in zip(chosen, c):
                mm.surgery(i, float(ci))
            kept = others + int(sum(mm.masks[n].count_nonzero() for n in saved))
            acc = self.accuracy()
            for n, m in saved.items():
                mm.masks[n].copy_(m)
            bar.update(1)
            if acc < base - opts.acc_loss:
                return INFEASIBLE
            frac = kept / mm.total
            return frac if self.target is None else max(frac, self.target) - 1e-3 * acc

        def shown(used, best_f, best_x):
            if best_f < INFEASIBLE:
                bar.set_postfix(kept=f"{100 * best_f:.2f}%", x=f"{1 / max(best_f, 1e-12):.1f}", acc=f"{base:.3f}")

        x0 = np.array([self.c[i] for i in chosen])
        try:
            res = SEARCHERS[opts.search](fitness, 0.0, opts.c_max, x0=x0, sigma=self.step_size(step),
                                         popsize=opts.popsize, evaluations=opts.evaluations,
                                         seed=self.ctx.seed + step, callback=shown)
        finally:
            bar.close()
        self.searches += 1
        self.evaluations += res.evaluations
        if res.f < INFEASIBLE:
            for i, ci in zip(chosen, res.x):
                self.c[i] = float(ci)
        self.acc = base
        self.log.append({"step": step, "layers": [mm.layers[i].node for i in chosen], "fitness": round(res.f, 5)})

    def after_step(self, model, step, lr):
        if step > self.stop:
            return
        chosen = self.chosen(step)
        if (step - 1) % self.opts.search_every == 0 and len(chosen) > 1:
            self.search(chosen, step)
        for i in chosen:
            self.mm.surgery(i, self.c[i])


@register_pass
@dataclass(frozen=True)
class OLMP(SurgeryTraining):
    """Layer-wise magnitude pruning whose per-layer thresholds are searched (NCS) under an
    accuracy-loss bound, inside DNS training. Lossy; needs data.

        %y = conv2d(%x, %w, %b)  # conv1     ==>   %y = conv2d(%x, %w', %b')  # conv1
                                                   (%w', %b' masked: pruned entries exact zeros)

    Options (defaults: the released code's, for 30,000 steps of batch 64): ``acc_loss`` the
    bound on the search batch's accuracy drop; ``target_params`` a one-number goal (see the
    module docstring); ``search`` ``ncs`` (published), ``ncs-released`` (the released code's
    rule, which never moves its searchers) or ``random`` (the same budget of samples);
    ``iterations``, ``prune_until``, ``search_every``, ``popsize``, ``evaluations``, ``step``,
    ``step_at``, ``c0``, ``c_max``, ``search_batch``, ``gamma_conv``, ``gamma_fc``, ``lr``,
    ``momentum``, ``weight_decay``, ``batch_size``; ``device`` ``auto`` (CUDA when present).
    """

    name: ClassVar[str] = "olmp"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    acc_loss: float = 0.05
    target_params: float | None = None
    search: Literal["ncs", "ncs-released", "random"] = "ncs"
    iterations: int = 30000
    prune_until: float = 0.5
    search_every: int = 1000
    popsize: int = 10
    evaluations: int = 1600
    step: float = 50.0
    step_at: tuple[float, ...] = (0.0, 1 / 3)
    c0: float = 0.0
    c_max: float = 20.0
    search_batch: int = 1000

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        data = resolve_data(ctx, self.name)
        if self.search not in ("ncs", "ncs-released", "random"):
            raise PassError(f"olmp: unknown search {self.search!r} (ncs, ncs-released, random)")
        if not 0 <= self.acc_loss < 1 or self.search_every < 1 or self.evaluations < self.popsize:
            raise PassError("olmp: acc_loss must be in [0, 1), search_every >= 1, evaluations >= popsize")
        layers = prunable_layers(graph)
        if not layers:
            return PassResult(changed=False, stats={"layers": 0})
        mm = MaskedModel(graph, layers, device_for(self.device))
        batch = search_batch(data, self.search_batch, mm.device)
        hook = SearchSurgery(mm, self, batch, ctx, int(self.prune_until * self.iterations))
        res, before = train_masked(mm, data, hook, self, ctx, desc=self.name)
        c = {mm.layers[i].node: round(v, 4) for i, v in enumerate(hook.c)}
        return finish(mm, ctx, self.name, data, before, res, {
            "search": self.search, "searches": hook.searches, "evaluations": hook.evaluations, "c": c,
            "acc_loss": self.acc_loss})

