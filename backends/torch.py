"""PyTorch back-end: a graphc Graph becomes a ``torch.fx.GraphModule`` of standard layers.

- Weighted layer ops (conv, linear, batch/layer/group norm, attention) and dropout become the
  ``torch.nn`` modules their ``OpDef.module`` hook builds, at paths come from the source model's parameter names
  (``layer1.0.conv1``), so the emitted module's ``state_dict`` reads like the source's and it can
  be trained again (BN, dropout behave normally after ``.train()``).
- Every other op becomes a call of a torch function or tensor method; params read by such ops
  are attributes of the module (``nn.Parameter`` for kind ``weight``, buffers otherwise).
- A masked param (weight pruning) of a layer is attached with ``torch.nn.utils.prune``: the
  layer holds ``weight_orig`` and the buffer ``weight_mask`` and computes their product before
  each forward, so the pruned weights stay exact zeros when the module trains again. A masked
  param read by a plain function call keeps its zeros but not its mask.
- Opaque torch nodes call their original callable. Opaque ONNX nodes cannot run in torch and
  are refused with the op named.
- ``forward``'s arguments are the input names made identifiers; the graph's exact input and
  output names (``Graph.input_names``/``output_names``) are the module's
  ``graphc_input_names``/``graphc_output_names`` lists, kept by ``torch.save``.
- The generated code calls only torch (and, for opaque nodes, the model's own libraries): it
  saves with ``torch.save`` and loads in a process without graphc.

Every other op's calls come from its ``OpDef.torch`` hook, run here on torch.fx nodes; the
reference interpreter (:func:`graphc.ir.interpret.run_graph`) runs the same hook eagerly.
"""
from __future__ import annotations

import inspect
import keyword
import operator
import re
import sys

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from graphc.errors import UnsupportedError
from graphc.ir import Graph, Node, Value
from graphc.ir.gc_pause import gc_paused
from graphc.ir.interpret import run_graph  # noqa: F401  (the reference interpreter, re-exported)
from graphc.ir.ops.opaque import fill_template, resolve_target


def _tensor(p) -> torch.Tensor:
    return torch.from_numpy(np.array(p.data, copy=True))


def _ident(part: str) -> str:
    part = re.sub(r"\W", "_", part)
    return part or "_"


def _arg_name(name: str, modules: set[str]) -> str:
    """``name`` as a Python parameter name of the generated ``forward``: an identifier that
    shadows none of ``modules``, which the generated code may read as globals (an input
    named ``torch``)."""
    name = _ident(name)
    if not name.isidentifier() or keyword.iskeyword(name) or name in modules:
        name = "_" + name
    return name


