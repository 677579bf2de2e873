"""Stream merging (stream-merge + rebirth) and the prune + stream-merge hybrid (Xie et al. 2020,
after DeepRebirth) against pruning alone and Torch-Pruning at equal MACs.

For each model (LeNet-5 in Caffe form, the small VGG, the inception-style net of
graphc.models), trained by ``train_example`` (seeded):

- ``prune``: ``fold-bn,prune(ratio=R),finetune(epochs=F,lr=LR)``;
- ``stream``: ``fold-bn,stream-merge(KINDS),rebirth(stage1-epochs=F1,epochs=F,lr=LR)``;
- ``prune+stream``: ``fold-bn,prune(ratio=R),stream-merge(KINDS),rebirth(...)`` (the seed's hybrid);
- ``EXTRA``: more hybrids with other stream-merge options (LeNet-5: every pool merged, where
  the plan's ``target-macs`` stops after the largest saving);
- ``TP``: Torch-Pruning's MagnitudePruner at the ratio reaching at most the hybrid's MACs
  (``bench/edp.py: tp_at_macs``), imported and fine-tuned by the same ``fold-bn,finetune(...)``.

BN is folded first everywhere: graphc's training passes compute BN with its running statistics
(inference semantics), which a fine-tune of the weights beneath would leave stale.

Every row gets the same F epochs of whole-network fine-tune (rebirth's stage 2 is the
``finetune`` pass); the stream rows also spend F1 epochs in rebirth's stage 1 (per-layer regression, the method's own step). Accuracy: top-1 of
the exported ONNX model under onnxruntime on the validation split; params and MACs: graphc's
cost model; latency: median onnxruntime time (1 thread) at batch 1 and batch 64, the model
re-imported at each batch size.

    python bench/stream.py --data mnist-idx:../shared/datasets/mnist-t10k
    python bench/stream.py --data digits --models lenet5 --no-write
    python bench/stream.py --scale 0.5     # every epoch count halved (a shorter run)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from edp import LR, tp_at_macs  # noqa: E402
from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"
# model -> (source epochs, fine-tune epochs F, stage-1 epochs F1, prune ratio R, stream-merge options)
PLAN = {
    "lenet5": (4, 4, 1, 0.8, "kinds=[chain,pool],pool-kernel=keep,target-macs=0.7"),
    "small-vgg": (2, 1, 0.5, 0.5, "kinds=[chain,pool],pool-kernel=keep"),
    "inception-small": (4, 1, 0.5, 0.5, "kinds=[chain,pool,branch],pool-kernel=keep,max-growth=8"),
}
# More hybrids measured beside the plan's: model -> [(label, stream-merge options)].
EXTRA = {"lenet5": [("prune+stream, every pool", "kinds=[chain,pool],pool-kernel=keep")]}
PAPER = ("Xie et al. 2020 (the paper's figure, not measured here): LeNet-5 on MNIST, prune + stream merging: "
         "1/20 of the parameters, 8x faster, no accuracy loss")


def at_batch(graph, n: int):
    """The graph re-imported for batch ``n`` (shapes are static in the IR)."""
    import graphc

    module = graphc.emit_torch(graph).eval()
    x = torch.randn(n, *graph.inputs[0].shape[1:])
    return graphc.load(module, example_inputs=x)


def measure(graph, data, repeats: int) -> dict:
    from graphc.backends.cost import totals
    from graphc.backends.latency import measure_onnx
    from graphc.backends.onnx import emit_onnx
    from graphc.check import accuracy, result_runner

    t = totals(graph)
    run, _ = result_runner(graph, "onnx")
    acc = accuracy(run, data, graph.inputs[0].shape[0])
    ms = {}
    for n in (1, 64):
        g = graph if graph.inputs[0].shape[0] == n else at_batch(graph, n)
        x = torch.randn(n, *graph.inputs[0].shape[1:]).numpy()
        ms[n] = measure_onnx(emit_onnx(g), [x], warmup=5, repeats=repeats, threads=1).median
    return {"acc": acc, "params": int(t["params"]), "macs": int(t["macs"]), "ms1": ms[1], "ms64": ms[64]}


def run_pipe(graph, pipe: str, data, seed: int):
    import graphc
    from graphc.registry import PassContext

    g = graph.clone()
    rep = graphc.run_pipeline(g, pipe, PassContext(data=data, seed=seed, quiet=True))
    return g, rep


def goal_line(src: dict, m: dict) -> str:
    """The seed's LeNet-5 goal checked against one measured row."""
    checks = [("params", src["params"] / m["params"], ">= 20x fewer", src["params"] / m["params"] >= 20),
              ("speedup at batch 64", src["ms64"] / m["ms64"], ">= 8x", src["ms64"] / m["ms64"] >= 8)]
    parts = [f"{what} {v:.1f}x (goal {goal}: {'met' if ok else 'not met'})" for what, v, goal, ok in checks]
    loss = src["acc"] - m["acc"]
    parts.append(f"accuracy {-loss:+.2f} pt (goal <= 0.5 pt loss: {'met' if loss <= 0.5 + 1e-9 else 'not met'})")
    return "; ".join(parts)


