"""ONNX op -> graphc IR op handlers, one per ONNX op type.

A handler receives a :class:`NodeContext` and returns one IR Value (or folded numpy array) per
non-empty ONNX output. It raises :class:`Fallback` when the node uses a form graphc does not
map (dynamic shape operands, training-mode outputs, exotic attributes); the node is then kept
as an ``opaque`` node, never dropped. Attribute defaults follow the ONNX spec of the model's
opset (``cx.opset``), so old and new forms of an op (attribute vs. input operands) both map.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from graphc.frontends.onnx import Fallback, attr_to_json
from graphc.ir.graph import Value
from graphc.ir.types import TensorType, dtype_from_onnx, numpy_dtype

HANDLERS: dict[tuple[str, str], Callable] = {}


def handles(*op_types: str):
    def deco(fn):
        for t in op_types:
            HANDLERS[("", t)] = fn
        return fn

    return deco


def _schema_default(node, opset: int, name: str):
    import onnx

    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return None
    a = schema.attributes.get(name)
    if a is None or not a.default_value.name:
        return None
    return onnx.helper.get_attribute_value(a.default_value)


class NodeContext:
    """What a handler may ask about its ONNX node, and the only way it adds IR nodes."""

    def __init__(self, importer, node, base: str):
        self.imp = importer
        self.node = node
        self.name = base
        self.opset = importer.opset
        self.inputs = list(node.input)
        self.attrs = {a.name: a for a in node.attribute}
        self._created = []

    # -- attributes and operands ----------------------------------------------------------
    def attr(self, name: str, default=None):
        """The attribute's value; when the node omits it, ``default`` or else the default that
        ONNX's own schema for this op and opset declares (None when it declares none)."""
        from onnx import helper

        a = self.attrs.get(name)
        if a is None:
            return default if default is not None else _schema_default(self.node, self.opset, name)
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        return v

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and bool(self.inputs[i])

    def const(self, i: int):
        if not self.has(i):
            return None
        return self.imp.consts.get(self.inputs[i])

    def need_const(self, i: int) -> np.ndarray:
        c = self.const(i)
        if c is None:
            raise Fallback(f"input {i} of {self.node.op_type} is not constant")
        return c

    def type(self, i: int) -> TensorType:
        return self.imp.type_of(self.inputs[i])

    def shape(self, i: int) -> tuple[int, ...]:
        return self.type(i).shape

    def value(self, i: int, role: str | None = None, kind: str | None = None) -> Value:
        name = self.inputs[i]
        if name in self.imp.values:
            return self.imp.values[name]
        if name in self.imp.sequences:
            from graphc.errors import UnsupportedError

            raise UnsupportedError(f"ONNX node {self.node.name or self.name} ({self.node.op_type}) uses sequence "
                                   f"{name!r} in a way graphc cannot map to static tensors")
        if self.imp.consts[name].dtype.kind in "UO":
            raise Fallback("string tensor operand")
        return self.imp.param(name, (id(self.node), self.name), role, kind)

    @property
    def n_outputs(self) -> int:
        return sum(1 for o in self.node.output if o)

    def output_used(self, i: int) -> bool:
        return i < len(self.node.output) and bool(self.node.output[i])

    # -- building -------------------------------------------------------------------------
    def emit(self, op: str, inputs, attrs=None, name: str | None = None):
        n = self.imp.graph.add_node(op, list(inputs), attrs or {}, name=name or self.name)
        self._created.append(n)
        return n

    def out(self, op: str, inputs, attrs=None, name: str | None = None) -> Value:
        return self.emit(op, inputs, attrs, name).output

    def discard(self) -> None:
        for n in reversed(self._created):
            self.imp.graph.erase(n)
        self._created.clear()

    def opaque(self) -> list[Value]:
        """Keep the node as it is: an ``opaque`` IR node typed by onnx shape inference."""
        node = self.node
        types = self.imp.infer_types(node, node.name or self.name)
        inputs, slots = [], []
        for i, n in enumerate(self.inputs):
            if n:
                inputs.append(self.value(i, role=f"input{i}"))
                slots.append(i)
        attrs = {
            "source": "onnx",
            "op_type": node.op_type,
            "domain": node.domain or "",
            "opset": self.imp.opsets.get(node.domain or "", self.opset),
            "attributes": {a.name: attr_to_json(a) for a in node.attribute},
            "out_types": [str(t) for t in types],
        }
        if slots != list(range(len(slots))):
            attrs["input_slots"] = slots
        out_slots = [i for i, o in enumerate(node.output) if o]
        if out_slots != list(range(len(out_slots))):
            attrs["output_slots"] = out_slots
        n = self.imp.graph.add_node("opaque", inputs, attrs, name=self.name, out_types=types)
        return list(n.outputs)


