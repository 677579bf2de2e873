"""``graphc convert MODEL -o OUT``: import a model and write it with a back-end.

The suffix of OUT picks the back-end: ``.pt`` (a ``torch.save``'d ``torch.fx.GraphModule``
that loads with torch alone) or ``.onnx``. The output is checked before the model is loaded,
and written atomically, so a failure never leaves a file behind.
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
    p.set_defaults(func=run)


def run(args) -> int:
    import graphc
    from graphc.frontends.spec import load_spec

    if not args.output.strip():
        raise InputError("-o was given an empty file name")
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"-o {out} is a folder, not a file")
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(f"{out}: output must end in .pt or .onnx")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"{out}: directory {out.parent} does not exist")
    graph = load_spec(args.model, input_shape=args.input_shape)
    graphc.save(graph, out)
    print(f"wrote {out}: {len(graph.nodes)} nodes, {graph.num_params():,} parameters", file=sys.stderr)
    return 0
