"""OLMP (layer-wise magnitude pruning with NCS-searched thresholds) on LeNet-300-100 and
LeNet-5, its ablations, and prune(search=ncs) against uniform-ratio prune.

1. For LeNet-300-100 and LeNet-5 (Caffe form), trained by ``train_example``:
   - DNS with a hand-set uniform c (``dns(c=C)``);
   - OLMP with NCS as published (``olmp(search=ncs)``);
   - OLMP with the released code's NCS rule (``search=ncs-released``: never accepts a child);
   - OLMP with random search of the same budget (``search=random``);
   - global magnitude pruning to the same number of kept weights as OLMP-NCS, then trained
     with the masks fixed for the same number of steps.
   Each is measured as the paper does: compression = all weights / non-zero weights; accuracy
   is top-1 of the written sparse ONNX file under onnxruntime on the validation split, whose
   outputs are compared with the dense masked torch module (max |difference| column); file
   size is the sparse ONNX file's.
2. prune(search=ncs) against uniform-ratio prune at the same MACs budget on small-vgg and
   small-resnet, both fine-tuned for the same epochs.
3. The paper's figures, labelled as the paper's (not measured here).

    python bench/olmp.py --data mnist-idx:../shared/datasets/mnist-t10k           # paper budget
    python bench/olmp.py --data mnist-idx:../shared/datasets/mnist-t10k --quick   # minutes on a CPU
    python bench/olmp.py --data mnist-idx:../shared/datasets/mnist-t10k --jobs 10  # methods side by side

The default is the released code's budget (30,000 steps of batch 64, NCS every 1,000 steps with
10 searchers and 1,600 evaluations, surgery until step 15,000) and uses CUDA when present;
``--quick`` shrinks steps, evaluations and search batch for a shared CPU; ``--iterations``,
``--evaluations``, ``--src-epochs``, ``--search-every``, ``--search-batch``, ``--prune-evals`` and
``--prune-epochs`` cut single parts of the full budget (the section then names each cut beside
the full figure). The run writes the ``olmp-<data>`` section of
docs/results.md (``olmp-<data>-quick`` for --quick).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"

FULL = dict(src_epochs=20, iterations=30000, search_every=1000, evaluations=1600, search_batch=1000,
            dns_c=3.0, prune_evals=400, prune_epochs=4)
QUICK = dict(src_epochs=6, iterations=1500, search_every=250, evaluations=100, search_batch=500,
             dns_c=3.0, prune_evals=60, prune_epochs=1)

# The paper's Table (Li, Qian et al., IJCAI 2018), full MNIST (60k train / 10k test).
PAPER = {"lenet300": "114x (paper: OLMP, full MNIST, no accuracy loss reported)",
         "lenet5": "298x (paper: OLMP, full MNIST, no accuracy loss reported)"}


def ort_eval(path: Path, data) -> tuple[float, object]:
    """Top-1 on the validation split under onnxruntime, and the session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one image at a time: a thread pool only spins
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x, y = data.x_val.numpy(), data.y_val.numpy()
    pred = np.array([int(np.argmax(sess.run(None, {name: x[i:i + 1]})[0])) for i in range(len(y))])
    return float((pred == y).mean()), sess


def measure(graph, data, tmpdir: Path, tag: str) -> dict:
    """Compression, held-out accuracy of the sparse ONNX file, its size, and how far its
    outputs are from the dense masked torch module's."""
    from graphc.backends.onnx import save_onnx
    from graphc.backends.onnx_sparse import compression
    from graphc.backends.torch import emit_torch

    path = save_onnx(graph, tmpdir / f"{tag}.onnx")
    acc, sess = ort_eval(path, data)
    x = data.x_val[:1]
    ref = emit_torch(graph)(x).detach().numpy()
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    c = compression(graph)
    return {"acc": 100 * acc, "ratio": c["ratio"], "nonzero": c["nonzero"], "weights": c["weights"],
            "bytes": path.stat().st_size, "diff": float(np.abs(out - ref).max())}


def run_pass(graph, spec: str, data, seed: int, quiet: bool):
    from graphc.manager import run_pipeline
    from graphc.registry import PassContext

    g = graph.clone()
    t = time.perf_counter()
    rep = run_pipeline(g, spec, PassContext(data=data, seed=seed, quiet=quiet))
    stats = next((p.stats for p in rep.passes if p.stats), {})
    return g, stats, time.perf_counter() - t