def _ints(v):
    return [int(i) for i in np.asarray(v).reshape(-1).tolist()]


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- convolution and pooling ------------------------------------------------------------------
def _pads(cx: NodeContext, spatial, kernel, strides, dilations):
    """(begin, end) pads per spatial axis with auto_pad resolved."""
    rank = len(spatial)
    auto = cx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(cx.attr("pads", [0] * (2 * rank)))
        return p[:rank], p[rank:]
    if auto == "VALID":
        return [0] * rank, [0] * rank
    begin, end = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small = total // 2
        if auto == "SAME_UPPER":
            begin.append(small)
            end.append(total - small)
        else:
            begin.append(total - small)
            end.append(small)
    return begin, end


def _torch_pad(begin, end):
    """ONNX (begin..., end...) over the trailing axes -> torch F.pad order (last axis first)."""
    pad = []
    for b, e in zip(reversed(begin), reversed(end)):
        pad += [int(b), int(e)]
    return pad


def _spatial_prep(cx, x: Value, kernel, strides, dilations, pad_value=0.0):
    begin, end = _pads(cx, x.shape[2:], kernel, strides, dilations)
    if begin != end:
        x = cx.out("pad", [x], {"pad": _torch_pad(begin, end), "mode": "constant", "value": pad_value},
                   name=f"{cx.name}.pad")
        begin = [0] * len(begin)
    return x, [int(b) for b in begin]


@handles("Conv")
def conv(cx):
    w_t = cx.type(1)
    rank = len(w_t.shape) - 2
    if rank not in (1, 2, 3):
        raise Fallback
    kernel = list(cx.attr("kernel_shape", w_t.shape[2:]))
    strides = list(cx.attr("strides", [1] * rank))
    dil = list(cx.attr("dilations", [1] * rank))
    x, padding = _spatial_prep(cx, cx.value(0), kernel, strides, dil)
    ins = [x, cx.value(1, "weight")] + ([cx.value(2, "bias")] if cx.has(2) else [])
    attrs = {"stride": strides, "padding": padding, "dilation": dil, "groups": int(cx.attr("group", 1))}
    return [cx.out(f"conv{rank}d", ins, attrs)]


