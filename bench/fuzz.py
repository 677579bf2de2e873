"""Exact-rewrite fuzz bench: every exact pass on random graphs, through both back-ends.

Each random graph comes from the generator of the CI fuzz test (``_build`` in
tests/passes/test_fuse_fuzz.py: convs of any kernel, stride, padding, groups and dilation,
BN, per-channel affines, constant subgraphs, pools, residual blocks, no-op chains, dead
branches, linear heads). For every registered exact pass and the ``fuse`` preset, the graph is
copied, the pass is run through the pass manager (verifier and I/O checks on), and when it
changed the graph both the original and the result are emitted by each back-end -- torch
(``emit_torch``) and ONNX (``emit_onnx`` run in onnxruntime, its graph optimisations off so
the runtime does not fold anything itself) -- and run on the same inputs. A result is a
mismatch when the numeric check's rule fails (rtol 1e-4, atol 1e-5 scaled by
max(1, max|reference|) per output); a pass or back-end that raises is an error. ``prune-merge``
is exact at threshold 0: it runs on the graph decomposed (``decompose``) with random columns
and rows of each pair's coefficients set to zero, which is its reference.

    python bench/fuzz.py                      # 1,000 graphs per pass and back-end
    python bench/fuzz.py --n 100 --passes fold-bn,fuse --seed 3

Prints one row per pass and back-end: graphs run, graphs the pass changed, mismatches,
errors, and the largest relative error seen (max |result - reference| / max |reference|, per
output). Exits 1 when any mismatch or error was found, and prints the first failing graphs.
Not part of CI (the CI fuzz runs ``fuse`` on 500 graphs through the IR interpreter).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
EXACT = ["fold-bn", "merge-linear", "fuse-resconv", "absorb-pool", "drop-identity", "fold-constants", "dce",
         "decompose", "prune-merge", "fuse"]
BACKENDS = ["torch", "onnx"]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def helpers():
    """The CI fuzz's generator and its graph builder (conftest is not importable by name)."""
    import types

    conftest = _load("graphc_fuzz_conftest", ROOT / "tests" / "passes" / "conftest.py")
    fuzz = _load("graphc_fuzz_generator", ROOT / "tests" / "passes" / "test_fuse_fuzz.py")
    h = types.SimpleNamespace(Builder=conftest.Builder, execute=conftest.execute, fuse=conftest.fuse,
                              RTOL=conftest.RTOL, ATOL=conftest.ATOL)
    return h, fuzz._build


def exact_passes() -> list[str]:
    """Every registered pass that is exact with its default options, and fuse (once)."""
    from graphc.registry import all_passes

    names = [n for n, cls in all_passes().items() if getattr(cls(), "exact", False)]
    ordered = sorted(names, key=lambda n: EXACT.index(n) if n in EXACT else len(EXACT))
    return ordered + ([] if "fuse" in ordered else ["fuse"])


def run_torch(graph, xs):
    from graphc.backends.torch import emit_torch

    module = emit_torch(graph)
    with torch.no_grad():
        out = module(*[torch.from_numpy(x) for x in xs])
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.numpy() for o in outs]


def run_onnx(graph, xs):
    import onnxruntime as ort

    from graphc.backends.onnx import emit_onnx

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(emit_onnx(graph).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return list(sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)}))


RUNNERS = {"torch": run_torch, "onnx": run_onnx}


def zero_some_units(graph, rng) -> int:
    """Zero random columns and rows of every decomposed pair's coefficients (with the rows'
    bias): the state edp-train leaves, on which prune-merge must be exact. Returns pairs."""
    from graphc.passes.decompose import find_pairs

    pairs = find_pairs(graph)
    for pair in pairs:
        a = pair.coef.input(1).param
        w = a.data.copy()
        n, m = w.shape[0], w.shape[1]
        w[:, rng.random(m) < 0.4] = 0
        rows = rng.random(n) < 0.3
        w[rows] = 0
        a.set_data(w)
        if len(pair.coef.inputs) > 2:
            bias = pair.coef.input(2).param
            b = bias.data.copy()
            b[rows] = 0
            bias.set_data(b)
    return len(pairs)


