"""The graphc command line. Each sub-command lives in its own module of this package and
exposes ``register(subparsers)``; this module only wires them up and turns graphc's errors
into one line and exit code 2 (``--debug`` shows the traceback)."""
from __future__ import annotations

import argparse
import importlib
import sys

from graphc.errors import GraphcError

COMMANDS = ["inspect", "convert", "optimize", "passes", "cost", "calibrate", "train_example"]


def build_parser() -> argparse.ArgumentParser:
    from graphc import __version__

    p = argparse.ArgumentParser(prog="graphc", description="graph-rewriting compiler for CNNs")
    p.add_argument("--version", action="version", version=f"graphc {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"graphc.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"graphc.cli.{name}":
                continue
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        return int(rc or 0)
    except GraphcError as e:
        if debug:
            raise
        msg = str(e).rstrip()
        print(f"graphc: error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("graphc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
