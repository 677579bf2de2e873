"""The IR verifier: checks every invariant listed in :mod:`graphc.ir.graph`.

Errors print the failing node with the IR around it, so a broken pass is found fast.
"""
from __future__ import annotations

from collections import Counter

from graphc.errors import IRError, VerifyError
from graphc.ir.graph import Graph, Node, Use
from graphc.ir.meta import check_meta
from graphc.ir.types import dtype_from_numpy


def verify(graph: Graph, *, types: bool = True) -> None:
    defined: set[int] = set()
    for v in graph.inputs:
        if v.producer is not None or v.param is not None:
            _fail(graph, None, f"graph input %{v.name} has a producer")
        defined.add(id(v))
    for name, p in graph.params.items():
        if p.value.name != name or p.value.param is not p:
            _fail(graph, None, f"param table entry {name!r} does not match its value")
        if tuple(p.data.shape) != p.value.shape:
            _fail(graph, None, f"param %{name}: array shape {tuple(p.data.shape)} != type {p.value.type}")
        if dtype_from_numpy(p.data.dtype) != p.value.dtype:
            _fail(graph, None, f"param %{name}: array dtype {p.data.dtype} != type {p.value.type}")
        if p.mask is not None:
            if p.mask.shape != p.data.shape or p.mask.dtype != bool:
                _fail(graph, None, f"param %{name}: mask {p.mask.dtype}{list(p.mask.shape)} does not match its array")
            if (p.data[~p.mask] != 0).any():
                _fail(graph, None, f"param %{name}: {int((p.data[~p.mask] != 0).sum())} masked weights are not zero")
        defined.add(id(p.value))

    value_names: Counter = Counter(v.name for v in graph.values())
    dup = [n for n, c in value_names.items() if c > 1]
    if dup:
        _fail(graph, None, f"duplicate value names: {', '.join(sorted(dup)[:5])}")
    node_names = Counter(n.name for n in graph.nodes)
    dup = [n for n, c in node_names.items() if c > 1]
    if dup:
        _fail(graph, None, f"duplicate node names: {', '.join(sorted(dup)[:5])}")

    # Operand slots reading each value; the use lists must hold exactly these.
    slots: dict[int, int] = {}
    node_ids: set[int] = set()
    for node in graph.nodes:
        node_ids.add(id(node))
        if node.graph is not graph:
            _fail(graph, node, "node belongs to another graph")
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                where = "later in the graph" if v.producer is not None and v.producer in graph.nodes else "outside the graph"
                _fail(graph, node, f"operand {i} (%{v.name}) is defined {where}")
            slots[id(v)] = slots.get(id(v), 0) + 1
        for i, v in enumerate(node.outputs):
            if v.producer is not node or v.index != i:
                _fail(graph, node, f"output {i} (%{v.name}) does not point back to its producer")
            defined.add(id(v))
        if node.meta:
            why = check_meta(node)
            if why is not None:
                _fail(graph, node, why)
        try:
            opdef = node.opdef
        except IRError as e:
            _fail(graph, node, str(e))
        why = opdef.check(len(node.inputs), node.attrs)
        if why is not None:
            _fail(graph, node, why)
        n_out = opdef.n_outputs(node.attrs)
        if n_out != len(node.outputs):
            _fail(graph, node, f"{node.op} has {len(node.outputs)} outputs, op table says {n_out}")
        if types:
            try:
                inferred = opdef.infer_node(node)
            except IRError as e:
                _fail(graph, node, f"types: {e}")
            for i, (v, t) in enumerate(zip(node.outputs, inferred)):
                if v.type != t:
                    _fail(graph, node, f"types: output {i} is {v.type}, inputs give {t}")

    for v in graph.values():
        uses = v._uses
        # As many uses as slots, each a distinct slot of a node of this graph that reads v:
        # then the use list is exactly the slots.
        if len(uses) != slots.get(id(v), 0) or (len(uses) > 1 and len({(id(u.node), u.index) for u in uses}) != len(uses)):
            _fail(graph, v.producer, f"use list of %{v.name} is out of date")
        for u in uses:
            if not isinstance(u, Use) or u.index >= len(u.node.inputs) or u.node.inputs[u.index] is not v:
                _fail(graph, u.node, f"use of %{v.name} points at the wrong operand")
            if id(u.node) not in node_ids:
                _fail(graph, v.producer, f"use list of %{v.name} is out of date")
    for v in graph.outputs:
        if id(v) not in defined:
            _fail(graph, None, f"graph output %{v.name} is not defined")
    for what, names, values in zip(("input", "output"), graph.recorded_io_names, (graph.inputs, graph.outputs)):
        if names is not None and (len(names) != len(values) or len(set(names)) != len(names)):
            _fail(graph, None, f"{len(names)} recorded {what} names ({len(set(names))} distinct) "
                               f"for {len(values)} graph {what}s")


def _fail(graph: Graph, node: Node | None, msg: str):
    from graphc.ir.printer import context

    raise VerifyError(f"verify: {msg}", context(graph, node) if node is not None else "")