class _Emitter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.root = nn.Module()
        self.fg = fx.Graph()
        self.env: dict[int, fx.Node] = {}
        self.kinds: dict[str, str] = {}  # path -> "layer" | "attr" | "scope"
        self.param_paths: dict[int, str] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}  # static shape of each Value's fx node

    # -- module tree ------------------------------------------------------------------------------
    def _free(self, path: str) -> bool:
        if path in self.kinds:
            return False
        parts = path.split(".")
        for i in range(1, len(parts)):
            if self.kinds.get(".".join(parts[:i])) in ("layer", "attr"):
                return False
        return True

    def _claim(self, wanted: str, fallback: str) -> str:
        for cand in (wanted, fallback):
            cand = ".".join(_ident(p) for p in cand.split(".")) if cand else ""
            if cand and self._free(cand):
                return cand
        base = _ident(fallback.replace(".", "_"))
        i = 1
        while not self._free(f"{base}_{i}"):
            i += 1
        return f"{base}_{i}"

    def _place(self, path: str, obj, kind: str) -> None:
        *scopes, last = path.split(".")
        mod = self.root
        for i, s in enumerate(scopes):
            sub = mod._modules.get(s)
            if sub is None:
                sub = nn.Module()
                mod.add_module(s, sub)
                self.kinds[".".join(scopes[: i + 1])] = "scope"
            mod = sub
        if isinstance(obj, nn.Module):
            mod.add_module(last, obj)
        elif isinstance(obj, nn.Parameter):
            mod.register_parameter(last, obj)
        else:
            mod.register_buffer(last, obj)
        self.kinds[path] = kind

    def layer(self, node: Node, module: nn.Module, args, kwargs=None) -> fx.Node:
        weight = next((p for p in node.params if p is not None), None)
        wanted = ""
        if weight is not None and weight.kind == "weight":
            src = weight.source
            for suffix in (".weight", ".in_proj_weight"):
                if src.endswith(suffix):
                    wanted = src[: -len(suffix)]
        path = self._claim(wanted or node.name, node.name)
        self._place(path, module, "layer")
        for p in node.params:
            if p is not None:
                self.param_paths.setdefault(id(p), "")
        return self.fg.call_module(path, tuple(args), kwargs or {})

    def val(self, v: Value) -> fx.Node:
        if id(v) in self.env:
            return self.env[id(v)]
        p = v.param
        if p is None:
            raise UnsupportedError(f"value %{v.name} is used before it is defined")
        t = _tensor(p)
        path = self._claim(p.source if p.kind != "const" else "", v.name)
        self._place(path, nn.Parameter(t) if p.kind == "weight" and t.is_floating_point() else t, "attr")
        node = self.fg.get_attr(path)
        return self._bind(v, node)

    # -- the builder an op's ``torch`` hook writes to (see graphc.ir.ops) ---------------------
    def call(self, fn, *args, **kwargs) -> fx.Node:
        return self.fg.call_function(fn, tuple(args), kwargs)

    def method(self, name, *args, **kwargs) -> fx.Node:
        return self.fg.call_method(name, tuple(args), kwargs)

    def shape(self, x: fx.Node) -> tuple[int, ...]:
        return self.shapes[x]

    def _bind(self, v: Value, x: fx.Node) -> fx.Node:
        self.env[id(v)] = x
        self.shapes.setdefault(x, v.shape)
        return x

    # -- the walk ---------------------------------------------------------------------------------
    def emit(self) -> fx.GraphModule:
        taken = {"self"}
        modules = {"torch"} | set(sys.stdlib_module_names) | {
            str(n.attrs.get("target", "")).split(".")[0] for n in self.graph.nodes if n.op == "opaque"}
        for v in self.graph.inputs:
            name = _arg_name(v.name, modules)
            while name in taken:
                name += "_"
            taken.add(name)
            self._bind(v, self.fg.placeholder(name))
        for node in self.graph.nodes:
            out = self._node(node)
            if len(node.outputs) == 1:
                self._bind(node.output, out)
            else:
                for i, v in enumerate(node.outputs):
                    self._bind(v, self.call(operator.getitem, out, i))
        outs = [self.val(v) for v in self.graph.outputs]
        self.fg.output(outs[0] if len(outs) == 1 else tuple(outs))
        gm = fx.GraphModule(self.root, self.fg, class_name=_ident(self.graph.name))
        # forward's arguments are identifiers; the exact names serving code binds by travel
        # with the module (and through torch.save) as plain lists.
        gm.graphc_input_names = self.graph.input_names
        gm.graphc_output_names = self.graph.output_names
        return gm.eval()

    def _node(self, node: Node) -> fx.Node:
        opdef = node.opdef
        layer = opdef.module(node) if opdef.module is not None else None
        if layer is not None:
            out = self.layer(node, layer.module, [self.val(node.input(i)) for i in range(layer.inputs)], layer.kwargs)
            return out if layer.output is None else self.call(operator.getitem, out, layer.output)
        if node.op == "opaque":
            return self._opaque(node)
        if opdef.torch is None:
            raise UnsupportedError(f"the torch back-end has no rule for op {node.op!r} (node {node.name})")
        return opdef.torch(self, *[self.val(v) for v in node.inputs], **node.attrs)

    def _opaque(self, node: Node) -> fx.Node:
        a = node.attrs
        if a.get("source") != "torch":
            raise UnsupportedError(f"node {node.name}: opaque {a.get('source')} op {a.get('op_type')!r} "
                                   f"cannot run in torch")
        ins = [self.val(v) for v in node.inputs]
        args = fill_template(list(a.get("args", [])), ins)
        kwargs = fill_template(dict(a.get("kwargs") or {}), ins)
        target = a["target"]
        if target.startswith("torch.Tensor."):
            return self.method(target[len("torch.Tensor."):], *args, **kwargs)
        fn = resolve_target(target)
        out = self.call(fn, *args, **kwargs)
        if inspect.isfunction(fn) and fn.__module__.split(".")[0] != "torch":
            # Recorded as torch.fx.wrap'ed in the generated code, so re-tracing the saved
            # module (torch.load does) keeps the call instead of running it on proxies.
            out.meta["is_wrapped"] = True
        return out


def emit_torch(graph: Graph) -> fx.GraphModule:
    """The graph as a ``torch.fx.GraphModule`` in eval mode (see the module docstring)."""
    with gc_paused():
        return _Emitter(graph).emit()
