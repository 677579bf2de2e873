"""Benchmark of the `fuse` preset against onnxslim on torchvision models.

For each model (random weights with non-trivial BN statistics, eval mode) the script exports
one ONNX file, then on that same file: imports it into graphc, runs `fuse`, emits ONNX; and
runs onnxslim. It reports nodes, params and MACs before and after, the ONNX node count of
each result, and onnxruntime latency of all three, measured interleaved (round-robin) so
machine drift hits every variant alike. It checks that every optimized model still computes
the model's output, and flags a fused model slower than its input by more than the noise.

    python bench/fuse.py                    # a dozen models at 224x224, writes docs/benchmarks.md
    python bench/fuse.py --models resnet18 --side 112 --no-write

The table replaces only the text between the markers ``<!-- bench:fuse -->`` and
``<!-- /bench:fuse -->`` in docs/benchmarks.md (the file is created if missing).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = ["resnet18", "resnet50", "convnext_tiny", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
          "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0", "regnet_y_400mf", "googlenet",
          "vgg11_bn"]
BEGIN, END = "<!-- bench:fuse -->", "<!-- /bench:fuse -->"
ROOT = Path(__file__).resolve().parent.parent


class RepVGGBlock(torch.nn.Module):
    """RepVGG's training-time block: 3x3+BN, 1x1+BN and identity BN, summed, then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        bn = torch.nn.BatchNorm2d
        self.k3 = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1, bias=False), bn(c))
        self.k1 = torch.nn.Sequential(torch.nn.Conv2d(c, c, 1, bias=False), bn(c))
        self.id = bn(c)

    def forward(self, x):
        return torch.relu(self.k3(x) + self.k1(x) + self.id(x))


class ConvPoolNet(torch.nn.Module):
    """Caffe-era layout: conv -> avg-pool downsampling with no activation between, then the
    nonlinearity; and an EDP-style decomposed pair (1x1 widening, then 3x3) in each stage."""

    def __init__(self, widths=(32, 64, 128)):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [torch.nn.Conv2d(c, w // 2, 1, bias=False), torch.nn.Conv2d(w // 2, w, 3, padding=1),
                       torch.nn.AvgPool2d(2), torch.nn.ReLU()]
            c = w
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(c, 10))

    def forward(self, x):
        return self.head(self.features(x))


# Models no torchvision model exercises: the fusions no ONNX optimizer does.
SYNTHETIC = {
    "repvgg_like": lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, 2, 1), torch.nn.ReLU(),
                                               *[RepVGGBlock(48) for _ in range(4)], torch.nn.AdaptiveAvgPool2d(1),
                                               torch.nn.Flatten(), torch.nn.Linear(48, 10)),
    "convpool_net": ConvPoolNet,
}


def build(name: str, side: int):
    import torchvision

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    if name in SYNTHETIC:
        model = SYNTHETIC[name]().eval()
    else:
        model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        # Fresh BNs are the identity; real statistics make folds visible in the numbers.
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    return model, x


def ort_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _summary(times: list[float]) -> tuple[float, float]:
    """(fastest ms, spread ms): the fastest run is the latency least disturbed by other work on
    the machine; the spread (lower quartile - fastest) is how far that estimate moves."""
    fastest = min(times)
    return fastest, statistics.quantiles(times, n=4)[0] - fastest


