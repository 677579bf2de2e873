"""graphc's IR: Graph, Node, Value, Param.

Invariants (checked by :mod:`graphc.ir.verify`):

- A Value has exactly one producer: a node output, a graph input, or a Param. Its use list
  holds one ``Use(node, index)`` per operand slot that reads it; ``uses()`` returns a snapshot,
  so code may edit the graph while iterating it.
- A Node's inputs are a tuple. They change only through ``set_input``/``set_inputs``, which keep
  use lists exact.
- ``Graph.erase`` refuses while an output of the node is still used; ``replace_all_uses_with``
  refuses to rewire a graph output unless ``outputs=True`` is passed.
- ``Graph.nodes`` is in topological order; node and value names are unique and come from the
  source model, so the same model always gives the same dump.
- Graph inputs and outputs have external names (``input_names``/``output_names``): the source
  model's exact names, whatever characters they hold, one per position and unique. Value
  names are sanitised identifiers and may change; external names never do.
- Every Value has a static :class:`TensorType`; a Param's array matches its Value's type.
- Weights are numpy arrays kept with their source name (``layer1.0.conv1.weight``).
- A Param may carry a ``mask`` (a bool array of its shape, from weight pruning): wherever the
  mask is False the array is exactly zero. Back-ends keep the zeros (torch applies the mask,
  ONNX may store the param sparse); a ``set_data`` that changes the shape drops the mask.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from graphc.errors import IRError
from graphc.ir.types import TensorType

PARAM_KINDS = ("weight", "buffer", "const")


class Use(NamedTuple):
    node: "Node"
    index: int


class Value:
    """An SSA value: produced once, used by any number of node operands."""

    __slots__ = ("name", "type", "producer", "index", "param", "graph", "_uses")

    def __init__(self, graph: "Graph", name: str, type: TensorType):
        self.graph = graph
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.index = 0
        self.param: Param | None = None
        self._uses: list[Use] = []

    # -- queries ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def is_input(self) -> bool:
        return self.producer is None and self.param is None

    @property
    def is_param(self) -> bool:
        return self.param is not None

    @property
    def is_output(self) -> bool:
        return any(o is self for o in self.graph.outputs)

    def uses(self) -> list[Use]:
        return list(self._uses)

    def users(self) -> list["Node"]:
        """Distinct consuming nodes, in use order."""
        seen: dict[int, Node] = {}
        for u in self._uses:
            seen.setdefault(id(u.node), u.node)
        return list(seen.values())

    @property
    def num_uses(self) -> int:
        return len(self._uses) + sum(1 for o in self.graph.outputs if o is self)

    # -- mutation ----------------------------------------------------------------------------
    def replace_all_uses_with(self, other: "Value", *, outputs: bool = False) -> None:
        if other is self:
            return
        if self.is_output:
            if not outputs:
                raise IRError(f"%{self.name} is a graph output; pass outputs=True to rewire it")
            self.graph.outputs = [other if o is self else o for o in self.graph.outputs]
        for use in self.uses():
            use.node.set_input(use.index, other)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Param:
    """A constant tensor owned by the graph: weight, buffer, or folded constant.

    ``kind`` says where it came from: ``weight`` (a trainable parameter of the source
    model), ``buffer`` (running statistics and other state) or ``const`` (a literal or a folded
    constant). Parameter counts include only ``weight``.
    """

    __slots__ = ("value", "data", "source", "kind", "mask", "_view")

    def __init__(self, value: Value, data: np.ndarray, source: str, kind: str, mask: np.ndarray | None = None):
        if kind not in PARAM_KINDS:
            raise ValueError(f"param kind must be one of {PARAM_KINDS}, got {kind!r}")
        self.value = value
        self.data = data
        self.source = source
        self.kind = kind
        self.mask = mask
        self._view = None

    def tensor(self):
        """The array as a torch tensor sharing its memory, made once per array: the weights
        have one representation (numpy) and torch code reads it without a copy. Read it,
        never write it."""
        view = self._view
        if view is None or view[0] is not self.data:
            import torch

            arr = self.data if self.data.flags.writeable else self.data.copy()
            view = self._view = (self.data, torch.from_numpy(arr))
        return view[1]

    @property
    def name(self) -> str:
        return self.value.name

    def set_data(self, data) -> None:
        """Replace the array; the Value's type follows (callers fix consumers' types)."""
        data = _as_array(data)
        if self.mask is not None and self.mask.shape != data.shape:
            self.mask = None
        self.data = data
        self.value.type = TensorType.of(data)
        if self.value.graph._listener is not None:
            self.value.graph._listener.on_value(self.value)

    def set_mask(self, mask) -> None:
        """Attach a pruning mask (True = kept) and zero the array where it is False; ``None``
        removes the mask and leaves the array as it is."""
        if mask is None:
            self.mask = None
            return
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.data.shape:
            raise ValueError(f"mask shape {mask.shape} != param %{self.name} shape {self.data.shape}")
        self.data = np.where(mask, self.data, np.zeros((), self.data.dtype)).astype(self.data.dtype, copy=False)
        self.mask = mask.copy()

    def __repr__(self) -> str:
        return f"Param(%{self.value.name}, {self.value.type}, {self.source!r}, {self.kind})"


class Node:
    """An operation: ``op`` names an entry of the op table; ``attrs`` are its options."""

    __slots__ = ("graph", "op", "name", "attrs", "meta", "_inputs", "outputs", "_prev", "_next", "_live")

    def __init__(self, graph: "Graph", op: str, name: str, attrs: dict[str, Any]):
        self.graph = graph
        self.op = op
        self.name = name
        self.attrs = attrs
        # Typed hand-overs between passes (``NodeMeta`` entries keyed by their kind), shown by
        # the printer and checked by the verifier; never inferred from names.
        self.meta: dict[str, Any] = {}
        self._inputs: tuple[Value, ...] = ()
        self.outputs: tuple[Value, ...] = ()
        # The graph keeps its nodes in a doubly linked list, so erasing or inserting one is O(1).
        self._prev: Node | None = None
        self._next: Node | None = None
        self._live = False

    @property
    def alive(self) -> bool:
        """Whether the node is still in its graph (passes hold nodes across erasures)."""
        return self._live

    @property
    def inputs(self) -> tuple[Value, ...]:
        return self._inputs

    def input(self, i: int) -> Value:
        return self._inputs[i]

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise IRError(f"node {self.name} ({self.op}) has {len(self.outputs)} outputs")
        return self.outputs[0]

    @property
    def opdef(self):
        from graphc.ir.ops import get_op

        return get_op(self.op)

    @property
    def params(self) -> list[Param | None]:
        """The Param behind each input (None where the input is not a param)."""
        return [v.param for v in self._inputs]

    def set_input(self, i: int, value: Value) -> None:
        old = self._inputs[i]
        old._uses.remove(Use(self, i))
        lst = list(self._inputs)
        lst[i] = value
        self._inputs = tuple(lst)
        value._uses.append(Use(self, i))
        if self.graph._listener is not None:
            self.graph._listener.on_operands(self, (old,))

    def set_inputs(self, values: Sequence[Value]) -> None:
        old = self._inputs
        for i, v in enumerate(old):
            v._uses.remove(Use(self, i))
        self._inputs = tuple(values)
        for i, v in enumerate(self._inputs):
            v._uses.append(Use(self, i))
        if self.graph._listener is not None:
            self.graph._listener.on_operands(self, old)

    def infer_types(self) -> list[TensorType]:
        return self.opdef.infer_node(self)

    def retype(self) -> None:
        """Recompute output types from the inputs (after a pass changed input shapes)."""
        types = self.infer_types()
        for v, t in zip(self.outputs, types):
            if v.type != t:
                v.type = t
                if self.graph._listener is not None:
                    self.graph._listener.on_value(v)

    def __repr__(self) -> str:
        ins = ", ".join(f"%{v.name}" for v in self._inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"<{outs} = {self.op}({ins}) # {self.name}>"


_NAME_OK = re.compile(r"[^A-Za-z0-9_.]")
_SUFFIX = re.compile(r"(.+)_(\d+)$")


def sanitize(name: str) -> str:
    name = _NAME_OK.sub("_", name).strip(".")
    return name or "v"


def _as_array(data) -> np.ndarray:
    if hasattr(data, "detach"):
        data = data.detach().cpu()
        if str(data.dtype) == "torch.bfloat16":
            data = data.float()
        data = data.numpy()
    arr = np.asarray(data)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


class Graph:
    """A function from input tensors to output tensors, in SSA form."""

    def __init__(self, name: str = "main"):
        self.name = sanitize(name)
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._first: Node | None = None
        self._last: Node | None = None
        self._count = 0
        # The rewrite driver, while one runs: told of every edit (see graphc.ir.rewrite).
        self._listener = None
        self.params: dict[str, Param] = {}
        self._value_names: set[str] = set()
        self._node_names: set[str] = set()
        self.meta: dict[str, Any] = {}
        # The names serving code binds tensors by, one per input/output position, when they
        # differ from the (sanitised) value names: positional, so a pass that gives an output
        # a new value keeps the output's name.
        self._input_names: list[str] | None = None
        self._output_names: list[str] | None = None

    # -- naming ------------------------------------------------------------------------------
    def _unique(self, base: str, taken: set[str], kind: str) -> str:
        base = sanitize(base)
        if base not in taken:
            taken.add(base)
            return base
        # Suffixes are tried from where the last search for this base stopped, not from 1: an
        # fx trace names its adds add, add_1, add_2... which all scope to "add", and searching
        # from 1 every time made importing such a graph quadratic in its size.
        nxt = self.__dict__.setdefault("_next_suffix", {})
        i = nxt.get((kind, base), 1)
        while f"{base}_{i}" in taken:
            i += 1
        name = f"{base}_{i}"
        nxt[(kind, base)] = i + 1
        taken.add(name)
        return name

    def _release(self, name: str, kind: str) -> None:
        """Make ``name`` free again; the next search for its base starts no later than its
        suffix, so an erased node's name is the first one reused, as if searched from 1."""
        (self._node_names if kind == "node" else self._value_names).discard(name)
        m = _SUFFIX.match(name)
        nxt = self.__dict__.get("_next_suffix")
        if m and nxt and int(m.group(2)) >= 1:
            key, k = (kind, m.group(1)), int(m.group(2))
            if nxt.get(key, 1) > k:
                nxt[key] = k

    def unique_value_name(self, base: str) -> str:
        return self._unique(base, self._value_names, "value")

    def unique_node_name(self, base: str) -> str:
        return self._unique(base, self._node_names, "node")

    @property
    def input_names(self) -> list[str]:
        """The graph inputs' external names: the source model's (any characters) when
        recorded, else the value names."""
        return list(self._input_names) if self._input_names is not None else [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """The graph outputs' external names: recorded, else the value names made unique and
        distinct from the input names (a value may be listed twice, or be an input)."""
        if self._output_names is not None:
            return list(self._output_names)
        taken = set(self.input_names)
        names = []
        for v in self.outputs:
            name, i = v.name, 1
            while name in taken:
                name = f"{v.name}_{i}"
                i += 1
            taken.add(name)
            names.append(name)
        return names

    def pin_io_names(self) -> None:
        """Record the current external names, so renaming or replacing values keeps them."""
        self.set_io_names(self.input_names, self.output_names)

    @property
    def recorded_io_names(self) -> tuple[list[str] | None, list[str] | None]:
        """(input names, output names) as recorded by :meth:`set_io_names`; None where not."""
        return (None if self._input_names is None else list(self._input_names),
                None if self._output_names is None else list(self._output_names))

    def set_io_names(self, inputs: Sequence[str] | None = None, outputs: Sequence[str] | None = None) -> None:
        """Record the external names of the inputs and/or outputs, in position order (nothing
        is recorded unless both are valid)."""
        checked = {}
        for what, names, values in (("input", inputs, self.inputs), ("output", outputs, self.outputs)):
            if names is None:
                continue
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise IRError(f"graph {what} names must be a list of strings, not {repr(names)[:80]}")
            if len(names) != len(values):
                raise IRError(f"{len(names)} {what} names for {len(values)} graph {what}s")
            if len(set(names)) != len(names) or not all(names):
                raise IRError(f"graph {what} names must be unique and non-empty: {repr(list(names))[:80]}")
            checked[what] = list(names)
        self._input_names = checked.get("input", self._input_names)
        self._output_names = checked.get("output", self._output_names)

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def node(self, name: str) -> Node:
        for n in self._iter_nodes():
            if n.name == name:
                return n
        raise KeyError(name)

    # -- construction ------------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self, self.unique_value_name(name), type)
        self.inputs.append(v)
        return v

    def add_param(self, data, source: str = "", name: str | None = None, kind: str = "weight") -> Value:
        arr = _as_array(data)
        v = Value(self, self.unique_value_name(name or source or "const"), TensorType.of(arr))
        v.param = Param(v, arr, source or v.name, kind)
        self.params[v.name] = v.param
        return v

    def add_const(self, data, name: str = "const") -> Value:
        return self.add_param(data, source="", name=name, kind="const")

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        *,
        out_types: Sequence[TensorType] | None = None,
        out_names: Sequence[str] | None = None,
        before: Node | None = None,
        after: Node | None = None,
    ) -> Node:
        """Create a node, infer its output types (unless given) and place it.

        Without ``before``/``after`` the node is appended, which keeps topological order
        when inputs already exist. Output value names default to the node name.
        """
        from graphc.ir.ops import _OPS

        opdef = _OPS.get(op)
        node = Node(self, op, self.unique_node_name(name or op),
                    opdef.canonical(attrs or {}) if opdef is not None else dict(attrs or {}))
        node.set_inputs(list(inputs))
        if out_types is None:
            try:
                out_types = node.infer_types()
            except IRError:
                node.set_inputs([])
                self._release(node.name, "node")
                raise
        base_names = list(out_names or [])
        outs = []
        for i, t in enumerate(out_types):
            base = base_names[i] if i < len(base_names) else (node.name if i == 0 else f"{node.name}.{i}")
            v = Value(self, self.unique_value_name(base), t)
            v.producer = node
            v.index = i
            outs.append(v)
        node.outputs = tuple(outs)
        if before is not None:
            self._link(node, before._prev)
        elif after is not None:
            self._link(node, after)
        else:
            self._link(node, self._last)
        if self._listener is not None:
            self._listener.on_insert(node)
        return node

    # -- the node list -------------------------------------------------------------------------
    def _link(self, node: Node, prev: Node | None) -> None:
        """Put ``node`` right after ``prev`` (first when ``prev`` is None)."""
        nxt = self._first if prev is None else prev._next
        node._prev, node._next = prev, nxt
        if prev is None:
            self._first = node
        else:
            prev._next = node
        if nxt is None:
            self._last = node
        else:
            nxt._prev = node
        node._live = True
        self._count += 1

    def _unlink(self, node: Node) -> None:
        if node._prev is None:
            self._first = node._next
        else:
            node._prev._next = node._next
        if node._next is None:
            self._last = node._prev
        else:
            node._next._prev = node._prev
        node._prev = node._next = None
        node._live = False
        self._count -= 1

    def _iter_nodes(self):
        n = self._first
        while n is not None:
            nxt = n._next
            yield n
            n = nxt

    @property
    def _nodes(self) -> list[Node]:
        return list(self._iter_nodes())

    @_nodes.setter
    def _nodes(self, order: list[Node]) -> None:
        """Relink the same nodes in a new order (toposort, and tests that break the order)."""
        self._first = self._last = None
        self._count = 0
        for n in order:
            self._link(n, self._last)

    def set_outputs(self, values: Iterable[Value]) -> None:
        self.outputs = list(values)

    # -- queries -----------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """Snapshot of the nodes in topological order."""
        return list(self._iter_nodes())

    def __iter__(self):
        return iter(list(self._iter_nodes()))

    def __len__(self) -> int:
        return self._count

    def find(self, *ops: str) -> list[Node]:
        return [n for n in self._iter_nodes() if n.op in ops]

    def values(self) -> list[Value]:
        vals = list(self.inputs) + [p.value for p in self.params.values()]
        for n in self._iter_nodes():
            vals.extend(n.outputs)
        return vals

    # -- mutation ----------------------------------------------------------------------------
    def erase(self, node: Node) -> None:
        for v in node.outputs:
            if v._uses or v.is_output:
                users = ", ".join(sorted({u.node.name for u in v._uses})) or "graph outputs"
                raise IRError(f"cannot erase {node.name}: %{v.name} is still used by {users}")
        node.set_inputs([])
        self._unlink(node)
        self._release(node.name, "node")
        for v in node.outputs:
            self._release(v.name, "value")
        if self._listener is not None:
            self._listener.on_erase(node)

    def remove_param(self, param: Param) -> None:
        if param.value._uses or param.value.is_output:
            raise IRError(f"param %{param.name} is still used")
        del self.params[param.name]
        self._release(param.name, "value")

    def prune_unused_params(self) -> int:
        unused = [p for p in self.params.values() if not p.value._uses and not p.value.is_output]
        for p in unused:
            self.remove_param(p)
        return len(unused)

    def toposort(self) -> None:
        """Restore topological order (stable: keeps the current order where it is valid)."""
        import heapq

        nodes = self.nodes
        pos = {id(n): i for i, n in enumerate(nodes)}
        indeg = {}
        succ: dict[int, list[Node]] = {id(n): [] for n in nodes}
        for n in nodes:
            preds = {id(v.producer) for v in n.inputs if v.producer is not None}
            indeg[id(n)] = len(preds)
            for p in preds:
                succ[p].append(n)
        ready = [(pos[id(n)], n) for n in nodes if indeg[id(n)] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for s in succ[id(n)]:
                indeg[id(s)] -= 1
                if indeg[id(s)] == 0:
                    heapq.heappush(ready, (pos[id(s)], s))
        if len(order) != len(nodes):
            raise IRError("graph has a cycle")
        self._nodes = order

    def rename_value(self, value: Value, name: str) -> None:
        self._release(value.name, "value")
        old = value.name
        value.name = self.unique_value_name(name)
        if value.param is not None:
            del self.params[old]
            self.params[value.name] = value.param

    def clone(self, value_map: dict[int, Value] | None = None) -> "Graph":
        """Deep copy: structure and weights (arrays are copied). ``value_map``, when given, is
        filled with id(value of this graph) -> its copy (to carry analyses over)."""
        g = Graph(self.name)
        g.meta = dict(self.meta)
        g._input_names = None if self._input_names is None else list(self._input_names)
        g._output_names = None if self._output_names is None else list(self._output_names)
        vmap: dict[int, Value] = {} if value_map is None else value_map
        for v in self.inputs:
            nv = Value(g, v.name, v.type)
            g._value_names.add(v.name)
            g.inputs.append(nv)
            vmap[id(v)] = nv
        for name, p in self.params.items():
            nv = Value(g, name, p.value.type)
            g._value_names.add(name)
            nv.param = Param(nv, p.data.copy(), p.source, p.kind, None if p.mask is None else p.mask.copy())
            g.params[name] = nv.param
            vmap[id(p.value)] = nv
        for n in self._iter_nodes():
            nn_ = Node(g, n.op, n.name, _copy_attrs(n.attrs))
            nn_.meta = _copy_attrs(n.meta)
            g._node_names.add(n.name)
            nn_.set_inputs([vmap[id(v)] for v in n.inputs])
            outs = []
            for v in n.outputs:
                nv = Value(g, v.name, v.type)
                nv.producer = nn_
                nv.index = v.index
                g._value_names.add(v.name)
                vmap[id(v)] = nv
                outs.append(nv)
            nn_.outputs = tuple(outs)
            g._link(nn_, g._last)
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    # -- views -------------------------------------------------------------------------------
    def verify(self, *, types: bool = True) -> None:
        from graphc.ir.verify import verify

        verify(self, types=types)

    def to_networkx(self):
        """A networkx.MultiDiGraph of nodes (by name); edges carry the Value and operand index."""
        import networkx as nx

        G = nx.MultiDiGraph()
        nodes = self.nodes
        for n in nodes:
            G.add_node(n.name, op=n.op, node=n)
        for n in nodes:
            for i, v in enumerate(n.inputs):
                if v.producer is not None:
                    G.add_edge(v.producer.name, n.name, value=v.name, index=i)
        return G

    def __str__(self) -> str:
        from graphc.ir.printer import print_graph

        return print_graph(self)

    # -- statistics ----------------------------------------------------------------------------
    def num_params(self) -> int:
        return int(sum(p.data.size for p in self.params.values() if p.kind == "weight"))


def _copy_attrs(attrs: dict) -> dict:
    import copy

    return copy.deepcopy(attrs)
