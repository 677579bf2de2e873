"""torch.fx front-end: an ``nn.Module`` and an example input become a graphc Graph.

How it works:

1. A :class:`LayerTracer` traces the model symbolically. Its leaf modules are exactly the
   ``torch.nn`` layers that :mod:`graphc.frontends.fx_ops` converts (matched by exact type, so a
   subclass with its own ``forward``, like torchvision's ``LayerNorm2d``, is traced through).
   When symbolic tracing fails, ``torch.export`` is tried; if both fail the error names the
   innermost module being traced.
2. The traced graph runs once on the example input; every fx node's result is recorded. That
   gives every tensor its static shape and dtype. In-place writes seen in that run are made
   pure first, or refused by name (:mod:`graphc.frontends.fx_inplace`): the IR has no
   mutation, and a write dropped on import would change the model's function.
3. A node is *dynamic* when it depends on a graph input and its result holds a tensor. Every
   other node is folded: Python results (``x.size(0)``, shape arithmetic) become attributes,
   tensors become params: a model parameter keeps its ``state_dict`` key and kind ``weight``,
   a buffer kind ``buffer``, anything computed from them kind ``const``.
4. Each dynamic node maps onto IR ops; a node no rule covers (or whose rule produced types
   that disagree with the recorded run) becomes an ``opaque`` node calling the original
   callable, typed by the recorded run.

Names are deterministic: a layer node is named after its module path (``layer1.0.conv1``),
a function or method call after the module it was called in (``layer1.0.add``), params after
their ``state_dict`` key.
"""
from __future__ import annotations

import operator
import re
from collections import OrderedDict
from typing import Any

import torch
import torch.fx as fx

from graphc.errors import InputError, UnsupportedError
from graphc.ir import Graph, TensorType, Value
from graphc.ir.gc_pause import gc_paused
from graphc.ir.ops.opaque import resolve_target
from graphc.ir.types import dtype_from_torch
from graphc.frontends import fx_inplace, fx_ops


class _Proxy(fx.Proxy):
    """An fx Proxy that records ``x += y`` and ``x[i] = v`` as the in-place calls they are on a
    tensor (plain fx rebinds ``x`` to ``x + y``, which loses the write for every alias of ``x``,
    and cannot trace setitem at all); :mod:`graphc.frontends.fx_inplace` makes them pure."""

    def __setitem__(self, idx, value):
        self.tracer.create_proxy("call_function", operator.setitem, (self, idx, value), {})


def _inplace_operator(op):
    return lambda self, other: self.tracer.create_proxy("call_function", op, (self, other), {})


for _name in ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "iand", "ior", "ixor",
              "ilshift", "irshift", "imatmul"):
    setattr(_Proxy, f"__{_name}__", _inplace_operator(getattr(operator, _name)))


