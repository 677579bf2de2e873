"""The zoo conformance suite over every torchvision classification model, with a results table.

CI runs tests/zoo on a representative subset of the zoo (``CI_MODELS`` in tests/zoo/zoo.py:
one or more models of every architecture family and coupling kind) to stay within its time
budget on two cores. This script runs the very same tests on all 80 models (or the ones
named), then writes a table of model x check -> pass/fail and seconds to docs/zoo.md.

    python bench/zoo.py                         # all 80 models, 2 workers, writes docs/zoo.md
    python bench/zoo.py --models resnet18,alexnet --workers 1 --no-write
    python bench/zoo.py --tests roundtrip_torch,roundtrip_onnx

It is the same pytest run CI does, with ``GRAPHC_ZOO`` set; the table comes from pytest's
JUnit XML, so a failure here is a failing test there.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK_BEGIN, MARK_END = "<!-- bench:zoo -->", "<!-- /bench:zoo -->"


def _parse(xml_path: Path):
    """{model: {check: (outcome, seconds, message)}} from pytest's JUnit XML."""
    results: dict[str, dict[str, tuple[str, float, str]]] = collections.defaultdict(dict)
    for tc in ET.parse(xml_path).getroot().iter("testcase"):
        name = tc.get("name", "").split("]@", 1)[0].rstrip("]") + "]"  # xdist adds `@group`
        if "[" not in name or "NOTSET" in name:
            continue
        test, model = name[:-1].split("[", 1)
        if "-" in model:  # a zoo case crossed with another parameter: `resnet18-onnx`
            model, variant = model.split("-", 1)
            test = f"{test}[{variant}]"
        check = tc.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_") + "::" + test.removeprefix("test_")
        outcome, msg = "pass", ""
        for kind in ("failure", "error"):
            el = tc.find(kind)
            if el is not None:
                outcome = "FAIL"
                msg = (el.get("message") or "").splitlines()[0][:120] if el.get("message") else kind
        if tc.find("skipped") is not None:
            outcome = "skip"
            msg = (tc.find("skipped").get("message") or "")[:120]
        results[model][check] = (outcome, float(tc.get("time", 0.0)), msg)
    return results


def _table(results, elapsed: float, workers: int) -> str:
    checks = sorted({c for r in results.values() for c in r})
    test_secs = sum(v[1] for r in results.values() for v in r.values())
    lines = [f"{len(results)} models, {sum(len(r) for r in results.values())} checks; the tests' own times add up "
             f"to {test_secs / 60:.0f} min (this invocation: {elapsed / 60:.1f} min wall, {workers} worker(s)).", ""]
    per_check = []
    for c in checks:
        ran = [r[c] for r in results.values() if c in r]
        ok = sum(1 for o in ran if o[0] == "pass")
        per_check.append(f"| {c} | {ok}/{len(ran)} |")
    lines += ["| check | passed |", "|---|---|", *per_check, ""]
    short = [c.split("::", 1)[1] for c in checks]
    lines += ["| model | " + " | ".join(short) + " | seconds |",
              "|---|" + "---|" * len(checks) + "---|"]
    failures = []
    for model in sorted(results):
        r = results[model]
        cells = []
        for c in checks:
            if c not in r:
                cells.append("–")
                continue
            outcome, _, msg = r[c]
            cells.append(outcome)
            if outcome == "FAIL":
                failures.append(f"- {model} {c}: {msg}")
        secs = sum(v[1] for v in r.values())
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {secs:.0f} |")
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines)


def _write(doc: Path, body: str) -> None:
    text = doc.read_text() if doc.exists() else "# Zoo conformance\n"
    block = f"{MARK_BEGIN}\n{body}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated torchvision names, or 'all'")
    ap.add_argument("--tests", default="", help="comma-separated test files (e.g. roundtrip_torch,fuse)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=4, help="models per pytest process")
    ap.add_argument("--out", default=str(ROOT / "docs" / "zoo.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("-k", dest="keyword", default="", help="pytest -k expression (e.g. 'not dynamo')")
    ap.add_argument("--save", default="", help="JSON-lines file of per-model results; models already in it are "
                    "not rerun (resume an interrupted run), and the table is rewritten after every chunk")
    args = ap.parse_args(argv)

    files = [str(ROOT / "tests" / "zoo" / f"test_{t.strip()}.py") for t in args.tests.split(",") if t.strip()]
    sys.path.insert(0, str(ROOT / "tests" / "zoo"))
    from zoo import all_model_names

    models = all_model_names() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    results: dict = {}
    if args.save and Path(args.save).exists():
        for line in Path(args.save).read_text().splitlines():
            row = json.loads(line)
            results[row["model"]] = {k: tuple(v) for k, v in row["checks"].items()}
    todo = [m for m in models if m not in results]
    chunks = [todo[i:i + args.chunk] for i in range(0, len(todo), args.chunk)]
    cache = os.environ.get("GRAPHC_ZOO_CACHE") or tempfile.mkdtemp(prefix="graphc-zoo-")
    worst = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphc-bench-zoo-") as d:
        for i, chunk in enumerate(chunks):
            # one pytest process per chunk: a model's memory (the giants hold several GB) is
            # returned before the next chunk starts
            xml = Path(d) / f"zoo{i}.xml"
            env = dict(os.environ, GRAPHC_ZOO=",".join(chunk), GRAPHC_ZOO_CACHE=cache)
            cmd = [sys.executable, "-m", "pytest", *(files or [str(ROOT / "tests" / "zoo")]), "-q",
                   "-p", "no:cacheprovider", f"--junitxml={xml}", "-o", "junit_family=xunit1"]
            cmd += ["-k", args.keyword] if args.keyword else []
            cmd += ["-n", str(args.workers), "--dist", "loadgroup"] if args.workers > 1 else ["-p", "no:xdist"]
            print(f"[{i + 1}/{len(chunks)}] {', '.join(chunk)}", flush=True)
            proc = subprocess.run(cmd, cwd=ROOT, env=env)
            worst = max(worst, proc.returncode)
            if not xml.exists():
                print(f"bench/zoo: pytest wrote no results for {', '.join(chunk)} (exit {proc.returncode})",
                      file=sys.stderr)
                for m in chunk:
                    results.setdefault(m, {})["*::pytest"] = ("FAIL", 0.0, f"pytest exit {proc.returncode}, no results")
                continue
            for m, r in _parse(xml).items():
                results.setdefault(m, {}).update(r)
                if args.save:
                    with open(args.save, "a") as f:
                        f.write(json.dumps({"model": m, "checks": results[m]}) + "\n")
            if not args.no_write:
                _write(Path(args.out), _table(results, time.perf_counter() - t0, args.workers))
    elapsed = time.perf_counter() - t0
    body = _table(results, elapsed, args.workers)
    print(body)
    if not args.no_write:
        _write(Path(args.out), body)
        print(f"\nwritten to {args.out}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
