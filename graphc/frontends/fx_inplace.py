"""Functionalisation of in-place tensor ops in a traced fx graph.

graphc's IR is pure: a Value never changes. A traced ``forward`` may still write to tensors in
place (``y.relu_()``, ``z += y``, ``x[:, 0] = v``, ``F.relu(x, inplace=True)``,
``nn.ReLU(inplace=True)``, ``aten.add_``), and the write is seen by every tensor that shares
the written memory: the written tensor itself, the tensor the call returned, and every view
of the same storage (``v = x.view(-1); v.add_(1)`` changes ``x``). Such a graph is rewritten
into a pure one before it is imported:

1. A probe run executes the traced graph once on copies of the inputs. For every node it
   records the layout of its tensor result (storage, shape, strides, offset) and which of its
   tensor arguments it wrote, read off torch's version counters (views share their base's
   counter), so a write is found whatever op made it.
2. A write is understood when the op says which argument it writes: a tensor method or torch
   function ending in ``_`` (``relu_`` -> ``relu``), an in-place operator (``operator.iadd`` ->
   ``operator.add``), ``operator.setitem``, an ``inplace=True`` argument or layer attribute,
   or an ATen overload whose schema marks exactly ``self`` as written (``aten.add_.Tensor`` ->
   ``aten.add.Tensor``). ``copy_``, ``fill_``, ``zero_`` and setitem assign a value.
3. The graph is rebuilt with the functional form of each write, its result cast and broadcast
   to the written tensor's type. When the written tensor is a view, the new value is written
   into its base (``_write_view``: a gather by static positions and a select by a static
   mask); every other alias of that storage read afterwards is gathered from the new base
   (``_read_view``). Positions come from the recorded strides, so any view chain works.

Refused, with one line naming the op: a write graphc cannot attribute to one argument (an
unknown op that changed a tensor), a write to a parameter or buffer (state), a write that
changes a tensor's shape or strides (``t_``, ``unsqueeze_``, ``resize_``), a write through an
overlapping view (``expand``) or into storage whose base graphc never saw, ``out=`` calls,
setitem with an index computed from the input, and reading a tuple of views after a write.

A write to a graph input is applied to the graph's own value: the imported graph is a pure
function of its inputs, and its outputs equal the module's.
"""
from __future__ import annotations

import inspect
import operator
import re
import sys
from typing import Any

import torch
import torch.fx as fx

from graphc.errors import UnsupportedError

_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv, operator.imod: operator.mod,
    operator.ipow: operator.pow, operator.iand: operator.and_, operator.ior: operator.or_,
    operator.ixor: operator.xor, operator.ilshift: operator.lshift, operator.irshift: operator.rshift,
    operator.imatmul: operator.matmul,
}
# ``t += x`` on a tensor that is not a proxy (a constant of the trace) is recorded as a method.
_INPLACE_DUNDERS = {f"__{op.__name__}__": twin for op, twin in _INPLACE_OPERATORS.items()}
# Writes whose new value is an argument (or a constant) rather than a computation on self.
_ASSIGN_METHODS = {"copy_": 1, "fill_": 1, "zero_": None}


# -- helpers the rebuilt graph calls (the converter maps them onto IR ops) ----------------------
def _as_written(value, shape: tuple, dtype: torch.dtype):
    """``value`` as an in-place op leaves it in a tensor of ``shape`` and ``dtype``: cast, leading
    unit dims dropped (setitem's rule), broadcast."""
    t = torch.as_tensor(value).to(dtype)
    while t.dim() > len(shape) and t.shape[0] == 1:
        t = t[0]
    return t.expand(shape).clone() if tuple(t.shape) != tuple(shape) else t.clone()


def _write_view(base, value, pos, mask):
    """``base`` with the elements a view covers replaced by ``value``: element ``i`` of the base
    is ``value.flatten()[pos[i]]`` where ``mask[i]``."""
    src = torch.index_select(value.reshape(-1), 0, pos.reshape(-1)).reshape(base.shape)
    return torch.where(mask, src, base)


def _read_view(base, pos, shape: tuple):
    """The view of ``base`` whose element ``j`` is ``base.flatten()[pos[j]]``."""
    return torch.index_select(base.reshape(-1), 0, pos.reshape(-1)).reshape(shape)


