"""layer-prune: remove ResConv blocks (``resconv-wrap``) whose layer scale is (near) zero, each
down to its shortcut, so whole conv layers and residual blocks leave the network.

Removing a block makes the readers of its ``add`` read the shortcut instead; the branch (the
nodes only the block read) goes. What is left must be standard ops, so:

- a layer block's shortcut ``beta * x`` folds upstream into what makes ``x`` (a conv, BN, the
  constant of a mul, through ReLUs when beta >= 0 and through the adds of other blocks), or,
  when ``x`` has other readers, ``relu(beta * x)`` with ``x`` a ReLU output (so x >= 0) folds
  downstream into the convs and shortcut factors that read it; neither possible: refused;
- a ReLU reading a ReLU's output after the removal is dropped (relu(relu(z)) = relu(z)).

Bookkeeping: a block with alpha exactly 0 computes its shortcut alone, so removing it is exact
(up to rounding of the folded factor). A layer block with alpha != 0 (a target forced it out)
becomes its shortcut with the scale moved onto it, ``(beta + alpha) * x``: the branch is
replaced by the identity it is measured against, the limit of the prox step of
``resconv-train`` (which hands the shortcut whatever the scale loses); a residual block with
alpha != 0 loses ``alpha * branch``. The stats list every removed block with its alpha, beta
(before the move), MACs and params. A block is refused, with
the reason, when its removal would change a graph output's shape or make the graph return its
own input, when its structure was broken by another pass, or when its shortcut factor cannot be
folded away.

Invariants: only blocks found through their metadata are removed; blocks left keep their
structure (``fuse-resconv`` folds them into one conv each).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.meta import RESCONV
from graphc.ir.rewrite import erase_if_dead, replace_output
from graphc.passes._rewrite import CONV_OPS, node_macs, sole_user
from graphc.passes.resconv_wrap import Block, find_blocks
from graphc.registry import Pass, PassContext, PassResult, register_pass, register_preset

__all__ = ["LayerPrune", "branch_nodes", "block_cost", "remove_block"]


def branch_nodes(graph: Graph, block: Block, order: dict[Node, int] | None = None) -> list[Node]:
    """The nodes that die with the block's branch: the scale mul and every producer all of whose
    readers die too (walked in reverse topological order, so a node is judged after its
    readers)."""
    order = order if order is not None else {n: i for i, n in enumerate(graph.nodes)}
    dead = {block.scale}
    heap: list[tuple[int, int, Node]] = []
    seen = set()

    def push(n: Node) -> None:
        for v in n.inputs:
            p = v.producer
            if p is not None and p not in seen:
                seen.add(p)
                heapq.heappush(heap, (-order[p], id(p), p))

    push(block.scale)
    while heap:
        _, _, n = heapq.heappop(heap)
        if any(v.is_output for v in n.outputs):
            continue
        if all(u.node in dead for v in n.outputs for u in v.uses()) and any(v.uses() for v in n.outputs):
            dead.add(n)
            push(n)
    return [n for n in dead]


def block_cost(graph: Graph, block: Block, order: dict[Node, int] | None = None) -> tuple[int, int]:
    """(MACs, params) the block's branch holds: what removing it saves."""
    nodes = branch_nodes(graph, block, order)
    dead = set(nodes)
    macs = sum(node_macs(n) for n in nodes)
    params = 0
    for n in nodes:
        for v in n.inputs:
            if v.param is not None and all(u.node in dead for u in v.uses()) and \
                    v.param.kind == "weight" and not n.meta.get(RESCONV.name):
                params += int(v.param.data.size)
    return macs, params


def _const(v: Value) -> bool:
    return v.param is not None and len(v.uses()) == 1 and not v.is_output \
        and np.issubdtype(v.param.data.dtype, np.floating)


