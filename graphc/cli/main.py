"""The graphc command line. Each sub-command lives in its own module of this package and
exposes ``register(subparsers)``; this module only wires them up and turns graphc's errors
into one line and exit code 2 (``--debug`` shows the traceback).

Invariants: stderr carries graphc's own lines only -- the warnings and log records of the
libraries graphc drives (torch's tracer dumps graphs into them) are silenced unless
``--debug``; an error message is printed on one line whatever characters a user-supplied name
held; Ctrl-C is "interrupted" and exit 130 wherever it lands, also inside a library's import
that wraps it in an ImportError.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings

from graphc.errors import GraphcError

COMMANDS = ["inspect", "convert", "optimize", "passes", "cost", "calibrate", "train_example", "report"]


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
        with contextlib.nullcontext() if debug else _quiet_libraries():
            rc = args.func(args)
        return int(rc or 0)
    except GraphcError as e:
        if debug:
            raise
        print(f"graphc: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("graphc: interrupted", file=sys.stderr)
        return 130
    except ImportError as e:
        if not _interrupted(e):
            raise
        print("graphc: interrupted", file=sys.stderr)
        return 130


def one_line(e: GraphcError) -> str:
    """The message of ``e`` for the terminal: an IR error keeps its context lines (the IR
    around the failing node); any other message is one line, with control characters from
    user-supplied names (a newline in a file name) escaped."""
    from graphc.errors import IRError

    msg = str(e).rstrip()
    if isinstance(e, IRError) and e.context:
        return msg
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)


def _interrupted(e: BaseException) -> bool:
    """Whether Ctrl-C caused ``e``: some libraries turn an interrupted import of their native
    module into an ImportError raised from (or during) the KeyboardInterrupt."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _quiet_libraries():
    # torch configures levels on its child loggers, so only the global switch reaches them all.
    from graphc.errors import quiet_libraries

    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    token = quiet_libraries.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        quiet_libraries.reset(token)
        logging.disable(disabled)


if __name__ == "__main__":
    sys.exit(main())