# -- recognising writes -----------------------------------------------------------------------
def _method_twin(name: str) -> str | None:
    """The functional method of in-place tensor method ``name``, when ATen confirms that the
    in-place op writes only ``self`` and the functional one exists."""
    base = name[:-1]
    if not hasattr(torch.Tensor, base):
        return None
    return base if _aten_writes_self_only(name) else None


def _aten_writes_self_only(name: str) -> bool:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return False
    try:
        overloads = [getattr(packet, o) for o in packet.overloads()]
    except Exception:
        return False
    return bool(overloads) and all(_written_args(op._schema) == [0] for op in overloads)


def _written_args(schema) -> list[int]:
    return [i for i, a in enumerate(schema.arguments) if a.alias_info is not None and a.alias_info.is_write]


def _aten_twin(op):
    """(functional overload, assigned-argument index or None) for a mutating ATen overload
    that writes only ``self``; None when there is no such overload."""
    if _written_args(op._schema) != [0]:
        return None
    name = op._schema.name.split("::")[-1]
    if not name.endswith("_"):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    fn = getattr(packet, op._overloadname, None) if packet is not None else None
    if fn is None or fn._schema.is_mutable:
        return None
    return fn


def _inplace_flag(node: fx.Node) -> bool:
    """Whether a call passes ``inplace=True`` (by keyword or position)."""
    if node.kwargs.get("inplace") is True:
        return True
    try:
        sig = inspect.signature(node.target)
    except (TypeError, ValueError):
        return False
    if "inplace" not in sig.parameters:
        return False
    try:
        bound = sig.bind(*node.args, **node.kwargs)
    except TypeError:
        return False
    return bound.arguments.get("inplace") is True


def _is_setitem(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target is operator.setitem)
            or (node.op == "call_method" and node.target == "__setitem__"))


def may_write(node: fx.Node, root) -> bool:
    """Whether ``node`` looks like an in-place call (a cheap structural test: a graph with none
    needs no probe run)."""
    if node.op == "call_method":
        return (_is_setitem(node) or node.target in _INPLACE_DUNDERS
                or (node.target.endswith("_") and not node.target.startswith("_")))
    if node.op == "call_module":
        return getattr(root.get_submodule(node.target), "inplace", False) is True
    if node.op != "call_function":
        return False
    t = node.target
    if t in _INPLACE_OPERATORS or t is operator.setitem:
        return True
    if isinstance(t, torch._ops.OpOverload):
        return t._schema.is_mutable
    if getattr(t, "__name__", "").endswith("_") and not getattr(t, "__name__", "").startswith("_"):
        return True
    return "out" in node.kwargs or _inplace_flag(node)


