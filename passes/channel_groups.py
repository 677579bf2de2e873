"""The channel-group analysis: which channel slices of a graph must be removed together.

Every node's channel rule (:mod:`graphc.ir.channel_rules`) ties axes of its operands and
outputs element by element. Starting from the axes of the weights, the analysis walks those
ties over the whole graph (each value axis and each node is visited once), then joins tied
elements with a connected-components pass over the graph of tied elements (a vectorised
union-find), so the whole analysis runs in time close to linear in the number of tied elements.

The result is a list of :class:`ChannelGroup`. A group is one connected set of value axes (its
``members``); its ``size`` independent units are the element classes: removing a unit removes
its elements from every member (a conv's weight rows, the BN vectors, the next conv's
weight columns, a block of features of a flattened linear, the matching offset of a concat).
A unit is usually one channel; it is a whole group for a grouped conv or GroupNorm and the
same channel of every group for a channel shuffle.

Invariants: a group is ``prunable`` only if no member is a graph input or output, none is an
axis its rule freezes (opaque ops, fixed slices, attention internals...) and it has more than
one unit; ``reason`` says why not otherwise. :func:`remove_channels` and
:func:`prune_groups` only remove whole units of prunable groups, slice every param member,
update the attributes that spell sizes, re-type each touched node, and fail with a
:class:`~graphc.errors.PassError` if a re-inferred shape differs from the one the groups
predict (groups are computed on one graph state: recompute them after any change).
"""
from __future__ import annotations

import fnmatch
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import PassError
from graphc.ir.channel_rules import IN, Ties, rule_for
from graphc.ir.gc_pause import gc_paused
from graphc.ir.graph import Graph, Value


@dataclass
class Member:
    """One value axis in a group. ``units[k]`` is the group unit of element ``k``."""

    value: Value
    axis: int
    units: np.ndarray
    node: str
    operand: int | None  # the consumer's operand index for a param; None for a node output
    offset: int

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def is_param(self) -> bool:
        return self.value.param is not None

    def describe(self) -> str:
        v = self.value
        if v.param is not None:
            what = f"{self.node}[{self.operand}] {v.param.source}"
        elif v.is_input:
            what = f"input %{v.name}"
        else:
            what = f"{self.node} -> %{v.name}"
        return f"{what} axis {self.axis} [{self.size}] @{self.offset}"


@dataclass
class ChannelGroup:
    id: int
    members: list[Member]
    size: int
    prunable: bool
    reason: str | None = None
    frozen_at: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        """The widest member (a unit may span several channels)."""
        return max(m.size for m in self.members)

    def params(self) -> list[Member]:
        return [m for m in self.members if m.is_param]

    def describe(self, max_members: int | None = 12) -> str:
        status = "prunable" if self.prunable else f"frozen: {self.reason}"
        head = f"group #{self.id}: {self.size} units, {self.channels} channels, {len(self.members)} members, {status}"
        lines = [head]
        shown = self.members if max_members is None else self.members[:max_members]
        lines += ["    " + m.describe() for m in shown]
        if len(shown) < len(self.members):
            lines.append(f"    ... {len(self.members) - len(shown)} more")
        return "\n".join(lines)


def _default_reason(node, ref) -> str:
    io, i, a = ref
    where = f"operand {i}" if io == IN else f"output {i}"
    return f"{node.op} {node.name}: axis {a} of {where} does not carry channels through this op"