def latencies(sessions: list, x: np.ndarray, repeats: int) -> list[list[float]]:
    """Run times in ms per session, timed round-robin so drift hits every session alike."""
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(3):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            s.run(None, f)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def bench_model(name: str, side: int, repeats: int, threads: int, workdir: Path, fold_export: bool) -> dict:
    import onnx
    import onnxslim

    import graphc
    from graphc.backends.cost import totals
    from graphc.backends.onnx import emit_onnx

    model, x = build(name, side)
    with torch.no_grad():
        y = model(x).numpy()
    path = workdir / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                      do_constant_folding=fold_export)
    src = onnx.load(str(path))

    g = graphc.load(str(path))
    before = totals(g)
    t0 = time.perf_counter()
    graphc.run_pipeline(g, "fuse")
    fuse_s = time.perf_counter() - t0
    after = totals(g)
    fused = emit_onnx(g)
    t0 = time.perf_counter()
    slim = onnxslim.slim(onnx.load(str(path)))
    slim_s = time.perf_counter() - t0

    variants = {"input": src, "fuse": fused, "onnxslim": slim}
    sessions = {k: ort_session(m.SerializeToString(), threads) for k, m in variants.items()}
    xs = x.numpy()
    errs = {}
    for k, s in sessions.items():
        out = s.run(None, {s.get_inputs()[0].name: xs})[0]
        errs[k] = float(np.abs(out - y).max())
    samples = {k: [] for k in sessions}
    for _ in range(3):
        # A shared machine can stall one variant's runs; a verdict of "slower" is re-timed
        # (more runs for every variant) before it stands.
        for k, t in zip(sessions, latencies(list(sessions.values()), xs, repeats)):
            samples[k].extend(t)
        lat = {k: _summary(t) for k, t in samples.items()}
        (m_in, d_in), (m_f, d_f) = lat["input"], lat["fuse"]
        noise = max(d_in, d_f) + 0.03 * m_in
        if m_f <= m_in + noise:
            break
    return {
        "model": name, "side": side,
        "nodes_in": len(src.graph.node), "nodes_fuse": len(fused.graph.node), "nodes_slim": len(slim.graph.node),
        "ir_nodes_in": before["nodes"], "ir_nodes_fuse": after["nodes"],
        "params_in": before["params"], "params_fuse": after["params"],
        "macs_in": before["macs"], "macs_fuse": after["macs"],
        "ms_in": m_in, "ms_fuse": m_f, "ms_slim": lat["onnxslim"][0],
        "err_fuse": errs["fuse"], "err_slim": errs["onnxslim"], "err_in": errs["input"],
        "fuse_s": fuse_s, "slim_s": slim_s,
        "slower": m_f > m_in + noise,
    }


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _g(n: int) -> str:
    return f"{n / 1e9:.3f}G"


def table(rows: list[dict], threads: int, fold_export: bool, repeats: int) -> str:
    head = ("| model | ONNX nodes in / fuse / onnxslim | params in -> fuse | MACs in -> fuse "
            "| ORT ms in / fuse / onnxslim | fuse vs in | max err fuse / onnxslim |\n"
            "|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        verdict = "SLOWER" if r["slower"] else f"{r['ms_fuse'] / r['ms_in']:.2f}x"
        lines.append(
            f"| {r['model']} ({r['side']}px) | {r['nodes_in']} / {r['nodes_fuse']} / {r['nodes_slim']} "
            f"| {_m(r['params_in'])} -> {_m(r['params_fuse'])} | {_g(r['macs_in'])} -> {_g(r['macs_fuse'])} "
            f"| {r['ms_in']:.2f} / {r['ms_fuse']:.2f} / {r['ms_slim']:.2f} | {verdict} "
            f"| {r['err_fuse']:.1e} / {r['err_slim']:.1e} |")
    how = ("with its constant folding, which already folds each BN into the conv before it" if fold_export else
           "without constant folding, so BNs and weight Identity nodes stay as older exporters leave them")
    note = (f"\nONNX files exported by torch.onnx (opset 17, TorchScript exporter, {how}), "
            f"batch 1, onnxruntime CPU with {threads} intra-op thread(s) "
            f"and its default graph optimizations; latency is the fastest of {repeats} interleaved runs "
            f"(up to {3 * repeats} when re-timed); "
            f"'fuse vs in' is fused/input latency, SLOWER when beyond the runs' spread (lower quartile - fastest) "
            f"+ 3 %. Max err is against the "
            f"PyTorch model's output.\n")
    return head + "\n".join(lines) + "\n" + note


def write_section(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## fuse: exact fusions vs onnxslim\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".benchmarks.", suffix=".md")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS + list(SYNTHETIC))
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--fold-export", action="store_true", help="let the exporter fold constants (and BNs) first")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphc-bench-") as d:
        for name in args.models:
            r = bench_model(name, args.side, args.repeats, args.threads, Path(d), args.fold_export)
            rows.append(r)
            print(f"{name}: nodes {r['nodes_in']} -> fuse {r['nodes_fuse']} / slim {r['nodes_slim']}, "
                  f"ms {r['ms_in']:.2f} -> {r['ms_fuse']:.2f} / {r['ms_slim']:.2f}, "
                  f"err {r['err_fuse']:.1e}, fuse {r['fuse_s']:.1f}s", file=sys.stderr, flush=True)
    text = table(rows, args.threads, args.fold_export, args.repeats)
    print(text)
    if not args.no_write:
        write_section(text, args.out)
    return 1 if any(r["slower"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
