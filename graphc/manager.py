"""The pass manager: runs a parsed pipeline on a graph, in place.

Invariants:
- the graph is verified after every pass run that reported a change, and a broken graph is a
  :class:`~graphc.errors.PassError` naming that pass (the graph is not rolled back: the error
  carries the IR around the failing node);
- cached analyses in the :class:`~graphc.registry.PassContext` are dropped after every change
  except those the pass declares in ``preserves``;
- a fixpoint group reruns its steps until one whole round changes nothing, and a group that
  still changes at its cap is an error, never a silent stop;
- every pass run gets a :class:`~graphc.report.PassRecord` with its time and its deltas of
  nodes, params and MACs.
"""
from __future__ import annotations

import os
import re
import time
import traceback
from pathlib import Path

from graphc.errors import DataError, InputError, IRError, PassError, UnsupportedError
from graphc.ir.graph import Graph, Node
from graphc.pipeline_parse import FixpointStep, PassStep, Pipeline, parse_pipeline
from graphc.registry import PassContext, PassResult
from graphc.report import PassRecord, Report


def measure(graph: Graph) -> dict:
    """Cost totals of the graph (the cost model's)."""
    from graphc.backends.cost import totals

    return totals(graph)


def _delta(before: dict, after: dict) -> dict:
    out = {}
    for k in ("nodes", "params", "macs"):
        b, a = before.get(k), after.get(k)
        out[k] = None if a is None or b is None else int(a - b)
    return out


def _failing_node(tb, graph: Graph) -> Node | None:
    """The node the pass was working on: in the innermost frame holding a node of ``graph``,
    the local called ``node`` (or ``n``) if there is one, else the first node local."""
    found = None
    for frame, _ in traceback.walk_tb(tb):
        local = {k: v for k, v in frame.f_locals.items() if isinstance(v, Node) and v.graph is graph}
        if local:
            found = local.get("node") or local.get("n") or next(iter(local.values()))
    return found


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