GOALS: list[str] = []


def model_rows(name: str, data, args) -> list[list[str]]:
    import graphc
    from graphc.models.examples import train_example

    src_ep, ft, s1, ratio, opts = scaled(PLAN[name], args.scale)
    t0 = time.time()
    model, _ = train_example(name, data, epochs=src_ep, seed=args.seed)
    g0 = graphc.load(model, example_inputs=data.sample(1))
    src = measure(g0, data, args.repeats)
    rows = [(name, "original", src, "")]
    tune = f"finetune(epochs={ft},lr={LR})"
    reborn = f"rebirth(stage1-epochs={s1},epochs={ft},lr={LR})"
    pipes = {
        "prune": f"fold-bn,prune(ratio={ratio}),{tune}",
        "stream": f"fold-bn,stream-merge({opts}),{reborn}",
        "prune+stream": f"fold-bn,prune(ratio={ratio}),stream-merge({opts}),{reborn}",
    }
    for label, extra in EXTRA.get(name, []):
        pipes[label] = f"fold-bn,prune(ratio={ratio}),stream-merge({extra}),{reborn}"
    hybrid = None
    for method, pipe in pipes.items():
        g, rep = run_pipe(g0, pipe, data, args.seed)
        m = measure(g, data, args.repeats)
        rb = rep.passes[-1].stats
        note = ""
        if "recon_before" in rb:
            note = "stage-1 rel. MSE " + ", ".join(f"{k} {rb['recon_before'][k]:.2f}->{rb['recon_after'][k]:.2f}"
                                                   for k in rb["recon_before"])
            # rebirth's validation accuracy after each stage shows where a row lost its accuracy
            note += (f"; val acc merged {100 * rb['acc_merged']:.1f}, stage 1 {100 * rb['acc_stage1']:.1f}, "
                     f"stage 2 {100 * rb['acc_after']:.1f}")
        rows.append((name, method, m, note))
        print(f"{name} {method}: {m}  {note}", flush=True)
        if method == "prune+stream":
            hybrid = m
        if name == "lenet5" and method.startswith("prune+stream"):
            GOALS.append(f"- {method}: {goal_line(src, m)}")
    tp, r = tp_at_macs(model, data, hybrid["macs"], 0, args.seed)
    g, _ = run_pipe(graphc.load(tp, example_inputs=data.sample(1)), f"fold-bn,{tune}", data, args.seed)
    m = measure(g, data, args.repeats)
    rows.append((name, f"TP (ratio {r:.3f})", m, "at <= the hybrid's MACs"))
    print(f"{name} TP: {m}  ({time.time() - t0:.0f}s)", flush=True)
    return [fmt(row, src) for row in rows]


def scaled(plan: tuple, scale: float) -> tuple:
    """``plan`` with its epoch counts (source, F, F1) multiplied by ``scale``."""
    src_ep, ft, s1, ratio, opts = plan
    return src_ep * scale, ft * scale, s1 * scale, ratio, opts