def global_magnitude(graph, keep: int, data, b: dict, seed: int, quiet: bool, device: str):
    """Keep the ``keep`` largest-magnitude weights of all prunable layers together, then train
    with the masks fixed for the same steps as OLMP."""
    from graphc.passes.dns import MaskedModel, device_for, prunable_layers, train_masked
    from graphc.registry import PassContext
    from graphc.training.hooks import Hook

    g = graph.clone()
    mm = MaskedModel(g, prunable_layers(g), device_for(device))
    names = list(mm.masks)
    with torch.no_grad():
        mags = torch.cat([mm.raw(n).abs().reshape(-1) for n in names])
        thr = torch.topk(mags, keep).values.min()
        for n in names:
            mm.masks[n].copy_((mm.raw(n).abs() >= thr).to(mm.masks[n].dtype))

    class Opts:
        iterations, lr, momentum, weight_decay, batch_size, prune_until = b["iterations"], 0.01, 0.9, 5e-4, 64, 0

    ctx = PassContext(data=data, seed=seed, quiet=quiet)
    train_masked(mm, data, Hook(), Opts, ctx, desc="global magnitude fine-tune")
    mm.write_back()
    return g


VARIANTS = ("dns", "ncs", "ncs-released", "random")


def lenet_source(name, data, b, args, tmp):
    """Train the source once; its IR goes to ``tmp`` so every variant (in this process or a
    worker) starts from the same weights."""
    import graphc
    from graphc.ir.serialize import save_json
    from graphc.models.examples import train_example

    t0 = time.perf_counter()
    model, res = train_example(name, data, epochs=b["src_epochs"], seed=args.seed, quiet=args.quiet)
    src = graphc.load(model, example_inputs=data.sample(1))
    save_json(src, tmp / f"{name}-src.json")
    m0 = measure(src, data, tmp, f"{name}-src")
    row = [name, f"source ({res.epochs} ep)", m0, f"{time.perf_counter() - t0:.0f}"]
    print(fmt(row, m0), flush=True)
    return row, m0


def lenet_variant(name, variant, data, b, args, tmp, m0):
    """One method's rows on the saved source: DNS, or OLMP with one searcher (the NCS job
    also runs global magnitude pruning at the kept count OLMP-NCS reached)."""
    from graphc.ir.serialize import load_json

    src = load_json(tmp / f"{name}-src.json")
    common = (f"iterations={b['iterations']},search-every={b['search_every']},evaluations={b['evaluations']},"
              f"search-batch={b['search_batch']},device={args.device}")
    label, spec = {
        "dns": ("DNS uniform c=%g" % b["dns_c"], f"dns(c={b['dns_c']},iterations={b['iterations']},device={args.device})"),
        "ncs": ("OLMP, NCS (published)", f"olmp(search=ncs,{common})"),
        "ncs-released": ("OLMP, NCS (released rule)", f"olmp(search=ncs-released,{common})"),
        "random": ("OLMP, random search", f"olmp(search=random,{common})"),
    }[variant]
    g, st, secs = run_pass(src, spec, data, args.seed, args.quiet)
    m = measure(g, data, tmp, f"{name}-{variant}")
    rows = [[name, label, m, f"{secs:.0f}"]]
    print(fmt(rows[-1], m0), flush=True)
    if variant == "ncs":
        t = time.perf_counter()
        g = global_magnitude(src, m["nonzero"], data, b, args.seed, args.quiet, args.device)
        m = measure(g, data, tmp, f"{name}-global")
        rows.append([name, "global magnitude @ OLMP-NCS's kept count", m, f"{time.perf_counter() - t:.0f}"])
        print(fmt(rows[-1], m0), flush=True)
    return rows


def _job(job):
    """A worker's unit: ("variant", model, variant) or ("prune", model); loads its own data."""
    from graphc.data import load_data

    kind, args, b, tmp, m0, *what = job
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    data = load_data(args.data)
    if kind == "variant":
        return lenet_variant(what[0], what[1], data, b, args, tmp, m0)
    return prune_rows(what[0], data, b, args, args.macs)


def fmt(row, src) -> str:
    return " | ".join(lenet_cells(row, src))


