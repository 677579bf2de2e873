"""Print what graphc says to each hostile input of the test corpus: case, command, exit code
and the stderr line, one row per run.

    python bench/bad_input.py            # every corpus case through every command, then the option cases
    python bench/bad_input.py --markdown # the same as a Markdown table

The cases are built by ``tests/cli/test_hostile_corpus.py`` (the CI test asserts exit 2, one
line, no file written, input unchanged); this script only runs them and reports.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_corpus():
    path = HERE.parent / "tests" / "cli" / "test_hostile_corpus.py"
    spec = importlib.util.spec_from_file_location("hostile_corpus", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def runs(hc):
    """(case, command, exit code, stderr line, files unchanged) for every run."""
    jobs = [(c, cmd, lambda c=c, cmd=cmd: hc.run_case(c, cmd)) for c in hc.CASES for cmd in hc.COMMANDS]
    jobs += [(c, " ".join(c.argv[:1]), lambda c=c: hc.run_cli(c.argv)) for c in hc.OPTION_CASES]
    cwd = os.getcwd()
    for case, command, call in jobs:
        with tempfile.TemporaryDirectory() as d:
            os.chdir(d)
            try:
                hc.materialise(case, Path(d))
                before = hc.snapshot(Path(d))
                rc, _, err = call()
                same = hc.snapshot(Path(d)) == before
            finally:
                os.chdir(cwd)
        lines = err.strip().splitlines()
        yield case.name, command, rc, (lines[0] if len(lines) == 1 else f"<{len(lines)} lines>"), same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    hc = load_corpus()
    bad = total = 0
    if args.markdown:
        print("| case | command | exit | stderr |\n|---|---|---|---|")
    for name, command, rc, line, same in runs(hc):
        total += 1
        ok = rc == 2 and not line.startswith("<") and same
        bad += not ok
        line = line.removeprefix("graphc: error: ")
        if args.markdown:
            print(f"| {name} | {command} | {rc} | {line.replace('|', '/')} |")
        else:
            print(f"{'' if ok else 'BROKEN '}{name} [{command}] exit {rc}: {line}")
    print(f"\n{total} runs ({len(hc.CASES)} corpus cases x {len(hc.COMMANDS)} commands + {len(hc.OPTION_CASES)} "
          f"option cases): {bad} broke the promise (exit 2, one line, nothing written)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
