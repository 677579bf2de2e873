"""ResConv layer pruning (Xu et al., arXiv 2011.14356) measured end to end, against channel
pruning at equal MACs and equal fine-tune budget, in one run; writes the ``resconv`` section of
docs/results.md.

    OMP_NUM_THREADS=1 python bench/resconv.py --data mnist-idx:../shared/datasets/mnist-t10k

1. plain20 trained plainly vs with ResConv layers (``plain20-resconv``, fused back into plain20's
   architecture after training), the same epochs and seed: validation accuracy of each.
2. ``resconv-wrap,resconv-train,layer-prune,finetune,fuse`` on plain20 (the ResConv-trained one of
   1, fused) and resnet56 at two MACs targets: MACs, params, accuracy, onnxruntime latency (batch 1 and 32), peak memory.
3. At the MACs of the 50% level on resnet56: ``prune(target-macs)`` + finetune and
   Torch-Pruning's MagnitudePruner + fine-tune, the same training budget as layer pruning
   (resconv-train + its finetune).
4. No retraining: 20% of the blocks removed by scale ranking, no finetune.
5. The paper's ResNet-110 / CIFAR-10 figure beside them, labelled as the paper's.

Budgets are in epochs of the training split (``--src-epochs``, ``--resnet-epochs``,
``--train-epochs``, ``--finetune-epochs``), sized so the run fits well inside 30 minutes on one
core; the section states them.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import edp  # noqa: E402
from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"
LEVELS = (0.7, 0.5)
SRC_LR = 0.05  # training the sources; SGD, momentum 0.9, batch 64 everywhere
PAPER = ("ResNet-110, CIFAR-10 (the paper's figure, not measured here)", "ResConv layer pruning",
         "-0.13", "34.5%", "44.5%")

_MEM = r"""
import sys, numpy as np, onnxruntime as ort
def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
shape = [int(d) for d in sys.argv[2].split(",")]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
base = kib("VmRSS")
for _ in range(3):
    s.run(None, {s.get_inputs()[0].name: x})
