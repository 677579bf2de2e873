"""dns: Dynamic Network Surgery (Guo, Yao and Chen, NIPS 2016), weight pruning by per-layer
thresholds with splicing, trained with masks. Lossy; needs data.

Each conv/linear layer has a mask over its weights and bias. With mu the mean and sigma the
standard deviation of the layer's |w| (weights and bias together, taken once at the start) and
``c`` the layer's knob, its threshold is t = max(mu + c * sigma, 0); a surgery step cuts every
weight with |w| <= 0.9 t and splices back every weight with |w| > 1.1 t (between the two the
mask stays as it was: hysteresis). The forward uses the masked weights; the gradient reaches
every weight, cut ones too (straight-through), so a cut weight that grows comes back.

At training step i a layer undergoes surgery with probability (1 + gamma * i)^-1 (``gamma_conv``
for convs, ``gamma_fc`` for linears), until ``prune_until`` of the steps; then the masks freeze
and training goes on. The result is written back as weights with a mask on their params (masked
weights exact zeros): the torch back-end keeps the mask, the ONNX back-end stores them sparse.

Module pieces OLMP builds on: :func:`prunable_layers`, :func:`dns_rule`, :class:`MaskedModel`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from graphc.data import resolve_data
from graphc.errors import PassError
from graphc.ir.graph import Graph
from graphc.registry import Pass, PassContext, PassResult, register_pass
from graphc.training.graph_module import device_for
from graphc.training.graph_module import GraphModule
from graphc.training.hooks import Hook

__all__ = ["DNS", "Layer", "MaskedModel", "SurgeryHook", "dns_rule", "prunable_layers", "threshold",
           "device_for", "kept_table", "MaskedGraphModule", "dns_rule_"]

PRUNABLE = {"conv1d": "conv", "conv2d": "conv", "conv3d": "conv", "linear": "fc"}


@dataclass(frozen=True)
class Layer:
    node: str
    weight: str
    bias: str | None
    kind: str  # "conv" or "fc"
    size: int


def prunable_layers(graph: Graph) -> list[Layer]:
    """Conv and linear nodes whose weight (and bias, when any) are float weight params."""
    out = []
    for n in graph.nodes:
        kind = PRUNABLE.get(n.op)
        if kind is None or len(n.inputs) < 2:
            continue
        w = n.input(1).param
        b = n.input(2).param if len(n.inputs) > 2 else None
        if w is None or w.kind != "weight" or not np.issubdtype(w.data.dtype, np.floating):
            continue
        if len(n.input(1).uses()) != 1 or (len(n.inputs) > 2 and (b is None or b.kind != "weight")):
            continue  # a shared or computed operand is not this layer's alone to prune
        out.append(Layer(n.name, w.name, b.name if b is not None else None, kind,
                         int(w.data.size + (b.data.size if b is not None else 0))))
    return out


def threshold(mu: float, sigma: float, c: float) -> float:
    return max(mu + c * sigma, 0.0)


def dns_rule(w_abs: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    """The surgery: cut at |w| <= 0.9 t, splice at |w| > 1.1 t, keep the mask in between."""
    return dns_rule_(w_abs, mask.clone(), t)


@torch.no_grad()
def dns_rule_(w_abs: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    """:func:`dns_rule` written into the 0/1 ``mask`` itself:
    mask <- max(mask * (1 - [|w| <= 0.9 t]), [|w| > 1.1 t]), comparisons written as 0/1 in
    the mask's dtype. Boolean indexing would gather indices first (a host sync per rule) and
    boolean comparisons and fills are several times slower than these float passes; NaN
    compares false both ways, so a NaN weight keeps its mask, as with indexing."""
    cut = torch.le(w_abs, 0.9 * t, out=torch.empty_like(mask))
    back = torch.gt(w_abs, 1.1 * t, out=torch.empty_like(mask))
    return torch.maximum(mask.addcmul_(mask, cut, value=-1), back, out=mask)


class _StraightThrough(torch.autograd.Function):
    """Forward ``w * mask``; backward hands the gradient to all of ``w`` unchanged, so a cut
    weight keeps learning. One multiply forward and none backward: the straight-through
    estimator written as ``w * m + (w - w.detach()) * (1 - m)`` costs four passes over the
    weights each way."""

    @staticmethod
    def forward(ctx, w, mask):
        return w * mask

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MaskedGraphModule(GraphModule):
    """A :class:`GraphModule` whose forward feeds ``w * mask`` (straight-through) for the
    params in ``masks``; its parameters stay the dense weights the optimiser updates."""

    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.masks: dict[str, torch.Tensor] = {}

    def _apply(self, fn, recurse=True):
        # Masks follow .to(device) / .double() like the weights; the dict is updated in place
        # because MaskedModel holds the same one.
        super()._apply(fn, recurse)
        for name, m in self.masks.items():
            self.masks[name] = fn(m)
        return self

    def feeds(self) -> dict[str, torch.Tensor]:
        params = super().feeds()
        for name, m in self.masks.items():
            params[name] = _StraightThrough.apply(params[name], m)
        return params

    def param(self, name: str) -> torch.Tensor:
        """The weight behind graph param ``name`` as the forward sees it (masked when it has a
        mask; :meth:`MaskedModel.raw` is the dense parameter)."""
        w = super().param(name)
        return _StraightThrough.apply(w, self.masks[name]) if name in self.masks else w

    @torch.no_grad()
    def write_back(self, graph: Graph | None = None) -> None:
        """The masked weights into the graph (masks themselves: :meth:`MaskedModel.write_back`)."""
        graph = graph or self.graph
        super().write_back(graph)
        for name, m in self.masks.items():
            p = graph.params[name]
            p.set_data(np.where(m.detach().cpu().numpy() > 0.5, p.data, np.zeros((), p.data.dtype)))


class MaskedModel:
    """A trainable view of a graph whose prunable layers carry masks.

    Masks start from the params' masks (all kept where none). ``raw(name)`` is the dense weight
    under a mask; ``stats[i]`` the (mu, sigma) of layer i's |w| at construction.
    """

    def __init__(self, graph: Graph, layers: list[Layer], device: torch.device):
        self.graph = graph
        self.layers = layers
        self.module = MaskedGraphModule(graph).to(device)
        self.device = device
        self.masks = self.module.masks
        for layer in layers:
            for name in (layer.weight, layer.bias):
                if name is None:
                    continue
                p = graph.params[name]
                m = torch.ones(p.data.shape) if p.mask is None else torch.from_numpy(p.mask.astype(np.float32))
                self.masks[name] = m.to(device=device, dtype=self.raw(name).dtype)
        self.stats = []
        with torch.no_grad():
            for layer in layers:
                a = torch.cat([self.raw(n).abs().reshape(-1) for n in (layer.weight, layer.bias) if n is not None])
                self.stats.append((float(a.mean()), float(a.std(unbiased=False))))
        self.total = sum(layer.size for layer in layers)

    def raw(self, name: str) -> torch.Tensor:
        """The dense parameter under param ``name``'s mask."""
        return self.module.weights[self.module._index[name]]

    def names(self, i: int) -> list[str]:
        layer = self.layers[i]
        return [n for n in (layer.weight, layer.bias) if n is not None]

    @torch.no_grad()
    def proposal(self, i: int, c: float) -> dict[str, torch.Tensor]:
        """Layer i's masks after one surgery step with knob ``c`` (not applied)."""
        t = threshold(*self.stats[i], c)
        return {n: dns_rule(self.raw(n).abs(), self.masks[n], t) for n in self.names(i)}

    @torch.no_grad()
    def surgery(self, i: int, c: float) -> None:
        t = threshold(*self.stats[i], c)
        for n in self.names(i):
            dns_rule_(self.raw(n).abs(), self.masks[n], t)

    def kept(self, i: int | None = None) -> int:
        names = self.names(i) if i is not None else list(self.masks)
        return int(sum(self.masks[n].count_nonzero() for n in names))  # one host sync, not one per mask

    def fraction(self) -> float:
        return self.kept() / max(1, self.total)

    @torch.no_grad()
    def write_back(self) -> None:
        """Masked weights into the graph, with their masks; the rest of the weights as trained."""
        self.module.write_back(self.graph)  # masked values; set_mask below zeroes the same entries
        for name, m in self.masks.items():
            self.graph.params[name].set_mask(m.detach().cpu().numpy() > 0.5)


