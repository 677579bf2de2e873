"""unify: micro-structured weight unification and pruning trained in with ADMM (Lin, Jiang et
al., arXiv 2106.08301). Lossy; needs data.

Within a unified block (see :mod:`graphc.passes.unify_blocks` for the shapes) all weights share
one absolute value and keep their own signs; a block whose value is zero is pruned. The hard
constraint is trained in with ADMM on the scaled form:

    W-step:  SGD on  loss(W) + sum_layers rho/2 ||W - Z + U||^2
    Z-step:  Z = Proj(W + U)     (the exact Euclidean projection, every ``admm_every`` steps)
    U-step:  U = U + W - Z,      rho = min(rho * rho_growth, rho_max)

then W is hard-projected (Z = Proj(W)) and fine-tuned with the structure held: after every
step each unified block is projected onto its own fixed sign pattern (s <s, w> / k), pruned
blocks back to zero, free blocks untouched. ``method=oneshot`` skips ADMM: hard projection,
then fine-tune for the same total number of epochs (``epochs + finetune``), the baseline
ADMM has to beat. ``epochs=0,finetune=0`` is the data-free mode: the projection alone.

Budgets are per layer (every conv/linear whose weight the block shape tiles; the others are
listed in ``stats["skipped"]`` with the reason): ``ratio`` of the blocks are constrained
(unified, the pruned ones included) and ``prune_ratio`` of them pruned. ``target_params`` (the
fraction of the layers' weights left non-zero) sets ``prune_ratio = 1 - target_params``;
``target_bits`` (bits per conv/linear weight as stored, the unconstrained layers at 32;
:func:`graphc.backends.onnx_unify.planned_bits`) sets the least ``prune_ratio`` whose encoding
meets it. The paper's schedules are not
published: Z-steps every quarter epoch (``admm_every=0``); rho grows geometrically from ``rho``
to ``rho_max`` over the ADMM epochs (``rho_growth=0``; a number >= 1 sets the factor per
Z-step instead), so the penalty is weak while the weights find their blocks and strong at the
end, when the hard projection must cost little. The defaults (0.01 -> 3) were chosen on
LeNet-5 at two ADMM epochs: with rho-max 0.1, ||W - Z|| / ||W|| did not shrink (0.80 -> 0.85);
with 3 it fell to 0.05.

The pass marks every unified node with ``[unify="<block>"]``; the ONNX back-end stores those
weights as one value per block plus packed sign bits (:mod:`graphc.backends.onnx_unify`), and
``unify-realize`` rewrites shared-pattern convs into fewer MACs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from graphc.data import resolve_data
from graphc.ir.graph import Graph
from graphc.passes.dns import device_for, prunable_layers
from graphc.passes.unify_blocks import MAX_SHARED_K, BlockSpec, apply_structure, parse_block, project
from graphc.registry import Pass, PassContext, PassResult, register_pass
from graphc.training.hooks import Hook

__all__ = ["Unify", "UnifyLayer", "unify_layers", "AdmmHook"]

@dataclass
class UnifyLayer:
    node: str
    weight: str
    spec: BlockSpec
    n_blocks: int
    n_unify: int
    n_prune: int


def layer_spec(op: str, block: BlockSpec, linear_block: int) -> BlockSpec:
    if op == "linear":  # linear_block 0: the cin block's k, or 4 beside kernel blocks
        k = linear_block or (block.k if block.kind == "cin" else 4)
        return BlockSpec("cin", k, block.shared and k <= MAX_SHARED_K)
    return block


def unify_layers(graph: Graph, block: BlockSpec, linear_block: int, ratio: float, prune: float):
    """(layers the block shape tiles with their budgets, {node: why skipped})."""
    layers, skipped = [], {}
    for layer in prunable_layers(graph):
        node = graph.node(layer.node)
        shape = tuple(graph.params[layer.weight].data.shape)
        spec = layer_spec(node.op, block, linear_block)
        why = spec.why_not(shape)
        if why is not None:
            skipped[layer.node] = why
            continue
        n = int(np.prod(shape)) // spec.block_size(shape)
        n_prune = int(round(prune * n))
        n_con = max(n_prune, int(round(ratio * n)))
        layers.append(UnifyLayer(layer.node, layer.weight, spec, n, n_con - n_prune, n_prune))
    return layers, skipped


class AdmmHook(Hook):
    """ADMM's penalty (a regularizer) and its Z/U updates (after every ``every`` steps)."""

    def __init__(self, weights, layers, rho: float, growth: float, rho_max: float, every: int):
        self.w, self.layers = weights, layers
        self.rho, self.growth, self.rho_max, self.every = rho, growth, rho_max, every
        self.u = [torch.zeros_like(w) for w in weights]
        self.z = [project(w.detach(), L.spec, L.n_unify, L.n_prune).z for w, L in zip(weights, layers)]
        self.history: list[float] = [self.gap()]

    def gap(self) -> float:
        """||W - Z|| / ||W|| over all layers: how far the weights are from the constraint."""
        num = sum(float(((w.detach() - z) ** 2).sum()) for w, z in zip(self.w, self.z))
        den = sum(float((w.detach() ** 2).sum()) for w in self.w)
        return math.sqrt(num / max(den, 1e-30))

    def regularizer(self, model):
        return 0.5 * self.rho * sum(((w - z + u) ** 2).sum() for w, z, u in zip(self.w, self.z, self.u))

    def after_step(self, model, step, lr):
        if step % self.every:
            return
        for i, (w, L) in enumerate(zip(self.w, self.layers)):
            self.z[i] = project(w.detach() + self.u[i], L.spec, L.n_unify, L.n_prune).z
            self.u[i] += w.detach() - self.z[i]
        self.history.append(self.gap())
        rho = min(self.rho * self.growth, self.rho_max)
        for u in self.u:  # the scaled dual is y / rho: it shrinks as rho grows
            u.mul_(self.rho / rho)
        self.rho = rho

    def status(self):
        return {"rho": f"{self.rho:.3g}", "gap": f"{self.history[-1]:.3f}"}


