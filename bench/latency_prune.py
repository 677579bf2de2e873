"""Latency-aware pruning against uniform pruning and Torch-Pruning, at equal measured latency.

Part 1, torchvision models (random weights, batch 1, ``--size`` input): each method is run at
several targets and every pruned model is measured the same way:

- ``uniform``: graphc ``prune(target-latency=F)`` -- one l1 ratio for every group, found by
  bisection on the predicted latency;
- ``uniform-8``: the same with kept counts rounded to this CPU's SIMD block (``round-to=simd``);
- ``latency``: ``prune(target-latency=F,importance=latency,round-to=simd)``;
- ``torch-pruning``: Torch-Pruning 1.6 ``MagnitudePruner`` (l1, one ratio per layer) at the
  ratios graphc's ``uniform`` found.

"channels" is the sum of output channels of every conv and linear node (the units a pruner can
remove, counted the same way for every method); latency is onnxruntime on one thread, CPU time
of that thread (steady on a shared machine), median of ``--repeats`` runs after warm-ups; the
prediction uses the single-thread CPU-time calibration (``graphc calibrate --threads 1 --clock
cpu``). The summary gives, per measured-latency budget (a fraction of the source's measured
time), the most channels a method keeps among its models within the budget.

Part 2, trained reference models (``--data``, default MNIST-10k: first 8,000 train / last 2,000
held out): the source is trained, then ``uniform``, ``uniform-8``, ``latency`` and
``torch-pruning`` (at ``uniform``'s ratio) prune it at each target and
every pruned model is fine-tuned with the same budget (epochs, SGD, learning rate, seed);
accuracy is top-1 on the held-out split.

    OMP_NUM_THREADS=1 nice -n 10 python bench/latency_prune.py
    python bench/latency_prune.py --zoo mobilenet_v3_large --targets 0.6 --no-mnist --no-write
    python bench/latency_prune.py --no-zoo --data digits --no-write
    python bench/latency_prune.py --from-rows rows.jsonl     # tables again from a run's saved rows

Every measured row is printed as one JSON line as it is measured (and appended to ``--rows
FILE``), so a long run's figures survive an interruption and can be tabled again.

Writes the ``latency-prune`` section of docs/results.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from edp import LR, _last_linear  # noqa: E402
from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"
ZOO = "efficientnet_b0,mobilenet_v3_large,regnet_y_400mf"
MNIST = "mnist-idx:../shared/datasets/mnist-t10k"
METHODS = {
    "uniform": "prune(target-latency={f},latency-threads=1)",
    "uniform-8": "prune(target-latency={f},round-to=simd,latency-threads=1)",
    "latency": "prune(target-latency={f},importance=latency,round-to=simd,latency-threads=1)",
}


ROWS_FILE = None


def log(row: dict) -> dict:
    line = json.dumps(row)
    print(line, flush=True)
    if ROWS_FILE:
        with open(ROWS_FILE, "a") as f:
            f.write(line + "\n")
    return row


def channels(graph) -> int:
    return int(sum(n.inputs[1].shape[0] for n in graph.nodes
                   if n.op in ("conv2d", "linear") and len(n.inputs) > 1 and n.inputs[1].param is not None))


def measure(graph, calib, repeats: int) -> dict:
    from graphc.backends.cost import totals
    from graphc.backends.latency import measure_onnx, predict
    from graphc.backends.onnx import emit_onnx

    t = totals(graph)
    ms = measure_onnx(emit_onnx(graph), warmup=3, repeats=repeats, threads=1, clock="cpu").median
    return {"channels": channels(graph), "macs": int(t["macs"]), "params": int(t["params"]),
            "pred": predict(graph, calib).total_ms, "ms": ms}


def tp_prune(model, example, ratio: float):
    import torch_pruning as tp

    m = copy.deepcopy(model)
    if ratio > 0:
        pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=ratio, ignored_layers=[_last_linear(m)])
        pruner.step()
    return m.eval()


def zoo_rows(name: str, targets, calib, args) -> list[dict]:
    import torch
    import torchvision

    import graphc
    from graphc.registry import PassContext

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, args.size, args.size)
    src = graphc.load(model, example_inputs=x)
    graphc.run_pipeline(src, "fuse")
    rows = [dict(model=name, method="source", target="-", **measure(src, calib, args.repeats))]
    log(rows[-1])
    for f in targets:
        ratio = None
        for method, pipe in METHODS.items():
            g = src.clone()
            t0 = time.process_time()
            rep = graphc.run_pipeline(g, pipe.format(f=f), PassContext(seed=0, quiet=True))
            secs = time.process_time() - t0
            if method == "uniform":
                ratio = rep.passes[0].stats.get("prune.ratio", 0.0)
            rows.append(dict(model=name, method=method, target=f, cpu_s=secs, **measure(g, calib, args.repeats)))
            log(rows[-1])
        if not args.no_tp and ratio is not None:
            try:
                pruned = tp_prune(model, x, ratio)
                g = graphc.load(pruned, example_inputs=x)
                graphc.run_pipeline(g, "fuse")
                rows.append(dict(model=name, method="torch-pruning", target=f"r={ratio:.3f}", **measure(g, calib, args.repeats)))
            except Exception as e:  # a baseline that fails is reported, not fatal
                rows.append(dict(model=name, method="torch-pruning", target=f"r={ratio:.3f}", error=str(e)[:80]))
            log(rows[-1])
    return rows


def mnist_rows(name: str, data, targets, calib, args) -> list[dict]:
    import graphc
    from graphc.backends.torch import emit_torch
    from graphc.models.examples import train_example
    from graphc.registry import PassContext
    from graphc.training import evaluate, train

    model, _ = train_example(name, data, epochs=args.source_epochs, seed=0)
    x = data.sample(1)
    src = graphc.load(model, example_inputs=x)
    rows = [dict(model=name, method="source", target="-", acc=100 * evaluate(model, data), data=data.split,
                 **measure(src, calib, args.repeats))]
    log(rows[-1])
    for f in targets:
        for method in args.mnist_methods.split(","):
            g = src.clone()
            rep = graphc.run_pipeline(g, METHODS["uniform" if method == "torch-pruning" else method].format(f=f),
                                      PassContext(seed=0, quiet=True))
            target = f
            if method == "torch-pruning":  # at the ratio graphc's uniform found for this target
                ratio = rep.passes[0].stats.get("prune.ratio", 0.0)
                m, target = tp_prune(model, x, ratio).train(), f"r={ratio:.3f}"
            else:
                m = emit_torch(g)
            train(m, data, epochs=args.finetune, lr=LR, momentum=0.9, batch_size=64, seed=0, quiet=True, desc="fine-tune")
            if method == "torch-pruning":
                g = graphc.load(m.eval(), example_inputs=x)
            rows.append(dict(model=name, method=method, target=target, acc=100 * evaluate(m, data), data=data.split,
                             **measure(g, calib, args.repeats)))
            log(rows[-1])
    return rows


def _table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _err(r) -> str:
    return f"{(r['pred'] / r['ms'] - 1) * 100:+.0f}%"


def zoo_tables(rows, budgets) -> str:
    head = ["model", "method", "target", "channels", "MACs", "predicted ms", "measured ms", "pred. error"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], r["method"], str(r["target"]), "failed: " + r["error"], "", "", "", ""])
            continue
        body.append([r["model"], r["method"], str(r["target"]), f"{r['channels']:,}", f"{r['macs'] / 1e6:.1f}M",
                     f"{r['pred']:.2f}", f"{r['ms']:.2f}", _err(r)])
    out = [_table(head, body), ""]
    methods = [m for m in ("uniform", "uniform-8", "latency", "torch-pruning") if any(r["method"] == m for r in rows)]
    out.append(budget_table(rows, budgets, methods, "channels", lambda ok: f"{max(r['channels'] for r in ok):,}"))
    out += ["", error_table(rows)]
    return "\n".join(out)


def error_table(rows) -> str:
    """Prediction error per method: the sources' error is the cost model's usual error on
    these models in this run, the yardstick for the pruned ones."""
    import statistics

    head = ["method", "models", "median abs. pred. error", "worst pred. error"]
    body = []
    for m in dict.fromkeys(r["method"] for r in rows):
        errs = [r["pred"] / r["ms"] - 1 for r in rows if r["method"] == m and "error" not in r]
        if errs:
            body.append([m, str(len(errs)), f"{statistics.median(abs(e) for e in errs):.0%}",
                         f"{max(errs, key=abs):+.0%}"])
    return _table(head, body)


def mnist_table(rows) -> str:
    head = ["model", "method", "target", "acc %", "channels", "MACs", "predicted ms", "measured ms", "pred. error"]
    body = [[r["model"], r["method"], str(r["target"]), f"{r['acc']:.2f}", f"{r['channels']:,}", f"{r['macs'] / 1e6:.2f}M",
             f"{r['pred']:.3f}", f"{r['ms']:.3f}", _err(r)] for r in rows]
    return _table(head, body)


def budget_table(rows, budgets, methods, what: str, cell) -> str:
    """Per model and measured-latency budget (a fraction of the source's measured time), what
    each method reaches among its rows within the budget (``cell`` of those rows)."""
    head = ["model", "measured-latency budget"] + [f"{m} {what}" for m in methods]
    body = []
    for model in dict.fromkeys(r["model"] for r in rows):
        src = next(r for r in rows if r["model"] == model and r["method"] == "source")
        for b in budgets:
            cells = [model, f"<= {b:.0%} of {src['ms']:.3f} ms"]
            for m in methods:
                ok = [r for r in rows if r["model"] == model and r["method"] == m and "error" not in r
                      and r["ms"] <= b * src["ms"]]
                cells.append(cell(ok) if ok else "none within")
            body.append(cells)
    return _table(head, body)


def mnist_summary(rows, budgets) -> str:
    """Per measured-latency budget, the best held-out accuracy each method reaches within it."""
    methods = [m for m in list(METHODS) + ["torch-pruning"] if any(r["method"] == m for r in rows)]

    def best(ok):
        r = max(ok, key=lambda r: r["acc"])
        return f"{r['acc']:.2f} ({r['ms']:.3f} ms)"

    return budget_table(rows, budgets, methods, "acc %", best)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default=ZOO, help=f"torchvision models (default {ZOO})")
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--targets", default="0.45,0.6,0.75", help="target-latency fractions of the predicted source time")
    ap.add_argument("--budgets", default="0.5,0.7,0.9", help="measured-latency budgets for the summary")
    ap.add_argument("--data", default=MNIST)
    ap.add_argument("--mnist-models", default="small-vgg,small-resnet")
    ap.add_argument("--no-mnist", action="store_true")
    ap.add_argument("--mnist-methods", default="uniform,uniform-8,latency,torch-pruning",
                    help=f"methods fine-tuned on the data (of {', '.join(METHODS)}, torch-pruning)")
    ap.add_argument("--source-epochs", type=float, default=2)
    ap.add_argument("--finetune", type=float, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-tp", action="store_true", help="leave Torch-Pruning out")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--rows", metavar="FILE", help="append every measured row to FILE (JSON lines)")
    ap.add_argument("--from-rows", metavar="FILE", help="table the rows a run saved instead of measuring")
    args = ap.parse_args(argv)
    global ROWS_FILE
    ROWS_FILE = args.rows
    from graphc.passes.prune_latency import calibration_for, simd_block

    budgets = [float(b) for b in args.budgets.split(",")]
    if not set(args.mnist_methods.split(",")) <= set(METHODS) | {"torch-pruning"}:
        ap.error(f"--mnist-methods: choose among {', '.join(METHODS)}, torch-pruning")
    if args.from_rows:
        rows = [json.loads(line) for line in open(args.from_rows) if line.strip()]
        zoo = [r for r in rows if "acc" not in r]
        mnist = [r for r in rows if "acc" in r]
        return finish(args, argv, zoo, mnist, budgets, None)
    calib = calibration_for(1)
    targets = [float(t) for t in args.targets.split(",")]
    t0 = time.time()
    zoo, mnist = [], []
    if not args.no_zoo:
        for name in args.zoo.split(","):
            zoo += zoo_rows(name, targets, calib, args)
    if not args.no_mnist:
        from graphc.data import load_data

        data = load_data(args.data)
        for name in args.mnist_models.split(","):
            mnist += mnist_rows(name, data, targets, calib, args)
    return finish(args, argv, zoo, mnist, budgets, time.time() - t0)


def finish(args, argv, zoo, mnist, budgets, seconds) -> int:
    from graphc.passes.prune_latency import simd_block

    from graphc.backends.calibration import _cpu_model

    how = ("Rows measured by runs of `python bench/latency_prune.py` (saved with `--rows`), tabled with `--from-rows`"
           if args.from_rows else f"Run: `{' '.join(['python bench/latency_prune.py'] + (argv if argv is not None else sys.argv[1:]))}`")
    parts = [f"{how}; {platform.machine()}, {_cpu_model()} ({simd_block()}-float SIMD block); onnxruntime on 1 thread, "
             f"CPU-time clock, median of {args.repeats} runs; predicted with the single-thread calibration."]
    if zoo:
        parts += ["", f"torchvision, random weights, batch 1, {args.size}x{args.size}, after `fuse`:", "", zoo_tables(zoo, budgets)]
    if mnist:
        split = mnist[0].get("data", args.data)
        parts += ["", f"Trained on {split}; source {args.source_epochs:g} epochs, every pruned model fine-tuned "
                      f"{args.finetune:g} epoch (SGD, lr {LR}, momentum 0.9, batch 64, seed 0); accuracy on the held-out split:",
                  "", mnist_table(mnist), "", mnist_summary(mnist, budgets), "", error_table(mnist)]
    if seconds is not None:
        parts.append(f"\nTotal {seconds:.0f} s.")
    text = "\n".join(parts)
    print(text)
    if not args.no_write:
        write_section("latency-prune", "## Latency-aware pruning\n\n" + text, DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
