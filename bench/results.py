"""Regenerate docs/results.md: every seed method's bench, one command.

Each entry of :data:`BENCHES` names a bench script of this folder and the arguments of its full
and ``--quick`` runs; the script's ``main(argv)`` is called in turn (a script not present yet is
skipped and named). Each bench writes its own ``<!-- bench:KEY -->`` section of
docs/results.md; this script then writes the ``results-run`` section: the command, each
bench's wall time and the total.

    python bench/results.py                 # the full regeneration, 2 benches at a time
    python bench/results.py --jobs 8        # on a bigger machine
    python bench/results.py --quick         # a smoke run of every bench (minutes)
    python bench/results.py --only edp,olmp

Adding a seed method's bench is one line in BENCHES.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scaling import write_section  # noqa: E402

DOC = HERE.parent / "docs" / "results.md"
MNIST = "mnist-idx:../shared/datasets/mnist-t10k"

# (name, script in bench/, argv of the full run, argv of the --quick run), longest first: with
# --jobs the next bench starts when a lane frees, so the long ones go first to balance the lanes.
# Budgets are what fits the whole regeneration in an hour on a 2-CPU machine; each section states
# its own. EDP on LeNet-5: source 3 epochs, lasso 4, fine-tune 2 (Torch-Pruning fine-tunes the
# same 6), three seeds; the CNNs one seed.
E = ["--data", MNIST, "--models", "lenet5", "--budget", "3,4,2"]
BENCHES: list[tuple[str, str, list[str], list[str]]] = [
    ("edp", "edp.py", E + ["--targets", "macs=0.5,macs=0.5@params"], ["--data", MNIST, "--quick"]),
    ("edp-ablations", "edp_ablations.py", ["--data", MNIST, "--budget", "3,2,1"],
     ["--data", MNIST, "--quick", "--budget", "1,0.5,0.25"]),
    ("olmp", "olmp.py", ["--data", MNIST, "--quick"],
     ["--data", MNIST, "--quick", "--models", "lenet5", "--prune-models", ""]),
    ("edp-small-vgg", "edp.py", ["--data", MNIST, "--models", "small-vgg", "--targets", "macs=0.5", "--budget", "1,2,1"],
     ["--data", MNIST, "--models", "small-vgg", "--targets", "macs=0.5", "--budget", "0.5,0.25,0.125"]),
    ("edp-small-resnet", "edp.py",
     ["--data", MNIST, "--models", "small-resnet", "--targets", "macs=0.5", "--budget", "1,2,1"],
     ["--data", MNIST, "--models", "small-resnet", "--targets", "macs=0.5", "--budget", "0.5,0.25,0.125"]),
    ("resconv", "resconv.py", ["--data", MNIST, "--src-epochs", "0.5", "--resnet-epochs", "0.4", "--train-epochs",
                               "0.15", "--finetune-epochs", "0.08", "--lr", "0.0003", "--repeats", "10"],
     ["--data", MNIST, "--models", "plain20"]),
    ("latency-prune", "latency_prune.py", ["--data", MNIST],
     ["--data", MNIST, "--no-zoo", "--mnist-models", "small-vgg"]),
    ("unify", "unify.py", ["--data", MNIST, "--jobs", "1"], ["--data", MNIST, "--models", "lenet5"]),
    ("edp-25", "edp.py", E + ["--targets", "macs=0.25"],
     ["--data", MNIST, "--models", "lenet5", "--targets", "macs=0.25", "--seeds", "0", "--budget", "1,0.5,0.25"]),
    ("edp-params", "edp.py", E + ["--targets", "params=0.1"],
     ["--data", MNIST, "--models", "lenet5", "--targets", "params=0.1", "--seeds", "0", "--budget", "1,0.5,0.25"]),
    ("stream", "stream.py", ["--data", MNIST], ["--data", MNIST, "--models", "lenet5"]),
]


def machine() -> str:
    """The machine in words: architecture, CPUs and the CUDA device the benches used, if any."""
    try:
        import torch

        gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    except ImportError:
        gpu = ""
    return f"{platform.machine()} ({os.cpu_count()} CPUs{gpu})"


def load_main(path: Path):
    """The ``main`` of the bench script at ``path`` (imported under its own module name)."""
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not callable(getattr(mod, "main", None)):
        raise SystemExit(f"{path.name} has no main(argv)")
    return mod.main


def run_one(bench, quick: bool, bench_dir: Path, write: bool) -> tuple[str, float]:
    """Run one bench in this process; (outcome, seconds)."""
    name, script, full, fast = bench
    path = bench_dir / script
    argv = list(fast if quick else full) + ([] if write else ["--no-write"])
    t0 = time.perf_counter()
    cwd, saved_argv = os.getcwd(), sys.argv
    try:
        # Data specs in the argv are relative to the repository root; a bench that records its
        # command line reads it from sys.argv, as when it is run on its own.
        os.chdir(bench_dir.parent)
        sys.argv = [f"bench/{script}"] + argv
        rc = load_main(path)(argv)
    except SystemExit as e:  # a bench's own argument check: the rest still run
        if not isinstance(e.code, int):
            print(f"{script}: {e.code}", file=sys.stderr)
        rc = e.code if isinstance(e.code, int) else 2
    except Exception:  # one broken bench must not cost the hour the others took
        traceback.print_exc()
        rc = "error"
    finally:
        os.chdir(cwd)
        sys.argv = saved_argv
    dt = time.perf_counter() - t0
    return ("ok" if not rc else (rc if isinstance(rc, str) else f"exit {rc}")), dt


def run(benches, quick: bool, bench_dir: Path, doc: Path, write: bool, jobs: int = 1) -> list[tuple[str, str, float]]:
    """Run each bench, ``jobs`` at a time (each in a process of its own when more than one,
    with the CPU threads shared out between them); (name, outcome, seconds) per entry, in the
    order of ``benches``."""
    done: dict[str, tuple[str, float]] = {}
    todo = []
    for b in benches:
        if not (bench_dir / b[1]).exists():
            print(f"== {b[0]}: {b[1]} not present, skipped", flush=True)
            done[b[0]] = ("not present", 0.0)
        else:
            todo.append(b)
    if jobs <= 1:
        for b in todo:
            name, script, full, fast = b
            print(f"== {name}: {script} {' '.join(fast if quick else full)}", flush=True)
            done[name] = run_one(b, quick, bench_dir, write)
            print(f"== {name}: {done[name][0]} in {done[name][1] / 60:.1f} min", flush=True)
        return [(b[0], *done[b[0]]) for b in benches]
    logs = Path(tempfile.mkdtemp(prefix="bench-results-"))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    print(f"{len(todo)} benches, {jobs} at a time, {env['OMP_NUM_THREADS']} thread(s) each; logs in {logs}",
          flush=True)
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    queue = list(todo)
    while queue or running:
        while queue and len(running) < jobs:
            name, script, full, fast = queue.pop(0)
            spec = json.dumps([name, script, full, fast])
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec, "--bench-dir", str(bench_dir),
                   "--doc", str(doc)] + (["--quick"] if quick else []) + ([] if write else ["--no-write"])
            log = logs / f"{name}.log"
            with open(log, "w") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            running[name] = (proc, time.perf_counter(), log)
            print(f"== {name}: started ({script} {' '.join(fast if quick else full)})", flush=True)
        time.sleep(1.0)
        for name, (proc, t0, log) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del running[name]
            dt = time.perf_counter() - t0
            done[name] = ("ok" if rc == 0 else f"exit {rc}", dt)
            print(f"== {name}: {done[name][0]} in {dt / 60:.1f} min", flush=True)
            if rc != 0:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print("\n".join(f"   {line}" for line in tail), flush=True)
    return [(b[0], *done[b[0]]) for b in benches]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="every bench's quick mode (a smoke run)")
    ap.add_argument("--only", default="", help="comma list of bench names (default: all)")
    ap.add_argument("--bench-dir", default=str(HERE), help=argparse.SUPPRESS)
    ap.add_argument("--doc", default=str(DOC), help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print the tables, leave docs/results.md alone")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="benches run side by side, each in its own process (default: 2, or 1 on one CPU)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one bench of a --jobs run, in its own process: [name, script, full argv, quick argv]
        outcome, _ = run_one(tuple(json.loads(args.child)), args.quick, Path(args.bench_dir), not args.no_write)
        return 0 if outcome == "ok" else 1
    if args.jobs < 1:
        print("results.py: --jobs must be >= 1", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n]
    known = [b[0] for b in BENCHES]
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"results.py: unknown bench {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    benches = [b for b in BENCHES if not names or b[0] in names]
    t0 = time.perf_counter()
    done = run(benches, args.quick, Path(args.bench_dir), Path(args.doc), not args.no_write, args.jobs)
    total = time.perf_counter() - t0
    lines = [f"| {n} | {o} | {s / 60:.1f} |" for n, o, s in done]
    body = ("## How this file was made (bench/results.py)\n\n"
            f"`python bench/results.py{' --quick' if args.quick else ''}"
            f"{' --only ' + args.only if args.only else ''}` regenerated the sections of this file in "
            f"{total / 60:.1f} min on {machine()}, {args.jobs} bench(es) at a time.\n\n"
            "| bench | outcome | min |\n|---|---|---|\n" + "\n".join(lines) + "\n")
    print(body)
    if not args.no_write:
        write_section("results-run", body, Path(args.doc))
    return 0 if all(o in ("ok", "not present") for _, o, _ in done) else 1


if __name__ == "__main__":
    sys.exit(main())
