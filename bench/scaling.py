"""How graphc's compile time scales with graph size, in two parts.

Analysis: synthetic CNNs of about 1k, 2k, 5k and 10k nodes built with the IR API (residual
blocks, depthwise convs, concats and channel shuffles, so every coupling kind is exercised);
times ``channel_groups`` and ``prune(ratio=0.5)`` on each. Targets: under 10 s at 10k nodes,
at most 2.2x time per doubling of the node count.

End to end: a torch chain of residual conv-BN-ReLU blocks (x + relu(bn(conv(x))), four IR
nodes a block) of about 1k, 2k, 4k, 8k, 10k and 16k nodes; times the torch.fx import, the pipeline
``fuse,prune(ratio=0.5)`` (with the pass manager's verification and cost deltas), and both
emitters (a torch module and an ONNX model). Targets: at most 2.2x per doubling, under 5 CPU s
at 10k nodes.

With ``--flat`` the end-to-end chain is one loop in the top module's forward instead of a
sequence of block modules: torch.fx then names its ops add, add_1, add_2... with no module
scope, which once made naming (and so the import) quadratic.

One run per size and part; prints the tables and writes them to the ``scaling`` and
``scaling-e2e`` (``scaling-e2e-flat``) sections of docs/benchmarks.md.

    python bench/scaling.py [--sizes 1000,2000,5000,10000] [--e2e-sizes 1000,2000,4000,8000,10000,16000]
                            [--only analysis|e2e] [--flat] [--no-write]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(name: str, body: str, path: Path = DOC) -> Path:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (appended
    when missing), leaving the rest of the file alone; written to a temp file, then moved."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _doc_lock(path):  # benches run side by side (bench/results.py --jobs) write one file
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _doc_lock(path: Path):
    """An exclusive lock on ``path``'s read-modify-write, held in a file of the temp folder
    (the doc itself is replaced, so it cannot carry the lock)."""
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"bench-doc-{key}.lock", "a") as f:
        try:
            import fcntl
        except ImportError:  # no POSIX locks: benches there run one at a time
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def synthetic_cnn(n_nodes: int, width: int = 16, side: int = 8, seed: int = 0):
    """A CNN of about ``n_nodes`` nodes: a stem, then repeating blocks (residual, depthwise
    with BN, concat + channel shuffle), then a classifier."""
    from graphc.ir import Graph, TensorType

    rng = np.random.default_rng(seed)
    g = Graph(f"cnn{n_nodes}")
    x = g.add_input("x", TensorType((1, 3, side, side), "f32"))

    def w(*shape, name):
        return g.add_param((rng.standard_normal(shape) * 0.1).astype("f4"), source=name)

    def conv(h, cout, name, k=3, groups=1):
        cin = h.shape[1]
        attrs = {"stride": [1, 1], "padding": [k // 2] * 2, "dilation": [1, 1], "groups": groups}
        return g.add_node("conv2d", [h, w(cout, cin // groups, k, k, name=name + ".weight")], attrs, name).output

    def bn(h, name):
        c = h.shape[1]
        ps = [g.add_param(a.astype("f4"), source=f"{name}.{s}") for s, a in
              (("weight", rng.random(c) + 0.5), ("bias", rng.standard_normal(c) * 0.1),
               ("running_mean", rng.standard_normal(c) * 0.1), ("running_var", rng.random(c) + 0.5))]
        return g.add_node("batch_norm", [h] + ps, {"eps": 1e-5}, name).output

    def node(op, ins, name, **attrs):
        return g.add_node(op, ins, attrs, name).output

    h = node("relu", [bn(conv(x, width, "stem"), "stem.bn")], "stem.relu")
    i = 0
    while len(g) < n_nodes - 4:
        p = f"b{i}"
        kind = i % 3
        if kind == 0:  # residual: conv-bn-relu-conv-bn-add-relu
            r = node("relu", [bn(conv(h, width, p + ".c1"), p + ".bn1")], p + ".relu1")
            h = node("relu", [node("add", [h, bn(conv(r, width, p + ".c2"), p + ".bn2")], p + ".add")], p + ".relu2")
        elif kind == 1:  # inverted residual with a depthwise conv
            e = node("relu6", [bn(conv(h, 2 * width, p + ".expand", k=1), p + ".bn1")], p + ".relu1")
            d = node("relu6", [bn(conv(e, 2 * width, p + ".dw", groups=2 * width), p + ".bn2")], p + ".relu2")
            h = node("add", [h, bn(conv(d, width, p + ".project", k=1), p + ".bn3")], p + ".add")
        else:  # ShuffleNet unit: split, branch, concat, shuffle
            s = g.add_node("split", [h], {"dim": 1, "sizes": [width // 2, width // 2]}, p + ".split").outputs
            b = node("relu", [bn(conv(s[1], width // 2, p + ".pw", k=1), p + ".bn1")], p + ".relu1")
            cat = node("concat", [s[0], b], p + ".cat", dim=1)
            h = node("channel_shuffle", [cat], p + ".shuffle", groups=2)
        i += 1
    f = node("flatten", [node("adaptive_avg_pool2d", [h], "pool", output_size=[1, 1])], "flatten", start_dim=1, end_dim=-1)
    y = g.add_node("linear", [f, w(10, width, name="fc.weight")], {}, "fc").output
    g.set_outputs([y])
    return g


def run(sizes) -> list[dict]:
    from graphc.passes.channel_groups import channel_groups
    from graphc.passes.prune import prune_graph

    channel_groups(synthetic_cnn(100))  # imports and first-call caches, outside the timings
    rows = []
    for n in sizes:
        g = synthetic_cnn(n)
        w0, t0 = time.perf_counter(), time.process_time()
        groups = channel_groups(g)
        t1 = time.process_time()
        removed = prune_graph(g, ratio=0.5, groups=groups)
        t2, w2 = time.process_time(), time.perf_counter()
        g.verify()
        rows.append({"nodes": len(g), "groups": len(groups), "prunable": sum(x.prunable for x in groups),
                     "removed": removed, "analyse": t1 - t0, "prune": t2 - t1, "total": t2 - t0, "wall": w2 - w0})
        print(f"{len(g):>6} nodes: analyse {t1 - t0:.2f} s, prune {t2 - t1:.2f} s (CPU), wall {w2 - w0:.2f} s", flush=True)
    for a, b in zip(rows, rows[1:]):
        b["per_doubling"] = (b["total"] / a["total"]) ** (1 / np.log2(b["nodes"] / a["nodes"]))
    return rows


def residual_chain(n_nodes: int, width: int = 8, side: int = 8, flat: bool = False):
    """(module, example input): a chain of residual conv-BN-ReLU blocks, ``n_nodes`` IR nodes.
    ``flat``: the same chain as one loop in the top module's forward, so torch.fx names its
    functional ops add, add_1, add_2... with no module scope (a naming stress case)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()

        def forward(self, x):
            return x + self.relu(self.bn(self.conv(x)))

    class Flat(nn.Module):
        def __init__(self, blocks):
            super().__init__()
            self.blocks = nn.ModuleList(blocks)

        def forward(self, x):
            for b in self.blocks:
                x = x + torch.relu(b.bn(b.conv(x)))
            return x

    torch.manual_seed(0)
    blocks = [Block() for _ in range(max(1, n_nodes // 4))]
    model = (Flat(blocks) if flat else nn.Sequential(*blocks)).eval()
    return model, torch.randn(1, width, side, side)


def run_end_to_end(sizes, repeat: int = 1, flat: bool = False) -> list[dict]:
    """Per size, the run (of ``repeat``) with the least CPU time: on a shared machine the
    others measure the neighbours as much as graphc."""
    rows = []
    for n in sizes:
        runs = [_end_to_end_once(n, flat) for _ in range(repeat)]
        best = min(runs, key=lambda r: r["total"])
        rows.append(best)
        print(f"{best['nodes']:>6} nodes: import {best['import']:.2f} s, optimize {best['optimize']:.2f} s, emit torch "
              f"{best['torch']:.2f} s, emit onnx {best['onnx']:.2f} s, total {best['total']:.2f} s (CPU, best of "
              f"{repeat}), wall {best['wall']:.2f} s", flush=True)
    per_doubling(rows)
    if len(rows) > 2:
        print(f"power law fitted to all rows: {fitted_doubling(rows):.2f}x per doubling")
    return rows


def fitted_doubling(rows) -> float:
    """The time factor per doubling of a power law fitted to every row (least squares on the
    logs): one noisy row moves it far less than it moves that row's own factor."""
    k = np.polyfit(np.log2([r["nodes"] for r in rows]), np.log2([r["total"] for r in rows]), 1)[0]
    return float(2 ** k)


def per_doubling(rows) -> None:
    """Each row's CPU-time factor per doubling of the node count: against the row with about
    half its nodes when there is one (a measured doubling), else against the row before,
    normalised to an exact doubling."""
    for i, b in enumerate(rows[1:], start=1):
        half = [a for a in rows[:i] if abs(a["nodes"] * 2 / b["nodes"] - 1) < 0.05]
        a = half[-1] if half else rows[i - 1]
        b["per_doubling"] = (b["total"] / a["total"]) ** (1 / np.log2(b["nodes"] / a["nodes"]))
        b["vs"] = a["nodes"]


_WARM = []


def _end_to_end_once(n: int, flat: bool = False) -> dict:
    import torch

    import graphc
    from graphc.backends.onnx import emit_onnx
    from graphc.backends.torch import emit_torch

    torch.set_num_threads(1)
    gc.collect()  # garbage of the previous run is not this run's cost
    if not _WARM:  # imports and first-call caches, outside the timings
        m, x = residual_chain(40)
        g = graphc.load(m, example_inputs=x)
        graphc.run_pipeline(g, "fuse,prune(ratio=0.5)")
        emit_torch(g), emit_onnx(g)
        _WARM.append(True)
    m, x = residual_chain(n, flat=flat)
    w0 = time.perf_counter()
    t0 = time.process_time()
    g = graphc.load(m, example_inputs=x)
    t1 = time.process_time()
    nodes = len(g)
    graphc.run_pipeline(g, "fuse,prune(ratio=0.5)")
    t2 = time.process_time()
    emit_torch(g)
    t3 = time.process_time()
    emit_onnx(g)
    t4 = time.process_time()
    w4 = time.perf_counter()
    return {"nodes": nodes, "after": len(g), "import": t1 - t0, "optimize": t2 - t1, "torch": t3 - t2,
            "onnx": t4 - t3, "total": t4 - t0, "wall": w4 - w0}


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    """A markdown table of numbers, every column right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---:"] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def doubling(r, against: bool = False) -> str:
    if "per_doubling" not in r:
        return "-"
    return f"{r['per_doubling']:.2f}" + (f" (vs {r['vs']})" if against else "")


def table_e2e(rows) -> str:
    return markdown_table(
        ["nodes", "after", "import s", "optimize s", "emit torch s", "emit onnx s", "total s", "wall s",
         "time x per doubling (vs nodes)"],
        [[str(r["nodes"]), str(r["after"])] + [f"{r[k]:.2f}" for k in ("import", "optimize", "torch", "onnx", "total", "wall")]
         + [doubling(r, against=True)] for r in rows])


def e2e_section(rows, where: str, repeat: int, flat: bool = False) -> str:
    title = "## End to end: scaling" + (" (flat forward)" if flat else "")
    model = ("The same chain written as one loop in the top module's forward, so torch.fx names its ops "
             "`add`, `add_1`, ... with no module scope" if flat else
             "A torch chain of residual conv-BN-ReLU blocks (`x + relu(bn(conv(x)))`, 8 channels, 8x8, four "
             "IR nodes a block)")
    return (f"{title}\n\n{model}: torch.fx import, `fuse,prune(ratio=0.5)` through the pass manager (verified "
            "and costed after every changing pass), then emit a torch module and an ONNX model; "
            f"{where} Each row is the best of {repeat} runs; a row's factor per doubling is taken against "
            f"the row with half its nodes where there is one. Targets: at most 2.2x per doubling, under 5 CPU s "
            f"at 10k nodes.\n\n" + table_e2e(rows)
            + (f"\n\nA power law fitted to all rows grows {fitted_doubling(rows):.2f}x per doubling." if len(rows) > 2 else ""))


def table(rows) -> str:
    return markdown_table(
        ["nodes", "groups (prunable)", "units removed", "analyse s", "prune s", "total s", "wall s", "time x per doubling"],
        [[str(r["nodes"]), f"{r['groups']} ({r['prunable']})", str(r["removed"])]
         + [f"{r[k]:.2f}" for k in ("analyse", "prune", "total", "wall")] + [doubling(r)] for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000,10000")
    ap.add_argument("--e2e-sizes", default="1000,2000,4000,8000,10000,16000")
    ap.add_argument("--only", choices=("analysis", "e2e"), help="run one part only")
    ap.add_argument("--repeat", type=int, default=3, help="end-to-end runs per size; the least CPU time counts")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--flat", action="store_true", help="end to end on the chain as one flat forward "
                    "(section scaling-e2e-flat)")
    args = ap.parse_args(argv)
    where = (f"on {platform.processor() or platform.machine()}, {os.cpu_count()} cores. Times "
             f"are CPU seconds of the process (single-threaded; the machine is shared, and CPU time does not "
             f"count waiting for a core), wall seconds alongside. Time per doubling (of the CPU total) is "
             f"normalised to an exact doubling of the node count. Generated by `python bench/scaling.py`.")
    if args.only != "e2e":
        rows = run([int(s) for s in args.sizes.split(",")])
        body = ("## Channel groups and prune: scaling\n\n"
                f"Synthetic CNNs (residual, depthwise and shuffle blocks, width 16), `channel_groups` + "
                f"`prune(ratio=0.5)`, one run per size {where}\n\n" + table(rows))
        print(table(rows))
        if not args.no_write:
            print(f"wrote {write_section('scaling', body)}")
    if args.only != "analysis":
        rows = run_end_to_end([int(s) for s in args.e2e_sizes.split(",")], args.repeat, args.flat)
        print(table_e2e(rows))
        if not args.no_write:
            key = "scaling-e2e-flat" if args.flat else "scaling-e2e"
            print(f"wrote {write_section(key, e2e_section(rows, where, args.repeat, args.flat))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
