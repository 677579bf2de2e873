"""IR op -> ONNX lowerings: ``@lowers("conv2d", ...)`` attaches a function to those ops'
definitions (``OpDef.onnx``), as TVM's ``set_attr`` attaches a compute to a registered op.

A lowering gets the :class:`Emitter`, the node, its input tensor names and the names its
outputs must have, and adds ONNX nodes that write exactly those outputs. Lowerings follow the
op's torch semantics (``OpDef.torch``); where ONNX has no direct counterpart at the target
opset they decompose, or raise :class:`NoLowering` and the node goes through torch.onnx
(:mod:`graphc.backends.onnx_torch`) instead.
"""
from __future__ import annotations

import math

import numpy as np

from graphc.ir.ops import get_op
from graphc.ir.types import numpy_dtype, onnx_dtype

_INT64_MAX = 2 ** 63 - 1


class NoLowering(Exception):
    """This node, at this opset, has no table lowering: export it through torch.onnx."""


def lowers(*ops: str):
    def deco(fn):
        for o in ops:
            opdef = get_op(o)
            if opdef.onnx is not None:
                raise ValueError(f"op {o!r} has two ONNX lowerings")
            opdef.onnx = fn
        return fn

    return deco


def lower_node(e, node) -> None:
    ins = [e.name_of(v) for v in node.inputs]
    outs = [e.name_of(v) for v in node.outputs]
    if node.op == "opaque" and node.attrs.get("source") == "onnx":
        return _opaque_onnx(e, node, ins, outs)
    fn = node.opdef.onnx
    if fn is not None:
        mark = len(e.nodes), len(e.initializers)
        try:
            return fn(e, node, ins, outs)
        except NoLowering:
            del e.nodes[mark[0]:]
            del e.initializers[mark[1]:]
    from graphc.backends.onnx_torch import lower_via_torch

    lower_via_torch(e, node, ins, outs)


def _list(v, n):
    if v is None:
        return None
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    return v * n if len(v) == 1 and n > 1 else v


def _scalar(e, value, dtype: str, base: str) -> str:
    return e.const(np.asarray(value, dtype=numpy_dtype(dtype)), base)


def _axes_input(e, op_type, data, axes, out, since: int, **attrs):
    if e.opset >= since:
        return e.op1(op_type, [data, e.i64(axes, "axes")], out, **attrs)
    return e.op1(op_type, [data], out, axes=list(axes), **attrs)


# -- opaque ONNX --------------------------------------------------------------------------------
def _opaque_onnx(e, node, ins, outs):
    import base64

    from onnx import AttributeProto, defs, helper

    a = node.attrs
    op_type, domain = a["op_type"], a.get("domain", "")
    if domain not in ("", "ai.onnx"):
        e.opsets[domain] = max(e.opsets.get(domain, 0), int(a.get("opset", 1)))
    n_in = max(a.get("input_slots", [len(ins) - 1]) or [-1]) + 1
    in_names = [""] * n_in
    for slot, name in zip(a.get("input_slots", range(len(ins))), ins):
        in_names[slot] = name
    out_slots = a.get("output_slots", list(range(len(outs))))
    out_names = [""] * (max(out_slots) + 1 if out_slots else 0)
    for slot, name in zip(out_slots, outs):
        out_names[slot] = name
    try:
        schema = defs.get_schema(op_type, e.opsets.get(domain, e.opset) if domain else int(a.get("opset", e.opset)),
                                 domain)
        types = {k: v.type for k, v in schema.attributes.items()}
    except Exception:
        types = {}
    attrs = []
    for k, v in a.get("attributes", {}).items():
        if isinstance(v, dict) and "$onnx" in v:
            p = AttributeProto()
            p.ParseFromString(base64.b64decode(v["$onnx"]))
            attrs.append(p)
            continue
        t = types.get(k)
        if t == AttributeProto.FLOAT:
            v = float(v)
        elif t == AttributeProto.FLOATS:
            v = [float(x) for x in v]
        elif t == AttributeProto.INT:
            v = int(v)
        attrs.append(helper.make_attribute(k, v))
    n = helper.make_node(op_type, in_names, out_names, name=e.node_name(node.name), domain=domain or None)
    n.attribute.extend(attrs)
    src = int(a.get("opset", e.opset))
    if domain in ("", "ai.onnx") and op_type in _COERCE_2D and src < 13 <= e.opset:
        return _coerced_2d(e, node, n, ins, outs)
    if domain in ("", "ai.onnx") and _schema_changed(op_type, src, e.opset):
        return _convert_opaque(e, node, n, in_names, src)
    e.nodes.append(n)