class Stats:
    def __init__(self):
        self.graphs = self.changed = self.mismatches = self.errors = 0
        self.rel = self.abs = 0.0
        self.worst = ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="random graphs per pass (default 1000)")
    ap.add_argument("--passes", default=None, help="comma-separated passes (default: every exact pass and fuse)")
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (the graphs drawn) and input seed")
    ap.add_argument("--show", type=int, default=3, help="failing graphs to print")
    ap.add_argument("--save", metavar="DIR", help="also write each failing graph (before the pass) as IR JSON here")
    args = ap.parse_args(argv)

    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    from graphc.check import compare
    from graphc.manager import run_pipeline

    torch.set_num_threads(1)
    h, build = helpers()
    passes = args.passes.split(",") if args.passes else exact_passes()
    backends = args.backends.split(",")
    stats = {(p, b): Stats() for p in passes for b in backends}
    failures: list[str] = []
    drawn = [0]
    t0 = time.perf_counter()

    def record_failure(what: str, graph) -> None:
        if len(failures) < args.show:
            failures.append(f"{what}\n{graph}")
        if args.save:
            from graphc.ir.serialize import save_json

            Path(args.save).mkdir(parents=True, exist_ok=True)
            save_json(graph, Path(args.save) / f"failure{drawn[0] - 1}_{what.split(' ')[0].strip(':')}.json")

    def one_graph(data):
        g = build(h, data)
        k = drawn[0]
        drawn[0] += 1
        rng = np.random.default_rng(args.seed * 1_000_003 + k)
        xs = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
        refs: dict[tuple[str, str], list] = {}

        def reference(base_key, base, backend):
            if (base_key, backend) not in refs:
                refs[(base_key, backend)] = RUNNERS[backend](base, xs)
            return refs[(base_key, backend)]

        for p in passes:
            base, base_key = g, "source"
            if p == "prune-merge":
                base, base_key = g.clone(), "zeroed"
                run_pipeline(base, "decompose")
                zero_some_units(base, rng)
            result = base.clone()
            try:
                changed = run_pipeline(result, p).changed
            except Exception as e:  # a pass failing on a valid graph is a bug, like a mismatch
                for b in backends:
                    stats[(p, b)].graphs += 1
                    stats[(p, b)].errors += 1
                record_failure(f"{p}: {type(e).__name__}: {e}", base)
                continue
            for b in backends:
                s = stats[(p, b)]
                s.graphs += 1
                if not changed:
                    continue
                s.changed += 1
                try:
                    want = reference(base_key, base, b)
                    got = RUNNERS[b](result, xs)
                except Exception as e:
                    s.errors += 1
                    record_failure(f"{p} / {b}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                                   result)
                    continue
                max_abs, max_rel, ok = compare(want, got)
                if max_rel > s.rel:
                    s.rel, s.worst = max_rel, f"graph #{k}"
                s.abs = max(s.abs, max_abs)
                if not ok:
                    s.mismatches += 1
                    record_failure(f"{p} / {b}: mismatch, max abs err {max_abs:.3g}, max rel err {max_rel:.3g} "
                                   f"(graph #{k}); the graph before the pass:", base)
        if drawn[0] % 100 == 0:
            print(f"  {drawn[0]} graphs, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)

    test = settings(max_examples=args.n, database=None, deadline=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))(given(data=st.data())(one_graph))
    seed(args.seed)(test)()

    print(f"exact-rewrite fuzz: {drawn[0]} random graphs (hypothesis seed {args.seed}), "
          f"{time.perf_counter() - t0:.0f}s; criterion |result - reference| <= 1e-05 * max(1, max|reference|) "
          f"+ 1e-04 * |reference| per output")
    print(f"{'pass':<16}{'back-end':<10}{'graphs':>8}{'changed':>9}{'mismatch':>10}{'errors':>8}"
          f"{'largest rel err':>17}{'largest abs err':>17}")
    for (p, b), s in stats.items():
        print(f"{p:<16}{b:<10}{s.graphs:>8}{s.changed:>9}{s.mismatches:>10}{s.errors:>8}{s.rel:>17.3g}{s.abs:>17.3g}")
    bad = sum(s.mismatches + s.errors for s in stats.values())
    for f in failures:
        print("\n" + f, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