class LayerTracer(fx.Tracer):
    """Keeps the layers graphc converts as ``call_module`` nodes; traces through the rest.

    Records the stack of module paths being traced so a failure can name its module.
    """

    def __init__(self):
        super().__init__()
        self.path_stack: list[tuple[str, str]] = []
        self.failed_in: tuple[str, str] | None = None

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    # fx finds the name of a parameter or buffer the traced code reads by scanning every
    # parameter of the root, once per read: quadratic in model size (most of the import of a
    # model whose norm layers are traced through, timm's BatchNormAct2d). One identity map per
    # trace gives the same first name the scan would.
    def trace(self, root, concrete_args=None):
        self._param_names, self._buffer_names = {}, {}
        if isinstance(root, torch.nn.Module):
            for n, p in root.named_parameters():
                self._param_names.setdefault(id(p), n)
            for n, b in root.named_buffers():
                self._buffer_names.setdefault(id(b), n)
        return super().trace(root, concrete_args)

    def _name_of(self, a) -> str | None:
        if isinstance(a, torch.nn.Parameter):
            return self._param_names.get(id(a))
        if isinstance(a, torch.Tensor):
            return self._buffer_names.get(id(a))
        return None

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        n = self._name_of(attr_val) if isinstance(attr_val, torch.Tensor) else None
        if n is None or (not isinstance(attr_val, torch.nn.Parameter) and not self.proxy_buffer_attributes):
            return super().getattr(attr, attr_val, parameter_proxy_cache)
        if n not in parameter_proxy_cache:
            parameter_proxy_cache[n] = self.create_proxy("get_attr", n, (), {})
        return parameter_proxy_cache[n]

    def create_arg(self, a):
        n = self._name_of(a) if isinstance(a, torch.Tensor) else None
        if n is not None:
            return self.create_node("get_attr", n, (), {})
        return super().create_arg(a)

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return fx_ops.is_layer(m)

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        self.path_stack.append((qualname, type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module is the first to see the error
                self.failed_in = (qualname, type(m).__name__)
            raise
        finally:
            self.path_stack.pop()


def trace(model: torch.nn.Module, example_inputs: tuple) -> fx.GraphModule:
    """Symbolic trace with :class:`LayerTracer`; ``torch.export`` when that fails."""
    traced = _trace(model, example_inputs)
    if isinstance(traced, _Traced):
        return fx.GraphModule(traced.module, traced.graph, type(model).__name__)
    return traced


class _Traced:
    """A symbolic trace as the importer reads it: the fx graph and the module hierarchy an
    ``fx.GraphModule`` would hold (the layers and attributes the graph reads, copied the way
    GraphModule copies them), without the Python code a GraphModule generates and compiles,
    which the import never runs (the recording interpreter walks the graph itself)."""

    def __init__(self, root: torch.nn.Module, graph: fx.Graph, copy: bool = True):
        from torch.fx.graph_module import _copy_attr

        self.graph = graph
        if not copy:
            self.module = root
            return
        self.module = torch.nn.Module()
        self.module.training = root.training
        for node in graph.nodes:
            if node.op in ("get_attr", "call_module"):
                _copy_attr(root, self.module, node.target)

    def named_parameters(self, remove_duplicate: bool = True):
        return self.module.named_parameters(remove_duplicate=remove_duplicate)

    def named_buffers(self, remove_duplicate: bool = True):
        return self.module.named_buffers(remove_duplicate=remove_duplicate)

    def get_submodule(self, target: str) -> torch.nn.Module:
        return self.module.get_submodule(target)


def _trace(model: torch.nn.Module, example_inputs: tuple):
    """:class:`_Traced` from a symbolic trace; the ``torch.export`` module when that fails."""
    tracer = LayerTracer()
    attrs_before = set(vars(model))
    try:
        graph = tracer.trace(model)
        traced = _Traced(tracer.root, graph)
        _drop_new_constants(model, attrs_before)  # the trace holds its own copies
        return traced
    except Exception as e:  # any failure inside user code: fall back, then report both
        where = tracer.failed_in or ("", type(model).__name__)
        fx_error = e
        _drop_new_constants(model, attrs_before)
    # Control flow over shapes, devices or dtypes: trace again with those known (the import is
    # at the example's shapes anyway), before the far slower torch.export.
    from graphc.frontends.fx_concrete import concrete_tracer_class

    concrete = concrete_tracer_class(LayerTracer, _Proxy)(example_inputs)
    try:
        graph = concrete.trace(model)
        traced = _Traced(concrete.root, graph)
        _drop_new_constants(model, attrs_before)
        return traced
    except Exception:  # reported through the plain trace's error if export fails too
        _drop_new_constants(model, attrs_before)
    try:
        ep = torch.export.export(model, example_inputs, strict=False)
        gm = ep.module()
    except Exception as e:
        path, cls = where
        loc = f"module '{path}' ({cls})" if path else f"the top-level module ({cls})"
        raise UnsupportedError(
            f"cannot trace {type(model).__name__}: torch.fx failed in {loc}: {_one_line(fx_error)}; "
            f"torch.export failed too: {_one_line(e)}") from e
    _inline_autocast_off(gm)
    return gm


def _drop_new_constants(model: torch.nn.Module, before: set) -> None:
    """Remove the ``_tensor_constantN`` attributes a trace left on the model, so the next
    trace numbers its constants as a first one would (dumps stay deterministic) and the
    caller's model is left as it came."""
    for k in set(vars(model)) - before:
        if k.startswith("_tensor_constant"):
            delattr(model, k)


def _inline_autocast_off(gm: fx.GraphModule) -> None:
    """Inline the regions torch.export wraps as ``wrap_with_autocast`` with autocast *off*
    (``with torch.autocast(..., enabled=False)``, used to keep attention in float32). The
    import records and rewrites float32 code with no autocast active, where turning it off
    changes nothing: the region's ops are the model's ops. A region that turns autocast on
    stays as it is (and is refused by name as an op graphc cannot keep)."""
    hop = getattr(getattr(torch.ops, "higher_order", None), "wrap_with_autocast", None)
    if hop is None:
        return
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not hop or len(node.args) < 5:
            continue
        _device, _dtype, enabled, _cache, sub_node, *operands = node.args
        if enabled or not isinstance(sub_node, fx.Node) or sub_node.op != "get_attr":
            continue
        sub = getattr(gm, sub_node.target)
        inner = list(sub.graph.nodes)
        if any(n.op in ("get_attr", "call_module") for n in inner):
            continue  # the region reads its own attributes: not a plain function of its operands
        placeholders = [n for n in inner if n.op == "placeholder"]
        users = list(node.users)
        if len(placeholders) != len(operands) or not all(
                u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int) for u in users):
            continue  # the region's results are read as a whole: leave it
        with graph.inserting_before(node):
            out = graph.graph_copy(sub.graph, dict(zip(placeholders, operands)))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for u in users:
            u.replace_all_uses_with(outs[u.args[1]])
            graph.erase_node(u)
        graph.erase_node(node)
        if not sub_node.users:
            graph.erase_node(sub_node)
    graph.lint()
    gm.recompile()


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _has_tensor(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(i) for i in x)
    if isinstance(x, dict):
        return any(_has_tensor(i) for i in x.values())
    return False


def _scoped_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    base = re.sub(r"_\d+$", "", node.name)
    stack = node.meta.get("nn_module_stack")
    if stack:
        scope, cls = list(stack.values())[-1][:2]
        if scope and _is_torch_layer(cls):
            return scope  # an op of a torch.nn layer (torch.export's view): named as the layer
        if scope:
            return f"{scope}.{base}"
    return base


def _is_torch_layer(cls) -> bool:
    name = cls if isinstance(cls, str) else f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}"
    return name.startswith("torch.nn.modules.")


