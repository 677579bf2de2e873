"""finetune: train every weight of the graph on the data, with or without knowledge distillation
from the source graph. Lossy (it changes weights); needs data.

The pass a lossy pipeline ends with: equal fine-tune budgets (``epochs``, ``lr``, optimiser)
are how graphc compares compression methods. The graph's structure is untouched.

- ``distill=source``: the teacher is the graph as the pipeline received it (the manager keeps a
  copy, ``ctx.source``, because this pass declares ``wants_source``); the loss is cross-entropy
  plus ``distill_weight * T^2 * KL(teacher_T || student_T)`` at temperature ``temperature``
  (Hinton et al., 2015). The teacher must have the same inputs and the same output shape.
- ``recalibrate=N`` (default 0, off): before training, re-estimate every BatchNorm's running
  statistics on N training batches (:func:`graphc.training.recalibrate_bn`). graphc trains BN in
  its inference form, so statistics made stale by pruning stay stale without it; the accuracy
  right after the recalibration is in the stats (``acc_recalibrated``).
- ``hold_zeros`` (default on): weights that are exactly zero before the fine-tune stay zero
  (weight masks of ``dns``/``olmp`` and the zeros any pruning left), so the fine-tune never
  undoes the sparsity a pipeline made; off, every weight trains.

Invariants: params keep their names, shapes and dtypes; validation accuracy before and after
(on the data's held-out split, named in the stats) is in the stats; CUDA when present
(``device=auto``); under torchrun the shared loop shards the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from graphc.data import resolve_data
from graphc.errors import PassError
from graphc.ir.graph import Graph
from graphc.registry import Pass, PassContext, PassResult, register_pass
from graphc.training.backoff import Backoff, finite

__all__ = ["Finetune"]


@register_pass
@dataclass(frozen=True)
class Finetune(Pass):
    """Fine-tune every weight on the data (``distill=source``: with knowledge distillation from
    the pipeline's input graph). Lossy; needs data.

        %y = conv2d(%x, %w, %b)   ==>   %y = conv2d(%x, %w', %b')   (same graph, trained weights)

    Defaults: ``epochs=2``, SGD ``lr=0.01`` with ``momentum=0.9``, ``batch_size=64``,
    ``weight_decay=0``, a cosine learning-rate decay (``cosine=true``); ``distill=none``;
    ``temperature=4`` and ``distill_weight=1`` when distilling; ``hold_zeros=true``;
    ``recalibrate=0`` (N > 0: BN statistics re-estimated on N training batches first).
    """

    name: ClassVar[str] = "finetune"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    epochs: float = 2.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    cosine: bool = True
    max_steps: int = 0
    distill: Literal["none", "source"] = "none"
    temperature: float = 4.0
    distill_weight: float = 1.0
    hold_zeros: bool = True
    recalibrate: int = 0
    device: str = "auto"

    @property
    def wants_source(self) -> bool:
        return self.distill == "source"

    def _check(self) -> None:
        bad = [f"{k} must be > 0, got {v}" for k, v in (("epochs", self.epochs), ("lr", self.lr),
                                                          ("batch_size", self.batch_size),
                                                          ("temperature", self.temperature)) if not v > 0]
        bad += [f"{k} must be >= 0, got {v}" for k, v in (("distill_weight", self.distill_weight),
                                                           ("weight_decay", self.weight_decay),
                                                           ("max_steps", self.max_steps),
                                                           ("recalibrate", self.recalibrate)) if not v >= 0]
        if bad:
            raise PassError(f"{self.name}: {'; '.join(bad)}")

    def _teacher(self, graph: Graph, ctx: PassContext, device: torch.device):
        from graphc.backends.torch import emit_torch

        src = ctx.source
        if src is None:
            raise PassError(f"{self.name}(distill=source): no source graph to distil from (run it in a "
                            "pipeline, or give PassContext(source=...))")
        if len(src.inputs) != len(graph.inputs) or [v.shape[1:] for v in src.outputs] != [
                v.shape[1:] for v in graph.outputs]:
            raise PassError(f"{self.name}(distill=source): the source graph's inputs/outputs do not match "
                            "this graph's, so it cannot be the teacher")
        teacher = emit_torch(src).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        self._check()
        data = resolve_data(ctx, self.name)
        from graphc.training import CosineLR, Distill, Projection, evaluate, train
        from graphc.training.graph_module import device_for, graph_module_on

        device = device_for(self.device)
        teacher = self._teacher(graph, ctx, device) if self.distill == "source" else None
        before = evaluate(graph_module_on(graph, device), data)
        classes = graph.outputs[0].shape[-1]

        def attempt(lr):
            # Each try starts from the graph's weights: a diverged run (see _diverged) scores
            # about chance and would otherwise be written back as the "fine-tuned" model.
            module = graph_module_on(graph, device)
            hooks = []
            if self.cosine:
                hooks.append(CosineLR())
            if teacher is not None:
                hooks.append(Distill(teacher, self.temperature, self.distill_weight))
            held = 0
            if self.hold_zeros:
                masks = [(w, (w != 0).to(w.dtype)) for w in module.weights]
                masks = [(w, m) for w, m in masks if not bool(m.all())]
                held = sum(int(m.numel() - m.sum()) for _, m in masks)
                if masks:
                    def hold(_m, _lr):
                        for w, m in masks:
                            w.mul_(m)
                    hooks.append(Projection(hold))
            recal = {}
            if self.recalibrate > 0:
                from graphc.training import recalibrate_bn

                r = recalibrate_bn(module, data, self.recalibrate, batch_size=self.batch_size, seed=ctx.seed)
                recal = {"recalibrated_bn": r["bn"], "acc_recalibrated": round(evaluate(module, data), 4)}
            res = train(module, data, epochs=self.epochs, lr=lr, optimizer=self.optimizer, momentum=self.momentum,
                        weight_decay=self.weight_decay, batch_size=self.batch_size, hooks=hooks, seed=ctx.seed,
                        quiet=ctx.quiet, max_steps=self.max_steps or None, desc=self.name)
            return (module, res, held, recal), _diverged(module, before, res.val_acc, classes), res.steps

        backoff = Backoff(self.name, self.lr, ctx.info)
        module, res, held, recal = backoff.run(attempt)
        recal = {**recal, **backoff.stats()}
        module.write_back(graph)
        ctx.info(f"{self.name}: {res.steps} steps on {data}; val acc {before:.4f} -> {res.val_acc:.4f}")
        return PassResult(changed=res.steps > 0, stats={
            "steps": res.steps, "epochs": self.epochs, "data": str(data), "split": data.split, "device": str(device),
            "distill": self.distill, "zeros_held": held, "acc_before": round(before, 4),
            "acc_after": round(res.val_acc, 4), **recal})


def _diverged(module, before: float, after: float, classes) -> str | None:
    """Why a fine-tune run counts as diverged, or None: its weights went non-finite, or its
    validation accuracy ended with less than half of the margin over chance (1 / classes) that
    it started from. A rate that suits the model lowers the training loss; one that overshoots
    drives the network to a constant output (chance accuracy, finite weights when the ReLUs
    die) or to NaN. The test is on the held-out split the pass reports anyway, and a starting
    model at chance (nothing to lose) never trips it."""
    if not finite(module.parameters()):
        return "non-finite weights"
    chance = 1.0 / classes if isinstance(classes, int) and classes > 1 else 0.0
    if before - chance > 0.05 and after - chance < 0.5 * (before - chance):
        return f"validation accuracy {before:.4f} -> {after:.4f}, chance {chance:.4f}"
    return None