def _scale_up(v: Value, s: float, edits: list) -> str | None:
    """Plan ``v <- s * v`` inside what produces ``v`` (v read only by the block): append the
    param edits to ``edits`` and return None, or say why it cannot be done."""
    p = v.producer
    if p is None:
        return f"%{v.name} is a graph input"
    if p.op == "relu":
        if s < 0:
            return f"the shortcut factor {s:g} is negative and {p.name} is a ReLU"
        return _scale_up(p.input(0), s, edits) if sole_user(p.input(0)) is p else \
            f"{p.input(0).name} has other readers"
    if p.op == "mul" and len(p.inputs) == 2:
        a, b = p.inputs
        for k, other in ((a, b), (b, a)):
            if _const(k) and other.param is None:
                edits.append(k)
                return None
        return f"{p.name} multiplies by no constant of its own"
    if p.op == "batch_norm":
        if not (_const(p.input(1)) and _const(p.input(2))):
            return f"{p.name} shares its affine"
        edits += [p.input(1), p.input(2)]
        return None
    if p.op in CONV_OPS + ("linear",):
        ws = list(p.inputs[1:])
        if not all(_const(w) for w in ws):
            return f"{p.name} has shared or computed weights"
        edits += ws
        return None
    if p.op == "add" and len(p.inputs) == 2 and p.input(0) is not p.input(1):
        for x in p.inputs:
            if sole_user(x) is not p:
                return f"{x.name} has other readers"
            why = _scale_up(x, s, edits)
            if why is not None:
                return why
        return None
    return f"the shortcut factor cannot pass {p.op} {p.name}"


def _scale_down(y: Value, edits: list) -> str | None:
    """Plan ``readers(y) <- readers(s * y)``: each reader a conv/linear reading ``y`` as its
    input, or a layer block's shortcut factor."""
    if y.is_output:
        return f"%{y.name} is a graph output"
    for u in y.uses():
        n = u.node
        if n.op in CONV_OPS + ("linear",) and u.index == 0 and _const(n.input(1)):
            edits.append(n.input(1))
        elif n.meta.get(RESCONV.name) == "shortcut" and u.index == 0 and _const(n.input(1)):
            edits.append(n.input(1))
        else:
            return f"{n.op} {n.name} reads the layer's output"
    return None


def _apply(edits: list, s: float) -> None:
    for v in edits:
        d = v.param.data
        v.param.set_data((d.astype(np.float64) * s).astype(d.dtype))


def _drop_double_relu(graph: Graph, v: Value) -> None:
    """relu(v) with v a ReLU output is v."""
    if v.producer is None or v.producer.op != "relu":
        return
    for u in v.uses():
        r = u.node
        if r.op == "relu" and len(r.inputs) == 1 and not (r.output.is_output and v.is_output):
            replace_output(graph, r, v)


def remove_block(graph: Graph, block: Block) -> str | None:
    """Remove ``block`` down to its shortcut; None when done, else why not (graph untouched)."""
    add, sc = block.add, block.shortcut_value
    if sc.shape != add.output.shape:
        what = "a graph output" if add.output.is_output else f"%{add.output.name}"
        return f"removing it would change the shape of {what} from {list(add.output.shape)} to {list(sc.shape)}"
    if add.output.is_output and sc.producer is None:
        return "the graph would return its own input"
    edits: list = []
    mode = None
    if block.shortcut is not None:
        beta = float(block.beta.param.data.reshape(-1)[0])
        x = block.shortcut.input(0)
        readers = add.output.uses()
        # relu(beta * x) with x a ReLU output (x >= 0) is max(beta, 0) * x: the block's ReLU
        # goes and a negative factor is a zero one.
        clamp = (x.producer is not None and x.producer.op == "relu" and bool(readers)
                 and all(u.node.op == "relu" for u in readers))
        alpha = float(block.alpha.param.data.reshape(-1)[0])
        if alpha != 0.0:
            # A live branch goes: its scale moves onto the shortcut (beta_eff = beta + alpha), the
            # limit of the prox step, which hands the shortcut whatever the scale loses. Without
            # it a block trained to alpha ~ 1, beta ~ 0 would leave relu(~0 * x), a closed path.
            beta = beta + alpha
        s = max(beta, 0.0) if clamp else beta
        inside = set(branch_nodes(graph, block))
        others = [u for u in x.uses() if u.node not in inside and u.node is not block.shortcut]
        why = None
        if s == 1.0:
            mode = "identity"
        elif not others:
            why = _scale_up(x, s, edits)
            mode = "up" if why is None else None
        else:
            why = f"%{x.name} has other readers"
        if mode is None:
            if not clamp:
                return f"the shortcut factor cannot be folded: {why}"
            edits = []
            for u in readers:
                why2 = _scale_down(u.node.output, edits)
                if why2 is not None:
                    return f"the shortcut factor cannot be folded: {why}; nor into the readers: {why2}"
            mode = "down"
    dead = block.scale
    replace_output(graph, add, sc)
    erase_if_dead(graph, dead)
    if block.shortcut is not None:
        x = block.shortcut.input(0)
        _apply(edits, s)
        if mode in ("identity", "up"):
            replace_output(graph, block.shortcut, x)
            if clamp:
                for u in x.uses():
                    if u.node.op == "relu" and not (u.node.output.is_output and x.is_output):
                        replace_output(graph, u.node, x)
        else:
            relus = [u.node for u in block.shortcut.output.uses()]
            for r in relus:
                replace_output(graph, r, x)
            erase_if_dead(graph, block.shortcut)
        _drop_double_relu(graph, x)
    else:
        _drop_double_relu(graph, sc)
    return None


