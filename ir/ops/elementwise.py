"""Elementwise ops: activations and other unary maps, and broadcasting binary arithmetic.

Binary ops take two tensor operands with numpy broadcasting; scalars in the source model
become 0-d ``const`` params, so every operand is a Value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from graphc.ir.ops import register_op

_UNARY = {
    "relu": lambda x: F.relu(x),
    "relu6": lambda x: F.relu6(x),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "mish": F.mish,
    "selu": F.selu,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "neg": torch.neg,
    "abs": torch.abs,
    "erf": torch.erf,
    "reciprocal": torch.reciprocal,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "round": torch.round,
    "sign": torch.sign,
    "sin": torch.sin,
    "cos": torch.cos,
    "not": torch.logical_not,
    "identity": lambda x: x,
}
for _name, _fn in _UNARY.items():
    register_op(_name, (lambda f: lambda x: f(x))(_fn), tags=("elementwise", "unary"))

register_op("gelu", lambda x, approximate="none": F.gelu(x, approximate=approximate), tags=("elementwise", "unary"))
register_op("leaky_relu", lambda x, negative_slope=0.01: F.leaky_relu(x, negative_slope), tags=("elementwise", "unary"))
register_op("elu", lambda x, alpha=1.0: F.elu(x, alpha), tags=("elementwise", "unary"))
register_op("celu", lambda x, alpha=1.0: F.celu(x, alpha), tags=("elementwise", "unary"))
register_op("softplus", lambda x, beta=1.0, threshold=20.0: F.softplus(x, beta, threshold), tags=("elementwise", "unary"))
register_op("hardtanh", lambda x, min_val=-1.0, max_val=1.0: F.hardtanh(x, min_val, max_val), tags=("elementwise", "unary"))
register_op("clamp", lambda x, min=None, max=None: torch.clamp(x, min, max), tags=("elementwise", "unary"))
register_op("cast", lambda x, dtype: x.to(_torch_dtype(dtype)), tags=("elementwise", "unary"))


def _torch_dtype(short):
    from graphc.ir.types import torch_dtype

    return torch_dtype(short)


_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "eq": torch.eq,
    "lt": torch.lt,
    "gt": torch.gt,
    "le": torch.le,
    "ge": torch.ge,
    "and": torch.logical_and,
    "or": torch.logical_or,
}
for _name, _fn in _BINARY.items():
    register_op(_name, (lambda f: lambda a, b: f(a, b))(_fn), tags=("elementwise", "binary"))

register_op("floor_divide", lambda a, b: torch.div(a, b, rounding_mode="floor"), tags=("elementwise", "binary"))
register_op("mod", lambda a, b: torch.remainder(a, b), tags=("elementwise", "binary"))
register_op("prelu", lambda x, w: torch.where(x >= 0, x, x * w), tags=("elementwise", "binary"),
            doc="PReLU: x where x >= 0, else slope * x, the slope broadcast against x (ONNX PRelu).")
register_op("where", lambda c, a, b: torch.where(c, a, b), tags=("elementwise",))
register_op("sum_n", lambda *xs: _sum_n(xs), tags=("elementwise",), doc="Sum of any number of broadcast operands (ONNX Sum).")


def _sum_n(xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out