@handles("ConvTranspose")
def conv_transpose(cx):
    w_t = cx.type(1)
    rank = len(w_t.shape) - 2
    if rank not in (1, 2) or cx.attr("output_shape") is not None or cx.attr("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise Fallback
    p = list(cx.attr("pads", [0] * (2 * rank)))
    if p[:rank] != p[rank:]:
        raise Fallback
    attrs = {"stride": list(cx.attr("strides", [1] * rank)), "padding": p[:rank],
             "output_padding": list(cx.attr("output_padding", [0] * rank)),
             "dilation": list(cx.attr("dilations", [1] * rank)), "groups": int(cx.attr("group", 1))}
    ins = [cx.value(0), cx.value(1, "weight")] + ([cx.value(2, "bias")] if cx.has(2) else [])
    return [cx.out(f"conv_transpose{rank}d", ins, attrs)]


def _pool_common(cx, x_shape):
    rank = len(x_shape) - 2
    if rank not in (1, 2):
        raise Fallback
    kernel = list(cx.attr("kernel_shape"))
    strides = list(cx.attr("strides", [1] * rank))
    dil = list(cx.attr("dilations", [1] * rank))
    return rank, kernel, strides, dil


@handles("MaxPool")
def max_pool(cx):
    if cx.n_outputs > 1:
        raise Fallback
    rank, kernel, strides, dil = _pool_common(cx, cx.shape(0))
    x, padding = _spatial_prep(cx, cx.value(0), kernel, strides, dil, pad_value=-math.inf)
    attrs = {"kernel_size": kernel, "stride": strides, "padding": padding, "dilation": dil,
             "ceil_mode": bool(cx.attr("ceil_mode", 0))}
    return [cx.out(f"max_pool{rank}d", [x], attrs)]


@handles("AveragePool")
def avg_pool(cx):
    rank, kernel, strides, dil = _pool_common(cx, cx.shape(0))
    if any(d != 1 for d in dil):
        raise Fallback
    include = bool(cx.attr("count_include_pad", 0))
    begin, end = _pads(cx, cx.shape(0)[2:], kernel, strides, dil)
    if begin != end and not include:
        raise Fallback
    x, padding = _spatial_prep(cx, cx.value(0), kernel, strides, dil)
    attrs = {"kernel_size": kernel, "stride": strides, "padding": padding,
             "ceil_mode": bool(cx.attr("ceil_mode", 0)), "count_include_pad": include}
    return [cx.out(f"avg_pool{rank}d", [x], attrs)]


@handles("GlobalAveragePool")
def global_avg_pool(cx):
    rank = len(cx.shape(0)) - 2
    x = cx.value(0)
    if rank == 2:
        return [cx.out("adaptive_avg_pool2d", [x], {"output_size": [1, 1]})]
    if rank == 1:
        return [cx.out("adaptive_avg_pool1d", [x], {"output_size": [1]})]
    return [cx.out("mean", [x], {"dims": list(range(2, rank + 2)), "keepdim": True})]


@handles("GlobalMaxPool")
def global_max_pool(cx):
    rank = len(cx.shape(0)) - 2
    return [cx.out("amax", [cx.value(0)], {"dims": list(range(2, rank + 2)), "keepdim": True})]


# -- dense --------------------------------------------------------------------------------------
@handles("Gemm")
def gemm(cx):
    alpha, beta = float(cx.attr("alpha", 1.0)), float(cx.attr("beta", 1.0))
    a = cx.value(0)
    if cx.attr("transA", 0):
        a = cx.out("permute", [a], {"dims": [1, 0]}, name=f"{cx.name}.transpose_a")
    trans_b = bool(cx.attr("transB", 0))
    b = cx.const(1)
    c = cx.const(2) if cx.has(2) else None
    n_out = cx.shape(1)[0] if trans_b else cx.shape(1)[1]
    if b is not None and b.dtype.kind == "f":
        w = b if trans_b else b.T
        if alpha != 1.0:
            w = w * np.asarray(alpha, dtype=w.dtype)
        imp = cx.imp
        key = cx.inputs[1]
        if w is not b:
            key = f"{cx.inputs[1]}#gemm"
            imp.consts[key] = np.ascontiguousarray(w)
            if cx.inputs[1] in imp.from_init:
                imp.from_init.add(key)
        ins = [a, imp.param(key, (id(cx.node), cx.name), "weight") if key != cx.inputs[1] else cx.value(1, "weight")]
        bias_in = None
        if c is not None and c.size in (1, n_out) and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
            bias = np.broadcast_to(c.reshape(-1), (n_out,)) * np.asarray(beta, dtype=c.dtype)
            if beta != 1.0 or c.shape != (n_out,):
                bkey = f"{cx.inputs[2]}#gemm"
                imp.consts[bkey] = np.ascontiguousarray(bias)
                if cx.inputs[2] in imp.from_init:
                    imp.from_init.add(bkey)
                ins.append(imp.param(bkey, (id(cx.node), cx.name), "bias"))
            else:
                ins.append(cx.value(2, "bias"))
        elif cx.has(2):
            bias_in = cx.value(2, "bias")
        y = cx.out("linear", ins)
        if bias_in is not None:
            y = _scaled_add(cx, y, bias_in, beta)
        return [y]
    b_v = cx.value(1)
    if trans_b:
        b_v = cx.out("permute", [b_v], {"dims": [1, 0]}, name=f"{cx.name}.transpose_b")
    y = cx.out("matmul", [a, b_v])
    if alpha != 1.0:
        y = cx.out("mul", [y, cx.imp.graph.add_const(np.asarray(alpha, np.float32), f"{cx.name}.alpha")],
                   name=f"{cx.name}.alpha")
    if cx.has(2):
        y = _scaled_add(cx, y, cx.value(2, "bias"), beta)
    return [y]


def _scaled_add(cx, y, c, beta):
    if beta != 1.0:
        c = cx.out("mul", [c, cx.imp.graph.add_const(np.asarray(beta, np.float32), f"{cx.name}.beta")],
                   name=f"{cx.name}.beta")
    return cx.out("add", [y, c], name=f"{cx.name}.bias")


@handles("MatMul")
def matmul(cx):
    b = cx.const(1)
    if b is not None and b.ndim == 2 and b.dtype.kind == "f" and len(cx.shape(0)) >= 1:
        key = f"{cx.inputs[1]}#t"
        cx.imp.consts[key] = np.ascontiguousarray(b.T)
        if cx.inputs[1] in cx.imp.from_init:
            cx.imp.from_init.add(key)
        w = cx.imp.param(key, (id(cx.node), cx.name), "weight")
        return [cx.out("linear", [cx.value(0), w])]
    return [cx.out("matmul", [cx.value(0), cx.value(1)])]


# -- normalisation ------------------------------------------------------------------------------
@handles("BatchNormalization")
def batch_norm(cx):
    if cx.n_outputs > 1 or cx.attr("training_mode", 0) or cx.attr("spatial", 1) != 1:
        raise Fallback
    ins = [cx.value(0), cx.value(1, "weight"), cx.value(2, "bias"),
           cx.value(3, "running_mean", "buffer"), cx.value(4, "running_var", "buffer")]
    return [cx.out("batch_norm", ins, {"eps": float(cx.attr("epsilon"))})]


@handles("InstanceNormalization")
def instance_norm(cx):
    ins = [cx.value(0), cx.value(1, "weight"), cx.value(2, "bias")]
    return [cx.out("instance_norm", ins, {"eps": float(cx.attr("epsilon"))})]


@handles("LayerNormalization")
def layer_norm(cx):
    if cx.n_outputs > 1:
        raise Fallback
    shape = cx.shape(0)
    axis = _norm_axis(int(cx.attr("axis", -1)), len(shape))
    ins = [cx.value(0), cx.value(1, "weight")] + ([cx.value(2, "bias")] if cx.has(2) else [])
    return [cx.out("layer_norm", ins, {"normalized_shape": list(shape[axis:]), "eps": float(cx.attr("epsilon"))})]


@handles("GroupNormalization")
def group_norm(cx):
    groups = int(cx.attr("num_groups"))
    c = cx.shape(0)[1]
    if cx.opset >= 21:
        ws = [cx.value(1, "weight"), cx.value(2, "bias")]
    else:  # opset 18: scale and bias are per group
        s, b = cx.need_const(1), cx.need_const(2)
        ws = []
        for i, (arr, role) in enumerate(((s, "weight"), (b, "bias"))):
            key = f"{cx.inputs[i + 1]}#per_channel"
            cx.imp.consts[key] = np.repeat(arr, c // groups)
            cx.imp.from_init.add(key)
            ws.append(cx.imp.param(key, (id(cx.node), cx.name), role))
    return [cx.out("group_norm", [cx.value(0)] + ws, {"num_groups": groups, "eps": float(cx.attr("epsilon"))})]


@handles("LRN")
def lrn(cx):
    attrs = {"size": int(cx.attr("size")), "alpha": float(cx.attr("alpha", 1e-4)),
             "beta": float(cx.attr("beta", 0.75)), "k": float(cx.attr("bias", 1.0))}
    return [cx.out("lrn", [cx.value(0)], attrs)]


# -- elementwise --------------------------------------------------------------------------------
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
          "Neg": "neg", "Abs": "abs", "Erf": "erf", "Reciprocal": "reciprocal", "Floor": "floor",
          "Ceil": "ceil", "Round": "round", "Sign": "sign", "Sin": "sin", "Cos": "cos", "Not": "not",
          "HardSwish": "hardswish", "Mish": "mish", "Softsign": "softsign"}


@handles(*_UNARY)
def unary(cx):
    return [cx.out(_UNARY[cx.node.op_type], [cx.value(0)])]


@handles("Identity")
def identity(cx):
    return [cx.value(0)]


@handles("Softplus")
def softplus(cx):
    return [cx.out("softplus", [cx.value(0)], {"beta": 1.0, "threshold": 1e30})]


@handles("LeakyRelu")
def leaky_relu(cx):
    return [cx.out("leaky_relu", [cx.value(0)], {"negative_slope": float(cx.attr("alpha", 0.01))})]


@handles("Elu", "Celu")
def elu(cx):
    return [cx.out(cx.node.op_type.lower(), [cx.value(0)], {"alpha": float(cx.attr("alpha", 1.0))})]


@handles("Selu")
def selu(cx):
    if not (math.isclose(cx.attr("alpha", 1.67326), 1.6732632, rel_tol=1e-5)
            and math.isclose(cx.attr("gamma", 1.0507), 1.0507010, rel_tol=1e-5)):
        raise Fallback
    return [cx.out("selu", [cx.value(0)])]


@handles("Gelu")
def gelu(cx):
    return [cx.out("gelu", [cx.value(0)], {"approximate": cx.attr("approximate", "none")})]


@handles("HardSigmoid")
def hard_sigmoid(cx):
    alpha, beta = float(cx.attr("alpha", 0.2)), float(cx.attr("beta", 0.5))
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return [cx.out("hardsigmoid", [cx.value(0)])]
    g = cx.imp.graph
    y = cx.out("mul", [cx.value(0), g.add_const(np.asarray(alpha, np.float32), f"{cx.name}.alpha")], name=f"{cx.name}.scale")
    y = cx.out("add", [y, g.add_const(np.asarray(beta, np.float32), f"{cx.name}.beta")], name=f"{cx.name}.shift")
    return [cx.out("clamp", [y], {"min": 0.0, "max": 1.0})]


@handles("Clip")
def clip(cx):
    if cx.opset < 11:
        lo, hi = cx.attr("min"), cx.attr("max")
    else:
        lo = float(cx.need_const(1)) if cx.has(1) else None
        hi = float(cx.need_const(2)) if cx.has(2) else None
    if cx.type(0).dtype not in ("f32", "f16", "f64"):
        raise Fallback
    if lo == 0.0 and hi == 6.0:
        return [cx.out("relu6", [cx.value(0)])]
    if lo == 0.0 and hi is None:
        return [cx.out("relu", [cx.value(0)])]
    return [cx.out("clamp", [cx.value(0)], {"min": lo, "max": hi})]


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "eq",
           "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge", "And": "and", "Or": "or"}


