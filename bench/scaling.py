"""How the channel-group analysis and the prune pass scale with graph size.

Builds synthetic CNNs of about 1k, 2k, 5k and 10k nodes with the IR API (residual blocks,
depthwise convs, concats and channel shuffles, so every coupling kind is exercised), then
times ``channel_groups`` and ``prune(ratio=0.5)`` on each, one run per size. Prints a table
and writes it to the ``scaling`` section of docs/benchmarks.md. Targets: under 10 s at 10k
nodes, at most 2.2x time per doubling of the node count.

    python bench/scaling.py [--sizes 1000,2000,5000,10000] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(name: str, body: str, path: Path = DOC) -> Path:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (appended
    when missing), leaving the rest of the file alone; written to a temp file, then moved."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


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


def table(rows) -> str:
    lines = ["| nodes | groups (prunable) | units removed | analyse s | prune s | total s | wall s | time x per doubling |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = f"{r['per_doubling']:.2f}" if "per_doubling" in r else "-"
        lines.append(f"| {r['nodes']} | {r['groups']} ({r['prunable']}) | {r['removed']} | {r['analyse']:.2f} | "
                     f"{r['prune']:.2f} | {r['total']:.2f} | {r['wall']:.2f} | {d} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000,10000")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = run(sizes)
    body = ("## Channel groups and prune: scaling\n\n"
            f"Synthetic CNNs (residual, depthwise and shuffle blocks, width 16), `channel_groups` + "
            f"`prune(ratio=0.5)`, one run per size on {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores. Times are CPU seconds of the process (single-threaded; the machine is "
            f"shared, and CPU time does not count waiting for a core), wall seconds alongside. Time per "
            f"doubling (of the CPU total) is normalised to an exact doubling of the node count. Generated by "
            f"`python bench/scaling.py`.\n\n" + table(rows))
    print(table(rows))
    if not args.no_write:
        print(f"wrote {write_section('scaling', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
