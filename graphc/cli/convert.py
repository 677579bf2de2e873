"""``graphc convert MODEL -o OUT``: import a model, check it, and write it with a back-end.

The suffix of OUT picks the back-end: ``.pt`` (a ``torch.save``'d ``torch.fx.GraphModule``
that loads with torch alone) or ``.onnx`` (weights in ``OUT.onnx.data`` beside it when the
model is over 2 GB). Converting is an exact path: the model as written (the ONNX file in
onnxruntime, the torch module) is compared with the source on ``--check N`` random inputs
(default 3, 0 skips it) before anything is written; a failing check writes nothing and exits 1
with the error figures. Arguments are validated before the model is loaded, and the output is
written atomically, so a failure never leaves a file behind.
"""
from __future__ import annotations

import sys
from pathlib import Path

from graphc.errors import InputError

SUFFIXES = (".pt", ".pth", ".onnx")


def register(subparsers) -> None:
    from graphc.cli.inspect import add_model_arguments

    p = subparsers.add_parser("convert", help="convert a model to .pt or .onnx", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file: .pt or .onnx")
    p.add_argument("--check", type=int, metavar="N", default=None,
                   help="random inputs to compare the written model against the source (default: 3; 0 skips it)")
    p.add_argument("--seed", type=int, default=0, help="seed for the check's random inputs")
    p.set_defaults(func=run)


def run(args) -> int:
    from graphc.check import CheckFailed, numeric_check
    from graphc.pipeline import DEFAULT_CHECK
    from graphc.source import load_source

    out = Path(args.output)
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(f"{out}: output must end in .pt or .onnx")
    if not out.parent.exists():
        raise InputError(f"{out}: directory {out.parent} does not exist")
    if args.check is not None and args.check < 0:
        raise InputError(f"--check wants N >= 0, got {args.check}")
    graph, source = load_source(args.model, input_shape=args.input_shape)
    model, runner = emit_checked_artefact(graph, out)
    n = DEFAULT_CHECK if args.check is None else args.check
    if n:
        res = numeric_check(source, graph, n, seed=args.seed, runner=runner)
        if not res.ok:
            raise CheckFailed(f"{res.line()}; {out} not written")
        print(res.line(), file=sys.stderr)
    write_artefact(graph, model, out)
    print(f"wrote {out}: {len(graph.nodes)} nodes, {graph.num_params():,} parameters", file=sys.stderr)
    return 0


def emit_checked_artefact(graph, out: Path):
    """(the model as it will be written, a (run, description) pair running it on numpy inputs):
    an ``onnx.ModelProto`` in onnxruntime for ``.onnx``, the emitted module for ``.pt``."""
    from graphc.check import result_runner

    if out.suffix.lower() == ".onnx":
        from graphc.backends.onnx import emit_onnx
        from graphc.check import onnx_runner

        model = emit_onnx(graph)
        return model, onnx_runner(model)
    return None, result_runner(graph, "torch")


def write_artefact(graph, model, out: Path) -> None:
    import graphc

    if model is not None:
        from graphc.backends.onnx import save_onnx

        save_onnx(model, out)
    else:
        graphc.save(graph, out)
