"""Pass instruments: what the pass manager does around every pass, one object per concern.

An instrument sees the pipeline start and end and each pass before and after it ran; the
manager itself only runs passes, records them and turns failures into one
:class:`~graphc.errors.PassError`. The built-in ones, in the order they see a finished pass:

- :class:`Verify`: the graph is verified after every pass that reported a change;
- :class:`NumericCheck` (``--check-each N``): after every changing exact pass, N random inputs
  through the graph give what they gave before the pass (rtol 1e-4, atol 1e-5 scaled by
  max(1, max|reference|)); a lossy pass only moves the reference;
- :class:`CostDelta`: the cost totals after every change, and each pass's deltas of nodes,
  params and MACs;
- :class:`DumpIR` (``--dump-ir DIR``): the IR text before the pipeline, after each pass and when
  one failed, and ``final.dot``.

Write your own by subclassing :class:`PassInstrument` and passing it to
``PassManager(..., instruments=[...])``::

    class CountRewrites(PassInstrument):
        def after_pass(self, p, graph, ctx, record):
            print(p.name, record.stats.get("rewrites"))
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from graphc.errors import InputError, IRError, PassError
from graphc.ir.graph import Graph


class PassInstrument:
    """Hooks around a pipeline run; every method is optional."""

    def enter_pipeline(self, graph: Graph, ctx, report) -> None:
        pass

    def before_pass(self, p, graph: Graph, ctx) -> None:
        pass

    def after_pass(self, p, graph: Graph, ctx, record) -> None:
        """``record`` is the pass's :class:`~graphc.report.PassRecord` (changed, stats, seconds);
        raise a PassError to stop the pipeline."""

    def pass_failed(self, p, graph: Graph, ctx) -> None:
        pass

    def exit_pipeline(self, graph: Graph, ctx, report) -> None:
        pass


def measure(graph: Graph) -> dict:
    """Cost totals of the graph (nodes, params, MACs, FLOPs...)."""
    from graphc.backends.cost import totals

    return totals(graph)


class Verify(PassInstrument):
    def after_pass(self, p, graph, ctx, record) -> None:
        if not record.changed:
            return
        try:
            graph.verify()
        except IRError as e:
            raise PassError(f"pass '{p.name}' left a broken graph{record.after}: {e.args[0] if e.args else e}",
                            e.context) from e


class CostDelta(PassInstrument):
    """Totals before and after the pipeline, and per pass the change of nodes, params, MACs.
    With ``cost=False`` only node counts (for timing experiments without the cost model)."""

    def __init__(self, cost: bool = True):
        self.cost = cost

    def _totals(self, graph) -> dict:
        return measure(graph) if self.cost else {"nodes": len(graph)}

    def enter_pipeline(self, graph, ctx, report) -> None:
        self.totals = self._totals(graph)
        report.before = dict(self.totals)

    def after_pass(self, p, graph, ctx, record) -> None:
        record.delta = {"nodes": 0, "params": 0, "macs": 0}
        if not record.changed:
            return
        new = self._totals(graph)
        for k in ("nodes", "params", "macs"):
            b, a = self.totals.get(k), new.get(k)
            record.delta[k] = None if a is None or b is None else int(a - b)
        self.totals = new

    def exit_pipeline(self, graph, ctx, report) -> None:
        report.after = dict(self.totals)


class NumericCheck(PassInstrument):
    """Per-pass numeric check: ``n`` seeded random inputs run through the IR interpreter before
    the pipeline and after every changing pass; an exact pass must keep the outputs."""

    RTOL, ATOL = 1e-4, 1e-5

    def __init__(self, n: int = 1, seed: int = 0):
        self.n, self.seed = n, seed
        self.checked: list[tuple[str, float]] = []

    def _run(self, graph):
        from graphc.source import execute, to_numpy

        return [to_numpy(execute(graph, xs)) for xs in self.inputs]

    def enter_pipeline(self, graph, ctx, report) -> None:
        from graphc.check import random_inputs

        self.inputs = random_inputs(graph, self.n, self.seed)
        self.reference = self._run(graph)

    def after_pass(self, p, graph, ctx, record) -> None:
        if not record.changed:
            return
        outs = self._run(graph)
        if p.exact:
            worst = 0.0
            for ref_set, out_set in zip(self.reference, outs):
                for i, (r, o) in enumerate(zip(ref_set, out_set)):
                    if r.shape != o.shape:
                        raise PassError(f"pass '{p.name}' is exact but changed output {i}'s shape from "
                                        f"{r.shape} to {o.shape}{record.after}")
                    r64, o64 = r.astype(np.float64), o.astype(np.float64)
                    scale = max(1.0, float(np.abs(r64).max())) if r64.size else 1.0
                    err = np.abs(o64 - r64)
                    worst = max(worst, float(err.max()) / scale if err.size else 0.0)
                    if not np.all(err <= self.ATOL * scale + self.RTOL * np.abs(r64)):
                        raise PassError(f"pass '{p.name}' is exact but changed output {i} by up to "
                                        f"{float(err.max()):.3g} (output scale {scale:.3g}, rtol {self.RTOL}, "
                                        f"atol {self.ATOL}){record.after}")
            record.stats = {**record.stats, "check_each.max_rel": worst}
            self.checked.append((p.name, worst))
        self.reference = outs


class DumpIR(PassInstrument):
    """``000_input.gir``, then ``NNN_<pass>.gir`` after each pass run (``.failed`` for a pass
    that raised), and ``final.dot``. An earlier run's numbered dumps are removed first: the
    folder shows one run."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def enter_pipeline(self, graph, ctx, report) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create dump directory {self.folder}: {e.strerror}") from None
        for old in self.folder.iterdir():
            if old.name == "final.dot" or re.fullmatch(r"\d{3}_.+\.gir", old.name):
                old.unlink()
        self.n = 0
        self._dump(graph, "input")

    def after_pass(self, p, graph, ctx, record) -> None:
        self._dump(graph, p.name)

    def pass_failed(self, p, graph, ctx) -> None:
        self._dump(graph, f"{p.name}.failed")

    def exit_pipeline(self, graph, ctx, report) -> None:
        from graphc.ir.serialize import to_dot

        (self.folder / "final.dot").write_text(to_dot(graph))

    def _dump(self, graph: Graph, name: str) -> None:
        from graphc.ir.printer import print_graph

        path = self.folder / f"{self.n:03d}_{name}.gir"
        self.n += 1
        try:
            text = print_graph(graph)
        except Exception as e:  # a graph a failed pass left may not even print
            text = f"// the graph could not be printed: {type(e).__name__}: {e}\n"
        path.write_text(text)


__all__ = ["PassInstrument", "Verify", "CostDelta", "NumericCheck", "DumpIR", "measure"]
