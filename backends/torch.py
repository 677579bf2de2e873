"""PyTorch back-end: a graphc Graph becomes a ``torch.fx.GraphModule`` of standard layers.

- Weighted layer ops (conv, linear, batch/layer/group norm, attention) and dropout become
  ``torch.nn`` modules whose paths come from the source model's parameter names
  (``layer1.0.conv1``), so the emitted module's ``state_dict`` reads like the source's and it can
  be trained again (BN, dropout behave normally after ``.train()``).
- Every other op becomes a call of a torch function or tensor method; params read by such ops
  are attributes of the module (``nn.Parameter`` for kind ``weight``, buffers otherwise).
- Opaque torch nodes call their original callable. Opaque ONNX nodes cannot run in torch and
  are refused with the op named.
- The generated code calls only torch (and, for opaque nodes, the model's own libraries): it
  saves with ``torch.save`` and loads in a process without graphc.

Each op's call comes from its ``OpDef.torch`` hook, run here on torch.fx nodes; the reference
interpreter (:func:`graphc.ir.interpret.run_graph`) runs the same hook eagerly.
"""
from __future__ import annotations

import gc
import inspect
import operator
import re

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from graphc.errors import UnsupportedError
from graphc.ir import Graph, Node, Value
from graphc.ir.interpret import run_graph  # noqa: F401  (the reference interpreter, re-exported)
from graphc.ir.ops.opaque import fill_template, resolve_target


def _tensor(p) -> torch.Tensor:
    return torch.from_numpy(np.array(p.data, copy=True))


def _ident(part: str) -> str:
    part = re.sub(r"\W", "_", part)
    return part or "_"


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
        taken = set()
        for v in self.graph.inputs:
            name = _ident(v.name)
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
        return gm.eval()

    def _node(self, node: Node) -> fx.Node:
        self.cur = node
        rule = LAYERS.get(node.op)
        if rule is not None and node.params[0] is None and all(p is not None for p in _layer_params(node)):
            out = rule(self, node)
            if out is not None:
                return out
        if node.op == "opaque":
            return self._opaque(node)
        opdef = node.opdef
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


def _conv_layer(em: _Emitter, node: Node):
    w = node.params[1]
    a = node.attrs
    nd = int(node.op[-2])
    has_b = len(node.inputs) > 2
    groups = int(a["groups"])
    if node.op.startswith("conv_transpose"):
        cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}[nd]
        m = cls(w.data.shape[0], w.data.shape[1] * groups, tuple(w.data.shape[2:]), a["stride"],
                a["padding"], a["output_padding"], groups, has_b, a["dilation"], device=_build_on(w))
    else:
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
        m = cls(w.data.shape[1] * groups, w.data.shape[0], tuple(w.data.shape[2:]), a["stride"],
                a["padding"], a["dilation"], groups, has_b, device=_build_on(w))
    _set(m, node)
    return em.layer(node, m, [em.val(node.input(0))])


def _build_on(weight) -> str:
    """Where to build a layer before it gets the graph's weights: a large one on the meta device
    (its default initialisation, which the weights overwrite, costs in proportion to its size); a
    small one on the CPU, where that initialisation costs less than the meta device's fixed
    overhead."""
    return "meta" if weight.data.size >= 16384 else "cpu"


def _set(m: nn.Module, node: Node, names=("weight", "bias")):
    """Give ``m`` the node's params. A layer built on the meta device (no storage, no default
    initialisation to overwrite) gets every param it has this way."""
    with torch.no_grad():
        for name, p in zip(names, node.params[1:]):
            t = _tensor(p)
            cur = getattr(m, name)
            if cur is None or cur.is_meta or tuple(cur.shape) != tuple(t.shape) or cur.dtype != t.dtype:
                setattr(m, name, nn.Parameter(t, requires_grad=t.is_floating_point()))
            else:
                cur.copy_(t)


def _linear_layer(em, node):
    w = node.params[1]
    if w.data.ndim != 2:
        return None
    m = nn.Linear(w.data.shape[1], w.data.shape[0], bias=len(node.inputs) > 2, device=_build_on(w))
    _set(m, node)
    return em.layer(node, m, [em.val(node.input(0))])


