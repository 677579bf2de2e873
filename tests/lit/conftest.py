"""FileCheck-style text tests: every ``tests/lit/*.ir`` file is collected by pytest.

A file holds one or more cases separated by a ``// -----`` line; each case is an IR text
(the printer's grammar, ``//`` comments allowed) with directives in its comments:

    // RUN: fold-bn                 the pipeline to run (required; a file-level RUN serves every case)
    // PREPARE: decompose           a pipeline run first, not checked (makes the input of RUN)
    // CHECK: text                  found after the previous match
    // CHECK-NEXT: text             found on the line right after the previous match
    // CHECK-SAME: text             found on the same line as the previous match, after it
    // CHECK-NOT: text              absent between the previous match and the next one
                                    (or the end of the output)

``{{regex}}`` inside a pattern is a regular expression; the rest is literal text. The checked
output is the printed graph after RUN followed by one line per refusal,
``// refused <pass> <node>: <reason>``. Every case also runs these checks: the graph verifies;
a second run of RUN changes nothing; and when RUN is exact, seeded random inputs and weights
(positive, so batch-norm variances are valid) give the same outputs before and after, within
rtol 1e-4 and atol 1e-5 scaled by max(1, max|reference|).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

RTOL, ATOL = 1e-4, 1e-5
_DIRECTIVE = re.compile(r"^\s*//\s*(RUN|PREPARE|CHECK|CHECK-NEXT|CHECK-SAME|CHECK-NOT):\s?(.*)$")


class CheckFailure(AssertionError):
    pass


def _compile(pattern: str) -> re.Pattern:
    parts = re.split(r"\{\{(.*?)\}\}", pattern.strip())
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?:{p})" for i, p in enumerate(parts)))


def filecheck(output: str, checks: list[tuple[str, str]]) -> None:
    """Match ``checks`` ([(kind, pattern)], kinds CHECK, CHECK-NEXT, CHECK-SAME, CHECK-NOT) against
    ``output`` in order; raise :class:`CheckFailure` saying which check failed and where."""
    pos = 0
    last_line = None  # (start, end) of the line of the previous match
    pending_not: list[str] = []

    def line_span(i: int) -> tuple[int, int]:
        start = output.rfind("\n", 0, i) + 1
        end = output.find("\n", i)
        return start, len(output) if end < 0 else end

    def check_nots(end: int) -> None:
        for pat in pending_not:
            m = _compile(pat).search(output, pos, end)
            if m:
                line = output[line_span(m.start())[0]:line_span(m.start())[1]]
                raise CheckFailure(f"CHECK-NOT: {pat!r} found in line {line!r}\n--- output ---\n{output}")
        pending_not.clear()

    for kind, pat in checks:
        if kind == "CHECK-NOT":
            pending_not.append(pat)
            continue
        rx = _compile(pat)
        if kind == "CHECK":
            m = rx.search(output, pos)
        elif last_line is None:
            raise CheckFailure(f"{kind}: {pat!r} has no previous match to follow")
        elif kind == "CHECK-SAME":
            m = rx.search(output, pos, last_line[1])
        else:  # CHECK-NEXT
            nxt = last_line[1] + 1
            if nxt > len(output):
                m = None
            else:
                m = rx.search(output, nxt, line_span(nxt)[1])
        if m is None:
            rest = output[pos:pos + 300]
            raise CheckFailure(f"{kind}: {pat!r} not found after position {pos}: {rest!r}\n--- output ---\n{output}")
        check_nots(m.start())
        pos = m.end()
        last_line = line_span(m.start())
    check_nots(len(output))


def _directives(text: str) -> dict:
    out = {"RUN": None, "PREPARE": None, "checks": []}
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        kind, arg = m.group(1), m.group(2).strip()
        if kind in ("RUN", "PREPARE"):
            out[kind] = arg
        else:
            out["checks"].append((kind, arg))
    return out


def _randomize(graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for p in graph.params.values():
        if p.kind != "const" and np.issubdtype(p.data.dtype, np.floating):
            p.set_data(rng.uniform(0.5, 1.5, p.data.shape).astype(p.data.dtype))


def _outputs(graph, seed: int = 1):
    import torch

    from graphc.source import execute

    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(v.shape, generator=g) for v in graph.inputs]
    return [o.detach().double() for o in execute(graph, xs)]


def run_case(text: str, defaults: dict) -> str:
    """Run one case; returns the checked output (after the checks passed)."""
    import graphc
    from graphc.ir.printer import parse_graph, print_graph
    from graphc.pipeline_parse import parse_pipeline

    d = _directives(text)
    run = d["RUN"] or defaults.get("RUN")
    prepare = d["PREPARE"] or defaults.get("PREPARE")
    if not run:
        raise CheckFailure("no '// RUN: <pipeline>' line")
    g = parse_graph(text)
    _randomize(g)
    if prepare:
        graphc.run_pipeline(g, prepare)
    before = g.clone()
    report = graphc.run_pipeline(g, run)
    g.verify()
    lines = [print_graph(g).rstrip("\n")]
    for r in report.passes:
        lines += [f"// refused {r.name} {node}: {why}" for node, why in (r.stats.get("refused") or {}).items()]
    output = "\n".join(lines) + "\n"
    filecheck(output, d["checks"])
    again = graphc.run_pipeline(g, run)
    if again.changed:
        raise CheckFailure(f"a second run of {run} changed the graph again")
    if parse_pipeline(run).exact:
        for ref, got in zip(_outputs(before), _outputs(g)):
            scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
            if ref.shape != got.shape or not bool(((got - ref).abs() <= ATOL * scale + RTOL * ref.abs()).all()):
                raise CheckFailure(f"{run} is exact but changed the outputs (max err "
                                   f"{float((got - ref).abs().max()) if ref.shape == got.shape else 'shape'})")
    return output


def unrun_output(text: str, defaults: dict) -> str:
    """What the checks would see if RUN did nothing: the (prepared) input, printed."""
    import graphc
    from graphc.ir.printer import parse_graph, print_graph

    g = parse_graph(text)
    prepare = _directives(text)["PREPARE"] or defaults.get("PREPARE")
    if prepare:
        graphc.run_pipeline(g, prepare)
    return print_graph(g)


def cases(path: Path):
    """(name, text, file defaults, first line) of every case in a lit file."""
    text = path.read_text()
    chunks = re.split(r"^\s*//\s*-----\s*$", text, flags=re.M)
    first = _directives(chunks[0].split("graph @")[0])
    defaults = {"RUN": first["RUN"], "PREPARE": first["PREPARE"]}
    line = 1
    for i, chunk in enumerate(chunks):
        if "graph @" in chunk:
            yield f"case{i}", chunk, defaults, line
        line += chunk.count("\n")


class LitItem(pytest.Item):
    def __init__(self, *, text: str, defaults: dict, first_line: int, **kw):
        super().__init__(**kw)
        self.text, self.defaults, self.first_line = text, defaults, first_line

    def runtest(self):
        run_case(self.text, self.defaults)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CheckFailure):
            return f"{self.path.name}:{self.first_line}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.first_line - 1, f"lit: {self.name}"


class LitFile(pytest.File):
    def collect(self):
        for name, text, defaults, line in cases(self.path):
            yield LitItem.from_parent(self, name=name, text=text, defaults=defaults, first_line=line)


def pytest_collect_file(parent, file_path: Path):
    if file_path.suffix == ".ir":
        return LitFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def lit():
    """The runner's pieces, for the tests that check the checker."""
    import types

    return types.SimpleNamespace(filecheck=filecheck, run_case=run_case, CheckFailure=CheckFailure, cases=cases,
                                 directives=_directives, unrun_output=unrun_output)
