"""EDP (decompose, group-lasso training, prune-merge) against Torch-Pruning's MagnitudePruner,
at the same MACs (or params) and the same fine-tune budget.

For each data set and model (LeNet-5 in Caffe form, small-vgg, small-resnet of graphc.models):

1. train the source with ``graphc.models.examples.train_example`` (seed 0);
2. EDP at each one-number target: ``fold-bn,decompose,edp-train(target-macs=T,epochs=E,
   finetune=0),prune-merge,fuse,finetune(epochs=F)`` (or ``target-params=T``): the lasso strength
   is searched, not guessed;
3. Torch-Pruning: ``MagnitudePruner`` (L1 magnitude, per-layer ratio, the classifier's outputs
   kept) at the ratio whose pruned model has at most the MACs (params) EDP reached (bisection),
   then the same ``finetune`` pass for E + F epochs: the epochs EDP trains after the source;
4. each EDP / TP pair is run for every seed of ``--seeds`` on the ``--headline`` models (the
   same source; the seed drives the shuffling of the lasso, fine-tune and TP fine-tune) and
   reported as the mean with the min-max spread; other models run the first seed.

Every variant is measured the same way: top-1 accuracy of the exported ONNX model under
onnxruntime on the data's validation split; weights (params) and MACs from graphc's cost
model on the imported graph; latency as the median of onnxruntime runs at batch 1 with one
intra-op thread. Prints a table and writes it to the ``edp`` section of docs/results.md.

    python bench/edp.py --data mnist-idx:../shared/datasets/mnist-t10k
    python bench/edp.py --data digits --models lenet5 --targets macs=0.5 --seeds 0 --no-write
    python bench/edp.py --quick           # LeNet-5 at 50% of the MACs, one seed, short budget
    python bench/edp.py --lambdas 0.03/0.015 --data digits   # hand-set lambdas instead of targets

``--budget S,E,F`` sets the source epochs, edp-train epochs and fine-tune epochs (Torch-Pruning
fine-tunes E + F). Each run writes its own section, keyed by data set (and by model list
when not the default).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"
MNIST = "mnist-idx:../shared/datasets/mnist-t10k"
DEFAULT_MODELS = "lenet5,small-vgg,small-resnet"
DEFAULT_TARGETS = "macs=0.5,macs=0.25,params=0.1"
# (source epochs, edp-train epochs, edp-train fine-tune epochs) per data set: digits is tiny,
# MNIST-10k (8,000 training images) gets fewer passes over more data.
BUDGET = {"digits": (None, 8, 2), "mnist": (3, 1, 0.5)}
QUICK_BUDGET = (1, 0.5, 0.25)
# The lasso-strength search: at most this many lasso runs, each a quarter of the lasso epochs
# (the kept scale then trains for the full epochs once more).
SEARCH_EVALS, SEARCH_SHARE = 6, 0.25
SEARCH = f"search-evals={SEARCH_EVALS},search-epochs={SEARCH_SHARE}"  # at 1 lasso epoch
LR = 0.02  # edp-train's default SGD learning rate, also used for Torch-Pruning's fine-tune
FT_LR = 0.01  # the finetune pass's (cosine from here), after EDP and after Torch-Pruning
PAPER = ("EDP (Ruan et al., IEEE TNNLS 2020), its abstract: \"a high compression ratio with acceptable accuracy "
         "degradation\", ahead of 17 competitors on compression rate, accuracy, inference time and run-time "
         "memory; its experiments use full MNIST, CIFAR and ImageNet, so its per-model figures are not "
         "comparable with the 8k-image runs here and are not restated")


def budget(spec: str):
    return BUDGET["digits" if spec == "digits" else "mnist"]


def measure(graph, data, repeats: int) -> dict:
    from graphc.backends.cost import totals
    from graphc.backends.latency import measure_onnx
    from graphc.backends.onnx import emit_onnx
    from graphc.check import accuracy, result_runner

    t = totals(graph)
    run, _ = result_runner(graph, "onnx")
    acc = accuracy(run, data, graph.inputs[0].shape[0])
    lat = measure_onnx(emit_onnx(graph), [data.sample(1).numpy()], warmup=5, repeats=repeats, threads=1).median
    return {"acc": acc, "params": int(t["params"]), "macs": int(t["macs"]), "ms": lat}


def edp_pipeline(target: str, epochs: float, finetune: float, lr: float = LR) -> str:
    """The pipeline for a target ``macs=0.5`` / ``params=0.1`` (``macs=0.5@params``: with that
    ``weighting``) or hand-set lambdas ``C/R``."""
    if "=" in target:
        target, _, weighting = target.partition("@")
        kind, frac = target.split("=")
        # warmup: the lambdas rise over the whole lasso run (docs/edp_ablations.md: constant
        # lambdas lost 1.2 pt at half the MACs on LeNet-5, the ramp 0.05 pt)
        opts = (f"target-{kind}={frac},search-evals={SEARCH_EVALS},search-epochs={SEARCH_SHARE * epochs:g},"
                f"warmup={epochs:g}" + (f",weighting={weighting}" if weighting else ""))
    else:
        col, row = target.split("/")
        opts = f"lambda-col={col},lambda-row={row}"
    tail = f",finetune(epochs={finetune:g},lr={FT_LR})" if finetune > 0 else ""
    lr_opt = "" if lr == LR else f",lr={lr:g}"
    return f"fold-bn,decompose,edp-train({opts},epochs={epochs:g}{lr_opt},finetune=0),prune-merge,fuse{tail}"


def edp(graph, data, target: str, epochs: float, finetune: float, seed: int, lr: float = LR):
    """(EDP-compressed copy of ``graph``, edp-train's stats)."""
    import graphc
    from graphc.registry import PassContext

    g = graph.clone()
    rep = graphc.run_pipeline(g, edp_pipeline(target, epochs, finetune, lr), PassContext(data=data, seed=seed, quiet=True))
    return g, next(p.stats for p in rep.passes if p.name == "edp-train")


def _last_linear(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def tp_prune(model, data, ratio: float):
    import torch_pruning as tp

    m = copy.deepcopy(model)
    if ratio <= 0:
        return m
    x = data.sample(1)
    pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[_last_linear(m)])
    pruner.step()
    return m


def graph_cost(model, data, metric: str = "macs") -> int:
    import graphc
    from graphc.backends.cost import totals

    return int(totals(graphc.load(model.eval(), example_inputs=data.sample(1)))[metric])


def graph_macs(model, data) -> int:
    return graph_cost(model, data, "macs")


def tp_at(model, data, target: int, epochs: float, seed: int, metric: str = "macs"):
    """The least-pruned MagnitudePruner model with ``metric`` (macs or params) <= target,
    fine-tuned; (module, ratio)."""
    from graphc.training import train

    lo, hi = 0.0, 0.95
    if graph_cost(model, data, metric) > target:
        best = hi
        for _ in range(8):
            mid = (lo + hi) / 2
            if graph_cost(tp_prune(model, data, mid), data, metric) <= target:
                hi = best = mid
            else:
                lo = mid
        ratio = best
    else:
        ratio = 0.0
    m = tp_prune(model, data, ratio)
    train(m, data, epochs=epochs, lr=LR, momentum=0.9, batch_size=64, seed=seed, quiet=True, desc="tp fine-tune")
    return m.eval(), ratio


def tp_at_macs(model, data, target: int, epochs: float, seed: int):
    """The least-pruned MagnitudePruner model with MACs <= target, fine-tuned; (module, ratio)."""
    return tp_at(model, data, target, epochs, seed, "macs")


def tp_graph_at(model, data, target: int, epochs: float, seed: int, metric: str = "macs"):
    """The least-pruned MagnitudePruner model with ``metric`` <= target as a graph, fine-tuned by
    the ``finetune`` pass for ``epochs``; (graph, ratio)."""
    import graphc
    from graphc.registry import PassContext

    lo, hi, ratio = 0.0, 0.95, 0.0
    if graph_cost(model, data, metric) > target:
        ratio = hi
        for _ in range(8):
            mid = (lo + hi) / 2
            if graph_cost(tp_prune(model, data, mid), data, metric) <= target:
                hi = ratio = mid
            else:
                lo = mid
    g = graphc.load(tp_prune(model, data, ratio).eval(), example_inputs=data.sample(1))
    if epochs > 0:
        graphc.run_pipeline(g, f"finetune(epochs={epochs:g},lr={FT_LR})", PassContext(data=data, seed=seed, quiet=True))
    return g, ratio


def _acc_cell(accs: list[float]) -> str:
    mean = statistics.fmean(accs)
    return f"{mean:.2f}" if len(accs) == 1 else f"{mean:.2f} ({min(accs):.2f}-{max(accs):.2f})"


def fmt_row(data, model, method, ms: list[dict], src, vs: list[dict] | None = None) -> list[str]:
    """One row: accuracy as the mean (min-max) over the seeds, costs of the first seed."""
    m = ms[0]
    accs = [x["acc"] for x in ms]
    delta = f"{statistics.fmean(accs) - src['acc']:+.2f}"
    gap = "-" if vs is None else f"{statistics.fmean(a['acc'] - b['acc'] for a, b in zip(ms, vs)):+.2f}"
    return [data, model, method, _acc_cell(accs), delta, gap, f"{m['params']:,}", f"{m['params'] / src['params']:.0%}",
            f"{m['macs']:,}", f"{m['macs'] / src['macs']:.0%}", f"{m['ms']:.3f}", str(len(ms))]


HEAD = ["data", "model", "method", "acc % (seeds: mean, min-max)", "Δacc pt", "EDP - TP pt", "params", "params %",
        "MACs", "MACs %", "ms", "seeds"]


def render(rows) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "|".join("---" for _ in HEAD) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write(data, spec, src_epochs, ep, ft, table, total, args) -> None:
    import torch_pruning

    seeds = args.seeds.split(",")
    body = (f"## EDP vs Torch-Pruning on {data.name} (bench/edp.py{' --quick' if args.quick else ''})\n\n"
            f"Data: `{spec}`, {data.split}. Each source is trained by `train_example` (seed 0, "
            f"{'its default' if src_epochs is None else f'{src_epochs:g}'} epochs); "
            f"EDP is `{edp_pipeline('macs=T', ep, ft, args.lr)}` (or target-params): the lambda scale is searched "
            f"(at most {SEARCH_EVALS} lasso runs of {SEARCH_SHARE * ep:g} epoch, then the scale found trains "
            f"{ep:g} epoch(s)); "
            f"TP is Torch-Pruning {torch_pruning.__version__} `MagnitudePruner` (L1, per layer, classifier "
            f"outputs kept) at the ratio r reaching at most EDP's MACs (params for a params target), then "
            f"`finetune(epochs={ep + ft:g},lr={FT_LR})`: as many epochs as EDP trains after the source "
            f"(EDP's search runs are extra). EDP - TP: the mean over seeds of EDP's accuracy minus TP's at the same seed. Seeds "
            f"{', '.join(seeds)} on {args.headline} (the seed drives the shuffling of every training stage; "
            f"one source), seed {seeds[0]} elsewhere. Accuracy: top-1 of the exported ONNX model under "
            f"onnxruntime on the validation split; params (weights) and MACs: graphc's cost model; ms: "
            f"median of {args.repeats} onnxruntime runs, batch 1, 1 thread, on {platform.machine()} "
            f"({os.cpu_count()} CPUs, shared with other jobs, so sub-millisecond latencies are noisy). "
            f"{total / 60:.1f} min in all.\n\nThe paper: {PAPER}.\n\n" + table + "\n")
    if not DOC.exists():
        DOC.write_text("# Results\n\nMeasured figures; each section is written by the bench script it names.\n")
    key = section_key(data, args)
    write_section(key, body, DOC)
    print(f"wrote {DOC}")


def section_key(data, args) -> str:
    models = args.models.split(",")
    key = f"edp-{data.name.split(':')[0]}" + ("" if args.models == DEFAULT_MODELS else "-" + "-".join(models))
    if not args.lambdas and args.targets != DEFAULT_TARGETS:
        key += "-" + "-".join(t.replace("=", "").replace("@", "-w") for t in args.targets.split(","))
    return key + ("-quick" if args.quick else "")


def run_model(name, data, spec, args, src_epochs, ep, ft) -> list[list[str]]:
    import graphc
    from graphc.models.examples import train_example

    model, res = train_example(name, data, epochs=src_epochs, seed=0)
    graph = graphc.load(model, example_inputs=data.sample(1))
    src = measure(graph, data, args.repeats)
    rows = [fmt_row(data.name, name, f"source ({res.epochs} ep)", [src], src)]
    print(" | ".join(rows[-1]), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    if name not in args.headline.split(","):
        seeds = seeds[:1]
    targets = args.lambdas.split(",") if args.lambdas else args.targets.split(",")
    for target in targets:
        metric = target.split("=")[0] if "=" in target else "macs"
        label = f"EDP target-{target}" if "=" in target else f"EDP λ={target}"
        label = label.replace("@", ", weighting=")
        ems, tms, ratios = [], [], []
        for seed in seeds:
            g, _st = edp(graph, data, target, ep, ft, seed, args.lr)
            ems.append(measure(g, data, args.repeats))
            if not args.no_tp:
                tg, ratio = tp_graph_at(model, data, ems[-1][metric], ep + ft, seed, metric)
                tms.append(measure(tg, data, args.repeats))
                ratios.append(ratio)
        rows.append(fmt_row(data.name, name, label, ems, src, tms or None))
        print(" | ".join(rows[-1]), flush=True)
        if tms:
            rows.append(fmt_row(data.name, name, f"TP magnitude r={ratios[0]:.2f} @ EDP's {metric}", tms, src))
            print(" | ".join(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", help=f"data spec (repeat); default {MNIST}")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--targets", default=DEFAULT_TARGETS, help="comma list of macs=F / params=F (fractions); "
                    "macs=F@W runs edp-train with weighting=W")
    ap.add_argument("--lambdas", default="", help="comma list of lambda-col/lambda-row instead of targets")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the headline models' rows")
    ap.add_argument("--headline", default="lenet5", help="models run with every seed (others: the first)")
    ap.add_argument("--repeats", type=int, default=50, help="onnxruntime runs per latency figure")
    ap.add_argument("--budget", metavar="S,E,F", help="source epochs, edp-train epochs, fine-tune epochs "
                    "(default: 10/8 source by model, 8, 2 on digits; 3, 1, 0.5 on MNIST)")
    ap.add_argument("--quick", action="store_true", help="LeNet-5 at 50%% of the MACs, one seed, a short budget")
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    ap.add_argument("--lr", type=float, default=LR, help=f"edp-train's learning rate (default {LR}; small-resnet "
                    "diverges at it once its BatchNorms are folded)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.targets, args.seeds, args.repeats = "lenet5", "macs=0.5", args.seeds.split(",")[0], 10
    torch.set_num_threads(1)

    from graphc.data import load_data

    for spec in args.data or [MNIST]:
        t_all = time.perf_counter()
        data = load_data(spec)
        src_epochs, ep, ft = QUICK_BUDGET if args.quick else budget(spec)
        if args.budget:
            src_epochs, ep, ft = (float(v) for v in args.budget.split(","))
        rows = []
        for name in args.models.split(","):
            rows += run_model(name, data, spec, args, src_epochs, ep, ft)
        table = render(rows)
        print(table)
        total = time.perf_counter() - t_all
        if not args.no_write:
            write(data, spec, src_epochs, ep, ft, table, total, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