def lenet_cells(row, src) -> list[str]:
    name, label, m, secs = row
    return [name, label, f"{m['acc']:.2f}", f"{m['acc'] - src['acc']:+.2f}", f"{m['nonzero']:,} / {m['weights']:,}",
            f"{m['ratio']:.1f}x", f"{m['bytes']:,}", f"{m['diff']:.1e}", secs]


LENET_HEAD = ["model", "method", "acc %", "Δacc pt", "non-zero / weights", "compression", "ONNX bytes",
              "max |ORT - torch|", "s"]


def prune_rows(name, data, b, args, budget: float):
    """Uniform-ratio prune vs prune(search=ncs) at the same MACs budget, same fine-tune."""
    import graphc
    from graphc.backends.cost import totals
    from graphc.backends.torch import emit_torch
    from graphc.models.examples import train_example
    from graphc.passes.dns import device_for
    from graphc.training import evaluate, train

    model, res = train_example(name, data, epochs=max(1, b["prune_epochs"] * 2), seed=args.seed, quiet=args.quiet)
    src = graphc.load(model, example_inputs=data.sample(1))
    full = totals(src)["macs"]
    dev = device_for(args.device)
    rows = [[name, f"source ({res.epochs} ep)", f"{100 * evaluate(model, data):.2f}", f"{full:,}", "100%", "-"]]
    print(" | ".join(rows[-1]), flush=True)
    for label, spec in [("uniform ratio", f"prune(target-macs={budget})"),
                        ("NCS per-group ratios", f"prune(target-macs={budget},search=ncs,evaluations={b['prune_evals']},"
                                                 f"search-batch={b['search_batch']})")]:
        g, st, _ = run_pass(src, spec, data, args.seed, args.quiet)
        macs = totals(g)["macs"]
        mod = emit_torch(g).to(dev)
        train(mod, data, epochs=b["prune_epochs"], lr=0.02, momentum=0.9, batch_size=64, seed=args.seed,
              quiet=args.quiet, desc=f"fine-tune {label}")
        acc = evaluate(mod, data)
        ratios = st.get("prune.ratios", st.get("prune.ratio", ""))
        rows.append([name, label, f"{100 * acc:.2f}", f"{macs:,}", f"{macs / full:.0%}", str(ratios)])
        print(" | ".join(rows[-1]), flush=True)
    return rows


# The parts of the budget a flag can cut, as the section names them.
CUTS = (("iterations", "steps"), ("evaluations", "evaluations per search"), ("src_epochs", "source epochs"),
        ("search_every", "steps between searches"), ("search_batch", "images per candidate"),
        ("prune_evals", "NCS evaluations in part 2"), ("prune_epochs", "fine-tune epochs in part 2"))

PRUNE_HEAD = ["model", "method", "acc % (after fine-tune)", "MACs", "MACs %", "ratios"]