def fmt(row, src) -> list[str]:
    name, method, m, note = row
    return [name, method, f"{m['acc']:.2f}", f"{m['acc'] - src['acc']:+.2f}", f"{m['params']:,}",
            f"{src['params'] / m['params']:.1f}x", f"{m['macs']:,}", f"{src['macs'] / m['macs']:.1f}x",
            f"{m['ms1']:.3f}", f"{src['ms1'] / m['ms1']:.1f}x", f"{m['ms64']:.3f}", f"{src['ms64'] / m['ms64']:.1f}x",
            note]


HEAD = ["model", "method", "acc %", "Δacc pt", "params", "fewer", "MACs", "fewer", "ms b1", "speedup b1",
        "ms b64", "speedup b64", "note"]


def render(rows) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "|".join("---" for _ in HEAD) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mnist-idx:../shared/datasets/mnist-t10k")
    ap.add_argument("--models", default=",".join(PLAN))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every epoch count of the plan (source, F, F1) by this; the doc says so")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not args.scale > 0:
        print(f"stream.py: --scale must be > 0, got {args.scale}", file=sys.stderr)
        return 2
    bad = [n for n in args.models.split(",") if n not in PLAN]
    if bad:
        print(f"stream.py: unknown model {bad[0]!r}: expected some of {', '.join(PLAN)}", file=sys.stderr)
        return 2
    from graphc.data import load_data
    from graphc.errors import DataError

    try:
        data = load_data(args.data)
    except DataError as e:
        print(f"stream.py: {e}", file=sys.stderr)
        return 2
    t0, load0 = time.time(), os.getloadavg()[0]
    rows = []
    for name in args.models.split(","):
        rows += model_rows(name, data, args)
    table = render(rows)
    print(table)
    total = time.time() - t0
    plans = "; ".join(f"{n}: source {p[0]:g} epochs, R={p[3]}, F={p[1]:g}, F1={p[2]:g}, `stream-merge({p[4]})`"
                      + "".join(f" ('{label}': `stream-merge({o})`)" for label, o in EXTRA.get(n, []))
                      for n, p in ((n, scaled(p, args.scale)) for n, p in PLAN.items())
                      if n in args.models.split(","))
    if args.scale != 1:
        plans += (f" (`--scale {args.scale:g}`: every epoch count is {args.scale:g}x the script's plan, "
                  f"to keep the run short)")
    body = (f"## Stream merging and the prune + stream hybrid (bench/stream.py)\n\n"
            f"Data: `{args.data}`, {data.split}. {plans}. Methods as in the script's docstring: every row "
            f"fine-tunes F epochs with `finetune` (SGD lr {LR}, momentum 0.9, cosine, batch 64); the stream rows add F1 epochs "
            f"of rebirth's stage 1; TP is Torch-Pruning's MagnitudePruner at the ratio reaching at most the "
            f"hybrid's MACs. Accuracy: top-1 of the exported ONNX model under onnxruntime on the validation "
            f"split; 'fewer' and 'speedup' are against the original, the source as trained (every other row "
            f"trained F epochs more, so a row can beat it); ms: median of {args.repeats} onnxruntime "
            f"runs, 1 thread, on {platform.machine()} ({os.cpu_count()} CPUs shared with other jobs, load "
            f"average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end: the machine was loaded, "
            f"so latencies are noisy, sub-millisecond ones most). One seed; {total / 60:.1f} min in all.\n\n"
            f"Goal for LeNet-5 (the seed's): >= 20x fewer params, >= 8x speedup at batch 64, <= 0.5 pt "
            f"accuracy loss. {PAPER}.\n\n" + table + "\n"
            + ("\nLeNet-5 goal, as measured here:\n\n" + "\n".join(GOALS) + "\n" if GOALS else ""))
    if not args.no_write:
        key = "stream" + ("" if args.models == ",".join(PLAN) else "-" + "-".join(args.models.split(",")))
        write_section(key, body, DOC)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
