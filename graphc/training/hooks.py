"""Hooks: how a training pass shapes the shared loop without owning one.

A hook may add a regularizer term to the loss, mask gradients before the optimiser step,
project the weights after it (proximal operators, ADMM projections) and change the learning
rate at epoch boundaries. The loop calls every hook at each point in the order given.

Invariant: ``after_step`` runs on the bare module (never the DistributedDataParallel wrapper)
on every rank with the same weights and the same arguments, so a deterministic projection
keeps replicas equal.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


class Hook:
    """Base hook: every method is a no-op."""

    def regularizer(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A term added to the loss (differentiable), or None."""
        return None

    def batch_loss(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """A term added to the loss that depends on the batch (``out`` the model's output on
        inputs ``x`` with labels ``y``), e.g. distillation from a teacher; or None."""
        return None

    def mask_grads(self, model: torch.nn.Module) -> None:
        """Edit ``p.grad`` in place before the optimiser step."""

    def after_step(self, model: torch.nn.Module, step: int, lr: float) -> None:
        """Edit weights in place after the optimiser step (under ``torch.no_grad``)."""

    def on_epoch(self, epoch: int, epochs: int, optimizer: torch.optim.Optimizer) -> None:
        """Called before each epoch (schedules)."""

    def status(self) -> dict:
        """Figures the progress bar shows beside loss and accuracy (e.g. compression)."""
        return {}


class Regularizer(Hook):
    """Adds ``fn(model)`` to the loss."""

    def __init__(self, fn: Callable[[torch.nn.Module], torch.Tensor]):
        self.fn = fn

    def regularizer(self, model):
        return self.fn(model)


class Projection(Hook):
    """Calls ``fn(model, lr)`` after every optimiser step (a proximal or ADMM projection)."""

    def __init__(self, fn: Callable[[torch.nn.Module, float], None]):
        self.fn = fn

    def after_step(self, model, step, lr):
        self.fn(model, lr)


class Distill(Hook):
    """Knowledge distillation: adds ``weight * T^2 * KL(softmax(teacher(x)/T) || softmax(out/T))``
    to the loss (Hinton et al.'s soft-target term; the T^2 keeps its gradient scale independent
    of the temperature). ``teacher`` is called without gradients on the batch's inputs."""

    def __init__(self, teacher: Callable[[torch.Tensor], torch.Tensor], temperature: float = 4.0,
                 weight: float = 1.0):
        self.teacher = teacher
        self.t = float(temperature)
        self.weight = float(weight)

    def batch_loss(self, out, x, y):
        import torch.nn.functional as F

        with torch.no_grad():
            soft = F.log_softmax(self.teacher(x) / self.t, dim=1)
        kl = F.kl_div(F.log_softmax(out / self.t, dim=1), soft, reduction="batchmean", log_target=True)
        return self.weight * self.t * self.t * kl


class GradMask(Hook):
    """Zeroes the gradient where ``mask`` is 0, per parameter (pruned weights stay pruned
    under plain SGD; pair with a projection when momentum or weight decay is on)."""

    def __init__(self, masks: dict[torch.nn.Parameter, torch.Tensor]):
        self.masks = masks

    def mask_grads(self, model):
        for p, m in self.masks.items():
            if p.grad is not None:
                p.grad.mul_(m)


class CosineLR(Hook):
    """Cosine learning-rate decay per epoch from the optimiser's initial rate to ``floor``."""

    def __init__(self, floor: float = 0.0):
        self.floor = floor
        self.base: list[float] | None = None

    def on_epoch(self, epoch, epochs, optimizer):
        if self.base is None:
            self.base = [g["lr"] for g in optimizer.param_groups]
        t = epoch / max(1, epochs)
        for g, b in zip(optimizer.param_groups, self.base):
            g["lr"] = self.floor + (b - self.floor) * 0.5 * (1 + math.cos(math.pi * t))