# Before opset 13 these coerced their input to 2-d at ``axis``; onnx.version_converter keeps
# Hardmax's attribute as it is, which would change its meaning.
_COERCE_2D = {"Hardmax", "Softmax", "LogSoftmax"}


def _coerced_2d(e, node, onnx_node, ins, outs):
    from onnx import helper

    shape = list(node.inputs[0].shape)
    axis = next((helper.get_attribute_value(x) for x in onnx_node.attribute if x.name == "axis"), 1)
    axis = axis + len(shape) if axis < 0 else axis
    flat = e.op1("Flatten", [ins[0]], axis=axis)
    onnx_node.input[0] = flat
    onnx_node.output[0] = e.fresh(f"{node.name}.{onnx_node.op_type.lower()}")
    del onnx_node.attribute[:]
    onnx_node.attribute.append(helper.make_attribute("axis", 1))
    e.nodes.append(onnx_node)
    e.op1("Reshape", [onnx_node.output[0], e.i64(shape, "shape")], outs[0])


def _schema_changed(op_type: str, src: int, dst: int) -> bool:
    from onnx import defs

    if src == dst:
        return False
    try:
        return defs.get_schema(op_type, src).since_version != defs.get_schema(op_type, dst).since_version
    except Exception:
        return False


def _convert_opaque(e, node, onnx_node, in_names, src: int):
    """An opaque ONNX node imported at another opset, whose op changed in between (Dropout's
    ratio attribute became an input, Upsample became Resize...): bring it to the target opset
    with onnx.version_converter, run on a one-node model, and splice the result in."""
    from onnx import helper, numpy_helper, version_converter

    from graphc.errors import UnsupportedError

    graph_inputs, inits = [], []
    for v, name in zip(node.inputs, [n for n in in_names if n]):
        if v.param is not None:
            inits.append(numpy_helper.from_array(np.asarray(v.param.data), name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, onnx_dtype(v.dtype), list(v.shape)))
    outputs = [helper.make_tensor_value_info(name, onnx_dtype(v.dtype), list(v.shape))
               for v, name in zip(node.outputs, [o for o in onnx_node.output if o])]
    g = helper.make_graph([onnx_node], "opaque", graph_inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", src)])
    try:
        converted = version_converter.convert_version(m, e.opset).graph
    except Exception as err:
        msg = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
        raise UnsupportedError(f"opaque ONNX node {node.name} ({onnx_node.op_type}, opset {src}) cannot be "
                               f"brought to opset {e.opset}: {msg}") from None
    keep = {n for n in in_names if n} | {o for o in onnx_node.output if o}
    rename: dict[str, str] = {}

    def renamed(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in rename:
            rename[name] = e.fresh(f"{node.name}.{name}")
        return rename[name]

    for t in converted.initializer:
        if t.name not in keep:
            t.name = renamed(t.name)
            e.initializers.append(t)
    for i, n in enumerate(converted.node):
        n.input[:] = [renamed(x) for x in n.input]
        n.output[:] = [renamed(x) for x in n.output]
        n.name = onnx_node.name if i == 0 else e.node_name(node.name)
        e.nodes.append(n)


# -- convolution and pooling --------------------------------------------------------------------
@lowers("conv1d", "conv2d", "conv3d")
def conv(e, node, ins, outs):
    k = len(node.inputs[1].shape) - 2
    a = node.attrs
    pads = _list(a["padding"], k)
    if isinstance(a.get("padding"), str):
        raise NoLowering
    e.op1("Conv", ins, outs[0], kernel_shape=list(node.inputs[1].shape[2:]), strides=_list(a["stride"], k),
          pads=pads + pads, dilations=_list(a["dilation"], k), group=int(a["groups"]))


@lowers("conv_transpose1d", "conv_transpose2d")
def conv_transpose(e, node, ins, outs):
    k = len(node.inputs[1].shape) - 2
    a = node.attrs
    pads = _list(a["padding"], k)
    e.op1("ConvTranspose", ins, outs[0], kernel_shape=list(node.inputs[1].shape[2:]),
          strides=_list(a["stride"], k), pads=pads + pads, dilations=_list(a["dilation"], k),
          output_padding=_list(a["output_padding"], k), group=int(a["groups"]))


def _pool_attrs(node, k):
    a = node.attrs
    kernel = _list(a["kernel_size"], k)
    stride = _list(a.get("stride") or kernel, k)
    pads = _list(a["padding"], k)
    return kernel, stride, pads


@lowers("max_pool1d", "max_pool2d")
def max_pool(e, node, ins, outs):
    k = len(node.inputs[0].shape) - 2
    kernel, stride, pads = _pool_attrs(node, k)
    e.op1("MaxPool", ins, outs[0], kernel_shape=kernel, strides=stride, pads=pads + pads,
          dilations=_list(node.attrs["dilation"], k), ceil_mode=int(bool(node.attrs.get("ceil_mode"))))


@lowers("avg_pool1d", "avg_pool2d")
def avg_pool(e, node, ins, outs):
    if node.attrs.get("divisor_override") is not None:
        raise NoLowering
    k = len(node.inputs[0].shape) - 2
    kernel, stride, pads = _pool_attrs(node, k)
    e.op1("AveragePool", ins, outs[0], kernel_shape=kernel, strides=stride, pads=pads + pads,
          ceil_mode=int(bool(node.attrs.get("ceil_mode"))),
          count_include_pad=int(bool(node.attrs["count_include_pad"])))


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row i averages input[floor(i*n/o) : ceil((i+1)*n/o)] -- torch's adaptive bins."""
    m = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@lowers("adaptive_avg_pool1d", "adaptive_avg_pool2d")
def adaptive_avg_pool(e, node, ins, outs):
    x = node.inputs[0]
    k = 1 if node.op.endswith("1d") else 2
    spatial = list(x.shape[-k:])
    out = list(node.output.shape[-k:])
    if x.dtype != "f32":
        raise NoLowering
    if out == [1] * k:
        e.op1("GlobalAveragePool", ins, outs[0])
    elif out == spatial:
        e.op1("Identity", ins, outs[0])
    elif all(s % o == 0 for s, o in zip(spatial, out)):
        kernel = [s // o for s, o in zip(spatial, out)]
        e.op1("AveragePool", ins, outs[0], kernel_shape=kernel, strides=kernel)
    else:
        # Adaptive average pooling is linear and separable: y = P_h x P_w^T.
        y = ins[0]
        pw = _adaptive_matrix(spatial[-1], out[-1]).T
        y = e.op1("MatMul", [y, e.const(pw, "pool_w")], outs[0] if k == 1 else None)
        if k == 2:
            ph = _adaptive_matrix(spatial[0], out[0])
            e.op1("MatMul", [e.const(ph, "pool_h"), y], outs[0])


@lowers("adaptive_max_pool2d")
def adaptive_max_pool(e, node, ins, outs):
    spatial = list(node.inputs[0].shape[-2:])
    out = list(node.output.shape[-2:])
    if out == [1, 1]:
        e.op1("GlobalMaxPool", ins, outs[0])
    elif all(s % o == 0 for s, o in zip(spatial, out)):
        kernel = [s // o for s, o in zip(spatial, out)]
        e.op1("MaxPool", ins, outs[0], kernel_shape=kernel, strides=kernel)
    else:
        raise NoLowering


# -- dense and normalisation --------------------------------------------------------------------
@lowers("linear")
def linear(e, node, ins, outs):
    if len(node.inputs[0].shape) == 2:
        e.op1("Gemm", ins, outs[0], transB=1)
        return
    wt = e.op1("Transpose", [ins[1]], perm=[1, 0])
    if len(ins) == 2:
        e.op1("MatMul", [ins[0], wt], outs[0])
    else:
        y = e.op1("MatMul", [ins[0], wt])
        e.op1("Add", [y, ins[2]], outs[0])


@lowers("matmul")
def matmul(e, node, ins, outs):
    e.op1("MatMul", ins, outs[0])


@lowers("batch_norm")
def batch_norm(e, node, ins, outs):
    e.op1("BatchNormalization", ins, outs[0], epsilon=float(node.attrs["eps"]))


@lowers("instance_norm")
def instance_norm(e, node, ins, outs):
    c = node.inputs[0].shape[1]
    dt = numpy_dtype(node.inputs[0].dtype)
    s = ins[1] if len(ins) > 1 else e.const(np.ones(c, dt), "scale")
    b = ins[2] if len(ins) > 2 else e.const(np.zeros(c, dt), "bias")
    e.op1("InstanceNormalization", [ins[0], s, b], outs[0], epsilon=float(node.attrs["eps"]))


@lowers("group_norm")
def group_norm(e, node, ins, outs):
    # InstanceNormalization of x seen as [N, groups, rest] normalises each group of channels as a
    # whole, at every opset (GroupNormalization's scale changed meaning between opsets 18 and 21)
    x = node.inputs[0]
    g = int(node.attrs["num_groups"])
    dt = numpy_dtype(x.dtype)
    grouped = e.op1("Reshape", [ins[0], e.i64([0, g, -1], "groups")])
    normed = e.op1("InstanceNormalization", [grouped, e.const(np.ones(g, dt), "ones"), e.const(np.zeros(g, dt), "zeros")],
                   epsilon=float(node.attrs["eps"]))
    shape = e.i64(list(x.shape), "shape")
    if len(ins) == 1:
        e.op1("Reshape", [normed, shape], outs[0])
        return
    y = e.op1("Reshape", [normed, shape])
    per_channel = e.i64([x.shape[1]] + [1] * (len(x.shape) - 2), "per_channel")
    y = e.op1("Mul", [y, e.op1("Reshape", [ins[1], per_channel])], outs[0] if len(ins) == 2 else None)
    if len(ins) == 3:
        e.op1("Add", [y, e.op1("Reshape", [ins[2], per_channel])], outs[0])


@lowers("layer_norm")
def layer_norm(e, node, ins, outs):
    if e.opset < 17:
        raise NoLowering
    ns = list(node.attrs["normalized_shape"])
    ns = [ns] if isinstance(ns, int) else ns
    dt = numpy_dtype(node.inputs[0].dtype)
    s = ins[1] if len(ins) > 1 else e.const(np.ones(ns, dt), "scale")
    e.op1("LayerNormalization", [ins[0], s] + ins[2:3], outs[0],
          axis=-len(ns), epsilon=float(node.attrs["eps"]))


@lowers("lrn")
def lrn(e, node, ins, outs):
    a = node.attrs
    e.op1("LRN", ins, outs[0], size=int(a["size"]), alpha=float(a["alpha"]),
          beta=float(a["beta"]), bias=float(a["k"]))


@lowers("softmax", "log_softmax")
def softmax(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    dim = node.attrs["dim"] % rank if rank else 0
    if e.opset < 13 and dim != rank - 1:
        raise NoLowering
    e.op1("Softmax" if node.op == "softmax" else "LogSoftmax", ins, outs[0], axis=dim)


@lowers("dropout", "identity")
def identity(e, node, ins, outs):
    e.op1("Identity", ins[:1], outs[0])


# -- elementwise --------------------------------------------------------------------------------
_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
          "neg": "Neg", "abs": "Abs", "erf": "Erf", "reciprocal": "Reciprocal", "floor": "Floor",
          "ceil": "Ceil", "round": "Round", "sign": "Sign", "sin": "Sin", "cos": "Cos", "not": "Not",
          "hardswish": "HardSwish", "selu": "Selu", "softsign": "Softsign"}


@lowers(*_UNARY)
def unary(e, node, ins, outs):
    e.op1(_UNARY[node.op], ins, outs[0])


@lowers("hardsigmoid")
def hardsigmoid(e, node, ins, outs):
    e.op1("HardSigmoid", ins, outs[0], alpha=1.0 / 6, beta=0.5)


@lowers("relu6", "hardtanh", "clamp")
def clip(e, node, ins, outs):
    a = node.attrs
    if node.op == "relu6":
        lo, hi = 0.0, 6.0
    elif node.op == "hardtanh":
        lo, hi = a["min_val"], a["max_val"]
    else:
        lo, hi = a.get("min"), a.get("max")
    dt = node.inputs[0].dtype
    args = [ins[0], _scalar(e, lo, dt, "min") if lo is not None else "",
            _scalar(e, hi, dt, "max") if hi is not None else ""]
    while args[-1] == "":
        args.pop()
    e.op1("Clip", args, outs[0])


@lowers("silu")
def silu(e, node, ins, outs):
    e.op1("Mul", [ins[0], e.op1("Sigmoid", ins)], outs[0])


@lowers("rsqrt")
def rsqrt(e, node, ins, outs):
    e.op1("Reciprocal", [e.op1("Sqrt", ins)], outs[0])


@lowers("mish")
def mish(e, node, ins, outs):
    if e.opset >= 18:
        e.op1("Mish", ins, outs[0])
    else:
        e.op1("Mul", [ins[0], e.op1("Tanh", [e.op1("Softplus", ins)])], outs[0])


@lowers("gelu")
def gelu(e, node, ins, outs):
    approx = node.attrs["approximate"]
    if e.opset >= 20:
        e.op1("Gelu", ins, outs[0], approximate=approx)
        return
    # Before opset 20, written in the form onnxruntime's Gelu fusion matches (the form
    # torch.onnx.export writes): x / sqrt(2) -> Erf -> + 1 -> * x -> * 0.5. A Mul by 1/sqrt(2),
    # or the 0.5 applied to x first, is left unfused and runs as five kernels.
    dt = node.inputs[0].dtype
    x = ins[0]
    if approx == "tanh":
        x3 = e.op1("Mul", [e.op1("Mul", [x, x]), x])
        inner = e.op1("Add", [x, e.op1("Mul", [x3, _scalar(e, 0.044715, dt, "c")])])
        t = e.op1("Tanh", [e.op1("Mul", [inner, _scalar(e, math.sqrt(2 / math.pi), dt, "k")])])
    else:
        t = e.op1("Erf", [e.op1("Div", [x, _scalar(e, math.sqrt(2), dt, "sqrt2")])])
    e.op1("Mul", [e.op1("Mul", [x, e.op1("Add", [t, _scalar(e, 1.0, dt, "one")])]), _scalar(e, 0.5, dt, "half")],
          outs[0])


@lowers("leaky_relu")
def leaky_relu(e, node, ins, outs):
    e.op1("LeakyRelu", ins, outs[0], alpha=float(node.attrs["negative_slope"]))


@lowers("elu", "celu")
def elu(e, node, ins, outs):
    e.op1("Elu" if node.op == "elu" else "Celu", ins, outs[0], alpha=float(node.attrs["alpha"]))


@lowers("softplus")
def softplus(e, node, ins, outs):
    beta = float(node.attrs["beta"])
    if beta == 1.0:
        e.op1("Softplus", ins, outs[0])
        return
    dt = node.inputs[0].dtype
    y = e.op1("Softplus", [e.op1("Mul", [ins[0], _scalar(e, beta, dt, "beta")])])
    e.op1("Div", [y, _scalar(e, beta, dt, "beta")], outs[0])


@lowers("cast")
def cast(e, node, ins, outs):
    e.op1("Cast", ins, outs[0], to=onnx_dtype(node.attrs["dtype"]))


_ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max", "minimum": "Min"}
_COMPARE = {"eq": "Equal", "lt": "Less", "gt": "Greater", "le": "LessOrEqual", "ge": "GreaterOrEqual"}


def _promote(a: str, b: str) -> str:
    import torch

    from graphc.ir.types import dtype_from_torch, torch_dtype

    return dtype_from_torch(torch.promote_types(torch_dtype(a), torch_dtype(b)))


@lowers(*_ARITH)
def arith(e, node, ins, outs):
    dt = node.output.dtype
    if node.op == "div" and not dt.startswith(("f", "bf")):
        raise NoLowering
    args = [e.cast(n, v.dtype, dt) for n, v in zip(ins, node.inputs)]
    e.op1(_ARITH[node.op], args, outs[0])


@lowers(*_COMPARE)
def compare(e, node, ins, outs):
    dt = _promote(node.inputs[0].dtype, node.inputs[1].dtype)
    args = [e.cast(n, v.dtype, dt) for n, v in zip(ins, node.inputs)]
    e.op1(_COMPARE[node.op], args, outs[0])


@lowers("and", "or")
def logical(e, node, ins, outs):
    args = [e.cast(n, v.dtype, "bool") for n, v in zip(ins, node.inputs)]
    e.op1("And" if node.op == "and" else "Or", args, outs[0])


@lowers("floor_divide")
def floor_divide(e, node, ins, outs):
    dt = node.output.dtype
    if not dt.startswith("f"):
        raise NoLowering
    args = [e.cast(n, v.dtype, dt) for n, v in zip(ins, node.inputs)]
    e.op1("Floor", [e.op1("Div", args)], outs[0])


@lowers("mod")
def mod(e, node, ins, outs):
    dt = node.output.dtype
    if dt.startswith("f"):
        raise NoLowering
    args = [e.cast(n, v.dtype, dt) for n, v in zip(ins, node.inputs)]
    e.op1("Mod", args, outs[0], fmod=0)


@lowers("where")
def where(e, node, ins, outs):
    dt = node.output.dtype
    c = e.cast(ins[0], node.inputs[0].dtype, "bool")
    e.op1("Where", [c] + [e.cast(n, v.dtype, dt) for n, v in zip(ins[1:], node.inputs[1:])], outs[0])


@lowers("sum_n")
def sum_n(e, node, ins, outs):
    dt = node.output.dtype
    e.op1("Sum", [e.cast(n, v.dtype, dt) for n, v in zip(ins, node.inputs)], outs[0])


@lowers("prelu")
def prelu(e, node, ins, outs):
    x, w = node.inputs
    if len(w.shape) > len(x.shape):
        raise NoLowering
    e.op1("PRelu", ins, outs[0])


# -- shapes -------------------------------------------------------------------------------------
@lowers("reshape")
def reshape(e, node, ins, outs):
    shape = list(node.attrs["shape"])
    if 0 in shape or shape.count(-1) > 1:
        shape = list(node.output.shape)
    e.op1("Reshape", [ins[0], e.i64(shape, "shape")], outs[0])


@lowers("flatten")
def flatten(e, node, ins, outs):
    a = node.attrs
    rank = len(node.inputs[0].shape)
    end = a["end_dim"] % rank if rank else 0
    if rank >= 2 and a["start_dim"] % rank == 1 and end == rank - 1:
        e.op1("Flatten", ins, outs[0], axis=1)
    else:
        e.op1("Reshape", [ins[0], e.i64(list(node.output.shape), "shape")], outs[0])


@lowers("permute")
def permute(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    e.op1("Transpose", ins, outs[0], perm=[d % rank for d in node.attrs["dims"]])


@lowers("squeeze", "unsqueeze")
def squeeze(e, node, ins, outs):
    rank = len(node.output.shape if node.op == "unsqueeze" else node.inputs[0].shape)
    dims = node.attrs["dims"]
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = sorted(d % rank for d in dims)
    if node.op == "squeeze":
        dims = [d for d in dims if node.inputs[0].shape[d] == 1]
        if not dims:
            e.op1("Identity", ins, outs[0])
            return
    _axes_input(e, "Squeeze" if node.op == "squeeze" else "Unsqueeze", ins[0], dims, outs[0], since=13)


@lowers("expand")
def expand(e, node, ins, outs):
    e.op1("Expand", [ins[0], e.i64(list(node.output.shape), "shape")], outs[0])


@lowers("tile")
def tile(e, node, ins, outs):
    reps = list(node.attrs["repeats"])
    x = ins[0]
    rank = len(node.inputs[0].shape)
    if len(reps) > rank:
        shape = [1] * (len(reps) - rank) + list(node.inputs[0].shape)
        x = e.op1("Reshape", [x, e.i64(shape, "shape")])
    elif len(reps) < rank:
        reps = [1] * (rank - len(reps)) + reps
    e.op1("Tile", [x, e.i64(reps, "repeats")], outs[0])


@lowers("concat")
def concat(e, node, ins, outs):
    dt = node.output.dtype
    rank = len(node.output.shape)
    e.op1("Concat", [e.cast(n, v.dtype, dt) for n, v in zip(ins, node.inputs)], outs[0],
          axis=node.attrs["dim"] % rank)


@lowers("split")
def split(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    sizes = list(node.attrs["sizes"])
    axis = node.attrs["dim"] % rank
    if e.opset >= 13:
        e.op("Split", [ins[0], e.i64(sizes, "split")], outs, axis=axis)
    else:
        e.op("Split", [ins[0]], outs, axis=axis, split=sizes)


@lowers("slice")
def slice_(e, node, ins, outs):
    a = node.attrs
    start = 0 if a.get("start") is None else int(a["start"])
    end = _INT64_MAX if a.get("end") is None else int(a["end"])
    step = int(a.get("step") or 1)
    e.op1("Slice", [ins[0], e.i64([start], "starts"), e.i64([end], "ends"), e.i64([a["dim"]], "axes"),
                    e.i64([step], "steps")], outs[0])


@lowers("select")
def select(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    dim = node.attrs["dim"] % rank
    idx = node.attrs["index"] % node.inputs[0].shape[dim]
    e.op1("Gather", [ins[0], e.i64(idx, "index")], outs[0], axis=dim)


@lowers("index_select")
def index_select(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    e.op1("Gather", ins, outs[0], axis=node.attrs["dim"] % rank)


@lowers("gather")
def gather(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    e.op1("GatherElements", ins, outs[0], axis=node.attrs["dim"] % rank)


@lowers("roll")
def roll(e, node, ins, outs):
    shifts, dims = node.attrs["shifts"], node.attrs.get("dims")
    if dims is None or dims == []:
        raise NoLowering
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    shape = node.inputs[0].shape
    y = ins[0]
    for i, (s, d) in enumerate(zip(shifts, dims)):
        d %= len(shape)
        n = shape[d]
        s %= n
        last = i == len(dims) - 1
        if s == 0:
            if last:
                e.op1("Identity", [y], outs[0])
            continue
        head = e.op1("Slice", [y, e.i64([n - s], "s"), e.i64([n], "e"), e.i64([d], "a")])
        tail = e.op1("Slice", [y, e.i64([0], "s"), e.i64([n - s], "e"), e.i64([d], "a")])
        y = e.op1("Concat", [head, tail], outs[0] if last else None, axis=d)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@lowers("pad")
def pad(e, node, ins, outs):
    a = node.attrs
    mode = a["mode"]
    if mode not in _PAD_MODES or (mode == "circular" and e.opset < 19):
        raise NoLowering
    rank = len(node.inputs[0].shape)
    p = list(a["pad"])
    begin, end = [0] * rank, [0] * rank
    for i in range(len(p) // 2):
        begin[rank - 1 - i], end[rank - 1 - i] = p[2 * i], p[2 * i + 1]
    args = [ins[0], e.i64(begin + end, "pads")]
    if mode == "constant":
        args.append(_scalar(e, a["value"] or 0.0, node.inputs[0].dtype, "value"))
    e.op1("Pad", args, outs[0], mode=_PAD_MODES[mode])


@lowers("pixel_shuffle")
def pixel_shuffle(e, node, ins, outs):
    if len(node.inputs[0].shape) != 4:
        raise NoLowering
    e.op1("DepthToSpace", ins, outs[0], blocksize=int(node.attrs["upscale_factor"]), mode="CRD")


@lowers("channel_shuffle")
def channel_shuffle(e, node, ins, outs):
    shape = list(node.inputs[0].shape)
    g = int(node.attrs["groups"])
    y = e.op1("Reshape", [ins[0], e.i64([shape[0], g, shape[1] // g] + shape[2:], "shape")])
    y = e.op1("Transpose", [y], perm=[0, 2, 1] + list(range(3, len(shape) + 1)))
    e.op1("Reshape", [y, e.i64(shape, "shape")], outs[0])


_REDUCE = {"mean": ("ReduceMean", 18), "sum": ("ReduceSum", 13), "amax": ("ReduceMax", 18),
           "amin": ("ReduceMin", 18)}


@lowers(*_REDUCE)
def reduce(e, node, ins, outs):
    op_type, since = _REDUCE[node.op]
    rank = len(node.inputs[0].shape)
    dims = node.attrs["dims"]
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = sorted(d % rank for d in dims) if dims else list(range(rank))
    _axes_input(e, op_type, ins[0], dims, outs[0], since, keepdims=int(bool(node.attrs["keepdim"])))


@lowers("prod")
def prod(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    _axes_input(e, "ReduceProd", ins[0], [node.attrs["dim"] % rank], outs[0], 18,
                keepdims=int(bool(node.attrs["keepdim"])))


@lowers("norm")
def norm(e, node, ins, outs):
    p = float(node.attrs["p"])
    if p not in (1.0, 2.0):
        raise NoLowering
    rank = len(node.inputs[0].shape)
    dims = sorted(d % rank for d in node.attrs["dims"]) if node.attrs["dims"] else list(range(rank))
    _axes_input(e, "ReduceL2" if p == 2.0 else "ReduceL1", ins[0], dims, outs[0], 18,
                keepdims=int(bool(node.attrs["keepdim"])))


@lowers("argmax")
def argmax(e, node, ins, outs):
    rank = len(node.inputs[0].shape)
    e.op1("ArgMax", ins, outs[0], axis=node.attrs["dim"] % rank, keepdims=int(bool(node.attrs["keepdim"])))


@lowers("einsum")
def einsum(e, node, ins, outs):
    e.op1("Einsum", ins, outs[0], equation=node.attrs["equation"])
