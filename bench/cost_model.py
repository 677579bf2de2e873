"""Predicted vs measured latency over zoo models and compressed variants.

For each model: build it (random weights) at batch 1 and a small input (``--size``, default
128x128, to keep the run to a few minutes on a 2-core CPU), load it into graphc, emit ONNX,
measure onnxruntime latency (warm-up, then repeats; median), and predict it with the
calibrated roofline (``graphc calibrate``; run here if no calibration is cached). Variants:
``prune(ratio=r)`` for r in 0.25, 0.5, 0.75 of a few models when the prune pass is
registered, otherwise width-scaled versions of those whose constructor allows it (mobilenet_v2
width_mult, ResNet-50 bottleneck width).

Prints a table, then Spearman rank correlation and MAPE of predicted vs measured median
latency. ``--plot out.png`` draws per-layer MACs and profiled latency of one model before and
after compression.

    python bench/cost_model.py [--size 128] [--repeats 20] [--models resnet18,...] [--plot out.png]
    python bench/cost_model.py --threads 1 --clock cpu    # steady on a machine shared with other jobs

On the 2-core development machine (29 models, 40-90 s): default threads and the wall clock on a
quiet machine give Spearman 0.987 and MAPE 16.0%; ``--threads 1 --clock cpu`` Spearman 0.992 and
MAPE 14.1%; the wall clock while other jobs shared the machine Spearman 0.993, MAPE 32.5%
(docs/cost_model.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

MODELS = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
          "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1", "shufflenet_v2_x1_0",
          "squeezenet1_1", "densenet121", "regnet_x_400mf", "regnet_y_800mf", "mnasnet1_0", "googlenet",
          "alexnet", "vgg11", "convnext_tiny"]
VARIANT_BASES = ["resnet18", "mobilenet_v2", "resnet50"]
RATIOS = [0.25, 0.5, 0.75]


def build(name: str, **kw):
    import torchvision

    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, **extra, **kw).eval()


def prune_available() -> bool:
    try:
        from graphc.registry import all_passes

        import graphc.pipeline  # noqa: F401
        return "prune" in all_passes()
    except Exception:
        return False


def variants(x, use_prune: bool):
    """(label, graph) pairs: the base models, then their compressed variants."""
    import graphc

    for name in MODELS:
        yield name, graphc.load(build(name), example_inputs=x)
    for name in VARIANT_BASES:
        for r in RATIOS:
            if use_prune:
                g = graphc.load(build(name), example_inputs=x)
                graphc.run_pipeline(g, f"prune(ratio={r})")
                yield f"{name} prune {r}", g
            elif name == "mobilenet_v2":
                yield f"{name} width {1 - r}", graphc.load(build(name, width_mult=1 - r), example_inputs=x)
            elif name == "resnet50":
                yield f"{name} width {1 - r}", graphc.load(build(name, width_per_group=int(64 * (1 - r))), example_inputs=x)
            # resnet18's constructor has no width option: without the prune pass it has no variants


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128, help="input side (default 128)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--models", default=None, help="comma-separated base models (default: a fixed set of 20)")
    ap.add_argument("--no-variants", action="store_true")
    ap.add_argument("--recalibrate", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its choice)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: CPU time of one thread (with --threads 1), steady when the machine is busy")
    ap.add_argument("--plot", default=None, help="per-layer MACs/latency before/after plot (png)")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    import graphc
    from graphc.backends.calibration import calibrate
    from graphc.backends.cost import totals
    from graphc.backends.latency import measure_onnx, predict

    global MODELS
    if args.models:
        MODELS = args.models.split(",")
    if args.no_variants:
        VARIANT_BASES.clear()
    calib = calibrate(force=args.recalibrate, threads=args.threads, clock=args.clock)
    use_prune = prune_available()
    x = torch.randn(1, 3, args.size, args.size)
    print(f"input 1x3x{args.size}x{args.size}; variants by {'prune pass' if use_prune else 'width scaling'}; "
          f"onnxruntime {calib.key.get('onnxruntime')} on {calib.key.get('cpu')} ({calib.key.get('cores')} cores), "
          f"threads {args.threads or 'default'}, {args.clock} clock")
    print(f"{'model':<32} {'GMACs':>8} {'Mparams':>8} {'measured ms':>12} {'IQR':>6} {'predicted ms':>13} {'err':>7}")
    rows = []
    t0 = time.time()
    for label, g in variants(x, use_prune):
        t = totals(g)
        onnx_model = graphc.emit_onnx(g)
        m = measure_onnx(onnx_model, warmup=5, repeats=args.repeats, min_seconds=0.3, threads=args.threads,
                         clock=args.clock)
        p = predict(g, calib).total_ms
        err = (p - m.median) / m.median
        rows.append({"model": label, "macs": t["macs"], "params": t["params"], "measured_ms": m.median,
                     "iqr_ms": m.iqr, "predicted_ms": p})
        print(f"{label:<32} {t['macs'] / 1e9:>8.3f} {t['params'] / 1e6:>8.2f} {m.median:>12.2f} {m.iqr:>6.2f} "
              f"{p:>13.2f} {100 * err:>+6.1f}%", flush=True)
    meas = np.array([r["measured_ms"] for r in rows])
    pred = np.array([r["predicted_ms"] for r in rows])
    macs = np.array([r["macs"] for r in rows])
    rho = spearman(pred, meas)
    mape = float(np.mean(np.abs(pred - meas) / meas))
    print(f"\n{len(rows)} models in {time.time() - t0:.0f} s")
    print(f"Spearman (predicted vs measured latency): {rho:.3f}   (target >= 0.9)")
    print(f"MAPE (predicted vs measured latency):     {100 * mape:.1f}%   (target <= 25%)")
    print(f"Spearman (MACs vs measured latency):      {spearman(macs, meas):.3f}   (for reference)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "spearman": rho, "mape": mape, "size": args.size}, f, indent=2)
    if args.plot:
        plot_before_after(args.plot, x, use_prune, args.threads)
        print(f"wrote {args.plot}")
    return 0


def plot_before_after(path, x, use_prune, threads=None):
    import graphc
    from graphc.backends.cost import per_node
    from graphc.backends.cost_report import plot_layers
    from graphc.backends.latency import attribute_to_heads, profile_onnx

    if use_prune:
        before = graphc.load(build("resnet18"), example_inputs=x)
        after = before.clone()
        graphc.run_pipeline(after, "prune(ratio=0.5)")
        title = "resnet18: before/after prune(ratio=0.5)"
    else:
        before = graphc.load(build("mobilenet_v2"), example_inputs=x)
        after = graphc.load(build("mobilenet_v2", width_mult=0.5), example_inputs=x)
        title = "mobilenet_v2: width 1.0 (before) vs 0.5 (after)"
    lb = attribute_to_heads(before, profile_onnx(graphc.emit_onnx(before), threads=threads, repeats=15))
    la = attribute_to_heads(after, profile_onnx(graphc.emit_onnx(after), threads=threads, repeats=15))
    plot_layers(path, per_node(before), lb, after_rows=per_node(after), after_latency=la, title=title,
                latency_label="onnxruntime ms (profiled)")


if __name__ == "__main__":
    sys.exit(main())