print((kib("VmHWM") - base) / 1024.0)
"""


def batched(graph, batch: int):
    """The graph as ONNX with a free batch dimension (inputs, outputs), run at ``batch``."""
    from graphc.backends.onnx import emit_onnx

    model = emit_onnx(graph)
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    return model


def peak_mb(path: Path, shape) -> float:
    """Resident memory onnxruntime adds while running an input of ``shape`` (VmHWM after minus
    VmRSS before the runs), measured in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEM, str(path), ",".join(str(d) for d in shape)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(graph, data, tmp: Path, tag: str, repeats: int) -> dict:
    import numpy as np

    from graphc.backends.cost import totals
    from graphc.backends.latency import measure_onnx
    from graphc.check import accuracy, result_runner

    t = totals(graph)
    run, _ = result_runner(graph, "onnx")
    acc = accuracy(run, data, graph.inputs[0].shape[0])
    model = batched(graph, 32)
    path = tmp / f"{tag}.onnx"
    path.write_bytes(model.SerializeToString())
    x1 = data.sample(1).numpy()
    x32 = np.concatenate([data.sample(1).numpy()] * 32)
    ms1 = measure_onnx(model, [x1], warmup=5, repeats=repeats, threads=1).median
    ms32 = measure_onnx(model, [x32], warmup=2, repeats=max(3, repeats // 4), threads=1).median
    ops = sorted({n.op for n in graph.nodes})
    return {"acc": acc, "macs": int(t["macs"]), "params": int(t["params"]), "ms1": ms1, "ms32": ms32,
            "mem32": peak_mb(path, x32.shape), "act32": 32 * t["peak_bytes"] / t["batch"] / 2 ** 20, "ops": ops}


def pipeline(graph, spec: str, data, seed: int, quiet: bool):
    from graphc.manager import run_pipeline
    from graphc.registry import PassContext

    g = graph.clone()
    rep = run_pipeline(g, spec, PassContext(data=data, seed=seed, quiet=quiet))
    return g, {p.name: p.stats for p in rep.passes}


HEAD = ["model", "method", "layers removed", "acc %", "Δacc pt", "MACs", "MACs %", "params", "params %",
        "ms b1", "ms b32", "mem b32 MiB", "act b32 MiB"]


def row(model, method, removed, m, src) -> list[str]:
    return [model, method, removed, f"{m['acc']:.2f}", f"{m['acc'] - src['acc']:+.2f}", f"{m['macs']:,}",
            f"{m['macs'] / src['macs']:.1%}", f"{m['params']:,}", f"{m['params'] / src['params']:.1%}",
            f"{m['ms1']:.3f}", f"{m['ms32']:.2f}", f"{m['mem32']:.1f}", f"{m['act32']:.1f}"]


def table(head, rows) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


CLAIM1 = ["model", "training", "epochs", "val acc %", "MACs (fused)", "ops (fused)"]


def body(args, data, claim1, main_table, nr_table, seconds, done) -> str:
    import torch_pruning

    T, F = args.train_epochs, args.finetune_epochs
    return (
        "## ResConv layer pruning (bench/resconv.py)\n\n"
        + ("" if done else "**Partial: the run had not finished when this was written; only the rows "
                           "shown were measured.**\n\n")
        + f"Command: `python bench/resconv.py {' '.join(sys.argv[1:])}` (budgets cut from the defaults "
        "so the whole run fits 25 minutes on the loaded machine).\n\n"
        + f"Data: `{args.data}`, {data.split} (accuracy: top-1 on that validation part, the exported "
        f"ONNX model under onnxruntime). One run, one seed ({args.seed}) for every row, headline rows "
        f"included (three seeds did not fit the time budget), {seconds / 60:.1f} min on "
        f"{platform.machine()} ({os.cpu_count()} CPUs shared with other jobs, 1 thread; 1-minute load "
        f"average {os.getloadavg()[0]:.1f} when written, so the latencies are noisy and comparable "
        "only within this run). Budgets, in "
        f"epochs of the 8,000 training images (SGD, momentum 0.9, batch 64): plain20 and "
        f"plain20-resconv trained {args.src_epochs:g} epoch(s) at lr {SRC_LR:g} (the plain20 rows of "
        "2-4 start from the ResConv-trained plain20 fused back into plain20's architecture: the "
        "paper's pipeline, train with ResConv then prune); other sources "
        f"{args.resnet_epochs:g} epoch(s) at lr {SRC_LR:g} (one resnet56 epoch takes about 7 minutes "
        f"of one core, so the sources are far from converged); `resconv-train(epochs={T:g}, lr={args.lr:g}, "
        f"target-macs={min(LEVELS)})` once per model; `layer-prune(target-macs=L)` then "
        f"`finetune(epochs={F:g})`; the channel-pruning baselines get the same {T + F:g} epochs "
        f"of fine-tune at lr {args.lr:g}; every graphc fine-tune and `resconv-train` first re-estimates "
        f"the BN statistics on {args.recalibrate} training batches (`recalibrate={args.recalibrate}`; "
        "graphc trains BN with frozen statistics), the Torch-Pruning fine-tune runs BN in train mode "
        f"(Torch-Pruning {torch_pruning.__version__} `MagnitudePruner`, "
        "L1, classifier kept, at the least ratio reaching at most the layer-pruned MACs). A block that a "
        "target forces out with its scale not zero becomes its shortcut with the scale moved onto it "
        "(beta + alpha). Both channel pruners start from the unfused trained module (BN kept); "
        "plain20's layer pruning starts from its fused graph, which has no BN left, so the "
        "recalibration changes nothing there. Everything "
        "is fused (`fuse`) before measuring, so only standard convs are left. ms: median onnxruntime "
        f"latency at batch 1 ({args.repeats} runs) and 32; mem b32: resident memory onnxruntime adds "
        "while running batch 32 (VmHWM after minus VmRSS before, fresh process); act b32: the cost "
        "model's peak of live activations at batch 32.\n\n"
        "**1. ResConv training vs plain training (plain20, same epochs, seed and lr):**\n\n"
        + table(CLAIM1, claim1)
        + "\n\n**2, 3, 5. Layer pruning at two MACs levels, channel pruning at the MACs of the 50% level, "
        "the paper's figure:**\n\n" + main_table
        + "\n\n**4. No retraining (blocks removed straight after resconv-train):**\n\n" + nr_table + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="mnist-idx:../shared/datasets/mnist-t10k")
    ap.add_argument("--src-epochs", type=float, default=1.0, help="plain20 / plain20-resconv training")
    ap.add_argument("--resnet-epochs", type=float, default=0.5, help="resnet56 training")
    ap.add_argument("--train-epochs", type=float, default=0.3, help="resconv-train")
    ap.add_argument("--finetune-epochs", type=float, default=0.2, help="fine-tune after layer-prune")
    ap.add_argument("--lr", type=float, default=0.01,
                    help="resconv-train and every fine-tune (graphc trains with BN statistics frozen, which "
                         "diverges at high lr from a briefly trained source)")
    ap.add_argument("--recalibrate", type=int, default=20,
                    help="BN recalibration batches before resconv-train and before every graphc fine-tune "
                         "(0: off); Torch-Pruning fine-tunes with BN in train mode instead")
    ap.add_argument("--models", default="plain20,resnet56")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    import torch

    import graphc
    from graphc.data import load_data
    from graphc.models.examples import train_example

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_data(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="resconv-bench-"))
    T, F = args.train_epochs, args.finetune_epochs
    R = args.recalibrate
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    claim1: list = []
    rows: list = []
    norows: list = []

    def flush(done: bool = False) -> None:
        """Print and write what is measured so far: a run stopped early still leaves its rows,
        marked as partial."""
        main_table = table(HEAD, rows + [[PAPER[0], PAPER[1], "", "", PAPER[2], "", PAPER[3], "", PAPER[4]]
                                         + [""] * 4])
        nr_table = table(HEAD, norows)
        if done:
            print(main_table)
            print(nr_table)
        if args.no_write:
            return
        write_section("resconv", body(args, data, claim1, main_table, nr_table, time.perf_counter() - t0, done), DOC)

    # 1. ResConv training vs plain training, same epochs and seed.
    say("1. plain20 vs plain20-resconv")
    m_plain, r_plain = train_example("plain20", data, epochs=args.src_epochs, lr=SRC_LR, seed=args.seed,
                                     quiet=args.quiet)
    m_rc, r_rc = train_example("plain20-resconv", data, epochs=args.src_epochs, lr=SRC_LR, seed=args.seed,
                               quiet=args.quiet)
    x1 = data.sample(1)
    g_plain = graphc.load(m_plain, example_inputs=x1)
    g_rc = graphc.load(m_rc, example_inputs=x1)
    fused, _ = pipeline(g_rc, "fuse", data, args.seed, True)
    g_plain_fused, _ = pipeline(g_plain, "fuse", data, args.seed, True)
    m1 = {"plain": measure(g_plain_fused, data, tmp, "plain", args.repeats),
          "resconv": measure(fused, data, tmp, "rc", args.repeats)}
    claim1 += [["plain20", "plain (conv-BN-ReLU)", f"{args.src_epochs:g}", f"{m1['plain']['acc']:.2f}",
               f"{m1['plain']['macs']:,}", ", ".join(m1["plain"]["ops"])],
              ["plain20", "ResConv layers, fused after training", f"{args.src_epochs:g}",
               f"{m1['resconv']['acc']:.2f}", f"{m1['resconv']['macs']:,}", ", ".join(m1["resconv"]["ops"])]]
    print(table(CLAIM1, claim1))
    flush()
    # plain20's pruning source is the ResConv-trained plain20, fused back into plain20's
    # architecture (the paper's pipeline: train with ResConv, then prune); Torch-Pruning prunes
    # the same weights in their unfused module.
    sources = {"plain20": (m_rc, fused)}
    measured = {"plain20": m1["resconv"]}
    for name in args.models.split(","):
        if name not in sources:
            say(f"training {name}")
            m, _ = train_example(name, data, epochs=args.resnet_epochs, lr=SRC_LR, seed=args.seed, quiet=args.quiet)
            sources[name] = (m, graphc.load(m, example_inputs=x1))
        module, g0 = sources[name]
        src = measured.get(name) or measure(pipeline(g0, "fuse", data, args.seed, True)[0], data, tmp,
                                            f"{name}-src", args.repeats)
        rows.append(row(name, "source (ResConv-trained, fused)" if name == "plain20" else "source", "0", src, src))
        flush()
        say(f"2. resconv on {name}")
        gt, st = pipeline(g0, f"resconv-wrap,resconv-train(epochs={T:g},lr={args.lr},target-macs={min(LEVELS)},"
                          f"recalibrate={R})",
                          data, args.seed, args.quiet)
        blocks = st["resconv-train"]["blocks"]
        zero = st["resconv-train"]["zero_scales"]
        # 4. no retraining: the zero scales alone (exact), then 20% of the blocks by scale.
        for label, spec in (("layer-prune, zero scales only (exact), no fine-tune", "layer-prune,fuse"),
                            ("layer-prune(target-layers=0.2), no fine-tune", "layer-prune(target-layers=0.2),fuse")):
            g, s = pipeline(gt, spec, data, args.seed, True)
            m = measure(g, data, tmp, f"{name}-nr", args.repeats)
            norows.append(row(name, label, f"{s['layer-prune']['removed']}/{blocks}", m, src))
            flush()
        at_half = None
        for lv in LEVELS:
            g, s = pipeline(gt, f"layer-prune(target-macs={lv}),finetune(epochs={F:g},lr={args.lr},recalibrate={R}),fuse", data,
                            args.seed, args.quiet)
            m = measure(g, data, tmp, f"{name}-{lv}", args.repeats)
            rows.append(row(name, f"resconv, target-macs={lv}", f"{s['layer-prune']['removed']}/{blocks}", m, src))
            flush()
            if lv == min(LEVELS):
                at_half = (g, m)
        # 3. channel pruning at the same MACs and the same training budget (T + F epochs).
        target = at_half[1]["macs"]
        say(f"3. channel pruning at {target:,} MACs")
        # graphc's channel pruning starts, like Torch-Pruning, from the unfused module (BN kept,
        # so its fine-tune's BN recalibration has statistics to re-estimate).
        g, _ = pipeline(graphc.load(module, example_inputs=x1), f"prune(target-macs={target}),finetune(epochs={T + F:g},lr={args.lr},recalibrate={R}),fuse", data,
                        args.seed, args.quiet)
        rows.append(row(name, f"graphc prune(target-macs) + finetune {T + F:g} ep", "0",
                        measure(g, data, tmp, f"{name}-prune", args.repeats), src))
        flush()
        edp.LR = args.lr
        tp_model, ratio = edp.tp_at_macs(module, data, target, T + F, args.seed)
        g = pipeline(graphc.load(tp_model, example_inputs=x1), "fuse", data, args.seed, True)[0]
        rows.append(row(name, f"Torch-Pruning MagnitudePruner (r={ratio:.3f}) + fine-tune {T + F:g} ep", "0",
                        measure(g, data, tmp, f"{name}-tp", args.repeats), src))
        flush()
        say(f"{name}: resconv-train left {zero}/{blocks} scales exactly zero")
    flush(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