def table(head, rows) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mnist-idx:../shared/datasets/mnist-t10k")
    ap.add_argument("--quick", action="store_true", help="a budget a shared CPU runs in minutes")
    ap.add_argument("--iterations", type=int, help="DNS/OLMP steps instead of the budget's (paper: 30,000)")
    ap.add_argument("--evaluations", type=int, help="NCS evaluations per search instead of the budget's "
                                                     "(paper: 1,600)")
    ap.add_argument("--src-epochs", type=int, help="epochs of the sources instead of the budget's")
    ap.add_argument("--search-every", type=int, help="steps between OLMP searches instead of the budget's "
                                                      "(paper: 1,000)")
    ap.add_argument("--search-batch", type=int, help="training images a candidate is scored on instead of "
                                                      "the budget's (released code: 1,000)")
    ap.add_argument("--prune-evals", type=int, help="NCS evaluations of part 2 instead of the budget's")
    ap.add_argument("--prune-epochs", type=int, help="fine-tune epochs of part 2 instead of the budget's")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--prune-models", default="small-vgg,small-resnet", help="'' skips part 2")
    ap.add_argument("--macs", type=float, default=0.5, help="MACs budget of part 2 (fraction)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="methods run side by side in this many processes")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)

    from graphc.data import load_data
    from graphc.passes.dns import device_for

    b = dict(QUICK if args.quick else FULL)
    for key, _ in CUTS:
        if getattr(args, key) is not None:
            if getattr(args, key) < 1:
                ap.error(f"--{key.replace('_', '-')} must be >= 1")
            b[key] = getattr(args, key)
    t_all = time.perf_counter()
    load0 = os.getloadavg()[0]
    data = load_data(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="graphc-olmp-"))
    models = [m for m in args.models.split(",") if m]
    sources = {name: lenet_source(name, data, b, args, tmp) for name in models}
    jobs = [("variant", args, b, tmp, sources[name][1], name, v) for name in models for v in VARIANTS]
    jobs += [("prune", args, b, tmp, None, name) for name in args.prune_models.split(",") if name]
    if args.jobs > 1:
        # Each method is an independent run on the saved source: on a machine with many cores
        # (or a GPU and many cores) they run side by side in separate processes.
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    lenet, prune = [], []
    for name in models:
        row, m0 = sources[name]
        lenet.append(lenet_cells(row, m0))
        for j, rows in zip(jobs, results):
            if j[0] == "variant" and j[5] == name:
                lenet += [lenet_cells(r, m0) for r in rows]
        if name in PAPER:
            lenet.append([name, "paper's figure (not measured here)", "-", "-", "-", PAPER[name].split(" ")[0],
                          "-", "-", "-"])
    for j, rows in zip(jobs, results):
        if j[0] == "prune":
            prune += rows
    total = time.perf_counter() - t_all
    load = (load0, os.getloadavg()[0])
    t1, t2 = table(LENET_HEAD, lenet), table(PRUNE_HEAD, prune) if prune else ""
    print(t1)
    print(t2)
    if args.no_write:
        return 0
    changed = [f"{b[k]:,} {what} (full: {FULL[k]:,})" for k, what in CUTS if b[k] != FULL[k]]
    skipped = [m for m in ap.get_default("models").split(",") if m not in models]
    skipped += [f"part 2 on {m}" for m in ap.get_default("prune_models").split(",")
                if m not in args.prune_models.split(",")]
    not_run = f" Not run in this budget: {', '.join(skipped)}." if skipped else ""
    mode = "quick" if args.quick else ("cut from the full budget: " + ", ".join(changed) if changed else "paper budget")
    body = (f"## OLMP and NCS-searched pruning on {data.name} (bench/olmp.py{' --quick' if args.quick else ''})\n\n"
            f"Data: `{args.data}`, {data.split}. Budget ({mode}): sources trained {b['src_epochs']} epochs by "
            f"`train_example` (seed {args.seed}); DNS/OLMP {b['iterations']:,} SGD steps of batch 64 (lr 0.01 "
            f"cosine, momentum 0.9, weight decay 5e-4), surgery until half of them; OLMP searches every "
            f"{b['search_every']:,} steps with 10 searchers and {b['evaluations']:,} evaluations on "
            f"{b['search_batch']:,} training images, acc-loss 0.05 on that batch. The global-magnitude row "
            f"keeps as many weights as OLMP-NCS and trains with fixed masks for the same steps. Compression: "
            f"all weights / non-zero weights (the paper's measure). Accuracy: top-1 of the sparse ONNX file "
            f"(`sparse_initializer`) under onnxruntime on the {len(data.y_val):,} validation images; "
            f"max |ORT - torch| compares its outputs with the dense masked torch module. Device: "
            f"{device_for(args.device)} ({platform.machine()}, {os.cpu_count()} CPUs; 1-minute load average "
            f"{load[0]:.1f} at the start and {load[1]:.1f} at the end: when it exceeds the CPUs, other jobs "
            f"shared them and the s column, wall time, is that much longer). One seed, one run each; "
            f"{total / 60:.1f} min in all{f' ({args.jobs} processes side by side)' if args.jobs > 1 else ''}."
            f"{not_run}\n\n" + t1 + "\n")
    if t2:
        body += (f"\nprune at {args.macs:.0%} of the MACs: uniform ratio (bisection) vs per-group ratios by "
                 f"NCS ({b['prune_evals']} evaluations on {b['search_batch']:,} training images, no fine-tune "
                 f"inside the search), then both fine-tuned {b['prune_epochs']} epoch(s) (SGD lr 0.02, "
                 f"momentum 0.9); accuracy on the validation split.\n\n" + t2 + "\n")
    # A reduced paper-budget run replaces the paper-budget section, saying what it cut.
    key = f"olmp-{data.name.split(':')[0]}" + ("-quick" if args.quick else "")
    write_section(key, body, DOC)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
