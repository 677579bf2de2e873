"""graphc vs Torch-Pruning (DepGraph): structured pruning at ratio 0.5 of torchvision models.

For each model, on the same machine, one run each:

- graphc: ``graphc.load`` (torch.fx) + ``channel_groups`` + ``prune(ratio=0.5)`` +
  ``emit_torch`` (a runnable pruned ``nn.Module``);
- Torch-Pruning: ``MagnitudePruner`` (which builds its ``DependencyGraph``) + ``step()``, L1
  magnitude, the classifier layer ignored (graphc keeps graph outputs whole too).

Both start from the same randomly initialised model and input (the zoo's input sizes,
tests/zoo/zoo.py). Neither tool gets per-model configuration (no attention head counts, no
unwrapped parameters): a model counts as handled when the tool's pruned module runs and returns
the model's output shape. MACs of each pruned module are counted by one counter
(``torch.utils.flop_counter``, MACs = FLOPs / 2) and reported relative to the unpruned model.
Each tool gets ``--limit`` CPU seconds per model. Prints a table and writes it to the
``vs-torch-pruning`` section of docs/benchmarks.md.

    python bench/vs_torch_pruning.py                  # a representative set, a few minutes
    python bench/vs_torch_pruning.py --all --save rows.jsonl   # all 80 models; resumable
    python bench/vs_torch_pruning.py --models resnet18,densenet201 --no-write

``--save FILE`` appends each model's row as it finishes and skips models already in FILE, so
an interrupted ``--all`` run continues where it stopped.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "zoo"))

from scaling import write_section  # noqa: E402

DEFAULT = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
           "googlenet", "inception_v3", "regnet_x_400mf", "regnet_y_400mf", "resnext50_32x4d", "shufflenet_v2_x1_0",
           "mnasnet1_0", "squeezenet1_1", "vgg11_bn", "convnext_tiny", "swin_t", "vit_b_32", "densenet201"]


class Timeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def fire(signum, frame):
        raise Timeout(f"over {seconds:.0f} CPU s")

    # CPU time of the process, as the timings: waiting for a core on a shared machine does not count.
    old = signal.signal(signal.SIGPROF, fire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def all_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def since(t0) -> dict:
    """CPU seconds of this process (the measure: on a shared machine it does not count time
    spent waiting for a core) and wall seconds."""
    return {"time": time.process_time() - t0[0], "wall": time.perf_counter() - t0[1]}


def run_counted(module, x):
    """(MACs of one forward pass, its first output)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        y = module(x)
    y = y[0] if isinstance(y, (tuple, list)) else y
    return fc.get_total_flops() / 2, y


def build(name: str):
    import torchvision
    from zoo import input_side

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    side = input_side(name)
    return model, torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))


def run_graphc(model, x):
    import graphc
    from graphc.passes.channel_groups import channel_groups
    from graphc.passes.prune import prune_graph

    t0 = clock()
    g = graphc.load(model, example_inputs=x)
    groups = channel_groups(g)
    prune_graph(g, ratio=0.5, groups=groups)
    module = graphc.emit_torch(g)
    return since(t0), module


def run_tp(model, x):
    import torch_pruning as tp

    # The classifier keeps its outputs (graphc keeps graph outputs whole): Torch-Pruning's own
    # examples ignore the layers with one output per class, Linear or (SqueezeNet) Conv2d.
    with torch.no_grad():
        y = model(x)
    n = (y[0] if isinstance(y, (tuple, list)) else y).shape[-1]
    heads = [m for m in model.modules() if (isinstance(m, torch.nn.Linear) and m.out_features == n)
             or (isinstance(m, torch.nn.Conv2d) and m.out_channels == n)]
    t0 = clock()
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=heads)
    pruner.step()
    return since(t0), model


def one(name: str, limit: float) -> dict:
    model, x = build(name)
    base, y = run_counted(model, x)
    y_shape = tuple(y.shape)
    row = {"model": name, "side": x.shape[-1]}
    # graphc only reads the model; Torch-Pruning then prunes the same instance in place (no
    # copy: the largest models would not fit twice on a small machine).
    for tool, fn in (("graphc", run_graphc), ("tp", run_tp)):
        pruned = None
        gc.collect()
        try:
            with warnings.catch_warnings(), time_limit(limit):
                warnings.simplefilter("ignore")
                t, pruned = fn(model, x)
                m, y = run_counted(pruned, x)
            if tuple(y.shape) != y_shape:
                raise RuntimeError(f"output {tuple(y.shape)} != {y_shape}")
            row[tool] = {**t, "macs": m / base}
        except Exception as e:  # a failure is a result of the comparison, not of the bench
            msg = str(e).strip().splitlines()[0][:90] if str(e).strip() else ""
            if isinstance(e, MemoryError) and not msg:
                msg = "out of the memory the run allowed"
            row[tool] = {"error": f"{type(e).__name__}: {msg}".replace("|", "/")}
        del pruned
        gc.collect()
    return row


