"""Pattern rewriting: local rewrites (:class:`RewritePattern`) applied by one greedy worklist
driver (:func:`apply_patterns`).

A pattern looks at one root node and either rewrites the graph around it (returning True) or
leaves it alone (returning False, after ``rewriter.refuse(node, why)`` when the node was a
candidate and the reason is worth showing). The driver visits every node once in topological
order, then only what an applied rewrite touched: the graph reports every edit (inserted and
erased nodes, rewired operands, new weights) to the driver while it runs, so a pattern may edit
through any helper and the driver still revisits the right nodes. The work is proportional to
the nodes visited, never a whole-graph scan per rewrite.

Invariants:

- an erased node is never offered to a pattern again (``node.alive`` is False);
- a node whose pattern applied loses its recorded refusal; the refusals reported are those of
  nodes still in the graph, by node name, the reasons of every pattern that refused joined
  by "; ";
- the driver stops with an :class:`~graphc.errors.IRError` after ``max_rewrites`` applications
  (default 10 per initial node): a pattern set that keeps rewriting has an undo/redo cycle.

Example::

    class DropDropout(RewritePattern):
        ops = ("dropout",)

        def match_and_rewrite(self, node, rw):
            if node.output.is_output:
                return rw.refuse(node, "a graph output")
            rw.replace(node, node.input(0))
            return True

    result = apply_patterns(graph, [DropDropout()])
    result.changed, result.counts, result.refused
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Sequence

from graphc.errors import IRError
from graphc.ir.graph import Graph, Node, Value


class RewritePattern:
    """One local rewrite. ``ops``: the root ops it matches (empty: every op); ``name``: what
    the driver counts its applications under (defaults to the class name)."""

    ops: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""

    def match_and_rewrite(self, node: Node, rw: "Rewriter") -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def label(self) -> str:
        return self.name or type(self).__name__


class Rewriter:
    """What a pattern edits the graph through, and what the driver learns from.

    Edits made directly on the graph are seen too (the graph reports them to the listener
    installed by the driver); the methods here add the conveniences patterns share: replacing
    a node's result, counting, refusing."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.counts: dict[str, int] = {}
        self.groups: dict[str, dict[str, int]] = {}
        self.erased = 0
        self.edits = 0
        self._queue: deque[Node] = deque()
        self._queued: set[int] = set()
        self._refusals: list[str] = []

    # -- worklist ------------------------------------------------------------------------------
    def push(self, node: Node | None) -> None:
        if node is not None and node.alive and id(node) not in self._queued:
            self._queued.add(id(node))
            self._queue.append(node)

    def _pop(self) -> Node | None:
        while self._queue:
            n = self._queue.popleft()
            self._queued.discard(id(n))
            if n.alive:
                return n
        return None

    def touch(self, node: Node) -> None:
        """Revisit ``node``, the producers of its operands and the readers of its results."""
        self.push(node)
        for v in node.inputs:
            self.push(v.producer)
        for v in node.outputs:
            for u in v._uses:
                self.push(u.node)

    # -- graph listener (called by Graph/Node/Param on every edit) -----------------------------
    def on_insert(self, node: Node) -> None:
        self.edits += 1
        self.push(node)

    def on_erase(self, node: Node) -> None:
        self.edits += 1
        self.erased += 1

    def on_operands(self, node: Node, old: Sequence[Value]) -> None:
        self.edits += 1
        # Producers that lost a reader may now be dead or have a sole reader; a pattern rooted
        # at that sole reader (a BN whose conv now feeds only it) may now apply too.
        for v in old:
            self.push(v.producer)
            if len(v._uses) == 1:
                self.push(v._uses[0].node)
        if node.alive:
            self.touch(node)

    def on_value(self, value: Value) -> None:
        """A param's array or a value's type changed: its readers see something new."""
        self.edits += 1
        self.push(value.producer)
        for u in value._uses:
            self.push(u.node)

    # -- conveniences for patterns -------------------------------------------------------------
    def replace(self, node: Node, new: Value) -> None:
        """Make every reader of ``node``'s output read ``new`` and erase ``node``; when the output
        was a graph output, ``new`` takes over its name (emitted models keep their names)."""
        replace_output(self.graph, node, new)

    def erase_if_dead(self, node: Node | None) -> None:
        """Erase ``node`` and, recursively, producers that lose their last reader."""
        erase_if_dead(self.graph, node)

    def count(self, key: str, n: int = 1, group: str | None = None) -> None:
        """Add ``n`` to stats counter ``key`` (inside the dict ``group`` when given)."""
        d = self.counts if group is None else self.groups.setdefault(group, {})
        d[key] = d.get(key, 0) + n

    def refuse(self, node: Node, reason: str) -> bool:
        """Record why a pattern did not rewrite ``node`` (kept unless another pattern applies);
        returns False so a pattern can ``return rw.refuse(node, why)``."""
        if reason and reason not in self._refusals:
            self._refusals.append(reason)
        return False

    def outcome(self, node: Node, why: str | None, key: str) -> bool:
        """The result of a rewrite helper that answers None when it edited the graph, else why
        it did not: counted under ``key``, or refused with ``why``; returned as the pattern's."""
        if why is not None:
            return self.refuse(node, why)
        self.count(key)
        return True