def _what(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return f"layer {node.target}"
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return str(t)
    mod = getattr(t, "__module__", None) or ""
    return f"{mod}.{getattr(t, '__name__', t)}".lstrip(".").replace("_operator.", "operator.")


def _refuse(node: fx.Node, why: str):
    raise UnsupportedError(f"in-place {_what(node)} ({node.name}): {why}")


# -- the probe run ----------------------------------------------------------------------------
class _Layout:
    """Where a recorded tensor lives: its storage and how it indexes it."""

    __slots__ = ("key", "shape", "stride", "offset", "dtype", "numel", "root")

    def __init__(self, t: torch.Tensor):
        st = t.untyped_storage()
        self.key = (st.data_ptr(), t.device)
        self.shape, self.stride, self.offset = tuple(t.shape), tuple(t.stride()), t.storage_offset()
        self.dtype = t.dtype
        self.numel = st.nbytes() // t.element_size() if t.element_size() else 0
        self.root = t._base if t._base is not None else t

    def place(self) -> tuple:
        return self.key, self.shape, self.stride, self.offset


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for i in x:
            yield from _tensors(i)
    elif isinstance(x, dict):
        for i in x.values():
            yield from _tensors(i)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter (and cannot be written)
        return -1


class _Refused(Exception):
    """Stops the run; the refusal itself is kept apart, so the interpreter adds nothing to it."""


class _Probe(fx.Interpreter):
    """Runs a traced graph, keeps every node's result, and records layouts and writes (see the
    module docstring).

    ``strict``: the graph is already pure; any write is refused, and a layer configured
    ``inplace=True`` runs on a private copy of its input (its rule imports it as the pure op).
    Otherwise writes happen for real and are recorded; a write to the model's state is refused
    before it runs, and a tensor constant of the trace is read from a copy, so neither the model
    nor the trace is changed."""

    def __init__(self, module, graph, state: set, strict: bool):
        super().__init__(module, graph=graph, garbage_collect_values=False)
        self.extra_traceback = False
        self.state, self.strict = state, strict
        self.refused: UnsupportedError | None = None
        self.results: dict[fx.Node, Any] = {}
        self.stateful: set[fx.Node] = set()  # get_attr nodes reading a parameter, buffer or attribute
        self.copies: dict[str, torch.Tensor] = {}
        self.layout: dict[fx.Node, _Layout] = {}
        self.parts: dict[fx.Node, list[_Layout]] = {}  # container results: their tensors' layouts
        self.producer: dict[int, fx.Node] = {}  # id(tensor) -> the first node that returned it
        self.written: dict[fx.Node, list[fx.Node]] = {}
        self.before: dict[tuple, _Layout] = {}  # (writer, argument): the argument's layout before it
        self.after: dict[tuple, _Layout] = {}  # (writer, argument): the argument's layout after it
        self.index: dict[fx.Node, Any] = {}  # a setitem's index as it was when it ran

    def record(self, inputs, initial: dict | None = None) -> dict:
        with torch.no_grad():
            try:
                self.run(*[t.clone() for t in inputs], initial_env=dict(initial) if initial else None)
            except _Refused:
                raise self.refused from None
        if initial:
            self.results = {**initial, **self.results}
        return self.results

    def refuse(self, node, why):
        try:
            _refuse(node, why)
        except UnsupportedError as e:
            self.refused = e
        raise _Refused

    def get_attr(self, target, args, kwargs):
        t = super().get_attr(target, args, kwargs)
        if isinstance(t, torch.Tensor) and not self.strict:
            if _key(t) in self.state:
                self.stateful.add(self.current)
            else:  # every read of one constant gets the same copy: they alias, as the constant does
                if target not in self.copies:
                    self.copies[target] = t.clone()
                t = self.copies[target]
        return t

    def call_module(self, target, args, kwargs):
        if self.strict and getattr(self.fetch_attr(target), "inplace", False) is True:
            args = torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, args)
        return super().call_module(target, args, kwargs)

    def run_node(self, n):
        self.current = n
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        arg_nodes = [a for a in n.all_input_nodes if isinstance(self.env.get(a), torch.Tensor)]
        first = n.args[0] if n.args else None
        if (not self.strict and isinstance(first, fx.Node) and isinstance(self.env.get(first), torch.Tensor)
                and _key(self.env[first]) in self.state and may_write(n, self.module)):
            self.refuse(n, "it writes to a parameter or buffer of the model; graphc imports stateless models only")
        versions = {a: _version(self.env[a]) for a in arg_nodes}
        layouts = {a: _Layout(self.env[a]) for a in arg_nodes} if not self.strict else {}
        if _is_setitem(n):
            self.index[n] = _snapshot(args[1])
        out = super().run_node(n)
        changed = [a for a in arg_nodes if _version(self.env[a]) != versions[a]]
        if changed and self.strict:
            self.refuse(n, f"it writes to its argument {changed[0].name} and graphc knows no functional form for it")
        if changed:
            self.written[n] = changed
            for a in changed:
                self.before[(n, a)] = layouts[a]
                self.after[(n, a)] = _Layout(self.env[a])
        self.results[n] = out
        if not self.strict:
            if isinstance(out, torch.Tensor):
                self.layout[n] = _Layout(out)
                self.producer.setdefault(id(out), n)
                if out._base is not None and id(out._base) not in self.producer:
                    # The op returned a view of a temporary it never exposed (F.linear on a 4-D
                    # input reshapes a 2-D product): the first node to expose that storage
                    # stands for it; positions() refuses any alias reaching memory outside it.
                    self.producer[id(out._base)] = n
            elif isinstance(out, (list, tuple)):
                ts = list(_tensors(out))
                if ts:
                    self.parts[n] = [_Layout(t) for t in ts]
        return out


def _key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.device)


def _snapshot(idx):
    if isinstance(idx, torch.Tensor):
        return idx.clone()
    if isinstance(idx, (list, tuple)):
        return type(idx)(_snapshot(i) for i in idx)
    return idx


