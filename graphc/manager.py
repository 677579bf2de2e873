"""The pass manager: runs a parsed pipeline on a graph, in place, with instruments around
each pass (:mod:`graphc.instruments`: verify, numeric check, cost deltas, IR dumps).

Invariants:
- the graph is verified after every pass run that reported a change, and a broken graph is a
  :class:`~graphc.errors.PassError` naming that pass (the graph is not rolled back: the error
  carries the IR around the failing node);
- a pass's contract is its configured instance's: ``exact`` and ``needs_data`` are read from the
  instance, so ``prune-merge(threshold=0.1)`` is lossy where ``prune-merge`` is exact;
- cached analyses in the :class:`~graphc.registry.PassContext` are dropped after every change
  except those the pass declares in ``preserves``;
- a fixpoint group reruns its steps until one whole round changes nothing, and a group that
  still changes at its cap is an error, never a silent stop;
- graph inputs and outputs keep their external names (pinned when the run starts), order,
  dtypes and shapes: a changing pass that alters one is a PassError naming it;
- every pass run gets a :class:`~graphc.report.PassRecord` with its time (of the pass alone,
  not its instruments) and its deltas of nodes, params and MACs.
"""
from __future__ import annotations

import contextlib
import os
import time
import traceback

from graphc.errors import DataError, InputError, IRError, PassError, UnsupportedError
from graphc.instruments import CostDelta, DumpIR, NumericCheck, PassInstrument, Verify, measure
from graphc.ir.gc_pause import gc_paused
from graphc.ir.graph import Graph, Node
from graphc.pipeline_parse import FixpointStep, PassStep, Pipeline, parse_pipeline
from graphc.registry import PassContext, PassResult
from graphc.report import PassRecord, Report


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

    ``verify``: verify after each changing pass (on by default; off only for timing
    experiments). ``dump_dir``: write the IR before and after each pass and ``final.dot``.
    ``check_each``: compare N random inputs through the graph before and after each changing
    exact pass. ``cost``: cost deltas per pass (node counts only when off). ``instruments``:
    more :class:`~graphc.instruments.PassInstrument` objects, run after the built-in ones.
    """

    def __init__(self, pipeline, *, verify: bool = True, dump_dir: str | os.PathLike | None = None,
                 cost: bool = True, check_each: int = 0, seed: int = 0,
                 instruments: list[PassInstrument] | tuple = ()):
        self.pipeline: Pipeline = parse_pipeline(pipeline)
        self.instruments: list[PassInstrument] = []
        if verify:
            self.instruments.append(Verify())
        if check_each:
            self.instruments.append(NumericCheck(check_each, seed))
        self.instruments.append(CostDelta(cost))
        if dump_dir is not None:
            self.instruments.append(DumpIR(dump_dir))
        self.instruments.extend(instruments)

    # -- running --------------------------------------------------------------------------------
    def run(self, graph: Graph, ctx: PassContext | None = None) -> Report:
        ctx = ctx if ctx is not None else PassContext()
        start = time.perf_counter()
        report = Report(pipeline=str(self.pipeline), exact=self.pipeline.exact)
        # Serving code binds by name, dtype and shape: names are pinned here so no pass renames
        # an input or output, and every changing pass is held to the types.
        graph.pin_io_names()
        if ctx.source is None and any(getattr(s.instance, "wants_source", False) for s in self.pipeline.passes()):
            ctx.source = graph.clone()
        self._io = _io_types(graph)
        self._groups = 0
        with gc_paused():
            for ins in self.instruments:
                ins.enter_pipeline(graph, ctx, report)
        self._steps(self.pipeline.steps, graph, ctx, report, group=None, rnd=None)
        report.seconds = time.perf_counter() - start
        with gc_paused():
            for ins in self.instruments:
                ins.exit_pipeline(graph, ctx, report)
        return report

    def _steps(self, steps, graph, ctx, report, group, rnd) -> bool:
        changed = False
        for step in steps:
            if isinstance(step, FixpointStep):
                changed |= self._fixpoint(step, graph, ctx, report)
            else:
                # A training pass runs for long with the collector on; any other is bulk graph work.
                with contextlib.nullcontext() if step.instance.needs_data else gc_paused():
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
        if p.needs_data and ctx.data is None:
            from graphc.data import SPEC_HELP

            raise DataError(f"pass '{p.name}' needs data: give --data {SPEC_HELP} (or data= in the API)")
        for ins in self.instruments:
            ins.before_pass(p, graph, ctx)
        try:
            res, seconds = self._execute(p, graph, ctx, after)
        except PassError:
            for ins in self.instruments:
                ins.pass_failed(p, graph, ctx)
            raise
        if res.changed:
            ctx.invalidate(keep=frozenset(p.preserves))
        record = PassRecord(
            name=p.name, options=dict(step.options), exact=bool(p.exact), changed=bool(res.changed),
            seconds=seconds, stats=dict(res.stats or {}), delta={"nodes": 0, "params": 0, "macs": 0},
            group=group[0] if group else None, round=rnd, group_index=group[1] if group else None, after=after)
        try:
            for ins in self.instruments:
                ins.after_pass(p, graph, ctx, record)
        except PassError:
            for ins in self.instruments:
                ins.pass_failed(p, graph, ctx)
            raise
        report.passes.append(record)
        return bool(res.changed)

    def _execute(self, p, graph: Graph, ctx: PassContext, after: str) -> tuple[PassResult, float]:
        """Run one pass: (result, seconds the pass itself took). Every failure becomes a
        PassError (or the pass's own one-line DataError/InputError/UnsupportedError, naming
        the pass)."""
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
        if res.changed and _io_types(graph) != self._io:
            was, now = self._io, _io_types(graph)
            which = next(i for i, (a, b) in enumerate(zip(was, now)) if a != b) if len(was) == len(now) else None
            what = "the number of graph inputs/outputs" if which is None else \
                f"graph {was[which][0]} {was[which][1]!r} from {was[which][2]} to {now[which][2]}"
            raise PassError(f"pass '{p.name}' changed {what}{after}")
        return res, seconds


def _io_types(graph: Graph) -> list[tuple[str, str, str]]:
    return ([("input", n, str(v.type)) for n, v in zip(graph.input_names, graph.inputs)]
            + [("output", n, str(v.type)) for n, v in zip(graph.output_names, graph.outputs)])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n, None)
    return list(seen)


def run_pipeline(graph: Graph, pipeline, ctx: PassContext | None = None, *, dump_dir=None,
                 verify: bool = True, check_each: int = 0, instruments=()) -> Report:
    """Run ``pipeline`` on ``graph`` in place; the report's ``changed`` says whether it did anything."""
    return PassManager(pipeline, verify=verify, dump_dir=dump_dir, check_each=check_each,
                       instruments=instruments).run(graph, ctx)


__all__ = ["PassManager", "run_pipeline", "measure"]
