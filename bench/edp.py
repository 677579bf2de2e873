"""EDP (decompose, group-lasso training, prune-merge) against Torch-Pruning's MagnitudePruner.

For each data set and model (LeNet-5 and the small VGG of graphc.models):

1. train the source with ``graphc.models.examples.train_example`` (seeded);
2. EDP: ``fold-bn,decompose,edp-train(lambda-col=C,lambda-row=R,epochs=E,finetune=F),
   prune-merge,fuse`` for each lambda setting;
3. Torch-Pruning: ``MagnitudePruner`` (L1 magnitude, per-layer ratio, the classifier's outputs
   kept) at the ratio whose pruned model has at most the MACs EDP reached (bisection), then
   fine-tuned with the same loop, optimiser, learning rate and number of epochs (E + F) as
   EDP's training stage.

Every variant is measured the same way: top-1 accuracy of the exported ONNX model under
onnxruntime on the data's validation split; weights (params) and MACs from graphc's cost
model on the imported graph; latency as the median of onnxruntime runs at batch 1 with one
intra-op thread. Prints a table and writes it to the ``edp`` section of docs/results.md.

    python bench/edp.py --data digits
    python bench/edp.py --data digits --data mnist-idx:../shared/datasets/mnist-t10k
    python bench/edp.py --data digits --models lenet5 --lambdas 0.01/0.005 --no-write
    python bench/edp.py --data mnist-idx:../shared/datasets/mnist-t10k --models small-vgg --budget 1,1,0.5

``--budget S,E,F`` sets the source epochs, edp-train epochs and fine-tune epochs (Torch-Pruning
fine-tunes E + F). Each run writes its own section, keyed by data set (and by model list
when not the default).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"
DEFAULT_MODELS = "lenet5,small-vgg"
DEFAULT_LAMBDAS = ["0.01/0.005", "0.03/0.015", "0.1/0.05"]
# (source epochs, edp-train epochs, edp-train fine-tune epochs) per data set: digits is tiny,
# MNIST-10k (8,000 training images) gets fewer passes over more data.
BUDGET = {"digits": (None, 8, 2), "mnist": (2, 1, 0.5)}
LR = 0.02  # edp-train's default SGD learning rate, also used for Torch-Pruning's fine-tune


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


def edp(graph, data, lam: str, epochs: float, finetune: float, seed: int):
    import graphc
    from graphc.registry import PassContext

    col, row = lam.split("/")
    g = graph.clone()
    pipe = (f"fold-bn,decompose,edp-train(lambda-col={col},lambda-row={row},epochs={epochs},finetune={finetune}),"
            f"prune-merge,fuse")
    graphc.run_pipeline(g, pipe, PassContext(data=data, seed=seed, quiet=True))
    return g


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


def graph_macs(model, data) -> int:
    import graphc
    from graphc.backends.cost import totals

    return int(totals(graphc.load(model.eval(), example_inputs=data.sample(1)))["macs"])


def tp_at_macs(model, data, target: int, epochs: float, seed: int):
    """The least-pruned MagnitudePruner model with MACs <= target, fine-tuned; (module, ratio)."""
    from graphc.training import train

    lo, hi = 0.0, 0.95
    if graph_macs(model, data) > target:
        best = hi
        for _ in range(8):
            mid = (lo + hi) / 2
            if graph_macs(tp_prune(model, data, mid), data) <= target:
                hi = best = mid
            else:
                lo = mid
        ratio = best
    else:
        ratio = 0.0
    m = tp_prune(model, data, ratio)
    train(m, data, epochs=epochs, lr=LR, momentum=0.9, batch_size=64, seed=seed, quiet=True, desc="tp fine-tune")
    return m.eval(), ratio


def fmt_row(data, model, method, m, src) -> list[str]:
    return [data, model, method, f"{m['acc']:.2f}", f"{m['acc'] - src['acc']:+.2f}", f"{m['params']:,}",
            f"{m['params'] / src['params']:.0%}", f"{m['macs']:,}", f"{m['macs'] / src['macs']:.0%}", f"{m['ms']:.3f}"]


HEAD = ["data", "model", "method", "acc %", "Δacc pt", "params", "params %", "MACs", "MACs %", "ms"]


def render(rows) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "|".join("---" for _ in HEAD) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write(data, spec, src_epochs, ep, ft, table, total, args) -> None:
    import torch_pruning

    body = (f"## EDP vs Torch-Pruning on {data.name} (bench/edp.py)\n\n"
            f"Data: `{spec}`, {data.split}. Each source is trained by `train_example` (seed {args.seed}, "
            f"{'its default' if src_epochs is None else f'{src_epochs:g}'} epochs); "
            f"EDP is `fold-bn,decompose,edp-train(lambda-col,lambda-row,epochs={ep:g},finetune={ft:g}),prune-merge,fuse`; "
            f"TP is Torch-Pruning {torch_pruning.__version__} `MagnitudePruner` (L1, per layer, classifier "
            f"outputs kept) at the ratio r reaching at most EDP's MACs, then fine-tuned for the same "
            f"{ep + ft:g} epochs with the same SGD settings (lr {LR}, momentum 0.9, batch 64). Accuracy: "
            f"top-1 of the exported ONNX model under onnxruntime on the validation split; params "
            f"(weights) and MACs: graphc's cost model; ms: median of {args.repeats} onnxruntime runs, "
            f"batch 1, 1 thread, on {platform.machine()} ({os.cpu_count()} CPUs, shared with other "
            f"jobs, so sub-millisecond latencies are noisy). One seed, one run each; {total / 60:.1f} min "
            f"in all.\n\n" + table + "\n")
    if not DOC.exists():
        DOC.write_text("# Results\n\nMeasured figures; each section is written by the bench script it names.\n")
    models = args.models.split(",")
    key = f"edp-{data.name.split(':')[0]}" + ("" if args.models == DEFAULT_MODELS else "-" + "-".join(models))
    write_section(key, body, DOC)
    print(f"wrote {DOC}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", help="data spec (repeat); default digits")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--lambdas", default=",".join(DEFAULT_LAMBDAS), help="comma list of lambda-col/lambda-row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=50, help="onnxruntime runs per latency figure")
    ap.add_argument("--budget", metavar="S,E,F", help="source epochs, edp-train epochs, fine-tune epochs "
                    "(default: 10/8 source by model, 8, 2 on digits; 2, 1, 0.5 on MNIST)")
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import graphc
    from graphc.data import load_data
    from graphc.models.examples import train_example

    specs = args.data or ["digits"]
    for spec in specs:
        t_all = time.perf_counter()
        data = load_data(spec)
        src_epochs, ep, ft = budget(spec)
        if args.budget:
            src_epochs, ep, ft = (float(v) for v in args.budget.split(","))
        rows = []
        for name in args.models.split(","):
            model, res = train_example(name, data, epochs=src_epochs, seed=args.seed)
            graph = graphc.load(model, example_inputs=data.sample(1))
            src = measure(graph, data, args.repeats)
            rows.append(fmt_row(data.name, name, f"source ({res.epochs} ep)", src, src))
            print(" | ".join(rows[-1]), flush=True)
            for lam in args.lambdas.split(","):
                g = edp(graph, data, lam, ep, ft, args.seed)
                m = measure(g, data, args.repeats)
                rows.append(fmt_row(data.name, name, f"EDP λ={lam}", m, src))
                print(" | ".join(rows[-1]), flush=True)
                if not args.no_tp:
                    tm, ratio = tp_at_macs(model, data, m["macs"], ep + ft, args.seed)
                    tg = graphc.load(tm, example_inputs=data.sample(1))
                    mm = measure(tg, data, args.repeats)
                    rows.append(fmt_row(data.name, name, f"TP magnitude r={ratio:.2f} @ λ={lam}", mm, src))
                    print(" | ".join(rows[-1]), flush=True)
        table = render(rows)
        print(table)
        total = time.perf_counter() - t_all
        if not args.no_write:
            write(data, spec, src_epochs, ep, ft, table, total, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
