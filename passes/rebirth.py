"""rebirth: DeepRebirth's two-stage retraining of the layers ``stream-merge`` made. Lossy; needs
data.

Stage 1: each merged layer alone learns to reproduce its original block's output. The teacher is
the graph the last ``stream-merge`` of the same run received (``stream`` metadata names the
block's nodes in it): run on the training inputs, it gives each block's input and output; the
merged layer (and the activations after it that the block's output has already passed through)
is fed the block's input and trained on the mean squared error to the block's output, every
other weight untouched. Layers are independent here, so all of them train in one pass over the
data, each on its own loss and Adam optimiser.

Stage 2: the whole network is fine-tuned on the labels: the ``finetune`` pass (SGD, momentum,
cosine decay, optionally distilling from the pipeline's input graph).

Which merged layers stage 1 trains: those whose initial weights only approximate their block
(``stream_init="approx"``), or all of them with ``all_layers=true``; a layer whose block cannot be
isolated in the teacher (it reads several inputs, or its input shape differs) is skipped and
named in ``stats["skipped"]``. The stage-1 learning rate, epochs and the block-reconstruction
error (relative MSE on validation inputs, before and after) are in the stats with the validation
accuracy after the merge, after stage 1 and after stage 2. CUDA when present (``device=auto``);
under torchrun each rank trains on its shard and stage 1 averages its gradients over the ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from graphc.data import resolve_data
from graphc.errors import PassError
from graphc.ir.graph import Graph, Node, Value
from graphc.ir.meta import STREAM, STREAM_INIT
from graphc.passes._rewrite import sole_user
from graphc.passes._stream import ACTIVATIONS, LAYER_OPS, origin, teacher_for
from graphc.registry import Pass, PassContext, PassResult, register_pass, register_preset

__all__ = ["Rebirth", "Block", "find_block", "PRUNE_STREAM_PIPELINE"]


@dataclass
class Block:
    """A merged layer and the values of its original block in the teacher."""

    node: Node
    acts: list[Node]
    x: Value  # the block's input, in the teacher
    y: Value  # the block's output, in the teacher


def find_block(teacher: Graph, node: Node, by_name: dict[str, Node]) -> Block | str:
    """The original block of merged layer ``node`` in ``teacher``, or why it cannot be isolated."""
    tnodes = [by_name[n] for n in origin(node) if n in by_name]
    if not tnodes:
        return "none of its original nodes is in the teacher"
    ids = {id(n) for n in tnodes}
    inside = {id(v) for n in tnodes for v in n.outputs}
    ins: list[Value] = []
    for n in tnodes:
        for v in n.inputs:
            if v.param is None and id(v) not in inside and v not in ins:
                ins.append(v)
    outs = [v for n in tnodes for v in n.outputs if v.is_output or any(id(u.node) not in ids for u in v.uses())]
    if len(ins) != 1 or len(outs) != 1:
        return f"the original block has {len(ins)} inputs and {len(outs)} outputs, not one each"
    x, y = ins[0], outs[0]
    if tuple(node.input(0).shape[1:]) != tuple(x.shape[1:]):
        return f"its input is {list(node.input(0).shape)}, the block's {list(x.shape)}"
    # Has the block's output passed an activation since its last layer? Then so must the student's.
    post_act, n = False, y.producer
    while n is not None and id(n) in ids and n.op not in LAYER_OPS:
        post_act |= n.op in ACTIVATIONS
        n = n.input(0).producer if n.inputs else None
    acts: list[Node] = []
    if post_act:
        v = node.output
        while (u := sole_user(v)) is not None and u.op in ACTIVATIONS:
            acts.append(u)
            v = u.output
    out = acts[-1].output if acts else node.output
    if tuple(out.shape[1:]) != tuple(y.shape[1:]):
        return f"its output is {list(out.shape)}, the block's {list(y.shape)}"
    return Block(node, acts, x, y)


def _teacher_module(teacher: Graph, values: list[Value], device: torch.device):
    """A frozen module of ``teacher`` returning ``values`` (block inputs and outputs)."""
    from graphc.training.graph_module import GraphModule

    probe = teacher.clone()
    names = []
    for v in values:
        if v.name not in names:
            names.append(v.name)
    probe.set_outputs([probe.value(n) for n in names])
    mod = GraphModule(probe, trainable=lambda p: False).to(device)
    mod._fixed = {k: t.to(device) for k, t in mod._fixed.items()}
    mod.eval()

    def run(x):
        with torch.no_grad():
            out = mod(x)
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(names, out))

    return run


@register_pass
@dataclass(frozen=True)
class Rebirth(Pass):
    """Retrain the layers stream-merge made: stage 1 regresses each merged layer alone onto its
    original block's output (teacher: the graph before the merge), stage 2 fine-tunes the whole
    network. Lossy; needs data.

        %conv1: f32[1,20,12,12] = conv2d(%x, %w, %b) {stride=[2,2], ...} [stream=["conv1","pool1"], stream_init="approx"]
      ==>
        %conv1: f32[1,20,12,12] = conv2d(%x, %w', %b') {stride=[2,2], ...} [stream=["conv1","pool1"], stream_init="approx"]
        (stage 1 fits %w', %b' to conv1 -> pool1 of the graph before the merge; stage 2 trains every weight)

    Defaults: stage 1 ``stage1_epochs=2`` with Adam ``stage1_lr=0.001``; stage 2 is ``finetune``
    with ``epochs=2``, SGD ``lr=0.01``, ``momentum=0.9``, cosine decay (``distill=source``: with
    distillation from the pipeline's input graph at ``temperature``); ``batch_size=64``;
    ``epochs=0`` skips stage 2.
    """

    name: ClassVar[str] = "rebirth"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    epochs: float = 2.0
    lr: float = 0.01
    stage1_epochs: float = 2.0
    stage1_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    max_steps: int = 0
    all_layers: bool = False
    distill: Literal["none", "source"] = "none"
    temperature: float = 4.0
    device: str = "auto"

    @property
    def wants_source(self) -> bool:
        return self.distill == "source"

    def _check(self) -> None:
        bad = [f"{k.replace('_', '-')} must be > 0, got {v}" for k, v in (
            ("lr", self.lr), ("stage1_lr", self.stage1_lr), ("batch_size", self.batch_size)) if not v > 0]
        bad += [f"{k.replace('_', '-')} must be >= 0, got {v}" for k, v in (
            ("epochs", self.epochs), ("stage1_epochs", self.stage1_epochs), ("max_steps", self.max_steps),
            ("weight_decay", self.weight_decay)) if not v >= 0]
        if bad:
            raise PassError(f"{self.name}: {'; '.join(bad)}")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        self._check()
        data = resolve_data(ctx, self.name)
        from graphc.passes.dns import device_for
        from graphc.training import evaluate
        from graphc.training.graph_module import graph_module_on

        device = device_for(self.device)
        merged = [n for n in graph.nodes if STREAM.name in n.meta
                  and (self.all_layers or n.meta.get(STREAM_INIT.name) == "approx")]
        blocks: list[Block] = []
        skipped: dict[str, str] = {}
        if merged:
            teacher = teacher_for(ctx)
            if teacher is None:
                raise PassError(f"{self.name}: {len(merged)} merged layers but no teacher: run stream-merge "
                                "before rebirth in the same pipeline (the graph it received is the teacher)")
            by_name = {n.name: n for n in teacher.nodes}
            for n in merged:
                b = find_block(teacher, n, by_name)
                if isinstance(b, str):
                    skipped[n.name] = b
                else:
                    blocks.append(b)

        def accuracy() -> float:
            return evaluate(graph_module_on(graph, device), data)

        acc_merged = accuracy()
        stats: dict = {"layers": len(blocks), "skipped": skipped, "data": str(data), "split": data.split,
                       "device": str(device), "acc_merged": round(acc_merged, 4)}
        steps1 = 0
        if blocks and self.stage1_epochs > 0:
            before, after, steps1 = self._stage1(graph, teacher, blocks, data, ctx, device)
            stats.update(recon_before=before, recon_after=after, acc_stage1=round(accuracy(), 4))
        steps2 = 0
        acc = stats.get("acc_stage1", acc_merged)
        if self.epochs > 0:
            from graphc.passes.finetune import Finetune

            # Stage 2 is the shared fine-tune; zeros are not held: a merged kernel's zero taps
            # (a branch's kernel padded to the widest) are free weights now.
            res = Finetune(epochs=self.epochs, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                           batch_size=self.batch_size, max_steps=self.max_steps, distill=self.distill,
                           temperature=self.temperature, hold_zeros=False, device=self.device).run(graph, ctx)
            steps2, acc = res.stats["steps"], res.stats["acc_after"]
        stats.update(steps_stage1=steps1, steps_stage2=steps2, acc_after=round(acc, 4))
        ctx.info(f"{self.name}: {len(blocks)} layers reborn on {data}; val acc {acc_merged:.4f} -> {acc:.4f}")
        return PassResult(changed=steps1 + steps2 > 0, stats=stats)

    def _stage1(self, graph: Graph, teacher: Graph, blocks: list[Block], data, ctx: PassContext, device):
        """Fit each block's layer to its block's output; returns (relative MSE before, after, steps)."""
        from graphc.progress import bar as progress_bar
        from graphc.training.loop import distributed_context

        dist = distributed_context()
        run_teacher = _teacher_module(teacher, [v for b in blocks for v in (b.x, b.y)], device)
        weights = []
        for b in blocks:
            ws = [torch.nn.Parameter(torch.from_numpy(v.param.data.copy()).to(device)) for v in b.node.inputs[1:]]
            weights.append(ws)
        opts = [torch.optim.Adam(ws, lr=self.stage1_lr) for ws in weights]

        def student(b: Block, ws, x):
            y = b.node.opdef.run([x, *ws], b.node.attrs)
            for a in b.acts:
                y = a.opdef.run([y], a.attrs)
            return y

        train_loader, val_loader = data.loaders(self.batch_size, seed=ctx.seed, rank=dist.rank, world=dist.world)

        def error() -> dict[str, float]:
            num = [0.0] * len(blocks)
            den = [0.0] * len(blocks)
            with torch.no_grad():
                for i, (x, _) in enumerate(val_loader):
                    if i >= 4:  # a few validation batches estimate the error well enough
                        break
                    t = run_teacher(x.to(device))
                    for j, (b, ws) in enumerate(zip(blocks, weights)):
                        num[j] += float(F.mse_loss(student(b, ws, t[b.x.name]), t[b.y.name], reduction="sum"))
                        den[j] += float(t[b.y.name].pow(2).sum())
            return {b.node.name: round(n / max(d, 1e-30), 6) for b, n, d in zip(blocks, num, den)}

        before = error()
        per_epoch = len(train_loader)
        total = max(1, int(round(self.stage1_epochs * per_epoch)))
        bar = progress_bar(total=total, desc=f"{self.name} stage 1", quiet=ctx.quiet or dist.rank != 0)
        step = 0
        torch.manual_seed(ctx.seed)
        try:
            while step < total:
                for x, _ in train_loader:
                    if step >= total:
                        break
                    t = run_teacher(x.to(device))
                    loss_sum = 0.0
                    for b, ws, opt in zip(blocks, weights, opts):
                        loss = F.mse_loss(student(b, ws, t[b.x.name]), t[b.y.name])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if dist.on:
                            import torch.distributed as tdist

                            for w in ws:
                                tdist.all_reduce(w.grad)
                                w.grad /= dist.world
                        opt.step()
                        loss_sum += float(loss.detach())
                    step += 1
                    bar.update(1)
                    bar.set_postfix(mse=f"{loss_sum / len(blocks):.4g}")
        finally:
            bar.close()
        after = error()
        for b, ws in zip(blocks, weights):
            for v, w in zip(b.node.inputs[1:], ws):
                v.param.set_data(w.detach().cpu().numpy().astype(v.param.data.dtype, copy=True))
        return before, after, step


# The seed's hybrid: prune channels inside the layers, merge non-tensor layers into them along
# the stream, retrain. The activation merge stays out: on a Caffe LeNet-5 (no ReLU between its
# convs) it would leave one linear map; add it with stream-merge(kinds=[...]) where it pays.
PRUNE_STREAM_PIPELINE = ("prune(ratio=0.5),stream-merge(kinds=[chain,pool],pool-kernel=keep),"
                         "rebirth(epochs=8,lr=0.02,stage1-epochs=4)")
PRUNE_STREAM_DOC = """
The seed's hybrid (Xie et al. 2020): prune the channels inside each layer, merge the pools (and
the exact chains they expose) into the layers along the stream, then rebirth: each merged layer
regresses its original block, then the whole network fine-tunes. Lossy; needs data. On a Caffe
LeNet-5 (28x28), the pruned convs lose their pools, and with nothing non-linear left between
them they become one conv:

    %conv1: f32[1,20,24,24] = conv2d(%x, %conv1.weight, %conv1.bias) {stride=[1,1], ...}  # conv1
    %pool1: f32[1,20,12,12] = max_pool2d(%conv1) {kernel_size=[2,2], stride=[2,2], ...}  # pool1
    %conv2: f32[1,50,8,8] = conv2d(%pool1, %conv2.weight, %conv2.bias) {stride=[1,1], ...}  # conv2
    %pool2: f32[1,50,4,4] = max_pool2d(%conv2) {kernel_size=[2,2], stride=[2,2], ...}  # pool2
    %flatten: f32[1,800] = flatten(%pool2) {start_dim=1, end_dim=3}  # flatten
    %fc1: f32[1,500] = linear(%flatten, %fc1.weight, %fc1.bias)  # fc1
  ==>
    %conv2: f32[1,25,4,4] = conv2d(%x, %conv2.weight, %conv2.bias) {stride=[4,4], ...}
            [stream=["conv1","pool1","conv2","pool2"], stream_init="approx"]  # conv2 (13x13 kernel)
    %flatten: f32[1,400] = flatten(%conv2) {start_dim=1, end_dim=3}  # flatten
    %fc1: f32[1,250] = linear(%flatten, %fc1.weight, %fc1.bias)  # fc1

Rebirth changes weights, not the IR. Stronger settings: spell the pipeline out, e.g.
``prune(ratio=0.8),stream-merge(kinds=[chain,pool],pool-kernel=keep),rebirth(epochs=8,lr=0.02)``.
"""
register_preset("prune-stream", PRUNE_STREAM_PIPELINE, PRUNE_STREAM_DOC)