# -- rebuilding the graph ---------------------------------------------------------------------
class _Group:
    """The tensors that share one storage, and its current (functional) value."""

    def __init__(self, base: fx.Node, layout: _Layout):
        self.base, self.layout = base, layout
        self.gen = 0
        self._lin: torch.Tensor | None = None

    def positions(self, lay: _Layout, node: fx.Node) -> torch.Tensor:
        """For each element of a tensor laid out as ``lay``, its flat index in the base
        (``node``, the op that needs them, is named when there are none)."""
        b = self.layout
        if lay.dtype != b.dtype:
            _refuse(node, f"it involves a view of {self.base.name} as another dtype")
        if self._lin is None:
            lin = torch.full((b.numel,), -1, dtype=torch.int64)
            view = torch.as_strided(lin, b.shape, b.stride, b.offset)
            view.copy_(torch.arange(view.numel()).reshape(b.shape))
            if int((lin >= 0).sum()) != view.numel():
                _refuse(node, f"{self.base.name} covers some of its memory twice (an expand)")
            self._lin = lin
        pos = torch.as_strided(self._lin, lay.shape, lay.stride, lay.offset).clone()
        if bool((pos < 0).any()):
            _refuse(node, f"it involves memory of {self.base.name} outside that tensor")
        return pos


def record(module, graph: fx.Graph, inputs: tuple, state: set) -> tuple[fx.Graph, dict]:
    """Run ``graph`` once on copies of ``inputs``: (the graph without in-place writes, every
    node's result). ``state``: storage keys of the model's parameters, buffers and attributes.

    The written values are computed from the run's results: the rebuilt graph's copied nodes
    keep them (a later write changed a result's values, never its type, and only values of
    nodes that do not depend on the input are read), and only its new nodes run. When a
    write reaches a tensor computed without the input, whose values the import does read, the
    rebuilt graph runs again in full."""
    probe = _Probe(module, graph, state, strict=False)
    probe.record(inputs)
    if not probe.written:
        return graph, probe.results
    rb = _Rebuild(module, graph, probe, state)
    new = rb.run()
    if rb.writes_constants():
        return new, _Probe(module, new, state, strict=True).record(inputs)
    initial = {nn: probe.results[old] for old, nn in rb.copied.items() if old.op != "output"}
    return new, _Probe(module, new, state, strict=True).record(inputs, initial)