class _Walker:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.dim_index: dict[tuple[int, int], int] = {}
        self.dims: list[tuple[Value, int]] = []
        self.frozen: dict[int, tuple[str, str]] = {}
        self.edges: list[tuple[int, np.ndarray | None, int, np.ndarray | None]] = []
        self.rules: dict[int, tuple[Ties, dict]] = {}
        self.done_ties: set[tuple[int, int]] = set()
        self.queue: deque[int] = deque()
        self.outputs = {id(v) for v in graph.outputs}

    def rule(self, node):
        got = self.rules.get(id(node))
        if got is None:
            t = Ties()
            rule_for(node.opdef).ties(node, t)
            by_ref: dict[tuple, list[int]] = {}
            for k, (a, b, _, _) in enumerate(t.ties):
                by_ref.setdefault(a, []).append(k)
                if b != a:
                    by_ref.setdefault(b, []).append(k)
            got = self.rules[id(node)] = (t, by_ref)
        return got

    def dim(self, v: Value, axis: int) -> int:
        key = (id(v), axis)
        d = self.dim_index.get(key)
        if d is None:
            d = self.dim_index[key] = len(self.dims)
            self.dims.append((v, axis))
            self.queue.append(d)
        return d

    @staticmethod
    def value_of(node, ref) -> Value:
        io, i, _ = ref
        return node.inputs[i] if io == IN else node.outputs[i]

    def freeze(self, d: int, why: str, where: str) -> None:
        self.frozen.setdefault(d, (why, where))

    def visit_node(self, node, ref, d: int) -> None:
        t, by_ref = self.rule(node)
        if ref in t.frozen:
            self.freeze(d, t.frozen[ref], node.name)
        ks = by_ref.get(ref)
        if not ks:
            if ref not in t.absorbed and ref not in t.frozen:
                self.freeze(d, _default_reason(node, ref), node.name)
            return
        for k in ks:
            if (id(node), k) in self.done_ties:
                continue
            self.done_ties.add((id(node), k))
            a, b, ia, ib = t.ties[k]
            da = self.dim(self.value_of(node, a), a[2])
            db = self.dim(self.value_of(node, b), b[2])
            if ia is None and self.size(da) != self.size(db):
                self.freeze(da, f"{node.op} {node.name}: tied axes differ in size", node.name)
                self.freeze(db, f"{node.op} {node.name}: tied axes differ in size", node.name)
                continue
            self.edges.append((da, ia, db, ib))

    def size(self, d: int) -> int:
        v, a = self.dims[d]
        return int(v.shape[a])

    def run(self) -> None:
        for node in self.graph.nodes:
            t, _ = self.rule(node)
            for a, b, _, _ in t.ties:
                for ref in (a, b):
                    if ref[0] == IN and node.inputs[ref[1]].param is not None:
                        self.dim(node.inputs[ref[1]], ref[2])
        while self.queue:
            d = self.queue.popleft()
            v, axis = self.dims[d]
            if v.is_input:
                self.freeze(d, "graph input", f"%{v.name}")
            if id(v) in self.outputs:
                self.freeze(d, "graph output", f"%{v.name}")
            if v.producer is not None:
                self.visit_node(v.producer, (1, v.index, axis), d)
            for u in v.uses():
                self.visit_node(u.node, (IN, u.index, axis), d)