@handles(*_BINARY)
def binary(cx):
    op = _BINARY[cx.node.op_type]
    if op == "div" and cx.type(0).dtype not in ("f32", "f16", "f64", "bf16"):
        raise Fallback  # ONNX integer division truncates; torch.div does not
    return [cx.out(op, [cx.value(0), cx.value(1)])]


@handles("Max", "Min", "Sum")
def variadic(cx):
    ins = [cx.value(i) for i in range(len(cx.inputs)) if cx.has(i)]
    if len(ins) == 1:
        return [ins[0]]
    if cx.node.op_type == "Sum":
        return [cx.out("sum_n", ins)]
    op = "maximum" if cx.node.op_type == "Max" else "minimum"
    y = ins[0]
    for v in ins[1:]:
        y = cx.out(op, [y, v])
    return [y]


@handles("Mean")
def mean_n(cx):
    ins = [cx.value(i) for i in range(len(cx.inputs)) if cx.has(i)]
    s = cx.out("sum_n", ins, name=f"{cx.name}.sum") if len(ins) > 1 else ins[0]
    k = cx.imp.graph.add_const(np.asarray(len(ins), dtype=np.float32), f"{cx.name}.count")
    return [cx.out("div", [s, k])]


@handles("Mod")
def mod(cx):
    if cx.attr("fmod", 0) or cx.type(0).dtype.startswith("f"):
        raise Fallback
    return [cx.out("mod", [cx.value(0), cx.value(1)])]