def table(rows) -> tuple[str, dict[str, float]]:
    lines = ["| model | input | graphc CPU s (wall) | Torch-Pruning CPU s (wall) | time ratio | graphc MACs "
             "| Torch-Pruning MACs |", "|---|---:|---:|---:|---:|---:|---:|"]
    ratios = {}
    for r in rows:
        g, t = r["graphc"], r["tp"]
        gs = f"{g['time']:.2f} ({g['wall']:.2f})" if "time" in g else f"fail: {g['error']}"
        ts = f"{t['time']:.2f} ({t['wall']:.2f})" if "time" in t else f"fail: {t['error']}"
        ratio = "-"
        if "time" in g and "time" in t:
            ratios[r["model"]] = g["time"] / t["time"]
            ratio = f"{ratios[r['model']]:.3f}x"
        gm = f"{g['macs']:.2f}" if "macs" in g else "-"
        tm = f"{t['macs']:.2f}" if "macs" in t else "-"
        lines.append(f"| {r['model']} | {r.get('side', '')} | {gs} | {ts} | {ratio} | {gm} | {tm} |")
    return "\n".join(lines), ratios


def summarize(rows, ratios: dict[str, float], target: float = 0.2) -> str:
    n = len(rows)
    g_ok = [r["model"] for r in rows if "time" in r["graphc"]]
    t_ok = [r["model"] for r in rows if "time" in r["tp"]]
    g_fail = [r["model"] for r in rows if "time" not in r["graphc"]]
    t_fail = [r["model"] for r in rows if "time" not in r["tp"]]
    out = [f"graphc pruned {len(g_ok)}/{n} models, Torch-Pruning {len(t_ok)}/{n}."]
    if g_fail:
        out.append(f"graphc failed on: {', '.join(g_fail)}.")
    if t_fail:
        out.append(f"Torch-Pruning failed on: {', '.join(t_fail)}.")
    if ratios:
        worst = max(ratios, key=ratios.get)
        over = sorted(m for m, v in ratios.items() if v > target)
        out.append(f"Time ratio graphc / Torch-Pruning over the {len(ratios)} models both handle: median "
                   f"{statistics.median(ratios.values()):.3f}x, worst {ratios[worst]:.3f}x ({worst}); "
                   f"{len(ratios) - len(over)}/{len(ratios)} within the {target}x target"
                   + (f" (over: {', '.join(over)})." if over else "."))
    return " ".join(out)


def load_rows(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            for tool in ("graphc", "tp"):
                err = r[tool].get("error", "")
                if err == "MemoryError: ":
                    r[tool]["error"] = "MemoryError: out of the memory the run allowed"
            rows[r["model"]] = r
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated torchvision model names")
    ap.add_argument("--all", action="store_true", help="every torchvision classification model")
    ap.add_argument("--limit", type=float, default=600, help="CPU seconds each tool gets per model (default 600)")
    ap.add_argument("--save", type=Path, metavar="FILE", help="append rows to FILE (JSON lines); skip models already there")
    ap.add_argument("--no-run", action="store_true",
                    help="run nothing: tabulate the rows already in --save (models not there are listed as not run)")
    ap.add_argument("--note", default="", help="a sentence about this run, added to the docs section")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    if args.no_run and not args.save:
        ap.error("--no-run needs --save FILE")
    every = all_models()
    names = every if args.all else (args.models.split(",") if args.models else DEFAULT)
    unknown = sorted(set(names) - set(every))
    if unknown:
        ap.error(f"unknown torchvision models: {', '.join(unknown)}")
    done = load_rows(args.save)
    todo = [] if args.no_run else [n for n in names if n not in done]
    if todo:
        # Imports and first-call caches of both tools, outside the timings.
        warm, wx = build("resnet18")
        run_graphc(warm, wx)
        run_tp(warm, wx)
        del warm
    for name in todo:
        row = one(name, args.limit)
        done[name] = row
        print(name, {k: v for k, v in row.items() if k != "model"}, flush=True)
        if args.save:
            with args.save.open("a") as f:
                f.write(json.dumps(row) + "\n")
        gc.collect()
    rows = [done[n] for n in names if n in done]
    missing = [n for n in names if n not in done]
    text, ratios = table(rows)
    summary = summarize(rows, ratios)
    if missing:
        summary += f" Not run yet ({len(missing)} of {len(names)}): {', '.join(missing)}."
    body = ("## Structured pruning: graphc vs Torch-Pruning\n\n"
            f"`prune(ratio=0.5)`, L1 magnitude, one run per model and tool, both in the same process on "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"Torch-Pruning {_tp_version()}. graphc time = load (torch.fx) + channel groups + prune + emit a "
            "torch module; Torch-Pruning time = MagnitudePruner (DependencyGraph) + step(), the classifier "
            "(the layer with one output per class) ignored, no other per-model options. A tool fails on a model when it raises, exceeds "
            f"{args.limit:.0f} CPU s, or its pruned module does not return the model's output shape. Times "
            "are CPU seconds of the process, single-threaded (OMP_NUM_THREADS=1), wall seconds in parentheses: "
            "the machine is shared, and CPU time does not count waiting for a core. The time ratio is "
            "graphc CPU / Torch-Pruning CPU. MACs are "
            "relative to the unpruned model, both counted by torch.utils.flop_counter. Input side as in the "
            "zoo tests. Generated by `python bench/vs_torch_pruning.py "
            + ("--all" if args.all else f"--models {','.join(names)}") + "`."
            + (f" {args.note.strip()}" if args.note.strip() else "") + "\n\n" + summary + "\n\n" + text)
    print(text)
    print(summary)
    if not args.no_write:
        print(f"wrote {write_section('vs-torch-pruning', body)}")
    return 0


def _tp_version() -> str:
    try:
        import torch_pruning as tp

        return tp.__version__
    except Exception:  # reported, not needed
        return "?"


if __name__ == "__main__":
    sys.exit(main())
