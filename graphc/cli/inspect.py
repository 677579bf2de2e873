"""``graphc inspect MODEL``: print a model as graphc IR (text, JSON or DOT).

MODEL is a model spec (see :mod:`graphc.frontends.spec`). The text form is the parseable
dump: params first, then one line per layer in execution order, each ending with the source
layer name. ``--no-params`` leaves the param lines out for reading. ``--groups`` prints the
channel groups instead (group id, members, channels, prunable or why not).
"""
from __future__ import annotations

import json
import sys

FORMATS = ("text", "json", "dot")


def add_model_arguments(p) -> None:
    """The model spec and its input shape: shared by ``inspect`` and ``convert``."""
    p.add_argument("model", help="model spec: FILE.onnx, FILE.json, torchvision:NAME, timm:NAME or FILE.py:factory")
    p.add_argument("--input-shape", action="append", metavar="1,3,224,224",
                   help="input shape (repeat for several inputs); overrides the model's own")
    add_weights_argument(p)


def add_weights_argument(p) -> None:
    p.add_argument("--weights", metavar="FILE",
                   help="trained weights for a torch model spec: .safetensors or a torch.save'd state dict "
                        "(read weights-only; never unpickles objects)")


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="print a model as graphc IR", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="text", help="output form (default text)")
    p.add_argument("--no-params", action="store_true", help="text form without the param lines")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--after", metavar="PIPELINE", help="show the IR after running this pass pipeline (e.g. fuse)")
    p.add_argument("--groups", action="store_true",
                   help="print the channel groups (members, channels, prunable or why not) instead of the IR")
    p.set_defaults(func=run)


def load_graph(args):
    from graphc.frontends.spec import load_spec

    return load_spec(args.model, input_shape=args.input_shape, weights=args.weights)


def render(graph, args) -> str:
    from graphc.ir import print_graph, to_dot
    from graphc.ir.serialize import to_json

    if args.format == "json":
        return json.dumps(to_json(graph), indent=1) + "\n"
    if args.format == "dot":
        return to_dot(graph)
    text = print_graph(graph)
    if getattr(args, "no_params", False):
        names = {f"  %{p.name}:" for p in graph.params.values()}
        text = "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith(tuple(names)) or not names)
    return text


# Suffixes of files graphc reads as models or weights: inspect's text never replaces one.
MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".npz", ".pkl")


def check_text_output(output: str | None) -> None:
    """Refuse an ``-o`` inspect cannot write: empty, a folder, a missing folder, a model file."""
    if output is None:
        return
    from pathlib import Path

    from graphc.errors import InputError

    if not output.strip():
        raise InputError("-o was given an empty file name")
    path = Path(output)
    if path.is_dir():
        raise InputError(f"-o {output} is a folder, not a file")
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise InputError(f"-o {output}: folder {path.parent} does not exist")
    if path.suffix.lower() in MODEL_SUFFIXES:
        raise InputError(f"-o {output}: inspect writes text, and {path.suffix} names a model file; "
                         "use convert or optimize to write a model, or a .txt/.json/.dot name for text")


def write_text(text: str, output: str | None) -> None:
    if not output:
        sys.stdout.write(text)
        return
    from graphc.files import atomic_write

    check_text_output(output)
    atomic_write(output, lambda f: f.write(text), mode="w")


def run(args) -> int:
    check_text_output(args.output)  # before the model loads: bad output costs nothing
    pipeline = None
    if getattr(args, "after", None):
        from graphc.pipeline import parse_pipeline

        pipeline = parse_pipeline(args.after)  # a bad pipeline fails before the model loads
    graph = load_graph(args)
    if pipeline is not None:
        from graphc.pipeline import run_pipeline

        run_pipeline(graph, pipeline)
    if getattr(args, "groups", False):
        from graphc.passes.channel_groups import channel_groups, format_groups

        write_text(format_groups(channel_groups(graph), max_members=None) + "\n", args.output)
        return 0
    write_text(render(graph, args), args.output)
    return 0