def _normalise_inputs(example_inputs) -> tuple:
    if example_inputs is None:
        return ()
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise InputError("example_inputs must be a tensor or a tuple of tensors")


def load_module(model: torch.nn.Module, example_inputs=None, input_shape=None, name: str | None = None) -> Graph:
    """Import ``model`` (traced in eval mode) at the shapes of ``example_inputs``."""
    with gc_paused():
        return _load_module(model, example_inputs, input_shape, name)


def _load_module(model: torch.nn.Module, example_inputs, input_shape, name: str | None) -> Graph:
    inputs = _normalise_inputs(example_inputs)
    if not inputs:
        if input_shape is None:
            raise InputError(f"{type(model).__name__}: give example_inputs or input_shape to fix the input shape")
        shapes = [input_shape] if isinstance(input_shape[0], int) else list(input_shape)
        g = torch.Generator().manual_seed(0)
        inputs = tuple(torch.randn(tuple(s), generator=g) for s in shapes)
    # Traced in eval mode; afterwards every module is back in its own mode (a frozen BN inside
    # a training model stays frozen). Only modules that were training are walked again.
    training = [m for m in model.modules() if m.training]
    if training:
        model.eval()
    source = model
    if fx_ops.is_layer(model):
        # A bare layer as the whole model: trace it as a leaf inside a container, so it maps
        # like any other layer, then give its params their own state_dict names back.
        prefix = type(model).__name__.lower()
        model = torch.nn.Sequential(OrderedDict([(prefix, model)]))
    try:
        with torch.no_grad():
            gm = _trace(model, inputs)
            if not isinstance(gm, _Traced):
                gm = _Traced(gm, gm.graph, copy=False)
            try:
                pure, results = fx_inplace.record(gm.module, gm.graph, inputs, fx_inplace.state_keys(model))
            except UnsupportedError:
                raise
            except Exception as e:
                raise InputError(f"{type(model).__name__} failed on inputs of shape "
                                 f"{[tuple(t.shape) for t in inputs]}: {_one_line(e)}") from e
            gm = _Traced(gm.module, pure, copy=False)
            graph = _Converter(model, gm, results, name or type(source).__name__.lower()).convert(inputs)
    finally:
        for m in training:
            m.training = True
    if model is not source:
        for p in list(graph.params.values()):
            if p.source.startswith(prefix + "."):
                p.source = p.source[len(prefix) + 1:]
                graph.rename_value(p.value, p.source)
    return graph


