"""edp-train: EDP's one training stage, group lasso on the coefficient layers of the pairs made
by ``decompose``, applied as a proximal step after every optimiser step. Lossy; needs data.

For a pair with coefficient matrix A (n x m, the 1x1 conv or linear weight) and bias b:

- column group j, A[:, j]: shrunk by ``lr * lambda_col * sqrt(n)`` in norm after each step; a
  zero column leaves basis filter j unused, so the rank falls;
- row group i, (A[i, :], b[i]): shrunk by ``lr * lambda_row * sqrt(m + 1)``; a zero row makes
  output channel i exactly zero, so the channel can be pruned through its channel group.

Each shrink is the exact proximal operator of its group-lasso term; the two run one after the
other (the overlapping column/row penalty has no closed-form proximal operator). Groups whose
norm falls under the threshold become exact zeros, which ``prune-merge`` then removes exactly.

Invariants: the graph's structure is untouched (only weight values change); training runs on a
torch module of the graph built from the op table's torch semantics and the weights are written
back into the IR params; validation accuracy before and after is in the stats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from graphc.data import resolve_data
from graphc.ir.graph import Graph
from graphc.passes.decompose import Pair, find_pairs
from graphc.registry import Pass, PassContext, PassResult, register_pass

__all__ = ["EDPTrain", "group_shrink", "pair_sparsity"]


@torch.no_grad()
def group_shrink(a: torch.Tensor, bias: torch.Tensor | None, t_col: float, t_row: float) -> None:
    """In place: block soft-thresholding of A's columns by ``t_col * sqrt(n)`` then of the rows
    (A[i, :], b[i]) by ``t_row * sqrt(m + 1)``; ``a`` is n x m (x 1 x 1)."""
    mat = a.view(a.shape[0], a.shape[1])
    n, m = mat.shape
    if t_col > 0:
        norms = mat.norm(dim=0)
        scale = torch.clamp(1 - t_col * math.sqrt(n) / norms.clamp_min(1e-30), min=0)
        mat.mul_(scale[None, :])
    if t_row > 0:
        sq = mat.pow(2).sum(dim=1)
        if bias is not None:
            sq = sq + bias.pow(2)
        scale = torch.clamp(1 - t_row * math.sqrt(m + (bias is not None)) / sq.sqrt().clamp_min(1e-30), min=0)
        mat.mul_(scale[:, None])
        if bias is not None:
            bias.mul_(scale)


def pair_sparsity(pair: Pair) -> tuple[int, int, int, int]:
    """(zero columns, columns, zero rows, rows) of a pair's coefficient matrix; a row counts as
    zero only when its bias is zero too."""
    a = pair.coef.input(1).param.data
    mat = a.reshape(a.shape[0], a.shape[1])
    zc = int((~mat.any(axis=0)).sum())
    rows = ~mat.any(axis=1)
    if len(pair.coef.inputs) > 2:
        rows &= pair.coef.input(2).param.data == 0
    return zc, mat.shape[1], int(rows.sum()), mat.shape[0]


@register_pass
@dataclass(frozen=True)
class EDPTrain(Pass):
    """Group-lasso training of EDP pairs (columns and rows of the coefficient layers) with a
    proximal step after each optimiser step. Lossy; needs data.

        %t = conv2d(%x, %B)  # c1.basis          %t = conv2d(%x, %B')  # c1.basis
        %y = conv2d(%t, %A, %b)  # c1      ==>   %y = conv2d(%t, %A', %b')  # c1
                                                 (whole columns / rows of A' exactly zero)

    Defaults (the paper's exact values are not published; these suit LeNet-scale models on
    MNIST/digits in a few epochs): ``lambda_col=0.01``, ``lambda_row=0.005``, ``epochs=8``,
    SGD ``lr=0.02`` with ``momentum=0.9``, ``batch_size=64``, ``weight_decay=0``. Every weight
    of the graph trains (``train_all``); with ``train_all=false`` only the pairs do. Then
    ``finetune=2`` epochs at ``finetune_lr=0.25`` x ``lr`` with the zero groups held at zero
    recover the accuracy the shrinkage cost (0 turns the fine-tune off).
    ``no_data``: what to do without data: ``error`` (a DataError) or ``svd``: the data-free
    variant (see ``svd-truncate``: per pair, keep the top singular directions holding
    ``energy`` of the squared spectrum), which says so in its stats and the log.
    """

    name: ClassVar[str] = "edp-train"
    exact: ClassVar[bool] = False
    uses_data: ClassVar[bool] = True  # trains on data whenever some is given

    lambda_col: float = 0.01
    lambda_row: float = 0.005
    epochs: float = 8.0
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    train_all: bool = True
    max_steps: int = 0
    finetune: float = 2.0
    finetune_lr: float = 0.25
    no_data: Literal["error", "svd"] = "error"
    energy: float = 0.95

    @property
    def needs_data(self) -> bool:  # the data-free variant lets the manager run it without data
        return self.no_data == "error"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs = find_pairs(graph)
        if not pairs:
            return PassResult(changed=False, stats={"pairs": 0})
        if ctx.data is None and self.no_data == "svd":
            from graphc.passes.edp import svd_truncate

            return svd_truncate(graph, pairs, self.energy, ctx, who=self.name)
        data = resolve_data(ctx, self.name)
        from graphc.training import Projection, evaluate, train
        from graphc.training.graph_module import GraphModule

        module = GraphModule(graph)
        groups = []
        for p in pairs:
            a = module.param(p.coef.input(1).name)
            b = module.param(p.coef.input(2).name) if len(p.coef.inputs) > 2 else None
            groups.append((a, b))

        def prox(_m, lr):
            for a, b in groups:
                group_shrink(a, b, lr * self.lambda_col, lr * self.lambda_row)

        params = None if self.train_all else [t for g in groups for t in g if t is not None] + [
            module.param(p.basis.input(1).name) for p in pairs]
        before = evaluate(module, data)
        res = train(module, data, epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                    momentum=self.momentum, weight_decay=self.weight_decay, batch_size=self.batch_size,
                    hooks=[Projection(prox)], seed=ctx.seed, quiet=ctx.quiet,
                    max_steps=self.max_steps or None, desc=self.name, params=params)
        steps = res.steps
        if self.finetune > 0:
            # Fine-tune with the zero groups held at zero: recovers the lasso's shrinkage bias
            # on the surviving weights without bringing pruned groups back.
            masks = [((a != 0).to(a.dtype), None if b is None else (b != 0).to(b.dtype)) for a, b in groups]

            def hold(_m, lr):
                for (a, b), (ma, mb) in zip(groups, masks):
                    a.mul_(ma)
                    if b is not None:
                        b.mul_(mb)

            res = train(module, data, epochs=self.finetune, lr=self.lr * self.finetune_lr, optimizer=self.optimizer,
                        momentum=self.momentum, weight_decay=self.weight_decay, batch_size=self.batch_size,
                        hooks=[Projection(hold)], seed=ctx.seed + 1, quiet=ctx.quiet,
                        desc=f"{self.name} fine-tune", params=params)
            steps += res.steps
        module.write_back(graph)
        layers = {}
        zc = zr = cols = rows = 0
        for p in pairs:
            c, nc, r, nr = pair_sparsity(p)
            layers[p.name] = f"cols {nc - c}/{nc}, rows {nr - r}/{nr}"
            zc, cols, zr, rows = zc + c, cols + nc, zr + r, rows + nr
        ctx.info(f"{self.name}: {steps} steps on {data}; val acc {before:.4f} -> {res.val_acc:.4f}; "
                 f"zero columns {zc}/{cols}, zero rows {zr}/{rows}")
        return PassResult(changed=True, stats={
            "pairs": len(pairs), "steps": steps, "data": str(data), "acc_before": round(before, 4),
            "acc_after": round(res.val_acc, 4), "zero_cols": zc, "cols": cols, "zero_rows": zr, "rows": rows,
            "layers": layers})