@handles("Where")
def where(cx):
    return [cx.out("where", [cx.value(0), cx.value(1), cx.value(2)])]


@handles("PRelu")
def prelu(cx):
    from graphc.ir.ops import has_op

    if not has_op("prelu"):
        raise Fallback
    return [cx.out("prelu", [cx.value(0), cx.value(1, "weight")])]


# -- softmax, dropout -------------------------------------------------------------------------
@handles("Softmax", "LogSoftmax")
def softmax(cx):
    op = "softmax" if cx.node.op_type == "Softmax" else "log_softmax"
    shape = cx.shape(0)
    rank = len(shape)
    if cx.opset >= 13:
        return [cx.out(op, [cx.value(0)], {"dim": _norm_axis(int(cx.attr("axis", -1)), rank)})]
    # Before opset 13 the input is coerced to 2-d [prod(:axis), prod(axis:)] first.
    axis = _norm_axis(int(cx.attr("axis", 1)), rank)
    if axis == rank - 1:
        return [cx.out(op, [cx.value(0)], {"dim": axis})]
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    x2 = cx.out("reshape", [cx.value(0)], {"shape": [outer, -1]}, name=f"{cx.name}.flatten")
    y2 = cx.out(op, [x2], {"dim": 1})
    return [cx.out("reshape", [y2], {"shape": list(shape)}, name=f"{cx.name}.unflatten")]