class _Converter:
    """Walks the recorded fx graph and builds the IR (see the module docstring)."""

    def __init__(self, model, gm, results, name):
        self.model = model
        self.gm = gm
        self.results = results
        self.graph = Graph(name)
        self.env: dict[fx.Node, Any] = {}
        self.dynamic: set[fx.Node] = set()
        self._param_cache: dict[int, Value] = {}
        self._keep: list[torch.Tensor] = []
        self._origin: dict[int, fx.Node] = {}
        self._named: dict[int, tuple[str, str]] = {}
        for n, p in model.named_parameters(remove_duplicate=True):
            self._named.setdefault(id(p), (n, "weight"))
        for n, b in model.named_buffers(remove_duplicate=True):
            self._named.setdefault(id(b), (n, "buffer"))
        for n, p in gm.named_parameters(remove_duplicate=True):
            self._named.setdefault(id(p), (n, "weight"))
        for n, b in gm.named_buffers(remove_duplicate=True):
            self._named.setdefault(id(b), (n, "buffer"))
        self.node: fx.Node | None = None  # the fx node being converted
        self.node_name = ""

    # -- values ---------------------------------------------------------------------------------
    def param(self, tensor: torch.Tensor, name: str | None = None, kind: str | None = None) -> Value:
        """The IR param for a constant tensor (one per tensor object)."""
        key = id(tensor)
        if key in self._param_cache:
            return self._param_cache[key]
        if key in self._named:
            src, k = self._named[key]
            v = self.graph.add_param(tensor.detach(), source=src, kind=kind or k)
        else:
            origin = self._origin.get(key)
            v = self._from_weights(origin) if kind is None and origin is not None else None
            if v is None:
                base = name or (_scoped_name(origin) if origin is not None else f"{self.node_name}.const")
                v = self.graph.add_param(tensor.detach().clone(), name=base, kind=kind or "const")
        self._param_cache[key] = v
        self._keep.append(tensor)  # ids key the cache: keep the tensor alive so its id is not reused
        return v

    def _reads_weight(self, n: fx.Node, seen: dict) -> bool:
        """Whether static node ``n`` computes a tensor from a model parameter (not only from
        buffers). A weight's metadata (``w.device``, ``w.dtype``, ``w.shape``) is no tensor: it
        stays a recorded Python value."""
        if n not in seen:
            seen[n] = False
            if not _has_tensor(self.results.get(n)):
                pass
            elif n.op == "get_attr":
                t = self.results.get(n)
                seen[n] = isinstance(t, torch.Tensor) and self._named.get(id(t), ("", ""))[1] == "weight"
            elif n.op in ("call_function", "call_method", "call_module"):
                seen[n] = any(self._reads_weight(a, seen) for a in n.all_input_nodes if a not in self.dynamic)
                if n.op == "call_module" and not seen[n]:  # a layer reads its own weights
                    seen[n] = any(True for _ in self.gm.get_submodule(n.target).parameters())
        return seen[n]

    def _from_weights(self, origin: fx.Node) -> Value | None:
        """A tensor computed before the input arrives from model parameters (ViT's class token
        expanded to the batch, Swin's relative position bias gathered by a fixed index): the
        computation becomes IR nodes on the parameters themselves, so they stay weights that
        passes and the param count see. None (fold it) when that takes an opaque node."""
        if not self._reads_weight(origin, {}):
            return None
        mark = len(self.graph.nodes)
        saved = self.node, self.node_name
        promoted: list[fx.Node] = []

        def promote(n: fx.Node) -> bool:
            if n in self.dynamic or not self._reads_weight(n, {}):
                return True  # a buffer-only input stays a const operand
            if n.op == "get_attr":
                self.dynamic.add(n)
                promoted.append(n)
                self.env[n] = self.param(self.results[n])
                return True
            if not all(promote(a) for a in n.all_input_nodes):
                return False
            self.dynamic.add(n)
            promoted.append(n)
            self._convert_node(n)
            return isinstance(self.env[n], Value)

        try:
            ok = promote(origin)
        except UnsupportedError:  # a step no op and no opaque node can keep: fold it instead
            ok = False
        finally:
            self.node, self.node_name = saved
        if ok and not any(x.op == "opaque" for x in self.graph.nodes[mark:]):
            return self.env[origin]
        for x in reversed(self.graph.nodes[mark:]):
            self.graph.erase(x)
        for n in promoted:
            self.dynamic.discard(n)
            self.env.pop(n, None)
        return None

    def const(self, value, like: Value | None = None) -> Value:
        """A 0-d const for a Python scalar, typed so torch's promotion keeps ``like``'s dtype."""
        if isinstance(value, torch.Tensor):
            return self.param(value)
        if isinstance(value, bool):
            dt = torch.bool
        elif isinstance(value, int) and (like is None or like.dtype.startswith(("i", "u"))):
            dt = torch.int64 if like is None else _torch_dtype(like.dtype)
        elif like is not None and like.dtype.startswith(("f", "bf")):
            dt = _torch_dtype(like.dtype)
        else:
            dt = torch.float32
        return self.graph.add_const(torch.tensor(value, dtype=dt), name=f"{self.node_name}.scalar")

    def value(self, x, like: Value | None = None) -> Value:
        if isinstance(x, Value):
            return x
        return self.const(x, like)

    def emit(self, op: str, inputs, attrs=None, name: str | None = None) -> Value | tuple:
        node = self.graph.add_node(op, [self.value(i) for i in inputs], attrs or {}, name or self.node_name)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    # -- the walk -------------------------------------------------------------------------------
    def convert(self, inputs) -> Graph:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        tensor_phs = [n for n in placeholders if isinstance(self.results.get(n), torch.Tensor)]
        if len(tensor_phs) != len(inputs):
            raise InputError(f"{type(self.model).__name__} takes {len(tensor_phs)} tensor inputs, got {len(inputs)}")
        for n in self.gm.graph.nodes:
            res = self.results.get(n)
            if n.op == "placeholder":
                if isinstance(res, torch.Tensor):
                    self.dynamic.add(n)
                    self.env[n] = self.graph.add_input(n.name, TensorType(tuple(res.shape), dtype_from_torch(res.dtype)))
                continue
            if n.op == "output":
                self.graph.set_outputs(self._outputs(n.args[0]))
                continue
            if any(a in self.dynamic for a in n.all_input_nodes) and _has_tensor(res):
                self.dynamic.add(n)
                self._convert_node(n)
            elif isinstance(res, torch.Tensor):
                self._origin.setdefault(id(res), n)
        _drop_dead(self.graph)
        self.graph.verify()
        return self.graph

    def arg(self, a):
        """An fx argument with dynamic nodes replaced by their IR values and static ones by
        their recorded Python value or tensor."""
        if isinstance(a, fx.Node):
            return self.env[a] if a in self.dynamic else self.results[a]
        if isinstance(a, (list, tuple)):
            vals = [self.arg(i) for i in a]
            return type(a)(vals) if not hasattr(a, "_fields") else type(a)(*vals)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self.arg(a.start), self.arg(a.stop), self.arg(a.step))
        return a

    def _convert_node(self, n: fx.Node):
        self.node = n
        self.node_name = _scoped_name(n)
        args = self.arg(n.args)
        kwargs = self.arg(n.kwargs)
        res = self.results[n]
        out = None
        rule = fx_ops.rule_for(n, self.gm)
        if rule is not None:
            try:
                out = rule(self, n, args, kwargs)
            except fx_ops.NoRule:
                out = None
            if out is not None and not _types_match(out, res):
                out = None
        if out is None:
            out = self._alias(args, kwargs, res)
        if out is None:
            out = self._opaque(n, args, kwargs, res)
        self.env[n] = out

    def _alias(self, args, kwargs, res):
        """A call that returned one of its tensor inputs unchanged (stochastic depth at
        inference, ``contiguous``) needs no node."""
        if not isinstance(res, torch.Tensor):
            return None
        for a, fa in zip(list(args) + list(kwargs.values()), list(self.node.args) + list(self.node.kwargs.values())):
            if isinstance(a, Value) and isinstance(fa, fx.Node) and self.results.get(fa) is res:
                return a
        return None

    def _opaque(self, n: fx.Node, args, kwargs, res):
        inputs: list[Value] = []

        def template(x):
            if isinstance(x, Value):
                inputs.append(x)
                return {"$input": len(inputs) - 1}
            if isinstance(x, torch.Tensor):
                inputs.append(self.param(x))
                return {"$input": len(inputs) - 1}
            if isinstance(x, torch.dtype):
                return {"$dtype": dtype_from_torch(x)}
            if isinstance(x, tuple):
                return {"$tuple": [template(i) for i in x]}
            if isinstance(x, list):
                return [template(i) for i in x]
            if isinstance(x, dict):
                return {str(k): template(v) for k, v in x.items()}
            if x is None or isinstance(x, (bool, int, float, str)):
                return x
            raise UnsupportedError(f"{self.node_name}: cannot keep argument {x!r} of {n.op} {n.target} "
                                   f"in an opaque node")

        if n.op == "call_function":
            target = fx.node._get_qualified_name(n.target)
            if "." not in target and getattr(n.target, "__module__", None) == "builtins":
                target = f"builtins.{target}"
            try:
                resolved = resolve_target(target)
            except UnsupportedError:
                resolved = None
            if resolved is not n.target:
                raise UnsupportedError(f"{self.node_name}: cannot keep a call of {target} (not importable by name)")
            targs, tkwargs = template(list(args)), template(dict(kwargs))
        elif n.op == "call_method":
            target = f"torch.Tensor.{n.target}"
            targs, tkwargs = template(list(args)), template(dict(kwargs))
        else:
            mod = self.gm.get_submodule(n.target)
            raise UnsupportedError(f"layer {n.target} ({type(mod).__name__}) has a configuration graphc cannot import")
        outs = res if isinstance(res, (tuple, list)) else (res,)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise UnsupportedError(f"{self.node_name}: {target} returns {type(res).__name__}, which graphc cannot keep")
        out_types = [str(TensorType(tuple(o.shape), dtype_from_torch(o.dtype))) for o in outs]
        node = self.graph.add_node("opaque", inputs, {"source": "torch", "target": target, "args": targs,
                                                      "kwargs": tkwargs, "out_types": out_types}, self.node_name)
        if isinstance(res, (tuple, list)):
            return type(res)(node.outputs) if not hasattr(res, "_fields") else type(res)(*node.outputs)
        return node.outputs[0]

    def _outputs(self, out) -> list[Value]:
        flat = []

        def walk(x):
            if isinstance(x, fx.Node):
                x = self.arg(x)
            if isinstance(x, Value):
                flat.append(x)
            elif isinstance(x, torch.Tensor):
                flat.append(self.param(x))
            elif isinstance(x, (list, tuple)):
                for i in x:
                    walk(i)
            elif isinstance(x, dict):
                for i in x.values():
                    walk(i)

        walk(out)
        if not flat:
            raise UnsupportedError(f"{type(self.model).__name__} returns no tensor")
        return flat


def _torch_dtype(short: str):
    from graphc.ir.types import torch_dtype

    return torch_dtype(short)


def _types_match(out, res) -> bool:
    if isinstance(out, Value):
        return isinstance(res, torch.Tensor) and out.shape == tuple(res.shape) and out.dtype == dtype_from_torch(res.dtype)
    if isinstance(out, (tuple, list)) and isinstance(res, (tuple, list)) and len(out) == len(res):
        return all(_types_match(o, r) for o, r in zip(out, res))
    return out is None and res is None


def _drop_dead(graph: Graph) -> None:
    """Remove nodes nothing reads (left over where a rule's result was discarded)."""
    for node in reversed(graph.nodes):
        if not any(v.num_uses for v in node.outputs):
            graph.erase(node)
    graph.prune_unused_params()
