"""EDP ablations at equal MACs: why the plain group lasso lost to magnitude pruning, and what
each of EDP's choices is worth. Writes docs/edp_ablations.md.

1. Where the MACs go: per layer after ``prune-merge``, for the plain group lasso at a hand-set
   lambda (the setting the earlier results table used) and for the default at a target: which
   pairs stay factorised (basis k x k conv + 1x1 coefficient conv), which merge back, and the
   share of MACs in each.
2. Ablations, every row reaching the same MACs (``edp-train(target-macs=T)``: the lambda is found
   by search, so rows differ only in the choice under test) with the same lasso and fine-tune
   epochs: the group weighting (uniform, MACs, params, both), the lambda schedule (constant vs a
   linear warm-up), the pair's init (SVD vs a random orthogonal basis vs identity), the proximal
   step (the learning rate the shrink scales with), the fine-tune budget, and how a fixed budget
   is split between the lasso and the fine-tune. Torch-Pruning's MagnitudePruner at the same
   MACs, fine-tuned for the same total epochs, is the reference row.

    python bench/edp_ablations.py                                   # MNIST-10k, LeNet-5, 50%
    python bench/edp_ablations.py --data digits --quick             # a smoke run
    python bench/edp_ablations.py --model small-vgg --target 0.25 --no-write

Accuracy: top-1 of the exported ONNX model under onnxruntime on the validation split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from edp import SEARCH, measure, tp_at_macs  # noqa: E402
from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "edp_ablations.md"
MNIST = "mnist-idx:../shared/datasets/mnist-t10k"

# (group, label, decompose options, edp-train options, (lasso epochs, fine-tune epochs) or None)
BASE = "weighting=uniform"
DEFAULT = "weighting=cost"
VARIANTS = [
    ("weighting", "uniform (the plain group lasso)", "", BASE, None),
    ("weighting", "MACs-weighted", "", "weighting=macs", None),
    ("weighting", "params-weighted", "", "weighting=params", None),
    ("weighting", "MACs+params (cost) weighted", "", "weighting=cost", None),
    ("schedule", "cost, lambda warm-up over the whole lasso run", "", "weighting=cost,warmup=E", None),
    ("schedule", "params-weighted, lambda warm-up over the whole lasso run", "", "weighting=params,warmup=E", None),
    ("init", "cost, random orthogonal basis", "init=random", "weighting=cost", None),
    ("prox step", "cost, lr 0.05 (x2.5 the step of the gradient and the shrink)", "", "weighting=cost,lr=0.05", None),
    ("fine-tune", "cost, no fine-tune", "", "weighting=cost", "E,0"),
    ("fine-tune", "cost, fine-tune x2", "", "weighting=cost", "E,2F"),
    ("budget split", "cost, all of E+F as lasso", "", "weighting=cost", "E+F,0"),
]


def epochs_for(rule: str | None, e: float, f: float) -> tuple[float, float]:
    if rule is None:
        return e, f
    h = (e + f) / 2
    env = {"E": e, "F": f, "2F": 2 * f, "E+F": e + f, "H": h, "0": 0.0}
    a, b = rule.split(",")
    return env[a], env[b]


def run_edp(graph, data, target: float, dec: str, opts: str, e: float, f: float, seed: int, search: str = ""):
    """(graph after prune-merge, graph after fuse, edp-train's stats)."""
    import graphc
    from graphc.registry import PassContext

    g = graph.clone()
    ctx = PassContext(data=data, seed=seed, quiet=True)
    edp_opts = ",".join(o for o in (f"target-macs={target},{search}" if target else "", f"epochs={e:g}",
                                    f"finetune={f:g}", opts.replace("warmup=E", f"warmup={e:g}")) if o)
    dec_s = f"decompose({dec})" if dec else "decompose"
    res = graphc.run_pipeline(g, f"fold-bn,{dec_s},edp-train({edp_opts})", ctx)
    stats = res.passes[-1].stats
    graphc.run_pipeline(g, "prune-merge", ctx)
    merged = g.clone()
    graphc.run_pipeline(g, "fuse", ctx)
    return merged, g, stats


def breakdown(graph) -> list[list[str]]:
    """Per conv/linear: its form after prune-merge and its share of the MACs."""
    from graphc.backends.cost import per_node
    from graphc.ir.meta import EDP

    rows = per_node(graph)
    total = sum(r.macs for r in rows) or 1
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for r in rows:
        n = nodes[r.name]
        if n.op not in ("conv2d", "linear"):
            continue
        role = n.meta.get(EDP.name)
        w = n.input(1).shape
        form = {"basis": f"factorised basis, rank {w[0]}", "coef": f"factorised 1x1 coefficient, {w[0]} x {w[1]}"}.get(
            role, f"merged, {w[0]} x {w[1]}" + (f" x {w[2]}x{w[3]}" if len(w) == 4 else ""))
        out.append([r.name, form, f"{r.macs:,}", f"{r.macs / total:.0%}", f"{r.params:,}"])
    return out


def table(head, rows) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=MNIST)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--target", type=float, default=0.5, help="MACs target of every ablation row (fraction)")
    ap.add_argument("--budget", metavar="S,E,F", default="3,1,0.5",
                    help="source epochs, lasso epochs, fine-tune epochs (default 3,1,0.5)")
    ap.add_argument("--lambdas", default="0.03/0.015", help="the hand-set lambda of the diagnosis (part 1)")
    ap.add_argument("--search", default=SEARCH, help=f"edp-train's search options (default {SEARCH})")
    ap.add_argument("--diagnose", action=argparse.BooleanOptionalAction, default=True, help="part 1")
    ap.add_argument("--only", default="", help="comma list of ablation groups to run (default all)")
    ap.add_argument("--quick", action="store_true", help="weighting rows only, for a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import graphc
    from graphc.backends.cost import totals
    from graphc.data import load_data
    from graphc.models.examples import train_example

    t_all = time.perf_counter()
    data = load_data(args.data)
    s_ep, e, f = (float(v) for v in args.budget.split(","))
    model, res = train_example(args.model, data, epochs=s_ep, seed=args.seed)
    graph = graphc.load(model, example_inputs=data.sample(1))
    src = measure(graph, data, 3)
    print(f"source: {src}", flush=True)

    # 1. where the MACs go: the hand-set plain lasso here, the default's row from part 2
    parts = []
    if args.diagnose:
        col, row = args.lambdas.split("/")
        old_m, old_g, _ = run_edp(graph, data, 0, "", f"{BASE},lambda-col={col},lambda-row={row}", e, f, args.seed)
        parts.append((f"plain group lasso, λ={args.lambdas} (no target)", old_m, measure(old_g, data, 3)))

    # 2. ablations at the target
    groups = set(args.only.split(",")) if args.only else ({"weighting"} if args.quick else None)
    rows = []
    head = ["ablation", "variant", "acc %", "Δacc pt", "params %", "MACs %", "lasso + fine-tune ep", "λ scale",
            "search runs", "landing", "s"]
    for grp, label, dec, opts, rule in VARIANTS:
        if groups is not None and grp not in groups:
            continue
        t0 = time.perf_counter()
        ee, ff = epochs_for(rule, e, f)
        merged, g, st = run_edp(graph, data, args.target, dec, opts, ee, ff, args.seed, args.search)
        m = measure(g, data, 3)
        if args.diagnose and (dec, opts, rule) == ("", DEFAULT, None):
            parts.append((f"the default ({DEFAULT}) at target-macs={args.target}", merged, m))
        s = st.get("search", {})
        rows.append([grp, label, f"{m['acc']:.2f}", f"{m['acc'] - src['acc']:+.2f}",
                     f"{m['params'] / src['params']:.1%}", f"{m['macs'] / src['macs']:.1%}", f"{ee:g} + {ff:g}",
                     f"{s.get('lambda_scale', '-')}", f"{s.get('evaluations', '-')}", s.get("mode", "-"),
                     f"{time.perf_counter() - t0:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    t0 = time.perf_counter()
    tm, ratio = tp_at_macs(model, data, int(args.target * src["macs"]), e + f, args.seed)
    m = measure(graphc.load(tm, example_inputs=data.sample(1)), data, 3)
    rows.append(["reference", f"Torch-Pruning magnitude r={ratio:.2f}, fine-tuned {e + f:g} ep", f"{m['acc']:.2f}",
                 f"{m['acc'] - src['acc']:+.2f}", f"{m['params'] / src['params']:.1%}",
                 f"{m['macs'] / src['macs']:.1%}", f"0 + {e + f:g}", "-", "-", "-",
                 f"{time.perf_counter() - t0:.0f}"])
    print(" | ".join(rows[-1]), flush=True)
    total = time.perf_counter() - t_all

    import torch_pruning

    lines = [
        f"## EDP ablations on {data.name}, {args.model}, {args.target:.0%} of the MACs (bench/edp_ablations.py)",
        "",
        f"Data: `{args.data}`, {data.split}. Model: {args.model} (graphc.models, Caffe form for LeNet-5), "
        f"trained {s_ep:g} epochs by `train_example` (seed {args.seed}): {src['acc']:.2f}% on the validation "
        f"split, {src['params']:,} params, {src['macs']:,} MACs. Every EDP run is "
        f"`fold-bn,decompose,edp-train(...),prune-merge,fuse`, lasso {e:g} epoch(s) then fine-tune {f:g} "
        f"unless the row says otherwise (SGD lr 0.02, momentum 0.9, batch 64). Accuracy: top-1 of the "
        f"exported ONNX model under onnxruntime on the validation split. One seed; {total / 60:.1f} min in all.",
        "",
        "### 1. Where the MACs go after prune-merge",
        "",
    ]
    for label, g, m in parts:
        t = totals(g)
        lines += [f"**{label}**: {m['acc']:.2f}% ({m['acc'] - src['acc']:+.2f} pt), "
                  f"{t['params'] / src['params']:.1%} of the params, {t['macs'] / src['macs']:.1%} of the MACs.", "",
                  table(["layer", "form after prune-merge", "MACs", "share", "params"], breakdown(g)), ""]
    lines += [
        f"### 2. Ablations at {args.target:.0%} of the MACs",
        "",
        f"Each EDP row is `edp-train(target-macs=...,{args.search})`: the lambda scale is searched (the "
        "λ-scale column; the scale found then trains the full lasso epochs once more) and the run is kept "
        "when it lands within 5% under the target (`lambda`) or the run above is cut to it "
        "(`lambda+cut`); `search runs` counts the short lasso runs. Search "
        "runs are extra training compute the Torch-Pruning row does not spend; the fine-tune budget "
        "(the epochs column) is the same. Torch-Pruning: "
        f"{torch_pruning.__version__} `MagnitudePruner` (L1, per layer, classifier outputs kept) at the "
        "ratio reaching at most the same MACs.",
        "",
        table(head, rows),
        "",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        if not DOC.exists():
            DOC.write_text("# EDP ablations\n\nEach section is written by bench/edp_ablations.py; the findings are "
                           "read off them.\n")
        key = f"edp-ablations-{data.name.split(':')[0]}-{args.model}-{args.target:g}"
        write_section(key, text, DOC)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