@handles("Dropout")
def dropout(cx):
    """Inference-mode Dropout; its optional mask output (all true then) folds to a constant."""
    if cx.attr("is_test", 1) == 0 or (cx.has(2) and bool(np.asarray(cx.need_const(2)).reshape(-1)[0])):
        raise Fallback("training-mode Dropout")
    p = cx.attr("ratio", 0.5)
    if cx.has(1):
        p = float(cx.need_const(1))
    out = [cx.out("dropout", [cx.value(0)], {"p": float(p)})]
    if cx.output_used(1):
        out.append(np.ones(cx.shape(0), dtype=bool if cx.opset >= 10 else numpy_dtype(cx.type(0).dtype)))
    return out


# -- shapes -------------------------------------------------------------------------------------
@handles("Flatten")
def flatten(cx):
    shape = cx.shape(0)
    axis = _norm_axis(int(cx.attr("axis", 1)), len(shape))
    if axis == 1 and len(shape) >= 2:
        return [cx.out("flatten", [cx.value(0)], {"start_dim": 1, "end_dim": -1})]
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    return [cx.out("reshape", [cx.value(0)], {"shape": [outer, -1]})]


@handles("Reshape")
def reshape(cx):
    target = _ints(cx.need_const(1))
    shape = cx.shape(0)
    if not cx.attr("allowzero", 0):
        target = [shape[i] if t == 0 else t for i, t in enumerate(target)]
    return [cx.out("reshape", [cx.value(0)], {"shape": target})]


@handles("Transpose")
def transpose(cx):
    rank = len(cx.shape(0))
    perm = list(cx.attr("perm", list(range(rank))[::-1]))
    return [cx.out("permute", [cx.value(0)], {"dims": perm})]


def _axes(cx, input_index: int, attr_name: str = "axes"):
    if cx.has(input_index):
        return _ints(cx.need_const(input_index))
    v = cx.attr(attr_name)
    return None if v is None else list(v)


@handles("Squeeze")
def squeeze(cx):
    shape = cx.shape(0)
    axes = _axes(cx, 1)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted(_norm_axis(a, len(shape)) for a in axes)
    if not axes:
        return [cx.value(0)]
    return [cx.out("squeeze", [cx.value(0)], {"dims": axes})]


@handles("Unsqueeze")
def unsqueeze(cx):
    axes = _axes(cx, 1)
    rank = len(cx.shape(0)) + len(axes)
    return [cx.out("unsqueeze", [cx.value(0)], {"dims": sorted(_norm_axis(a, rank) for a in axes)})]


@handles("Concat")
def concat(cx):
    rank = len(cx.shape(0))
    ins = [cx.value(i) for i in range(len(cx.inputs)) if cx.has(i) and 0 not in cx.shape(i)]
    if not ins:
        raise Fallback
    if len(ins) == 1:
        return [ins[0]]
    return [cx.out("concat", ins, {"dim": _norm_axis(int(cx.attr("axis")), rank)})]


