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
    from graphc.pipeline import DEFAULT_CHECK
    from graphc.source import load_source

    if not args.output.strip():
        raise InputError("-o was given an empty file name")
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"-o {out} is a folder, not a file")
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(f"{out}: output must end in .pt or .onnx")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"{out}: directory {out.parent} does not exist")
    if args.check is not None and args.check < 0:
        raise InputError(f"--check wants N >= 0, got {args.check}")
    graph, source = load_source(args.model, input_shape=args.input_shape, weights=args.weights)
    res = write_checked(graph, source, out, DEFAULT_CHECK if args.check is None else args.check, args.seed)
    if res is not None:
        print(res.line(), file=sys.stderr)
    print(f"wrote {out}: {len(graph.nodes)} nodes, {graph.num_params():,} parameters", file=sys.stderr)
    return 0


def write_checked(graph, source, out: Path, n: int, seed: int = 0):
    """Write ``graph`` to ``out`` by its suffix after comparing the model as written (the ONNX
    file in onnxruntime, before it is moved into place; the emitted module for ``.pt``) with
    ``source`` on ``n`` random inputs. A failed check raises :class:`CheckFailed` and writes
    nothing. Returns the check's result (None when ``n`` is 0)."""
    import graphc
    from graphc.check import CheckFailed, numeric_check, onnx_runner, result_runner

    results = []

    def check(runner):
        res = numeric_check(source, graph, n, seed=seed, runner=runner)
        results.append(res)
        if not res.ok:
            raise CheckFailed(f"{res.line()}; {out} not written")

    if out.suffix.lower() == ".onnx":
        from graphc.backends.onnx import save_onnx

        save_onnx(graph, out, verify=(lambda path: check(onnx_runner(path))) if n else None)
    else:
        if n:
            check(result_runner(graph, "torch"))
        graphc.save(graph, out)
    return results[0] if results else None