def _bn_layer(em, node):
    rank = len(node.input(0).shape)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None or any(p.kind == "const" and p.data.ndim != 1 for p in node.params[1:]):
        return None
    c = node.params[1].data.shape[0]
    m = cls(c, eps=node.attrs["eps"])
    _set(m, node, ("weight", "bias"))
    with torch.no_grad():
        m.running_mean.copy_(_tensor(node.params[3]))
        m.running_var.copy_(_tensor(node.params[4]))
    return em.layer(node, m, [em.val(node.input(0))])


def _ln_layer(em, node):
    n_wb = len(node.inputs) - 1
    m = nn.LayerNorm(node.attrs["normalized_shape"], eps=node.attrs["eps"],
                     elementwise_affine=n_wb > 0, bias=n_wb > 1)
    _set(m, node)
    return em.layer(node, m, [em.val(node.input(0))])


def _gn_layer(em, node):
    if len(node.inputs) not in (1, 3):
        return None
    m = nn.GroupNorm(node.attrs["num_groups"], node.input(0).shape[1], eps=node.attrs["eps"],
                     affine=len(node.inputs) == 3)
    _set(m, node)
    return em.layer(node, m, [em.val(node.input(0))])


def _mha_layer(em, node):
    if any(p is None for p in node.params[3:]) or node.params[0] is not None:
        return None
    e = node.input(0).shape[-1]
    ps = node.params
    # Built on the meta device (no default initialisation), then given the graph's weights in
    # the module's own dtype; operands of other shapes are copied (broadcast) as before.
    m = nn.MultiheadAttention(e, node.attrs["num_heads"], batch_first=node.attrs["batch_first"],
                              device="meta")
    slots = [(m, "in_proj_weight", ps[3]), (m, "in_proj_bias", ps[4]), (m.out_proj, "weight", ps[5]),
             (m.out_proj, "bias", ps[6])]
    if all(tuple(getattr(mod, n).shape) == tuple(p.data.shape) for mod, n, p in slots):
        for mod, n, p in slots:
            setattr(mod, n, nn.Parameter(_tensor(p).to(getattr(mod, n).dtype)))
    else:
        m = nn.MultiheadAttention(e, node.attrs["num_heads"], batch_first=node.attrs["batch_first"])
        with torch.no_grad():
            m.in_proj_weight.copy_(_tensor(ps[3]))
            m.in_proj_bias.copy_(_tensor(ps[4]))
            m.out_proj.weight.copy_(_tensor(ps[5]))
            m.out_proj.bias.copy_(_tensor(ps[6]))
    q, k, v = (em.val(node.input(i)) for i in range(3))
    out = em.layer(node, m, [q, k, v], {"need_weights": False})
    return em.call(operator.getitem, out, 0)


def _dropout_layer(em, node):
    path = em._claim(node.name, node.name)
    em._place(path, nn.Dropout(node.attrs["p"]), "layer")
    return em.fg.call_module(path, (em.val(node.input(0)),))


def _mha_params_ok(node):
    return all(p is not None for p in node.params[3:])


def _layer_params(node: Node):
    """The operands a layer module owns: everything after the data input(s)."""
    if node.op == "multi_head_attention":
        return node.params[3:]
    return node.params[1:]


LAYERS = {
    "conv1d": _conv_layer, "conv2d": _conv_layer, "conv3d": _conv_layer,
    "conv_transpose1d": _conv_layer, "conv_transpose2d": _conv_layer,
    "linear": _linear_layer, "batch_norm": _bn_layer, "layer_norm": _ln_layer, "group_norm": _gn_layer,
}


def _layer_dispatch(em: _Emitter, node: Node):
    if node.op == "multi_head_attention":
        if node.params[0] is None and _mha_params_ok(node):
            return _mha_layer(em, node)
        return None
    if node.op == "dropout":
        return _dropout_layer(em, node)
    return None


for _op in ("multi_head_attention", "dropout"):
    LAYERS[_op] = _layer_dispatch


def emit_torch(graph: Graph) -> fx.GraphModule:
    """The graph as a ``torch.fx.GraphModule`` in eval mode (see the module docstring)."""
    # Building layers and fx nodes allocates many small objects; the cyclic collector's passes
    # over the whole heap (the source model and graph included) would dominate the emission.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _Emitter(graph).emit()
    finally:
        if enabled:
            gc.enable()