def channel_groups(graph: Graph, protect=()) -> list[ChannelGroup]:
    """The channel groups of ``graph``; a group holding the output of a node whose name
    matches a ``protect`` pattern (fnmatch) is not prunable."""
    with gc_paused():
        return _channel_groups(graph, protect)


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A component label per vertex of the undirected graph on ``range(n)`` with edges
    ``rows[i] -- cols[i]``. Only the partition is used (labels are renumbered by the caller).

    Vectorised union-find: each round every tree root hooks onto the smallest root it has an
    edge to, then paths are compressed; tied channels form short chains, so a few rounds
    finish. Graphs that need many rounds go to scipy's connected components (whose import
    alone costs more than the analysis of most models)."""
    parent = np.arange(n, dtype=np.int64)
    for _ in range(64):
        pr, pc = parent[rows], parent[cols]
        cross = pr != pc
        if not cross.any():
            return parent
        pr, pc = pr[cross], pc[cross]
        rows, cols = rows[cross], cols[cross]
        lo, hi = np.minimum(pr, pc), np.maximum(pr, pc)
        np.minimum.at(parent, hi, lo)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    # Still merging: the trees so far are vertices of a smaller graph whose edges join roots.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pr, pc = parent[rows], parent[cols]
    _, labels = connected_components(coo_matrix((np.ones(len(pr), np.int8), (pr, pc)), shape=(n, n)), directed=False)
    return labels[parent]


def _channel_groups(graph: Graph, protect) -> list[ChannelGroup]:
    w = _Walker(graph)
    w.run()
    nd = len(w.dims)
    if nd == 0:
        return []
    sizes = np.array([w.size(d) for d in range(nd)], dtype=np.int64)
    base = np.zeros(nd + 1, dtype=np.int64)
    np.cumsum(sizes, out=base[1:])
    n_el = int(base[-1])
    rows, cols, drows, dcols = [], [], [], []
    for da, ia, db, ib in w.edges:
        rows.append(base[da] + (np.arange(sizes[da]) if ia is None else ia))
        cols.append(base[db] + (np.arange(sizes[db]) if ib is None else ib))
        drows.append(da)
        dcols.append(db)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    labels = _components(n_el, r.astype(np.int64), c.astype(np.int64))
    dlabels = _components(nd, np.asarray(drows, np.int64), np.asarray(dcols, np.int64))

    # Number units per dim-component in order of first appearance.
    elem_dim = np.repeat(np.arange(nd), sizes)
    uniq, first = np.unique(labels, return_index=True)
    comp_of_label = dlabels[elem_dim[first]]
    order = np.lexsort((first, comp_of_label))
    sorted_comp = comp_of_label[order]
    starts = np.searchsorted(sorted_comp, sorted_comp, side="left")
    unit_of_label = np.empty(len(uniq), np.int64)
    unit_of_label[order] = np.arange(len(order)) - starts
    label_pos = np.searchsorted(uniq, labels)
    units_all = unit_of_label[label_pos]

    comps: dict[int, list[int]] = {}
    for d in range(nd):
        comps.setdefault(int(dlabels[d]), []).append(d)
    pats = [protect] if isinstance(protect, str) else list(protect)
    groups = []
    for gid, (_, dims) in enumerate(sorted(comps.items(), key=lambda kv: kv[1][0])):
        members = []
        reason, where = None, []
        for d in dims:
            v, axis = w.dims[d]
            units = units_all[base[d]:base[d + 1]]
            if v.param is not None:
                use = v.uses()[0] if v.uses() else None
                node, operand = (use.node.name, use.index) if use else ("", None)
            else:
                node, operand = (v.producer.name if v.producer is not None else "input"), None
            members.append(Member(v, axis, units, node, operand, int(units.min()) if len(units) else 0))
            if d in w.frozen:
                why, at = w.frozen[d]
                reason = reason or why
                where.append(at)
        n_units = max((int(m.units.max()) + 1 for m in members if m.size), default=0)
        if reason is None and pats:
            hit = _protected(members, pats)
            if hit:
                reason, where = f"protected ({hit})", [hit]
        if reason is None and n_units <= 1:
            reason = "a single unit: removing it would remove the whole tensor"
        groups.append(ChannelGroup(gid, members, n_units, reason is None, reason, sorted(set(where))))
    return groups


def _protected(members, pats) -> str | None:
    """The first node matching a pattern whose output is a member: protecting a layer keeps its
    output channels (and so everything coupled to them), not the channels it reads."""
    for m in members:
        if m.operand is None and m.value.producer is not None:
            for p in pats:
                if fnmatch.fnmatchcase(m.node, p):
                    return m.node
    return None


def format_groups(groups: list[ChannelGroup], *, max_members: int | None = 12, only_prunable: bool = False) -> str:
    n_pr = sum(g.prunable for g in groups)
    lines = [f"{len(groups)} channel groups, {n_pr} prunable"]
    for g in groups:
        if only_prunable and not g.prunable:
            continue
        lines.append(g.describe(max_members))
    return "\n".join(lines)


def remove_channels(graph: Graph, group: ChannelGroup, keep) -> None:
    """Keep only units ``keep`` of ``group`` (indices into ``range(group.size)``) in every
    member; see :func:`prune_groups`."""
    prune_groups(graph, [(group, keep)])


def prune_groups(graph: Graph, plan) -> int:
    """Apply ``[(group, keep_units), ...]`` (groups from one :func:`channel_groups` call on
    this graph state). Returns the number of units removed."""
    with gc_paused():
        return _prune_groups(graph, plan)


def _prune_groups(graph: Graph, plan) -> int:
    changes: dict[int, tuple[Value, list[tuple[int, np.ndarray]]]] = {}
    removed = 0
    for group, keep in plan:
        keep = np.unique(np.asarray(list(keep), dtype=np.int64))
        if len(keep) == group.size:
            continue
        if not group.prunable:
            raise PassError(f"channel group #{group.id} is frozen: {group.reason}")
        if len(keep) == 0 or keep[0] < 0 or keep[-1] >= group.size:
            raise PassError(f"channel group #{group.id}: keep must be a non-empty subset of range({group.size})")
        mask = np.zeros(group.size, bool)
        mask[keep] = True
        removed += group.size - len(keep)
        for m in group.members:
            idx = np.nonzero(mask[m.units])[0]
            if len(idx) == 0:
                raise PassError(f"channel group #{group.id}: keeping units {keep.tolist()[:8]}... would leave "
                                f"%{m.value.name} (axis {m.axis}) with no channels")
            if len(idx) < m.size:
                changes.setdefault(id(m.value), (m.value, []))[1].append((m.axis, idx))
    if not changes:
        return 0
    old_shape = {k: v.shape for k, (v, _) in changes.items()}
    expected = {}
    for k, (v, cuts) in changes.items():
        s = list(v.shape)
        for axis, idx in cuts:
            s[axis] = len(idx)
        expected[k] = tuple(s)
        if v.param is not None:
            data = v.param.data
            for axis, idx in cuts:
                data = np.take(data, idx, axis=axis)
            v.param.set_data(np.ascontiguousarray(data))
    changed = set(changes)
    for node in graph.nodes:
        if not any(id(v) in changed for v in node.inputs):
            continue
        old_in = [old_shape.get(id(v), v.shape) for v in node.inputs]
        new_in = [v.shape for v in node.inputs]
        new_out = [expected.get(id(v), v.shape) for v in node.outputs]
        rule = rule_for(node.opdef)
        if rule.resize is not None:
            rule.resize(node, old_in, new_in, new_out)
        try:
            node.retype()
        except Exception as e:
            raise PassError(f"removing channels broke {node.op} {node.name}: {e}") from e
        for v, want in zip(node.outputs, new_out):
            if v.shape != tuple(want):
                raise PassError(f"removing channels: {node.op} {node.name} now gives {v.shape}, "
                                f"its channel groups expect {tuple(want)}")
    return removed