@register_pass
@dataclass(frozen=True)
class LayerPrune(Pass):
    """Remove ResConv blocks whose layer scale is (near) zero, each down to its shortcut, with
    the shortcut's factor folded away. Exact when only zero scales are removed (``threshold=0``
    and no target), lossy otherwise.

        %s = mul(%b, %alpha) [resconv="scale"]          (alpha = 0: branch gone)
        %t = mul(%x, %beta) [resconv="shortcut"]   ==>  %x's producer scaled by beta
        %a = add(%s, %t)                                (readers of %r read %x)
        %r = relu(%a)

    ``threshold``: remove blocks with |alpha| <= threshold. ``target_layers``: remove the
    blocks with the smallest |alpha| until that many are gone (a fraction of the blocks when
    < 1). ``target_macs``: the same until the graph has at most that many MACs (a fraction of
    its MACs when <= 1). A target overrides the threshold. ``finetune`` epochs of training after
    the removal (the ``finetune`` pass at ``finetune_lr``; needs data), with the validation accuracy
    before and after in the stats; ``recalibrate=N`` re-estimates the BN statistics on N training
    batches first (alone when ``finetune=0``). Refused blocks are in ``stats["refused"]`` (name -> why).
    """

    name: ClassVar[str] = "layer-prune"

    threshold: float = 0.0
    target_layers: float | None = None
    target_macs: float | None = None
    finetune: float = 0.0
    finetune_lr: float = 0.01
    recalibrate: int = 0
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        if self.target_layers is not None and not self.target_layers > 0:
            raise ValueError(f"target-layers must be > 0, got {self.target_layers}")
        if self.target_macs is not None and not self.target_macs > 0:
            raise ValueError(f"target-macs must be > 0, got {self.target_macs}")
        if not self.finetune >= 0:
            raise ValueError(f"finetune must be >= 0 epochs, got {self.finetune}")
        if not self.recalibrate >= 0:
            raise ValueError(f"recalibrate must be >= 0 batches, got {self.recalibrate}")

    @property
    def exact(self) -> bool:
        return self.threshold == 0 and self.target_layers is None and self.target_macs is None and \
            self.finetune == 0 and self.recalibrate == 0

    @property
    def needs_data(self) -> bool:
        return self.finetune > 0 or self.recalibrate > 0

    def _plan(self, graph: Graph, blocks: list[Block]) -> tuple[list[Block], int | None, int]:
        """Candidates in removal order, the MACs to reach (or None) and the layers to remove."""
        ranked = sorted(blocks, key=lambda b: abs(float(b.alpha.param.data.reshape(-1)[0])))
        if self.target_macs is None and self.target_layers is None:
            keep = [b for b in ranked if abs(float(b.alpha.param.data.reshape(-1)[0])) <= self.threshold]
            return keep, None, len(keep)
        goal = None
        if self.target_macs is not None:
            from graphc.backends.cost import totals

            macs = totals(graph)["macs"]
            goal = int(self.target_macs * macs) if self.target_macs <= 1 else int(self.target_macs)
        count = len(ranked)
        if self.target_layers is not None:
            t = self.target_layers
            count = min(len(ranked), int(round(t * len(ranked))) if t < 1 else int(t))
        return ranked, goal, count

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphc.backends.cost import totals

        blocks, broken = find_blocks(graph)
        refused: dict[str, str] = dict(broken)
        if not blocks:
            return PassResult(changed=False, stats={"blocks": 0, "removed": 0, "refused": refused})
        before = totals(graph)
        candidates, goal, count = self._plan(graph, blocks)
        removed: dict[str, dict] = {}
        macs = before["macs"]
        for b in candidates:
            if len(removed) >= count or (goal is not None and macs <= goal):
                break
            if not (b.scale.alive and b.add.alive):
                continue  # went with an enclosing block already removed (a conv inside a residual branch)
            order = {n: i for i, n in enumerate(graph.nodes)}
            cost = block_cost(graph, b, order)
            alpha = float(b.alpha.param.data.reshape(-1)[0])
            beta = float(b.beta.param.data.reshape(-1)[0]) if b.beta is not None else None
            why = remove_block(graph, b)
            if why is not None:
                refused[b.name] = why
                continue
            macs -= cost[0]
            removed[b.name] = {"kind": b.kind, "alpha": alpha, **({"beta": beta} if beta is not None else {}),
                               "macs": cost[0], "params": cost[1], "exact": alpha == 0.0}
        graph.prune_unused_params()
        after = totals(graph)
        stats = {"blocks": len(blocks), "removed": len(removed), "exact_removals": sum(r["exact"] for r in removed.values()),
                 "macs_before": before["macs"], "macs_after": after["macs"], "params_before": before["params"],
                 "params_after": after["params"], "layers": removed, "refused": refused}
        if goal is not None and after["macs"] > goal:
            stats["target_missed"] = f"{after['macs']:,} MACs left, target {goal:,} (blocks refused or none left)"
        if (self.finetune > 0 or self.recalibrate > 0) and removed:
            stats.update(self._finetune(graph, ctx))
        ctx.info(f"{self.name}: removed {len(removed)}/{len(blocks)} blocks "
                 f"({stats['exact_removals']} with a zero scale); MACs {before['macs']:,} -> {after['macs']:,}"
                 + (f"; refused {len(refused)}" if refused else ""))
        return PassResult(changed=bool(removed), stats=stats)

    def _finetune(self, graph: Graph, ctx: PassContext) -> dict:
        from graphc.passes.finetune import Finetune

        if self.finetune == 0:  # BN recalibration alone
            from graphc.data import resolve_data
            from graphc.training import evaluate, recalibrate_bn
            from graphc.training.graph_module import graph_module_on

            data = resolve_data(ctx, self.name)
            module = graph_module_on(graph, self.device)
            before = evaluate(module, data)
            r = recalibrate_bn(module, data, self.recalibrate, batch_size=self.batch_size, seed=ctx.seed)
            return {"recalibrated_bn": r["bn"], "acc_before_recalibrate": round(before, 4),
                    "acc_recalibrated": round(evaluate(module, data), 4), "data": str(data)}
        st = Finetune(recalibrate=self.recalibrate, epochs=self.finetune, lr=self.finetune_lr, batch_size=self.batch_size,
                      device=self.device).run(graph, ctx).stats
        return {"finetune_steps": st["steps"], "acc_before_finetune": st["acc_before"],
                "acc_after_finetune": st["acc_after"], "data": st["data"],
                **{k: st[k] for k in ("recalibrated_bn", "acc_recalibrated") if k in st}}


# ResConv layer pruning end to end: blocks in, L1 on their scales, zero-scale blocks out, the
# rest fused back into single convs (the output holds standard convs only).
register_preset("resconv", "resconv-wrap,resconv-train,layer-prune,fuse")