class _Rebuild:
    def __init__(self, module, graph, probe: _Probe, state: set):
        self.module, self.old, self.p, self.state = module, graph, probe, state
        self.new = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.gen: dict[fx.Node, int] = {}
        self.groups: dict[tuple, _Group] = {}
        self.copied: dict[fx.Node, fx.Node] = {}
        self.written_bases: set[fx.Node] = set()
        self.part_gen: dict[fx.Node, dict] = {}  # container results: their storages' write counts when made

    def group(self, n: fx.Node) -> _Group | None:
        lay = self.p.layout.get(n)
        if lay is None:
            return None
        g = self.groups.get(lay.key)
        if g is None:
            base = self.p.producer.get(id(lay.root))
            if base is None or base not in self.p.layout:
                return None
            g = self.groups[lay.key] = _Group(base, self.p.layout[base])
        return g

    def lookup(self, n: fx.Node):
        """The node holding ``n``'s current value, gathered from its base when a write to the
        storage it shares came after it."""
        lay = self.p.layout.get(n)
        if lay is not None and lay.key in self.groups:
            g = self.groups[lay.key]
            if self.gen.get(n, 0) < g.gen:
                if n is g.base:
                    raise AssertionError("a base is never stale")
                pos = g.positions(lay, n)
                self.env[n] = self.call(_read_view, (self.env[g.base], pos, lay.shape), like=n,
                                        name=f"{_stem(n)}_reread")
                self.gen[n] = g.gen
        elif n in self.p.parts:
            made = self.part_gen.get(n, {})
            for part in self.p.parts[n]:
                g = self.groups.get(part.key)
                if g is not None and made.get(part.key, 0) < g.gen:
                    raise UnsupportedError(f"in-place write before a read of {n.name}: a tuple of views of the "
                                           f"written tensor made before the write; graphc cannot functionalise that")
        return self.env[n]

    def call(self, fn, args, like: fx.Node, name: str | None = None, kind: str = "call_function", kwargs=None):
        node = self.new.create_node(kind, fn, tuple(args), kwargs or {}, name=name)
        node.meta = dict(like.meta)
        return node

    def run(self) -> fx.Graph:
        for n in self.old.nodes:
            if n in self.p.written:
                self.rewrite(n)
                continue
            new = self.new.node_copy(n, self.lookup)
            self.env[n] = self.copied[n] = new
            if n in self.p.parts:  # a tuple of views is stale only after writes later than itself
                self.part_gen[n] = {p.key: self.groups[p.key].gen for p in self.p.parts[n] if p.key in self.groups}
            g = self.group(n)
            if g is not None:
                # A second read of an attribute already written reads what was written.
                self.gen[n] = g.gen if n.op != "get_attr" or n is g.base or not g.gen else -1
        self.new.lint()
        return self.new

    def writes_constants(self) -> bool:
        """Whether a write reached storage computed without the graph's inputs."""
        if not self.written_bases:
            return False
        # One pass in the graph's (topological) order: a recursion would overflow the stack on
        # deep graphs (efficientnet_v2_s).
        dynamic: set[fx.Node] = set()
        for a in self.old.nodes:
            if a.op == "placeholder" or any(i in dynamic for i in a.all_input_nodes):
                dynamic.add(a)
        return not all(b in dynamic for b in self.written_bases)

    # -- one write --------------------------------------------------------------------------
    def rewrite(self, n: fx.Node) -> None:
        target = self.target_of(n)
        g = self.group(target)
        lay = self.p.before[(n, target)]
        if g is None:
            _refuse(n, "it writes into storage whose base graphc never saw")
        self.written_bases.add(g.base)
        if g.base in self.p.stateful:
            _refuse(n, "it writes to a parameter or buffer of the model; graphc imports stateless models only")
        after = self.p.after.get((n, target))
        if after is not None and after.place() != lay.place():
            _refuse(n, "it changes the tensor's shape, strides or storage")
        if _is_setitem(n):
            self.setitem(n, target, g, lay)
            return
        value = self.functional(n, target, lay)
        written = self.call(_as_written, (value, lay.shape, lay.dtype), like=n, name=f"{_stem(n)}_value")
        self.assign(n, target, g, lay, written)
        res = self.p.layout.get(n)
        if res is not None and res.place() == lay.place():
            self.env[n], self.gen[n] = written, g.gen  # the call returned the tensor it wrote
        elif n.users:
            _refuse(n, "its result is not the tensor it wrote")

    def assign(self, n, target, g: _Group, lay: _Layout, value) -> None:
        """Make ``value`` the content of ``target`` (laid out as ``lay`` in group ``g``)."""
        if target is not g.base:
            self.env[g.base] = self.write_into(n, g, g.positions(lay, n), value)
        else:
            self.env[g.base] = value
        g.gen += 1
        self.gen[g.base] = g.gen
        self.env[target], self.gen[target] = value, g.gen

    def write_into(self, n, g: _Group, pos: torch.Tensor, value):
        flat = pos.reshape(-1)
        size = 1
        for d in g.layout.shape:
            size *= d
        src = torch.zeros(size, dtype=torch.int64)
        mask = torch.zeros(size, dtype=torch.bool)
        src[flat] = torch.arange(flat.numel())
        mask[flat] = True
        # A view covers some elements twice iff it marks fewer than it has (no sort needed).
        if int(mask.sum()) != flat.numel():
            _refuse(n, "it writes through a view that covers some elements twice")
        return self.call(_write_view, (self.lookup(g.base), value, src.reshape(g.layout.shape),
                                       mask.reshape(g.layout.shape)), like=n, name=f"{_stem(n)}_write")

    def setitem(self, n, target, g: _Group, lay: _Layout) -> None:
        idx = self.p.index[n]
        if any(isinstance(a, fx.Node) for a in _flat_nodes(n.args[1])):
            if _is_full_mask(n, idx, lay, self.p):
                value = self.call(torch.where, (self.lookup(n.args[1]), self.arg(n.args[2]), self.lookup(target)),
                                  like=n, name=f"{_stem(n)}_where")
                written = self.call(_as_written, (value, lay.shape, lay.dtype), like=n, name=f"{_stem(n)}_value")
                self.assign(n, target, g, lay, written)
                return
            if _has_dynamic(n.args[1], self.p):
                _refuse(n, "its index is computed from the input")
        pos = g.positions(lay, n)[idx]
        written = self.call(_as_written, (self.arg(n.args[2]), tuple(pos.shape), lay.dtype), like=n,
                            name=f"{_stem(n)}_value")
        if pos.numel() == 0:
            return
        self.env[g.base] = self.write_into(n, g, pos, written)
        g.gen += 1
        self.gen[g.base] = g.gen

    def arg(self, a):
        return fx.node.map_arg(a, self.lookup)

    def target_of(self, n: fx.Node) -> fx.Node:
        """The argument ``n`` writes, by the op's own contract; refused when the probe saw a
        write the contract does not explain."""
        first = n.args[0] if n.args else next(iter(n.kwargs.values()), None)
        if "out" in n.kwargs:
            _refuse(n, "it writes its out= argument; call it without out= and assign the result")
        if not may_write(n, self.module):
            _refuse(n, "it writes to a tensor argument and graphc knows no functional form for it")
        if isinstance(n.target, torch._ops.OpOverload) and _written_args(n.target._schema) != [0]:
            _refuse(n, "its schema writes to more than its first argument")
        if not isinstance(first, fx.Node) or first not in self.p.layout:
            _refuse(n, "it writes to something that is not a tensor of the graph")
        for a in self.p.written[n]:
            la, lf = self.p.before[(n, a)], self.p.before.get((n, first))
            if lf is None or la.key != lf.key:
                _refuse(n, f"it also writes to its argument {a.name}")
        return first

    def functional(self, n: fx.Node, target: fx.Node, lay: _Layout):
        """The node computing the value ``n`` leaves in ``target``."""
        args, kwargs = self.arg(n.args), self.arg(n.kwargs)
        if n.op == "call_module":
            return self.call(n.target, args, like=n, name=n.name, kind="call_module", kwargs=kwargs)
        if n.op == "call_method" and n.target in _INPLACE_DUNDERS:
            twin = _INPLACE_DUNDERS[n.target]
            return self.call(twin, args, like=n, name=twin.__name__.rstrip("_"), kwargs=kwargs)
        if n.op == "call_method":
            if n.target in _ASSIGN_METHODS:
                i = _ASSIGN_METHODS[n.target]
                return args[i] if i is not None else 0
            twin = _method_twin(n.target)
            if twin is None:
                _refuse(n, f"graphc knows no functional form of {n.target} (Tensor.{n.target[:-1]} is missing "
                           f"or the op writes more than self)")
            return self.call(twin, args, like=n, name=twin, kind="call_method", kwargs=kwargs)
        t = n.target
        if t in _INPLACE_OPERATORS:
            return self.call(_INPLACE_OPERATORS[t], args, like=n, name=_INPLACE_OPERATORS[t].__name__.rstrip("_"))
        if isinstance(t, torch._ops.OpOverload):
            name = t._schema.name.split("::")[-1]
            if name in ("copy_", "fill_"):
                return args[1]
            if name == "zero_":
                return 0
            twin = _aten_twin(t)
            if twin is None:
                _refuse(n, "ATen has no functional overload of it")
            return self.call(twin, args, like=n, name=name[:-1], kwargs=kwargs)
        if "inplace" in n.kwargs or _inplace_flag(n):
            sig = inspect.signature(t)
            bound = sig.bind(*args, **kwargs)
            bound.arguments["inplace"] = False
            return self.call(t, bound.args, like=n, name=n.name, kwargs=bound.kwargs)
        name = getattr(t, "__name__", "")
        twin = _module_twin(t, name)
        if twin is None:
            _refuse(n, f"graphc knows no functional form of {name}")
        return self.call(twin, args, like=n, name=name[:-1], kwargs=kwargs)


