"""The one training loop every training pass uses.

``train(model, data, ...)`` runs mini-batch training with cross-entropy (or a given loss), the
hooks of :mod:`graphc.training.hooks`, a progress bar showing loss and accuracy (silent when
see :mod:`graphc.progress`), and returns the validation accuracy.

Invariants:

- Deterministic: the same seed, data and model give the same weights (shuffling uses its own
  generator seeded from ``seed``; torch's global RNG is reseeded too, for dropout).
- Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the loop joins the process group
  (gloo on CPU, NCCL on CUDA), wraps the model in DistributedDataParallel, shards the training
  set by rank and averages gradients; rank 0 alone draws progress. Hooks run on the bare module
  on every rank, so replicas stay equal after projections too.
- Batches go to the device of the model's weights (move the model to CUDA to train there).
- The model is left in eval mode on return.
- No host sync per step: running loss and accuracy stay on the device and are read (with the
  hooks' ``status``) only when a drawn bar refreshes and at the end of each epoch.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from graphc.data import Data, load_data
from graphc.progress import bar as progress_bar
from graphc.progress import enabled as progress_enabled
from graphc.training.hooks import Hook

__all__ = ["train", "evaluate", "TrainResult", "distributed_context"]

# The bar's figures (running loss and accuracy, the hooks' status) are read from the device
# this often at most: reading them every step forces a host sync per step, and a hook's status
# may be a reduction over every weight.
REFRESH_S = 0.5


@dataclass
class TrainResult:
    steps: int
    epochs: int
    train_loss: float
    train_acc: float
    val_acc: float
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def on(self) -> bool:
        return self.world > 1


def distributed_context() -> _Dist:
    """The process group this process belongs to, joining it when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, *, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of ``model`` on the validation split of ``data`` (a spec, a
    :class:`Data` or an iterable of batches)."""
    loader = data
    if isinstance(data, (str, Data)):
        _, loader = load_data(data).loaders(batch_size)
    was = model.training
    model.eval()
    dev = _device(model)
    correct = total = 0
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        out = model(x)
        correct += int((out.argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was)
    return correct / max(1, total)


def _device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights are: batches are fed there."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    from graphc.errors import InputError

    raise InputError(f"unknown optimizer {name!r}: expected sgd or adam")


def train(
    model: torch.nn.Module,
    data,
    *,
    epochs: float = 1,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    hooks: Sequence[Hook] = (),
    loss_fn: Callable | None = None,
    seed: int = 0,
    quiet: bool = False,
    max_steps: int | None = None,
    desc: str = "train",
    params: Sequence[torch.nn.Parameter] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (a spec string or :class:`Data`).

    ``epochs`` may be fractional (the last epoch stops early); ``max_steps`` caps the total.
    ``params`` restricts what the optimiser updates (default: every parameter that requires
    grad). Returns the last epoch's running loss/accuracy and the validation accuracy.
    """
    data = load_data(data)
    dist = distributed_context()
    torch.manual_seed(seed)
    train_loader, val_loader = data.loaders(batch_size, seed=seed, rank=dist.rank, world=dist.world)
    bare = model
    if dist.on:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(bare)
    loss_fn = loss_fn or F.cross_entropy
    plist = list(params) if params is not None else [p for p in bare.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, plist, lr, momentum, weight_decay)
    try:
        per_epoch = len(train_loader)
    except TypeError:
        per_epoch = None
    n_epochs = max(1, int(-(-epochs // 1)))
    total = max_steps
    if per_epoch is not None:
        budget = int(round(epochs * per_epoch))
        total = budget if max_steps is None else min(budget, max_steps)
    step, history = 0, []
    loss_sum = acc_sum = seen = 0.0
    dev = _device(bare)
    bar = progress_bar(total=total, desc=desc, quiet=quiet or dist.rank != 0)
    live, shown = progress_enabled(quiet or dist.rank != 0), float("-inf")
    try:
        for epoch in range(n_epochs):
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            for h in hooks:
                h.on_epoch(epoch, n_epochs, opt)
            model.train()
            loss_sum = acc_sum = seen = 0.0
            for x, y in train_loader:
                if total is not None and step >= total:
                    break
                x, y = x.to(dev), y.to(dev)
                out = model(x)
                loss = loss_fn(out, y)
                reg = [r for r in (h.regularizer(bare) for h in hooks) if r is not None]
                reg += [r for r in (h.batch_loss(out, x, y) for h in hooks) if r is not None]
                full = loss + sum(reg) if reg else loss
                opt.zero_grad(set_to_none=True)
                full.backward()
                for h in hooks:
                    h.mask_grads(bare)
                opt.step()
                step += 1
                with torch.no_grad():
                    for h in hooks:
                        h.after_step(bare, step, opt.param_groups[0]["lr"])
                n = int(y.numel())
                with torch.no_grad():
                    loss_sum = loss_sum + loss.detach().float() * n
                    acc_sum = acc_sum + (out.argmax(1) == y).sum()
                seen += n
                bar.update(1)
                if live and time.monotonic() - shown >= REFRESH_S:
                    shown = time.monotonic()
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{float(acc_sum) / seen:.3f}",
                                    **{k: v for h in hooks for k, v in h.status().items()})
            loss_sum, acc_sum = float(loss_sum), float(acc_sum)
            history.append({"epoch": epoch, "loss": loss_sum / max(1, seen), "acc": acc_sum / max(1, seen)})
            if total is not None and step >= total:
                break
    finally:
        bar.close()
    val_acc = evaluate(bare, val_loader) if val_loader is not None else float("nan")
    bare.eval()
    return TrainResult(steps=step, epochs=len(history), train_loss=loss_sum / max(1, seen),
                       train_acc=acc_sum / max(1, seen), val_acc=val_acc, history=history)
