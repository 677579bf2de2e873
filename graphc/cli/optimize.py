"""``graphc optimize MODEL --passes PIPELINE -o OUT``: run a pipeline, check, write, report.

Invariants: every argument is validated (pipeline parsed, output and report folders exist,
output suffix known) before the model is loaded, so bad input costs nothing and writes
nothing; the output is written to a temporary file beside it and renamed into place only
after the pipeline and the numeric check succeeded.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from graphc.errors import InputError

OUTPUT_SUFFIXES = (".onnx", ".pt", ".json")


def register(sub) -> None:
    from graphc.cli.inspect import add_weights_argument

    p = sub.add_parser("optimize", help="run a pass pipeline on a model and write the result",
                       description="Run PIPELINE on MODEL (FILE.onnx, torchvision:NAME, timm:NAME, FILE.py:factory, or a "
                                   "graphc IR FILE.json), check the result against the source on random "
                                   "inputs, write it (.onnx, .pt or .json by suffix) and print a summary.")
    p.add_argument("model", help="FILE.onnx | torchvision:NAME | timm:NAME | FILE.py:factory | FILE.json")
    p.add_argument("--passes", "-p", default="fuse", metavar="PIPELINE",
                   help="pipeline, e.g. 'fold-bn,absorb-pool(allow-equal=true),dce' or a preset (default: fuse)")
    p.add_argument("-o", "--output", metavar="OUT", help="where to write the result (.onnx, .pt, .json)")
    p.add_argument("--check", type=int, metavar="N", default=None,
                   help="random inputs to compare against the source (default: 3 for exact-only pipelines, "
                        "0 for lossy ones; 0 turns it off)")
    p.add_argument("--check-each", type=int, metavar="N", default=0,
                   help="after every changing exact pass, compare N random inputs through the IR before and "
                        "after it; a pass that moves them fails the run, naming the pass (default 0: off)")
    p.add_argument("--explain", action="store_true",
                   help="after the table, list per pass the nodes its rewrites left alone and why")
    p.add_argument("--report", metavar="FILE",
                   help="write the report: FILE.html as one self-contained page with charts (per-layer channels, "
                        "MACs, predicted and, with --measure, measured time), any other name as JSON "
                        "(`graphc report FILE` draws the page later)")
    p.add_argument("--data", metavar="SPEC", help="data for passes that train: digits | mnist-idx:DIR | FILE.npz | module:function")
    p.add_argument("--input-shape", action="append", metavar="SHAPE",
                   help="input shape like 1,3,224,224 (repeat for several inputs)")
    add_weights_argument(p)
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR after every pass (000_input.gir, 001_<pass>.gir, ...) and final.dot")
    p.add_argument("--measure", action="store_true", help="also measure latency before and after")
    p.add_argument("--no-accuracy", action="store_true",
                   help="with --data, skip measuring top-1 accuracy before and after on its validation split")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, default=0, help="seed for passes and for the check's random inputs")
    p.set_defaults(func=run)


def _parent_exists(path: str, what: str) -> Path:
    if not path.strip():
        raise InputError(f"{what} was given an empty file name")
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} folder does not exist: {parent}")
    if p.is_dir():
        raise InputError(f"{what} is a folder: {path}")
    return p


def validate(args):
    from graphc.pipeline_parse import parse_pipeline

    pipeline = parse_pipeline(args.passes)
    if args.output is not None:
        out = _parent_exists(args.output, "output")
        if out.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"output {args.output} has an unknown suffix: expected {', '.join(OUTPUT_SUFFIXES)}")
    if args.report is not None:
        _parent_exists(args.report, "report")
    if args.check is not None and args.check < 0:
        raise InputError(f"--check wants N >= 0, got {args.check}")
    if args.check_each < 0:
        raise InputError(f"--check-each wants N >= 0, got {args.check_each}")
    if args.dump_ir and Path(args.dump_ir).exists() and not Path(args.dump_ir).is_dir():
        raise InputError(f"--dump-ir {args.dump_ir} exists and is not a folder")
    if args.input_shape:
        from graphc.source import parse_shapes

        parse_shapes(args.input_shape)
    return pipeline


def write_output(graph, path: str) -> None:
    """Write by suffix through a temporary file beside ``path`` (never a half-written output)."""
    out = Path(path)
    if out.suffix.lower() == ".onnx":
        import graphc

        graphc.save(graph, out)  # atomic, and its external data (over 2 GB) is named after OUT
        return
    from graphc.files import publish

    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent or ".")
    os.close(fd)
    tmp = Path(tmp)
    extra = []
    try:
        if out.suffix.lower() == ".json":
            from graphc.ir.serialize import save_json

            save_json(graph, tmp)
            extra = [(tmp.with_suffix(".npz"), out.with_suffix(".npz"))]
        else:
            import graphc

            graphc.save(graph, str(tmp))
        for a, b in extra:
            publish(a, b)
        publish(tmp, out)
    finally:
        for p in [tmp] + [a for a, _ in extra]:
            if p.exists():
                p.unlink()


def _write_text(path: str, text: str) -> None:
    from graphc.files import atomic_write

    atomic_write(path, lambda f: f.write(text), mode="w")


def _latency(source, graph, quiet: bool):
    """(before ms, after ms) on this machine: the source and the result on the same runtime."""
    from graphc.backends import latency
    from graphc.check import random_inputs

    xs = random_inputs(graph, 1)[0]
    if source.kind == "onnx":
        from graphc.backends.onnx import emit_onnx

        return latency.measure_onnx(source.model, xs).median, latency.measure_onnx(emit_onnx(graph), xs).median
    if source.kind == "torch":
        import torch

        from graphc.backends.torch import emit_torch

        ts = [torch.from_numpy(x) for x in xs]
        return (latency.measure_torch(source.module, ts).median, latency.measure_torch(emit_torch(graph), ts).median)
    return None


def run(args) -> int:
    from graphc.check import CheckFailed, numeric_check
    from graphc.manager import PassManager
    from graphc.pipeline import add_predicted_latency, default_check, predicted_latency
    from graphc.registry import PassContext
    from graphc.source import load_source

    pipeline = validate(args)
    graph, source = load_source(args.model, input_shape=args.input_shape, weights=args.weights)
    import torch

    torch.manual_seed(args.seed)
    data = args.data
    if data is not None and pipeline.uses_data:
        from graphc.data import check_fits, load_data

        data = load_data(data)
        check_fits(data, graph)  # before any pass trains on it
    ctx = PassContext(data=data, seed=args.seed, quiet=args.quiet)
    predicted = predicted_latency(graph)
    layers_before = None
    if args.report:
        from graphc.report_layers import snapshot

        layers_before = snapshot(graph, measure=args.measure)
    report = PassManager(pipeline, dump_dir=args.dump_ir, check_each=args.check_each, seed=args.seed).run(graph, ctx)
    add_predicted_latency(report, predicted, graph)
    n = default_check(pipeline, args.check)
    if n:
        report.check = numeric_check(source, graph, n, seed=args.seed, enforced=pipeline.exact, quiet=args.quiet)
    if args.data and not args.no_accuracy:
        from graphc.check import add_accuracy

        add_accuracy(report, source, graph, ctx.data, quiet=args.quiet)
    if args.measure:
        lat = _latency(source, graph, args.quiet)
        if lat:
            report.add_metric(f"latency {'onnxruntime' if source.kind == 'onnx' else 'torch'}", lat[0], lat[1], "ms")
    failed = report.check is not None and report.check.enforced and not report.check.ok
    if args.report:
        from graphc.report_layers import merge, snapshot

        report.layers = merge(layers_before, snapshot(graph, measure=args.measure))
        if Path(args.report).suffix.lower() in (".html", ".htm"):
            from graphc.report_html import render_html

            run_dict = dict(report.to_dict(), label=Path(args.model).stem if ":" not in args.model else args.model)
            _write_text(args.report, render_html([run_dict]))
        else:
            _write_text(args.report, report.to_json() + "\n")
    if not failed and args.output:
        write_output(graph, args.output)
    if args.json:
        print(report.to_json())
    else:
        print(report.table())
        if args.explain:
            print(report.refusals())
        if args.output and not failed:
            print(f"wrote {args.output}")
    if failed:
        raise CheckFailed(f"{report.check.line()}; {args.output or 'no output'} not written")
    return 0