class SurgeryHook(Hook):
    """The adaptive surgery as a training hook: at step i each layer is operated on with
    probability (1 + gamma * i)^-1 until ``stop`` steps, with its current knob ``c[i]``."""

    def __init__(self, mm: MaskedModel, c: list[float], gamma_conv: float, gamma_fc: float, stop: int, seed: int):
        self.mm, self.c, self.stop = mm, c, stop
        self.gamma = [gamma_conv if layer.kind == "conv" else gamma_fc for layer in mm.layers]
        self.rng = np.random.default_rng(seed)

    def chosen(self, step: int) -> list[int]:
        draws = self.rng.random(len(self.gamma))
        return [i for i, g in enumerate(self.gamma) if draws[i] < 1.0 / (1.0 + g * step)]

    def after_step(self, model, step, lr):
        if step > self.stop:
            return
        for i in self.chosen(step):
            self.mm.surgery(i, self.c[i])

    def status(self) -> dict:
        f = self.mm.fraction()
        return {"kept": f"{100 * f:.2f}%", "x": f"{1 / max(f, 1e-12):.1f}"}


def kept_table(mm: MaskedModel) -> dict[str, str]:
    """Per layer: kept / total weights (percent)."""
    out = {}
    for i, layer in enumerate(mm.layers):
        k = mm.kept(i)
        out[layer.node] = f"{k}/{layer.size} ({100 * k / max(1, layer.size):.2f}%)"
    return out