class PassManager:
    """Runs ``pipeline`` (a string, a Pipeline, or passes) over graphs.

    ``dump_dir``: write ``000_input.gir``, then ``NNN_<pass>.gir`` after each pass run, and
    ``final.dot``. ``verify``: verify after each changing pass (on by default; off only for
    timing experiments).
    """

    def __init__(self, pipeline, *, verify: bool = True, dump_dir: str | os.PathLike | None = None,
                 cost: bool = True):
        self.pipeline: Pipeline = parse_pipeline(pipeline)
        self.verify = verify
        self.dump_dir = Path(dump_dir) if dump_dir is not None else None
        self.cost = cost

    # -- running --------------------------------------------------------------------------------
    def run(self, graph: Graph, ctx: PassContext | None = None) -> Report:
        ctx = ctx if ctx is not None else PassContext()
        start = time.perf_counter()
        report = Report(pipeline=str(self.pipeline), exact=self.pipeline.exact)
        self._totals = measure(graph) if self.cost else {"nodes": len(graph)}
        report.before = dict(self._totals)
        self._dump_n = 0
        self._groups = 0
        if self.dump_dir is not None:
            try:
                self.dump_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create dump directory {self.dump_dir}: {e.strerror}") from None
            # The folder shows one run: an earlier run's numbered dumps would read as this one's.
            for old in self.dump_dir.iterdir():
                if old.name == "final.dot" or re.fullmatch(r"\d{3}_.+\.gir", old.name):
                    old.unlink()
            self._dump(graph, "input")
        self._steps(self.pipeline.steps, graph, ctx, report, group=None, rnd=None)
        report.after = dict(self._totals)
        report.seconds = time.perf_counter() - start
        if self.dump_dir is not None:
            from graphc.ir.serialize import to_dot

            (self.dump_dir / "final.dot").write_text(to_dot(graph))
        return report

    def _steps(self, steps, graph, ctx, report, group, rnd) -> bool:
        changed = False
        for step in steps:
            if isinstance(step, FixpointStep):
                changed |= self._fixpoint(step, graph, ctx, report)
            else:
                changed |= self._pass(step, graph, ctx, report, group, rnd)
        return changed

    def _fixpoint(self, step: FixpointStep, graph, ctx, report) -> bool:
        any_change = False
        self._groups += 1
        index = self._groups
        for rnd in range(1, step.cap + 1):
            if not self._steps(step.steps, graph, ctx, report, group=(str(step), index), rnd=rnd):
                return any_change
            any_change = True
        changed = sorted({r.name for r in report.passes if r.group_index == index and r.round == step.cap and r.changed})
        raise PassError(f"{step} still changed the graph after {step.cap} rounds (last round changed: "
                        f"{', '.join(changed)}); raise max=N or check those passes for an undo/redo cycle")

    def _pass(self, step: PassStep, graph: Graph, ctx: PassContext, report: Report, group, rnd) -> bool:
        p = step.instance
        before_names = _unique([r.name for r in report.passes])
        after = f" (after: {', '.join(before_names)})" if before_names else " (first pass)"
        if getattr(p, "needs_data", False) and ctx.data is None:
            from graphc.data import SPEC_HELP

            raise DataError(f"pass '{p.name}' needs data: give --data {SPEC_HELP} (or data= in the API)")
        try:
            res, seconds = self._execute(p, graph, ctx, after)
        except PassError:
            if self.dump_dir is not None:
                self._dump(graph, f"{p.name}.failed")
            raise
        delta = {"nodes": 0, "params": 0, "macs": 0}
        if res.changed:
            ctx.invalidate(keep=frozenset(getattr(p, "preserves", ())))
            new = measure(graph) if self.cost else {"nodes": len(graph)}
            delta = _delta(self._totals, new)
            self._totals = new
        report.passes.append(PassRecord(
            name=p.name, options=dict(step.options), exact=bool(p.exact), changed=bool(res.changed),
            seconds=seconds, stats=dict(res.stats or {}), delta=delta, group=group[0] if group else None,
            round=rnd, group_index=group[1] if group else None))
        if self.dump_dir is not None:
            self._dump(graph, p.name)
        return bool(res.changed)

    def _execute(self, p, graph: Graph, ctx: PassContext, after: str) -> tuple[PassResult, float]:
        """Run one pass and verify what it changed: (result, seconds the pass itself took).
        Every failure becomes a PassError (or the pass's own one-line DataError/InputError/
        UnsupportedError, naming the pass)."""
        shape = (len(graph), len(graph.params))
        t0 = time.perf_counter()
        try:
            res = p.run(graph, ctx)
        except (DataError, InputError, UnsupportedError) as e:
            # Deliberate one-line errors: keep their class (and exit code), name the pass.
            msg = str(e)
            if p.name not in msg:
                msg = f"pass '{p.name}': {msg}"
            raise type(e)(msg) from e
        except PassError:
            raise
        except IRError as e:
            raise PassError(f"pass '{p.name}' failed{after}: {e.args[0] if e.args else e}", e.context) from e
        except Exception as e:
            node = _failing_node(e.__traceback__, graph)
            where = ""
            if node is not None:
                from graphc.ir.printer import context

                where = context(graph, node)
            raise PassError(f"pass '{p.name}' failed{after}: {_one_line(e)}"
                            + (f" at node {node.name!r}" if node is not None else ""), where) from e
        seconds = time.perf_counter() - t0
        if isinstance(res, bool):
            res = PassResult(changed=res)
        if not isinstance(res, PassResult):
            raise PassError(f"pass '{p.name}' returned {type(res).__name__}, expected PassResult(changed, stats)")
        if not res.changed and (len(graph), len(graph.params)) != shape:
            # A change reported as none would skip verification and keep stale analyses.
            raise PassError(f"pass '{p.name}' reported no change but nodes/params went from {shape[0]}/{shape[1]} "
                            f"to {len(graph)}/{len(graph.params)}{after}")
        if res.changed and self.verify:
            try:
                graph.verify()
            except IRError as e:
                raise PassError(f"pass '{p.name}' left a broken graph{after}: {e.args[0] if e.args else e}",
                                e.context) from e
        return res, seconds

    def _dump(self, graph: Graph, name: str) -> None:
        from graphc.ir.printer import print_graph

        path = self.dump_dir / f"{self._dump_n:03d}_{name}.gir"
        self._dump_n += 1
        try:
            text = print_graph(graph)
        except Exception as e:  # a graph a failed pass left may not even print
            text = f"# the graph could not be printed: {type(e).__name__}: {e}\n"
        path.write_text(text)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n, None)
    return list(seen)


def run_pipeline(graph: Graph, pipeline, ctx: PassContext | None = None, *, dump_dir=None,
                 verify: bool = True) -> Report:
    """Run ``pipeline`` on ``graph`` in place; the report's ``changed`` says whether it did anything."""
    return PassManager(pipeline, verify=verify, dump_dir=dump_dir).run(graph, ctx)


__all__ = ["PassManager", "run_pipeline", "measure"]