@handles("Split")
def split(cx):
    shape = cx.shape(0)
    axis = _norm_axis(int(cx.attr("axis", 0)), len(shape))
    n_out = len(cx.node.output)
    if cx.has(1):
        sizes = _ints(cx.need_const(1))
    elif cx.attr("split") is not None:
        sizes = list(cx.attr("split"))
    else:
        k = int(cx.attr("num_outputs", n_out))
        chunk = -(-shape[axis] // k)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(k)]
    if any(not o for o in cx.node.output):
        raise Fallback
    n = cx.emit("split", [cx.value(0)], {"dim": axis, "sizes": sizes})
    return list(n.outputs)


@handles("SplitToSequence")
def split_to_sequence(cx):
    """A sequence of static length (the dynamo exporter's ``chunk`` without optimisation):
    the split's outputs, read back by SequenceAt / ConcatFromSequence / SequenceLength."""
    shape = cx.shape(0)
    axis = _norm_axis(int(cx.attr("axis", 0)), len(shape))
    keep = int(cx.attr("keepdims", 1))
    if cx.has(1):
        split = np.asarray(cx.need_const(1))
        if split.ndim == 0:
            k = int(split)
            sizes = [min(k, shape[axis] - i) for i in range(0, shape[axis], k)]
        else:
            sizes = _ints(split)
    else:
        sizes = [1] * shape[axis]
    if not cx.has(1) and not keep:
        parts = [cx.out("select", [cx.value(0)], {"dim": axis, "index": i}, name=f"{cx.name}.{i}")
                 for i in range(shape[axis])]
    else:
        parts = list(cx.emit("split", [cx.value(0)], {"dim": axis, "sizes": sizes}).outputs)
    return [Sequence(parts)]


class Sequence(list):
    """An ONNX sequence of static length: its items' IR values."""


def _sequence(cx, i: int) -> Sequence:
    seq = cx.imp.sequences.get(cx.inputs[i])
    if seq is None:
        raise Fallback("not a sequence of static length")
    return seq


@handles("SequenceAt")
def sequence_at(cx):
    seq = _sequence(cx, 0)
    return [seq[int(np.asarray(cx.need_const(1)))]]


@handles("SequenceLength")
def sequence_length(cx):
    return [np.array(len(_sequence(cx, 0)), dtype=np.int64)]


@handles("ConcatFromSequence")
def concat_from_sequence(cx):
    seq = _sequence(cx, 0)
    axis = int(cx.attr("axis"))
    if cx.attr("new_axis", 0):
        rank = len(seq[0].shape) + 1
        axis = _norm_axis(axis, rank)
        seq = [cx.out("unsqueeze", [v], {"dims": [axis]}, name=f"{cx.name}.unsqueeze") for v in seq]
    else:
        axis = _norm_axis(axis, len(seq[0].shape))
    return [cx.out("concat", list(seq), {"dim": axis})]


@handles("Slice")
def slice_(cx):
    shape = cx.shape(0)
    if cx.opset < 10:
        starts, ends = list(cx.attr("starts")), list(cx.attr("ends"))
        axes = list(cx.attr("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(cx.need_const(1)), _ints(cx.need_const(2))
        axes = _ints(cx.need_const(3)) if cx.has(3) else list(range(len(starts)))
        steps = _ints(cx.need_const(4)) if cx.has(4) else [1] * len(starts)
    y = cx.value(0)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _norm_axis(a, len(shape))
        if st <= 0:
            raise Fallback
        s, e, st = slice(s, e, st).indices(shape[a])
        e = max(e, s)
        if (s, e, st) == (0, shape[a], 1):
            continue
        y = cx.out("slice", [y], {"dim": a, "start": s, "end": e, "step": st})
    return [y]


@handles("Gather")
def gather(cx):
    shape = cx.shape(0)
    axis = _norm_axis(int(cx.attr("axis", 0)), len(shape))
    idx = cx.const(1)
    if idx is None:
        if len(cx.shape(1)) != 1:
            raise Fallback
        return [cx.out("index_select", [cx.value(0), cx.value(1)], {"dim": axis})]
    idx = np.where(idx < 0, idx + shape[axis], idx).astype(np.int64)
    if idx.ndim == 0:
        return [cx.out("select", [cx.value(0)], {"dim": axis, "index": int(idx)})]
    key = f"{cx.inputs[1]}#idx"
    cx.imp.consts[key] = idx.reshape(-1)
    iv = cx.imp.param(key, (id(cx.node), cx.name), "index", "const")
    y = cx.out("index_select", [cx.value(0), iv], {"dim": axis})
    if idx.ndim != 1:
        out = list(shape[:axis]) + list(idx.shape) + list(shape[axis + 1:])
        y = cx.out("reshape", [y], {"shape": out}, name=f"{cx.name}.reshape")
    return [y]


@handles("GatherElements")
def gather_elements(cx):
    axis = _norm_axis(int(cx.attr("axis", 0)), len(cx.shape(0)))
    return [cx.out("gather", [cx.value(0), cx.value(1, "index", "const")], {"dim": axis})]


@handles("Expand")
def expand(cx):
    target = _ints(cx.need_const(1))
    out = list(np.broadcast_shapes(cx.shape(0), tuple(target)))
    if tuple(out) == cx.shape(0):
        return [cx.value(0)]
    x = cx.value(0)
    if len(out) > len(x.shape):
        x = cx.out("reshape", [x], {"shape": [1] * (len(out) - len(x.shape)) + list(x.shape)}, name=f"{cx.name}.rank")
    return [cx.out("expand", [x], {"shape": out})]


@handles("Tile")
def tile(cx):
    return [cx.out("tile", [cx.value(0)], {"repeats": _ints(cx.need_const(1))})]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@handles("Pad")
def pad(cx):
    shape = cx.shape(0)
    rank = len(shape)
    mode = cx.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise Fallback
    if cx.opset < 11:
        pads, value = list(cx.attr("pads")), float(cx.attr("value", 0.0))
    else:
        pads = _ints(cx.need_const(1))
        value = float(cx.need_const(2)) if cx.has(2) else 0.0
    axes = _ints(cx.need_const(3)) if cx.has(3) else list(range(rank))
    n = len(axes)
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        a = _norm_axis(a, rank)
        begin[a], end[a] = pads[i], pads[n + i]
    first = next((i for i in range(rank) if begin[i] or end[i]), None)
    if first is None:
        return [cx.value(0)]
    torch_pad = _torch_pad(begin[first:], end[first:])
    attrs = {"pad": torch_pad, "mode": _PAD_MODES[mode]}
    if mode == "constant":
        attrs["value"] = value
    return [cx.out("pad", [cx.value(0)], attrs)]


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax", "ReduceMin": "amin",
           "ReduceL2": "norm", "ReduceProd": "prod"}


@handles(*_REDUCE)
def reduce(cx):
    rank = len(cx.shape(0))
    axes = _axes(cx, 1)
    if axes is None or not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return [cx.value(0)]
        axes = list(range(rank))
    axes = sorted(_norm_axis(a, rank) for a in axes)
    keep = bool(cx.attr("keepdims", 1))
    op = _REDUCE[cx.node.op_type]
    if op == "prod":
        if len(axes) != 1:
            raise Fallback
        return [cx.out("prod", [cx.value(0)], {"dim": axes[0], "keepdim": keep})]
    return [cx.out(op, [cx.value(0)], {"dims": axes, "keepdim": keep})]


@handles("ArgMax")
def argmax(cx):
    if cx.attr("select_last_index", 0):
        raise Fallback
    rank = len(cx.shape(0))
    return [cx.out("argmax", [cx.value(0)], {"dim": _norm_axis(int(cx.attr("axis", 0)), rank),
                                             "keepdim": bool(cx.attr("keepdims", 1))})]


@handles("Cast", "CastLike")
def cast(cx):
    try:
        dtype = dtype_from_onnx(int(cx.attr("to"))) if cx.node.op_type == "Cast" else cx.type(1).dtype
    except TypeError:
        raise Fallback from None
    if dtype == cx.type(0).dtype:
        return [cx.value(0)]
    return [cx.out("cast", [cx.value(0)], {"dtype": dtype})]


@handles("DepthToSpace")
def depth_to_space(cx):
    if cx.attr("mode", "DCR") != "CRD":
        raise Fallback
    return [cx.out("pixel_shuffle", [cx.value(0)], {"upscale_factor": int(cx.attr("blocksize"))})]


@handles("Einsum")
def einsum(cx):
    ins = [cx.value(i) for i in range(len(cx.inputs)) if cx.has(i)]
    return [cx.out("einsum", ins, {"equation": cx.attr("equation").replace(" ", "")})]


@handles("GatherND")
def gather_nd(cx):
    """Constant indices: the first k axes flattened into one, then one index_select."""
    idx = cx.const(1)
    if idx is None or cx.attr("batch_dims", 0):
        raise Fallback
    shape = cx.shape(0)
    k = idx.shape[-1]
    lead = shape[:k]
    idx = np.where(idx < 0, idx + np.array(lead), idx).astype(np.int64)
    flat = np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)), lead).reshape(-1).astype(np.int64)
    x = cx.value(0)
    if k != 1:
        x = cx.out("reshape", [x], {"shape": [int(np.prod(lead, dtype=np.int64))] + list(shape[k:])},
                   name=f"{cx.name}.flatten")
    key = f"{cx.inputs[1]}#flat"
    cx.imp.consts[key] = flat
    y = cx.out("index_select", [x, cx.imp.param(key, (id(cx.node), cx.name), "index", "const")], {"dim": 0})
    out = list(idx.shape[:-1]) + list(shape[k:])
    return [cx.out("reshape", [y], {"shape": out}, name=f"{cx.name}.reshape")]