def target_count(target: float, total: int, who: str) -> int:
    """``target`` as a number of kept weights: a fraction of ``total`` when <= 1."""
    if target <= 0:
        raise PassError(f"{who}: target-params must be > 0, got {target:g}")
    return int(round(target * total)) if target <= 1 else int(target)


def uniform_c_for(mm: MaskedModel, target: int) -> float:
    """The uniform knob whose one surgery step on the current weights keeps ``target`` weights
    (bisection on c in [-3, 20]; mu + c sigma < 0 keeps everything)."""
    def kept_at(c: float) -> int:
        return sum(int(sum(float(m.sum()) for m in mm.proposal(i, c).values())) for i in range(len(mm.layers)))

    lo, hi = -3.0, 20.0
    if kept_at(hi) > target:
        return hi
    for _ in range(40):
        mid = (lo + hi) / 2
        if kept_at(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class SurgeryTraining(Pass):
    """The options of Dynamic Network Surgery's training that DNS and OLMP share: surgery
    probabilities ``gamma_conv``/``gamma_fc``, SGD (``lr``, ``momentum``, ``weight_decay``,
    ``batch_size``) and the ``device``. Not a pass by itself."""

    gamma_conv: float = 2e-5
    gamma_fc: float = 2e-4
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    device: str = "auto"


@register_pass
@dataclass(frozen=True)
class DNS(SurgeryTraining):
    """Dynamic Network Surgery: per-layer magnitude thresholds t = mu + c sigma with splicing
    (cut at 0.9 t, back above 1.1 t), trained with straight-through masks. Lossy; needs data.

        %y = linear(%x, %w, %b)  # fc1      ==>   %y = linear(%x, %w', %b')  # fc1
                                                  (%w', %b' masked: pruned entries exact zeros)

    ``c`` is the knob of every layer (the hand-set uniform variant; OLMP searches one per
    layer); ``target_params`` (a fraction of the layers' weights when <= 1, else a count)
    replaces it with the uniform c whose first surgery keeps that many. ``iterations`` SGD steps
    of ``batch_size`` (``lr``, ``momentum``, ``weight_decay``, cosine decay), surgery until
    ``prune_until`` of them. ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    name: ClassVar[str] = "dns"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    c: float = 1.0
    target_params: float | None = None
    iterations: int = 30000
    prune_until: float = 0.5

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        data = resolve_data(ctx, self.name)
        layers = prunable_layers(graph)
        if not layers:
            return PassResult(changed=False, stats={"layers": 0})
        mm = MaskedModel(graph, layers, device_for(self.device))
        c = self.c
        if self.target_params is not None:
            c = uniform_c_for(mm, target_count(self.target_params, mm.total, self.name))
        surgery = SurgeryHook(mm, [c] * len(layers), self.gamma_conv, self.gamma_fc,
                              int(self.prune_until * self.iterations), ctx.seed)
        res, before = train_masked(mm, data, surgery, self, ctx, desc=self.name)
        return finish(mm, ctx, self.name, data, before, res, {"c": round(c, 4)})


def train_masked(mm: MaskedModel, data, surgery: Hook, opts, ctx: PassContext, *, desc: str):
    """Train a masked model with a surgery hook (the part DNS and OLMP share): ``opts`` gives
    iterations, lr, momentum, weight_decay, batch_size. Returns the train result and the
    validation accuracy before."""
    from graphc.training import CosineLR, evaluate, train

    if opts.iterations < 1 or not 0 <= opts.prune_until <= 1:
        raise PassError(f"{desc}: iterations must be >= 1 and prune_until in [0, 1]")
    before = evaluate(mm.module, data)
    from graphc.training.loop import distributed_context

    # Under torchrun each rank reads its shard: an epoch has 1/world of the steps.
    world = distributed_context().world
    per_epoch = max(1, math.ceil(len(data.y_train) / (opts.batch_size * world))) if data.tensors else opts.iterations
    res = train(mm.module, data, epochs=math.ceil(opts.iterations / per_epoch), max_steps=opts.iterations,
                lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay, batch_size=opts.batch_size,
                hooks=[surgery, CosineLR()], seed=ctx.seed, quiet=ctx.quiet, desc=desc)
    return res, before


def finish(mm: MaskedModel, ctx: PassContext, who: str, data, before: float, res, stats: dict) -> PassResult:
    layers = kept_table(mm)
    kept = mm.kept()
    mm.write_back()
    ratio = mm.total / max(1, kept)
    ctx.info(f"{who}: {res.steps} steps on {data}; val acc {before:.4f} -> {res.val_acc:.4f}; "
             f"kept {kept}/{mm.total} weights ({ratio:.1f}x)")
    return PassResult(changed=True, stats={
        **stats, "steps": res.steps, "data": str(data), "split": data.split, "device": str(mm.device),
        "acc_before": round(before, 4), "acc_after": round(res.val_acc, 4), "kept": kept, "weights": mm.total,
        "compression": round(ratio, 2), "layers": layers})