def _module_twin(fn, name: str):
    """``torch.relu`` for ``torch.relu_``, ``F.relu`` for ``F.relu_``: the same name without the
    underscore in the function's own module, when the in-place one writes only its input."""
    if not name.endswith("_"):
        return None
    mod = sys.modules.get(getattr(fn, "__module__", None) or "torch") or torch
    twin = getattr(mod, name[:-1], None)
    if twin is None or not callable(twin):
        return None
    return twin if _aten_writes_self_only(name) else None


def _stem(n: fx.Node) -> str:
    """A node's name without the in-place underscore (``relu__1`` -> ``relu_1``)."""
    return re.sub(r"_+(\d*)$", lambda m: f"_{m.group(1)}" if m.group(1) else "", n.name)


def _flat_nodes(x):
    out: list = []
    fx.node.map_arg(x, lambda a: out.append(a) or a)
    return out


def _has_dynamic(idx, probe: _Probe) -> bool:
    """Whether an index argument depends on a graph input."""
    seen: dict[fx.Node, bool] = {}

    def dyn(a: fx.Node) -> bool:
        if a not in seen:
            seen[a] = a.op == "placeholder" or any(dyn(i) for i in a.all_input_nodes)
        return seen[a]

    return any(dyn(a) for a in _flat_nodes(idx))