def replace_output(graph: Graph, node: Node, new: Value) -> None:
    """Make every reader of ``node``'s output read ``new`` and erase ``node``; when the output
    was a graph output, ``new`` takes over its name (emitted models keep their names)."""
    old = node.output
    was_output = old.is_output
    old_name = old.name
    old.replace_all_uses_with(new, outputs=True)
    graph.erase(node)
    if (was_output and new.producer is not None and new.name != old_name
            and sum(o is new for o in graph.outputs) == 1):
        graph.rename_value(new, old_name)


def erase_if_dead(graph: Graph, node: Node | None) -> None:
    """Erase ``node`` and, recursively, producers that lose their last reader."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None or not n.alive or any(v._uses or v.is_output for v in n.outputs):
            continue
        producers = [v.producer for v in n.inputs]
        graph.erase(n)
        stack.extend(producers)


@dataclass
class RewriteResult:
    changed: bool
    applied: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    visits: int = 0


def apply_patterns(graph: Graph, patterns: Iterable[RewritePattern], *, max_rewrites: int | None = None,
                   rewriter: Rewriter | None = None) -> RewriteResult:
    """Apply ``patterns`` greedily until none applies anywhere; patterns are tried in the
    given order on each node, and the first that applies wins the visit."""
    patterns = list(patterns)
    by_op: dict[str, list[RewritePattern]] = {}

    def for_op(op: str) -> list[RewritePattern]:
        lst = by_op.get(op)
        if lst is None:
            lst = by_op[op] = [p for p in patterns if not p.ops or op in p.ops]
        return lst

    rw = rewriter if rewriter is not None else Rewriter(graph)
    for n in graph._iter_nodes():
        rw.push(n)
    cap = max_rewrites if max_rewrites is not None else 10 * (len(graph) + 10)
    applied: dict[str, int] = {}
    refused: dict[int, tuple[Node, str]] = {}
    total = visits = 0
    previous = graph._listener
    graph._listener = rw
    try:
        while True:
            node = rw._pop()
            if node is None:
                break
            visits += 1
            rw._refusals = []
            for p in for_op(node.op):
                edits = rw.edits
                # A pattern that edited the graph has applied, whatever it returned.
                if p.match_and_rewrite(node, rw) or rw.edits != edits:
                    applied[p.label] = applied.get(p.label, 0) + 1
                    total += 1
                    if node.alive:
                        rw.touch(node)
                    refused.pop(id(node), None)
                    break
            else:
                if rw._refusals:
                    refused[id(node)] = (node, "; ".join(rw._refusals))
                else:
                    refused.pop(id(node), None)
            if total > cap:
                last = ", ".join(sorted(applied))
                raise IRError(f"rewrite patterns did not converge after {cap} rewrites (applied: {last}); "
                              f"a pattern undoes another")
    finally:
        graph._listener = previous
    return RewriteResult(changed=total > 0, applied=applied, counts=rw.counts, groups=rw.groups,
                         refused={n.name: why for n, why in refused.values() if n.alive}, visits=visits)


__all__ = ["RewritePattern", "Rewriter", "RewriteResult", "apply_patterns", "replace_output", "erase_if_dead"]
