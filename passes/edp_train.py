"""edp-train: EDP's one training stage, group lasso on the coefficient layers of the pairs made
by ``decompose``, applied as a proximal step after every optimiser step. Lossy; needs data.

For a pair with coefficient matrix A (n x m, the 1x1 conv or linear weight) and bias b:

- column group j, A[:, j]: shrunk by ``lr * lambda_col * w_col * sqrt(n)`` in norm after each
  step; a zero column leaves basis filter j unused, so the rank falls;
- row group i, (A[i, :], b[i]): shrunk by ``lr * lambda_row * w_row * sqrt(m + 1)``; a zero row
  makes output channel i exactly zero, so the channel can be pruned through its channel group.

Each shrink is the exact proximal operator of its group-lasso term; the two run one after the
other (the overlapping column/row penalty has no closed-form proximal operator). Groups whose
norm falls under the threshold become exact zeros, which ``prune-merge`` then removes exactly.
``w_col``/``w_row`` are 1 (``weighting=uniform``) or what the group costs over the mean
group's: MACs (``macs``), weights (``params``) or the mean of both ratios (``cost``; see
:mod:`graphc.passes.edp_groups`). The default, ``auto``, is ``params`` under a params target
alone (each group is then shrunk in proportion to the weights it frees, so the search spends
the lasso where the weights are instead of on MACs-heavy convs whose weights are few) and
``cost`` otherwise (under a MACs target, MACs-only weighting was not better on LeNet-5:
docs/edp_ablations.md); rows that cannot be removed
(a frozen channel group: the classifier's outputs) carry no penalty either way.

Collapse guard: a shrink that would leave a pair with fewer than ``min_rank`` nonzero columns
(or ``min_channels`` nonzero rows) spares the strongest ones from that step instead; such pairs
are named in ``stats["collapse_bounded"]`` and the log (``min-rank=0,min-channels=0`` allows a
layer to vanish).

Targets (``target_macs`` / ``target_params``: a fraction of the unpruned model's cost when
<= 1, an absolute count above): the lasso strength is found by a geometric bisection over a
common factor s of both lambdas (s = 1 first, x4 / /4 until the target is bracketed, then the
geometric mean), each evaluation one lasso run from the same weights. A run measures its cost
(a copy pruned and merged, then the cost model) 16 times an epoch and stops shrinking once the
target is met, holding its zeros for the rest of the run: sparsity only grows with more steps,
so without the stop a strength found on one run length would overshoot on a longer one. A check
that finds the run more than ``tolerance`` under the target (a strength so large that one check
interval empties much of the network: a residual network's coupled channels fall together)
lands it instead: the coefficients go back to the last check above the target and its weakest
groups are cut to the target from there (``landed_from`` in the stats), so no run, search or
final, ends far under the target; the search still counts a landed run as too strong. A run at most the target and within ``tolerance`` of it
is kept; otherwise the closest run above the target is cut to it: its weakest groups (norm per
sqrt(size) and per weight w, the lasso's own yardstick) are set to zero, the count found by
bisection on the measured cost. The fine-tune then holds every zero group at zero. The
evaluations, the factor found and the cost reached are in ``stats["search"]``.

Invariants: the graph's structure is untouched (only weight values change); training runs on a
torch module of the graph built from the op table's torch semantics and the weights are written
back into the IR params; validation accuracy before and after is in the stats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from graphc.data import resolve_data
from graphc.errors import PassError
from graphc.ir.graph import Graph
from graphc.passes.decompose import Pair, find_pairs
from graphc.passes.edp_groups import cost_after, group_costs, zero_groups
from graphc.registry import Pass, PassContext, PassResult, register_pass
from graphc.training.backoff import Backoff, Diverged, finite
from graphc.training.graph_module import graph_module_on
from graphc.training.hooks import Hook

__all__ = ["EDPTrain", "group_shrink", "pair_sparsity"]

# With a target, a lasso run measures its cost this many times per epoch (a copy pruned and
# merged, then the cost model) and stops shrinking once the target is met.
CHECKS_PER_EPOCH = 16
# Steps between the checks that the coefficients are still finite (a diverged run stops early).
FINITE_EVERY = 8


def _spare(scale: torch.Tensor, norms: torch.Tensor, k: int) -> tuple[torch.Tensor, bool]:
    """``scale`` with the ``k`` strongest groups left unshrunk when fewer than ``k`` would
    survive; and whether that happened."""
    k = min(k, norms.numel())
    if k <= 0 or int((scale > 0).sum()) >= k:
        return scale, False
    top = torch.topk(norms, k).indices
    scale = scale.clone()
    scale[top] = 1.0
    return scale, True


@torch.no_grad()
def group_shrink(a: torch.Tensor, bias: torch.Tensor | None, t_col: float, t_row: float, *,
                 w_col: float = 1.0, w_row: float = 1.0, min_cols: int = 0, min_rows: int = 0) -> tuple[bool, bool]:
    """In place: block soft-thresholding of A's columns by ``t_col * w_col * sqrt(n)`` then of
    the rows (A[i, :], b[i]) by ``t_row * w_row * sqrt(m + 1)``; ``a`` is n x m (x 1 x 1).
    At least ``min_cols`` columns and ``min_rows`` rows stay nonzero (the strongest are spared
    that step). Returns (columns were bounded, rows were bounded)."""
    mat = a.view(a.shape[0], a.shape[1])
    n, m = mat.shape
    cols_bounded = rows_bounded = False
    if t_col * w_col > 0:
        norms = mat.norm(dim=0)
        scale = torch.clamp(1 - t_col * w_col * math.sqrt(n) / norms.clamp_min(1e-30), min=0)
        scale, cols_bounded = _spare(scale, norms, min_cols)
        mat.mul_(scale[None, :])
    if t_row * w_row > 0:
        sq = mat.pow(2).sum(dim=1)
        if bias is not None:
            sq = sq + bias.pow(2)
        norms = sq.sqrt()
        scale = torch.clamp(1 - t_row * w_row * math.sqrt(m + (bias is not None)) / norms.clamp_min(1e-30), min=0)
        scale, rows_bounded = _spare(scale, norms, min_rows)
        mat.mul_(scale[:, None])
        if bias is not None:
            bias.mul_(scale)
    return cols_bounded, rows_bounded


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


class _Prox(Hook):
    """The group-lasso proximal step after each optimiser step, with the lambdas rising
    linearly from 0 over the first ``warmup_steps`` steps, and the collapse guard. With
    ``measure`` (a target: the cost over the target, <= 1 when met), every ``check_every``
    steps it measures the zeros so far; from the first time the target is met on, it stops
    shrinking and holds the zeros (the rest of the run trains the survivors), so a run lands at
    the target instead of past it. When that check lands more than ``tolerance`` under the
    target (one check interval at a strong lambda can empty most of a network), ``land`` puts
    the coefficients back as they were at the last check above the target and cuts the weakest
    groups to the target from there."""

    def __init__(self, groups, weights, names, lam_col, lam_row, warmup_steps, min_cols, min_rows,
                 measure=None, check_every: int = 1, tolerance: float = 0.05, land=None):
        self.groups, self.weights, self.names = groups, weights, names
        self.lam_col, self.lam_row = lam_col, lam_row
        self.warmup_steps, self.min_cols, self.min_rows = warmup_steps, min_cols, min_rows
        self.bounded: dict[str, set] = {}
        self.measure, self.check_every = measure, max(1, check_every)
        self.tolerance, self.land = tolerance, land
        self.hold: _Hold | None = None
        self.stopped_at: int | None = None
        self.landed_from: float | None = None  # the cost ratio a land started from
        self.snapshot = self._tensors_copy() if measure is not None else None

    def _tensors(self):
        return [t for g in self.groups for t in g if t is not None]

    def _tensors_copy(self):
        return [t.detach().clone() for t in self._tensors()]

    def after_step(self, model, step, lr):
        if self.hold is not None:
            self.hold.after_step(model, step, lr)
            return
        self._shrink(step, lr)
        if step % FINITE_EVERY == 0 and not finite(self._tensors()):
            raise Diverged(f"non-finite weights after {step} steps", step)
        if self.measure is not None and step % self.check_every == 0:
            self.check(step)

    def check(self, step: int) -> None:
        """Measure the zeros so far: above the target, remember them; at or under it, land if
        far under, then hold. Also called once after the last step: a run must not end
        unchecked between two checks."""
        if self.hold is not None or self.measure is None:
            return
        r = self.measure()
        if r > 1:
            self.snapshot = self._tensors_copy()
            return
        if r < 1 - self.tolerance and self.land is not None:
            with torch.no_grad():
                for t, saved in zip(self._tensors(), self.snapshot):
                    t.copy_(saved)
            self.landed_from = r
            self.land()
        self.stopped_at = step
        self.hold = _Hold(self._tensors())

    def _shrink(self, step, lr):
        ramp = min(1.0, step / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        for (a, b), (wc, wr), name in zip(self.groups, self.weights, self.names):
            c, r = group_shrink(a, b, lr * self.lam_col * ramp, lr * self.lam_row * ramp, w_col=wc, w_row=wr,
                                min_cols=self.min_cols, min_rows=self.min_rows)
            if c or r:
                self.bounded.setdefault(name, set()).update(k for k, on in (("rank", c), ("channels", r)) if on)


class _Hold(Hook):
    """Keeps the zero groups at zero during the fine-tune (momentum would revive them)."""

    def __init__(self, tensors):
        self.pairs = [(t, (t != 0).to(t.dtype)) for t in tensors]

    def after_step(self, model, step, lr):
        for t, mask in self.pairs:
            t.mul_(mask)


def _coef_tensors(module, pairs):
    out = []
    for p in pairs:
        a = module.param(p.coef.input(1).name)
        b = module.param(p.coef.input(2).name) if len(p.coef.inputs) > 2 else None
        out.append((a, b))
    return out


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
    ``weighting``: each group's penalty in proportion to what removing it saves: ``macs``,
    ``params``, or ``cost`` (the mean of the two, each over its mean group), or ``uniform``
    (the plain group lasso); ``auto`` (default): ``params`` for a params target alone, ``cost``
    otherwise. ``warmup``: epochs over which the lambdas rise
    linearly from 0 (0: constant). ``min_rank`` / ``min_channels``: the collapse guard, the
    fewest nonzero columns / rows a pair keeps (0 lets a layer vanish).
    ``target_macs`` / ``target_params``: a cost to reach instead of guessing the lambdas (a
    fraction of the unpruned model's when <= 1); at most ``search_evals`` lasso runs find the
    lambda scale, a run within ``tolerance`` below the target is kept, else the closest run
    above is cut to it (see the module docstring). ``search_epochs`` (0: ``epochs``) shortens
    the search runs; the scale found then trains for ``epochs`` once more before landing.
    ``no_data``: what to do without data: ``error`` (a DataError) or ``svd``: the data-free
    variant (see ``svd-truncate``: per pair, keep the top singular directions holding
    ``energy`` of the squared spectrum), which says so in its stats and the log. A target
    always needs data. ``device``: auto (CUDA when present), cpu or cuda.
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
    weighting: Literal["auto", "cost", "macs", "params", "uniform"] = "auto"
    warmup: float = 0.0
    min_rank: int = 1
    min_channels: int = 1
    target_macs: float | None = None
    target_params: float | None = None
    search_evals: int = 8
    search_epochs: float = 0.0
    tolerance: float = 0.05
    device: str = "auto"

    def __post_init__(self):
        # Checked on construction, so a pipeline string with them fails before a model loads.
        for key in ("lambda_col", "lambda_row", "weight_decay", "finetune", "warmup", "momentum", "search_epochs"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key.replace('_', '-')} must be >= 0, got {getattr(self, key)}")
        for key in ("epochs", "lr", "finetune_lr"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key.replace('_', '-')} must be > 0, got {getattr(self, key)}")
        for key in ("min_rank", "min_channels", "max_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key.replace('_', '-')} must be >= 0, got {getattr(self, key)}")
        if self.batch_size < 1 or self.search_evals < 1:
            raise ValueError("batch-size and search-evals must be >= 1")
        for key in ("target_macs", "target_params"):
            v = getattr(self, key)
            if v is not None and not v > 0:
                raise ValueError(f"{key.replace('_', '-')} must be > 0 (a fraction up to 1, or a count), got {v}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.weighting not in ("auto", "cost", "macs", "params", "uniform"):
            raise ValueError(f"weighting must be auto, cost, macs, params or uniform, got {self.weighting!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @property
    def targets(self) -> dict[str, float]:
        return {k: v for k, v in (("macs", self.target_macs), ("params", self.target_params)) if v is not None}

    @property
    def resolved_weighting(self) -> str:
        """The weighting ``auto`` stands for: ``params`` under a params target alone, else ``cost``."""
        if self.weighting != "auto":
            return self.weighting
        return "params" if set(self.targets) == {"params"} else "cost"

    @property
    def needs_data(self) -> bool:  # the data-free variant lets the manager run it without data
        return self.no_data == "error" or bool(self.targets)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs = find_pairs(graph)
        if not pairs:
            return PassResult(changed=False, stats={"pairs": 0})
        if ctx.data is None and self.no_data == "svd" and not self.targets:
            from graphc.passes.edp import svd_truncate

            return svd_truncate(graph, pairs, self.energy, ctx, who=self.name)
        data = resolve_data(ctx, self.name)
        from graphc.passes.dns import device_for
        from graphc.training import evaluate

        dev = device_for(self.device)
        backoff = Backoff(self.name, self.lr, ctx.info)  # the lr of every training run of this pass
        weights = self._weights(graph, pairs)
        before = evaluate(graph_module_on(graph, dev), data)
        stats: dict = {}
        if self.targets:
            found, search = self._search(graph, weights, data, ctx, dev, backoff)
            stats["search"] = search
            if found is None:
                return PassResult(changed=False, stats={"pairs": len(pairs), "acc_before": round(before, 4),
                                                        **stats})
            for name, p in found.params.items():
                graph.params[name].set_data(p.data)
            steps, bounded, acc = search["steps"], search["bounded"], None
        else:
            steps, bounded, acc, _ = self._lasso(graph, weights, data, ctx, dev, backoff, 1.0)
        if self.finetune > 0:
            s, acc = self._finetune(graph, data, ctx, dev, backoff.lr)
            steps += s
        if acc is None:
            acc = evaluate(graph_module_on(graph, dev), data)
        return PassResult(changed=True, stats={**self._report(graph, ctx, data, steps, before, acc, bounded),
                                                "weighting": self.resolved_weighting, **backoff.stats(), **stats})

    def _weights(self, graph: Graph, pairs: list[Pair]) -> list[tuple[float, float]]:
        """(w_col, w_row) per pair: see the module docstring."""
        costs = group_costs(graph, pairs)
        if self.weighting == "uniform":
            return [(1.0, 1.0 if c.rows_removable else 0.0) for c in costs]
        kinds = {"macs": ("macs",), "params": ("params",), "cost": ("macs", "params")}[self.resolved_weighting]
        w = [[0.0, 0.0] for _ in pairs]
        for kind in kinds:
            n_groups = total = 0.0
            for p, c in zip(pairs, costs):
                n, m = p.coef.input(1).shape[:2]
                rows = n if c.rows_removable else 0
                n_groups += m + rows
                total += m * getattr(c, f"col_{kind}") + rows * getattr(c, f"row_{kind}")
            mean = total / max(n_groups, 1) or 1.0
            for wp, c in zip(w, costs):
                wp[0] += getattr(c, f"col_{kind}") / mean / len(kinds)
                wp[1] += getattr(c, f"row_{kind}") / mean / len(kinds) if c.rows_removable else 0.0
        return [tuple(wp) for wp in w]

    def _train(self, module, data, ctx, hooks, *, epochs, lr, seed, desc, params):
        from graphc.training import train

        return train(module, data, epochs=epochs, lr=lr, optimizer=self.optimizer, momentum=self.momentum,
                     weight_decay=self.weight_decay, batch_size=self.batch_size, hooks=hooks, seed=seed,
                     quiet=ctx.quiet, max_steps=self.max_steps or None, desc=desc, params=params)

    def _params(self, module, pairs, groups):
        if self.train_all:
            return None
        return [t for g in groups for t in g if t is not None] + [module.param(p.basis.input(1).name) for p in pairs]

    def _lasso(self, graph: Graph, weights, data, ctx, dev, backoff: Backoff, scale: float,
               epochs: float | None = None, ratio=None):
        """Group-lasso training of ``graph`` in place with both lambdas times ``scale`` for
        ``epochs`` (default ``self.epochs``), shrinking only until ``ratio(cost) <= 1`` when
        ``ratio`` is given; (steps, {pair: what the guard bounded}, validation accuracy, where a
        landing started). A run whose weights go non-finite is retried by ``backoff`` at a
        quarter of the learning rate (see :mod:`graphc.training.backoff`): the proximal step
        only shrinks groups, so a blow-up is the gradient step's, and folded BatchNorms can
        leave a residual network's weights at scales the default rate overshoots."""
        wasted = backoff.steps_diverged
        steps, *rest = backoff.run(
            lambda lr: self._lasso_once(graph, weights, data, ctx, dev, scale, epochs, ratio, lr),
            what=f" (lambda x{scale:.3g})")
        return (steps + backoff.steps_diverged - wasted, *rest)

    def _lasso_once(self, graph: Graph, weights, data, ctx, dev, scale, epochs, ratio, lr):
        pairs = find_pairs(graph)
        module = graph_module_on(graph, dev)
        groups = _coef_tensors(module, pairs)
        per_epoch = math.ceil(len(data.y_train) / self.batch_size) if data.tensors else len(data.train_loader)
        measure = land = None
        if ratio is not None:
            def measure() -> float:
                probe = graph.clone()
                module.write_back(probe)
                return ratio(cost_after(probe))

            def land() -> None:
                probe = graph.clone()
                module.write_back(probe)
                self._cut(probe, weights, ratio)
                with torch.no_grad():
                    for (a, b), p in zip(groups, find_pairs(probe)):
                        a.copy_(torch.as_tensor(p.coef.input(1).param.data, dtype=a.dtype).view_as(a))
                        if b is not None:
                            b.copy_(torch.as_tensor(p.coef.input(2).param.data, dtype=b.dtype).view_as(b))
        prox = _Prox(groups, weights, [p.name for p in pairs], self.lambda_col * scale, self.lambda_row * scale,
                     self.warmup * per_epoch, self.min_rank, self.min_channels, measure,
                     check_every=math.ceil(per_epoch / CHECKS_PER_EPOCH), tolerance=self.tolerance, land=land)
        desc = self.name if scale == 1.0 else f"{self.name} λ x{scale:.3g}"
        res = self._train(module, data, ctx, [prox], epochs=epochs or self.epochs, lr=lr, seed=ctx.seed, desc=desc,
                          params=self._params(module, pairs, groups))
        if not finite(module.parameters()):
            # A diverged run's NaN groups would read as pruned: a "result" of a collapsed network.
            return None, f"non-finite weights after {res.steps} steps", res.steps
        prox.check(res.steps)
        module.write_back(graph)
        return (res.steps, {k: sorted(v) for k, v in prox.bounded.items()}, res.val_acc, prox.landed_from), None, \
            res.steps

    def _finetune(self, graph: Graph, data, ctx, dev, lr: float):
        """Fine-tune with the zero groups held at zero: recovers the lasso's shrinkage bias on
        the surviving weights without bringing pruned groups back."""
        pairs = find_pairs(graph)
        module = graph_module_on(graph, dev)
        groups = _coef_tensors(module, pairs)
        hold = _Hold([t for g in groups for t in g if t is not None])
        res = self._train(module, data, ctx, [hold], epochs=self.finetune, lr=lr * self.finetune_lr,
                          seed=ctx.seed + 1, desc=f"{self.name} fine-tune", params=self._params(module, pairs, groups))
        module.write_back(graph)
        return res.steps, res.val_acc

    # -- the target search ------------------------------------------------------------------
    def _search(self, graph: Graph, weights, data, ctx, dev, backoff: Backoff):
        """(the trained copy that meets the targets or None when the model already does, stats)."""
        ref = cost_after(graph)
        targets = {k: v * ref[k] if v <= 1 else v for k, v in self.targets.items()}

        def ratio(c):
            return max(c[k] / t for k, t in targets.items())

        stats = {"targets": {k: round(t) for k, t in targets.items()}, "unpruned": {k: round(v) for k, v in ref.items()},
                 "evaluations": 0, "steps": 0, "bounded": {}, "history": []}
        if ratio(ref) <= 1:
            stats["note"] = "the unpruned model already meets the target"
            ctx.info(f"{self.name}: {stats['note']}; nothing trained")
            return None, stats
        best_in = best_out = None  # (ratio, scale, graph, bounded) at most / above the target
        lo = hi = None
        s = 1.0
        for _ in range(self.search_evals):
            g = graph.clone()
            try:
                steps, bounded, _acc, landed = self._lasso(g, weights, data, ctx, dev, backoff, s,
                                                           self.search_epochs or None, ratio)
            except Diverged as e:
                # A strength so large that training blew up is too strong: search below it.
                stats["evaluations"] += 1
                stats["steps"] += e.steps
                stats["history"].append({"lambda_scale": round(s, 4), "diverged": True})
                ctx.info(f"{self.name}: lambda x{s:.3g} diverged; searching below it")
                hi = s if hi is None else min(hi, s)
                s = s / 4 if lo is None else math.sqrt(lo * hi)
                continue
            stats["evaluations"] += 1
            stats["steps"] += steps
            stats["history"].append({"lambda_scale": round(s, 4), "cost_ratio": round(ratio(cost_after(g)), 4),
                                     **({"landed_from": round(landed, 4)} if landed is not None else {})})
            # A landed run meets the target, but its strength overshot: the search treats it as
            # too strong (a gentler strength prunes more gradually) and keeps it as a fallback.
            r = ratio(cost_after(g)) if landed is None else landed
            if r <= 1:
                if best_in is None or r > best_in[0]:
                    best_in = (r, s, g, bounded)
                hi = s if hi is None else min(hi, s)
                if r >= 1 - self.tolerance:
                    break
            else:
                if best_out is None or r < best_out[0]:
                    best_out = (r, s, g, bounded)
                lo = s if lo is None else max(lo, s)
            s = s * 4 if hi is None else s / 4 if lo is None else math.sqrt(lo * hi)
        if best_in is None and best_out is None:
            raise PassError(f"{self.name}: every lasso run of the target search diverged (lr down to "
                            f"{backoff.lr:g}, lambda "
                            f"scales {', '.join(str(h['lambda_scale']) for h in stats['history'])}); try a lower lr")
        if best_in is not None and (best_in[0] >= 1 - self.tolerance or best_out is None):
            r, s, g, bounded = best_in
            stats["mode"] = "lambda"
        else:
            r, s, g, bounded = best_out
            stats["mode"] = "lambda+cut"
        r = ratio(cost_after(g))  # a landed run's r above was where it had fallen to, not where it is
        if self.search_epochs and self.search_epochs != self.epochs:
            # The search ran short; the kept scale trains for the full epochs, then lands.
            g = graph.clone()
            steps, bounded, _acc, landed = self._lasso(g, weights, data, ctx, dev, backoff, s, None, ratio)
            stats["steps"] += steps
            if landed is not None:
                stats["landed_from"] = round(landed, 4)
            r = ratio(cost_after(g))
            stats["mode"] = "lambda" if 1 - self.tolerance <= r <= 1 else "lambda+cut" if r > 1 else "lambda (under)"
        if stats["mode"] == "lambda+cut":
            stats["groups_cut"] = self._cut(g, weights, ratio)
            r = ratio(cost_after(g))
        stats.update(lambda_scale=round(s, 4), lambda_col=self.lambda_col * s, lambda_row=self.lambda_row * s,
                     reached={k: round(v) for k, v in cost_after(g).items()}, cost_ratio=round(r, 4), bounded=bounded)
        ctx.info(f"{self.name}: target {', '.join(f'{k} {v:,.0f}' for k, v in targets.items())} reached at "
                 f"{r:.1%} of it ({stats['mode']}, lambda x{s:.3g}) in {stats['evaluations']} lasso runs")
        return g, stats

    def _cut(self, graph: Graph, weights, ratio) -> int:
        """Zero the weakest groups of ``graph`` until ``ratio(cost) <= 1``; the number zeroed."""
        pairs = find_pairs(graph)
        costs = group_costs(graph, pairs)
        cand = []
        for i, (p, (wc, wr), c) in enumerate(zip(pairs, weights, costs)):
            a = p.coef.input(1).param.data
            mat = a.reshape(a.shape[0], a.shape[1]).astype(np.float64)
            n, m = mat.shape
            col = np.linalg.norm(mat, axis=0)
            cand += [(col[j] / (math.sqrt(n) * max(wc, 1e-12)), i, "col", j) for j in np.flatnonzero(col)]
            if c.rows_removable:
                sq = (mat * mat).sum(axis=1)
                if len(p.coef.inputs) > 2:
                    sq = sq + p.coef.input(2).param.data.astype(np.float64) ** 2
                row = np.sqrt(sq)
                cand += [(row[j] / (math.sqrt(m + 1) * max(wr, 1e-12)), i, "row", j) for j in np.flatnonzero(row)]
        cand.sort(key=lambda t: t[0])
        alive = {}
        for i, p in enumerate(pairs):
            zc, nc, zr, nr = pair_sparsity(p)
            alive[(i, "col")], alive[(i, "row")] = nc - zc, nr - zr
        floor = {"col": self.min_rank, "row": self.min_channels}
        order = []
        for _, i, kind, j in cand:
            if alive[(i, kind)] > floor[kind]:
                alive[(i, kind)] -= 1
                order.append((i, kind, j))

        def fits(k: int) -> bool:
            g = graph.clone()
            zero_groups(g, find_pairs(g), order[:k])
            return ratio(cost_after(g)) <= 1

        lo, hi = 0, len(order)
        if not fits(hi):
            raise PassError(f"{self.name}: the target is out of reach: even with every pair at "
                            f"min-rank={self.min_rank} and min-channels={self.min_channels} the cost stays above it")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid
        zero_groups(graph, pairs, order[:hi])
        return hi

    def _report(self, graph, ctx, data, steps, before, acc, bounded) -> dict:
        pairs = find_pairs(graph)
        layers = {}
        zc = zr = cols = rows = 0
        for p in pairs:
            c, nc, r, nr = pair_sparsity(p)
            layers[p.name] = f"cols {nc - c}/{nc}, rows {nr - r}/{nr}"
            zc, cols, zr, rows = zc + c, cols + nc, zr + r, rows + nr
        ctx.info(f"{self.name}: {steps} steps on {data}; val acc {before:.4f} -> {acc:.4f}; "
                 f"zero columns {zc}/{cols}, zero rows {zr}/{rows}")
        if bounded:
            ctx.info(f"{self.name}: the lambdas would have removed a whole layer; the collapse guard kept "
                     f"min-rank={self.min_rank} columns / min-channels={self.min_channels} rows in: "
                     + ", ".join(f"{k} ({'/'.join(v)})" for k, v in bounded.items()))
        return {"pairs": len(pairs), "steps": steps, "data": str(data), "acc_before": round(before, 4),
                "acc_after": round(acc, 4), "zero_cols": zc, "cols": cols, "zero_rows": zr, "rows": rows,
                "layers": layers, "collapse_bounded": bounded}
