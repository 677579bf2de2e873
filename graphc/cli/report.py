"""``graphc report RUN [RUN ...] -o OUT.html``: draw saved runs as one self-contained HTML page.

A RUN is what ``graphc optimize --report FILE`` wrote (JSON, or a page it drew, which embeds
its runs). Several runs of one source, e.g. one per pruning target, make a sweep: the page opens
with accuracy vs MACs and accuracy vs latency over them.

Invariants: every RUN is read and checked before anything is written; the page is written to
a temporary file and renamed into place.
"""
from __future__ import annotations

from pathlib import Path

from graphc.errors import InputError


def register(sub) -> None:
    p = sub.add_parser("report", help="draw saved runs (optimize --report FILE) as one HTML page",
                       description="Draw one or more saved runs (the JSON or HTML that `graphc optimize --report "
                                   "FILE` wrote) as one self-contained HTML page; several runs make a sweep with "
                                   "accuracy vs MACs and vs latency.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="a saved run: FILE.json or FILE.html")
    p.add_argument("-o", "--output", required=True, metavar="OUT.html", help="where to write the page")
    p.add_argument("--title", help="the page's title (default: from the pipeline)")
    p.set_defaults(func=run)


def run(args) -> int:
    from graphc.cli.optimize import _parent_exists, _write_text
    from graphc.report_html import render_html, runs_from_file

    out = _parent_exists(args.output, "output")
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"output {args.output} should end in .html")
    runs = []
    for path in args.runs:
        if not Path(path).is_file():
            raise InputError(f"no such run file: {path}")
        for i, r in enumerate(found := runs_from_file(path)):
            r.setdefault("label", Path(path).stem + (f" #{i + 1}" if len(found) > 1 else ""))
            runs.append(r)
    _write_text(args.output, render_html(runs, title=args.title))
    print(f"wrote {args.output} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0