def _quarter_epoch(data, batch_size: int) -> int:
    """Steps in a quarter of an epoch (of this rank's shard under torchrun)."""
    from graphc.training.loop import distributed_context

    if not data.tensors:
        return 100
    world = distributed_context().world
    return max(1, math.ceil(len(data.y_train) / (batch_size * world)) // 4)


@register_pass
@dataclass(frozen=True)
class Unify(Pass):
    """Micro-structured weight unification (+ pruning) trained in with ADMM, then a hard
    projection and a fine-tune with the structure held. Lossy; needs data.

        %y = conv2d(%x, %w)  # c1      ==>   %y = conv2d(%x, %w') [unify="cin4"]  # c1
                                              (each block of 4 input channels at one tap of one
                                               filter of %w': one |value| and own signs, or 0)

    ``block``: ``cin<k>`` (k consecutive input channels at one tap of one filter), ``kernel``
    (a whole kernel), either with ``-shared`` (one sign pattern per group, realizable by
    ``unify-realize``); linear layers use ``cin<linear_block>`` row blocks (0: the cin block's k,
    4 beside kernel blocks). ``ratio``: share of blocks constrained; ``prune_ratio``: share of
    blocks pruned (<= ratio); or
    ``target_params`` / ``target_bits`` instead of ``prune_ratio``. ADMM for ``epochs``: a
    Z-step every ``admm_every`` steps (0: a quarter epoch), rho from ``rho`` to ``rho_max``
    (geometric over the epochs, or x ``rho_growth`` per Z-step); then ``finetune`` epochs at
    ``finetune_lr`` x ``lr``. ``method=oneshot`` replaces ADMM by the hard projection (same
    total epochs); ``epochs=0,finetune=0``: the projection alone, no data. SGD ``lr``,
    ``momentum``, ``batch_size``, cosine decay; ``device``: ``auto`` (CUDA when present),
    ``cpu``, ``cuda``.
    """

    name: ClassVar[str] = "unify"
    exact: ClassVar[bool] = False

    @property
    def needs_data(self) -> bool:  # epochs=0,finetune=0 is the data-free projection alone
        return self.epochs + self.finetune > 0

    block: str = "cin4"
    linear_block: int = 0
    ratio: float = 1.0
    prune_ratio: float = 0.0
    target_params: float | None = None
    target_bits: float | None = None
    method: Literal["admm", "oneshot"] = "admm"
    rho: float = 1e-2
    rho_growth: float = 0.0
    rho_max: float = 3.0
    admm_every: int = 0
    epochs: float = 4.0
    finetune: float = 2.0
    finetune_lr: float = 0.3
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self):
        parse_block(self.block)
        if self.linear_block == 1 or not 0 <= self.linear_block <= 64:
            raise ValueError(f"unify: linear-block must be 0 (as the block) or in [2, 64], got {self.linear_block}")
        if not 0 <= self.prune_ratio <= self.ratio <= 1:
            raise ValueError(f"unify: need 0 <= prune-ratio <= ratio <= 1, got prune-ratio={self.prune_ratio:g}, "
                             f"ratio={self.ratio:g}")
        if self.target_params is not None and not 0 < self.target_params <= 1:
            raise ValueError(f"unify: target-params is the fraction of weights kept, in (0, 1], got {self.target_params:g}")
        if self.target_params is not None and self.target_bits is not None:
            raise ValueError("unify: give target-params or target-bits, not both")
        if self.target_bits is not None and not self.target_bits > 0:
            raise ValueError(f"unify: target-bits must be > 0 bits per weight, got {self.target_bits:g}")
        if self.method not in ("admm", "oneshot"):
            raise ValueError(f"unify: method must be admm or oneshot, got {self.method!r}")
        if self.rho <= 0 or not (self.rho_growth == 0 or self.rho_growth >= 1) or self.rho_max < self.rho \
                or self.admm_every < 0:
            raise ValueError("unify: need rho > 0, rho-growth 0 (auto) or >= 1, rho-max >= rho and admm-every >= 0")
        if self.epochs < 0 or self.finetune < 0:
            raise ValueError("unify: epochs and finetune must be >= 0")

    def _prune_ratio(self, graph: Graph, block: BlockSpec) -> float:
        if self.target_params is not None:
            return min(self.ratio, 1.0 - self.target_params)
        if self.target_bits is None:
            return self.prune_ratio
        from graphc.backends.onnx_unify import planned_bits

        lo, hi = 0.0, self.ratio
        if planned_bits(*unify_layers(graph, block, self.linear_block, self.ratio, hi)[:1], graph) > self.target_bits:
            from graphc.errors import PassError

            raise PassError(f"unify: target-bits={self.target_bits:g} is below what pruning every constrained "
                            f"block stores with block={self.block}")
        for _ in range(30):
            mid = (lo + hi) / 2
            layers, _ = unify_layers(graph, block, self.linear_block, self.ratio, mid)
            lo, hi = (mid, hi) if planned_bits(layers, graph) > self.target_bits else (lo, mid)
        return hi

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphc.training import CosineLR, Projection, evaluate, train
        from graphc.training.graph_module import graph_module_on

        data = resolve_data(ctx, self.name) if self.needs_data or ctx.data is not None else None
        block = parse_block(self.block)
        prune = self._prune_ratio(graph, block)
        layers, skipped = unify_layers(graph, block, self.linear_block, self.ratio, prune)
        if not layers:
            return PassResult(changed=False, stats={"layers": 0, "skipped": skipped})
        device = device_for(self.device)
        module = graph_module_on(graph, device)
        weights = [module.param(L.weight) for L in layers]
        common = dict(momentum=self.momentum, weight_decay=self.weight_decay, batch_size=self.batch_size,
                      quiet=ctx.quiet)

        def acc() -> float:
            return float("nan") if data is None else evaluate(module, data)

        before = acc()
        steps, admm_acc, gaps = 0, None, []
        if self.method == "admm" and self.epochs > 0:
            every = self.admm_every or _quarter_epoch(data, self.batch_size)
            growth = self.rho_growth
            if growth == 0:  # geometric from rho to rho-max over the Z-steps of the ADMM epochs
                z_steps = max(1, int(self.epochs * 4 * _quarter_epoch(data, self.batch_size) / every) - 1)
                growth = (self.rho_max / self.rho) ** (1 / z_steps)
            admm = AdmmHook(weights, layers, self.rho, growth, self.rho_max, every)
            res = train(module, data, epochs=self.epochs, lr=self.lr, hooks=[admm, CosineLR()], seed=ctx.seed,
                        desc=f"{self.name} admm", **common)
            steps, admm_acc, gaps = res.steps, res.val_acc, admm.history
        ft_epochs = self.finetune + (self.epochs if self.method == "oneshot" else 0)
        structure = []
        with torch.no_grad():
            for w, L in zip(weights, layers):
                p = project(w, L.spec, L.n_unify, L.n_prune)
                w.copy_(p.z)
                structure.append((p.cls, p.signs))
        projected = acc()
        after = projected
        if ft_epochs > 0:
            def hold(_m, _lr):
                for w, L, (cls, signs) in zip(weights, layers, structure):
                    w.copy_(apply_structure(w, L.spec, cls, signs))

            res = train(module, data, epochs=ft_epochs, lr=self.lr * self.finetune_lr,
                        hooks=[Projection(hold), CosineLR()], seed=ctx.seed + 1,
                        desc=f"{self.name} fine-tune", **common)
            steps, after = steps + res.steps, res.val_acc
        module.write_back(graph)
        table, con, pru, tot = {}, 0, 0, 0
        for L, (cls, _) in zip(layers, structure):
            graph.node(L.node).meta["unify"] = str(L.spec)
            nu, np_ = int((cls == 1).sum()), int((cls == 2).sum())
            table[L.node] = (f"{L.spec}: unified {100 * nu / L.n_blocks:.1f}%, pruned {100 * np_ / L.n_blocks:.1f}% "
                             f"of {L.n_blocks} blocks")
            con, pru, tot = con + nu, pru + np_, tot + L.n_blocks
        from graphc.backends.onnx_unify import graph_bits, unified_cost

        bits = graph_bits(graph)
        cost = unified_cost(graph)
        ctx.info(f"{self.name}: {steps} steps on {data}; val acc {before:.4f} -> {after:.4f} "
                 f"(after hard projection {projected:.4f}); {bits['bits_per_weight']:.2f} bits per weight")
        return PassResult(changed=True, stats={
            "method": self.method, "block": str(block), "prune_ratio": round(prune, 4), "steps": steps,
            "data": str(data), "split": getattr(data, "split", None), "device": str(device),
            "acc_before": round(before, 4),
            "acc_admm": None if admm_acc is None else round(admm_acc, 4), "acc_projected": round(projected, 4),
            "acc_after": round(after, 4), "unified_blocks": con, "pruned_blocks": pru, "blocks": tot,
            "gap_history": [round(g, 5) for g in gaps], "bits_per_weight": round(bits["bits_per_weight"], 3),
            "layers": table, "skipped": skipped,
            # what the block form needs per inference (y = v * sum(s_i x_i)) beside the dense MACs a
            # standard kernel computes from the decoded weight; realised only by unify-realize
            "macs_dense": sum(c["dense_macs"] for c in cost.values()),
            "multiplies": sum(c["multiplies"] for c in cost.values()),
            "adds": sum(c["adds"] for c in cost.values())})