def _is_full_mask(n: fx.Node, idx, lay: _Layout, probe: _Probe) -> bool:
    """``x[mask] = v`` with a bool mask of x's shape and a value of one element."""
    if not (isinstance(n.args[1], fx.Node) and isinstance(idx, torch.Tensor) and idx.dtype == torch.bool):
        return False
    if tuple(idx.shape) != lay.shape:
        return False
    v = n.args[2]
    if not isinstance(v, fx.Node):
        return isinstance(v, (bool, int, float))
    vl = probe.layout.get(v)
    return vl is not None and all(d == 1 for d in vl.shape)


def state_keys(model) -> set:
    """Storage keys of the model's state: parameters, buffers and tensor attributes (a tensor
    constant the tracer made is fresh on every call, and is not state)."""
    keys = set()
    for m in model.modules():
        # The module's own dicts, read directly: parameters(recurse=False) and buffers() build a
        # generator chain per module, a tenth of an import's time on a chain of small layers.
        d = vars(m)
        ts = [t for t in d["_parameters"].values() if t is not None]
        ts += [t for t in d["_buffers"].values() if t is not None]
        ts += [v for k, v in d.items() if isinstance(v, torch.Tensor) and not k.startswith("_tensor_constant")]
        for t in ts:
            keys.add((t.untyped_storage().data_ptr(), t.device))
    return keys



# -- converter rules for the helpers ----------------------------------------------------------
def _numel(shape) -> int:
    size = 1
    for d in shape:
        size *= int(d)
    return size


def _rule_as_written(cv, n, args, kwargs):
    from graphc.ir.types import dtype_from_torch

    value, shape, dtype = args
    want = dtype_from_torch(dtype)
    v = cv.value(value, None)
    if v.dtype != want:
        v = cv.emit("cast", [v], {"dtype": want}, name=f"{cv.node_name}.cast")
    if len(v.shape) > len(shape) and _numel(v.shape[:len(v.shape) - len(shape)]) == 1:
        v = cv.emit("reshape", [v], {"shape": list(v.shape[len(v.shape) - len(shape):])},
                    name=f"{cv.node_name}.reshape")
    if tuple(v.shape) != tuple(shape):
        v = cv.emit("expand", [v], {"shape": list(shape)}, name=f"{cv.node_name}.expand")
    return v


def _gather(cv, x, pos: torch.Tensor, shape, what: str):
    """``x.flatten()[pos]`` reshaped to ``shape``, without the gather when ``pos`` reads every
    element in order."""
    flat = pos.reshape(-1)
    if flat.numel() == _numel(x.shape) and torch.equal(flat, torch.arange(flat.numel())):
        return x if tuple(x.shape) == tuple(shape) else cv.emit("reshape", [x], {"shape": list(shape)},
                                                                  name=f"{cv.node_name}.{what}")
    x = cv.emit("reshape", [x], {"shape": [-1]}, name=f"{cv.node_name}.flat")
    x = cv.emit("index_select", [x, cv.param(flat.clone(), name=f"{cv.node_name}.positions")], {"dim": 0},
                name=f"{cv.node_name}.{what}")
    return cv.emit("reshape", [x], {"shape": list(shape)}, name=f"{cv.node_name}.{what}.reshape")


def _rule_write_view(cv, n, args, kwargs):
    base, value, pos, mask = args
    base, value = cv.value(base), cv.value(value)
    src = _gather(cv, value, pos, base.shape, "scatter")
    if bool(mask.all()):
        return src
    return cv.emit("where", [cv.param(mask.clone(), name=f"{cv.node_name}.mask"), src, base], name=cv.node_name)


def _rule_read_view(cv, n, args, kwargs):
    base, pos, shape = args
    return _gather(cv, cv.value(base), pos, shape, "view")


RULES = {_as_written: _rule_as_written, _write_view: _rule_write_view, _read_view: _rule_read_view}
