"""Elementwise ops: activations and other unary maps, and broadcasting binary arithmetic.

Binary ops take two tensor operands with numpy broadcasting; scalars in the source model
become 0-d ``const`` params, so every operand is a Value.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from graphc.ir import channel_rules as ch
from graphc.ir import cost_rules as co
from graphc.ir.ops import Attr, defop
from graphc.ir.ops import rules as sh
from graphc.ir.types import torch_dtype

_EW = co.per_output(1)
_ZERO = ("keeps_zero",)
_FUSE = ("fusable",)


def _unary(name, fn, *, traits=(), shape=sh.same_float, attrs=None, doc=""):
    """A one-operand map ``fn(x, *attr values in declaration order)``."""
    keys = list(attrs or {})
    defop(name, lambda t, x, **a: t.call(fn, x, *(a[k] for k in keys)), attrs=attrs or {},
          traits=("elementwise", "unary", *traits), shape=shape, channels=ch.SAME, cost=_EW,
          doc=doc or f"{getattr(fn, '__module__', 'torch')}.{getattr(fn, '__name__', name)} elementwise.")


# -- activations ------------------------------------------------------------------------------
_unary("relu", torch.relu, traits=_ZERO + _FUSE)
_unary("relu6", F.relu6, traits=_ZERO + _FUSE)
_unary("sigmoid", torch.sigmoid, traits=_FUSE)
_unary("tanh", torch.tanh, traits=_ZERO + _FUSE)
_unary("silu", F.silu, traits=_ZERO + _FUSE)
_unary("hardswish", F.hardswish, traits=_ZERO + _FUSE)
_unary("hardsigmoid", F.hardsigmoid, traits=_FUSE)
_unary("mish", F.mish, traits=_ZERO)
_unary("softsign", F.softsign, traits=_ZERO, shape=None, doc="x / (1 + |x|).")
_unary("selu", F.selu, traits=_ZERO, shape=None)
_unary("leaky_relu", F.leaky_relu, traits=_ZERO + _FUSE, attrs={"negative_slope": Attr("float", 0.01)})
_unary("elu", F.elu, traits=_ZERO, attrs={"alpha": Attr("float", 1.0)})
_unary("celu", F.celu, traits=_ZERO, shape=None, attrs={"alpha": Attr("float", 1.0)})
_unary("softplus", F.softplus, shape=None, attrs={"beta": Attr("float", 1.0), "threshold": Attr("float", 20.0)})
_unary("hardtanh", F.hardtanh, traits=_FUSE, shape=None,
       attrs={"min_val": Attr("float", -1.0), "max_val": Attr("float", 1.0)})
_unary("clamp", torch.clamp, traits=_FUSE, shape=None, attrs={"min": Attr("float?", None), "max": Attr("float?", None)})
defop("gelu", lambda t, x, *, approximate: t.call(F.gelu, x, approximate=approximate),
      attrs={"approximate": Attr("str", "none")}, traits=("elementwise", "unary", *_ZERO, *_FUSE),
      shape=sh.gelu, channels=ch.SAME, cost=_EW, doc="GELU, exact (erf) or ``approximate='tanh'``.")

# -- other unary maps -------------------------------------------------------------------------
for _name, _fn, _z in (("exp", torch.exp, False), ("log", torch.log, False), ("sqrt", torch.sqrt, True),
                       ("rsqrt", torch.rsqrt, False), ("neg", torch.neg, True), ("abs", torch.abs, True),
                       ("erf", torch.erf, False), ("reciprocal", torch.reciprocal, False),
                       ("floor", torch.floor, True), ("ceil", torch.ceil, True), ("round", torch.round, True),
                       ("sign", torch.sign, True), ("sin", torch.sin, True), ("cos", torch.cos, False),
                       ("not", torch.logical_not, False)):
    _unary(_name, _fn, traits=_ZERO if _z else (), shape=None)

defop("identity", lambda t, x: x, traits=("elementwise", "unary", "view", "keeps_zero"), shape=sh.same_any,
      channels=ch.SAME, cost=co.view_rule, doc="The identity.")
defop("cast", lambda t, x, *, dtype: t.method("to", x, torch_dtype(dtype)), attrs={"dtype": Attr("str")},
      traits=("elementwise", "unary", "keeps_zero"), shape=sh.cast, channels=ch.SAME, cost=co.movement_rule,
      doc="Convert to ``dtype`` (f32, i64, bool...).")

# -- binary -------------------------------------------------------------------------------------
_ARITH_INT = sh.binary(ints=True)
for _name, _fn, _shape, _traits in (
        ("add", operator.add, _ARITH_INT, _ZERO + _FUSE), ("sub", operator.sub, _ARITH_INT, _ZERO),
        ("mul", operator.mul, _ARITH_INT, ()), ("div", torch.div, sh.binary(), ()), ("pow", torch.pow, None, ()),
        ("maximum", torch.maximum, _ARITH_INT, _ZERO), ("minimum", torch.minimum, _ARITH_INT, _ZERO),
        ("eq", torch.eq, sh.binary(out_dtype="bool"), ()), ("lt", torch.lt, sh.binary(out_dtype="bool"), ()),
        ("gt", torch.gt, sh.binary(out_dtype="bool"), ()), ("le", torch.le, sh.binary(out_dtype="bool"), ()),
        ("ge", torch.ge, sh.binary(out_dtype="bool"), ()),
        ("and", torch.logical_and, None, ()), ("or", torch.logical_or, None, ())):
    defop(_name, (lambda f: lambda t, a, b: t.call(f, a, b))(_fn), operands=("a", "b"),
          traits=("elementwise", "binary", *_traits), shape=_shape, channels=ch.BROADCAST, cost=_EW,
          doc=f"{_name}(a, b) with numpy broadcasting.")

defop("floor_divide", lambda t, a, b: t.call(torch.div, a, b, rounding_mode="floor"), operands=("a", "b"),
      traits=("elementwise", "binary"), channels=ch.BROADCAST, cost=_EW, doc="floor(a / b), broadcast.")
defop("mod", lambda t, a, b: t.call(torch.remainder, a, b), operands=("a", "b"),
      traits=("elementwise", "binary"), channels=ch.BROADCAST, cost=_EW, doc="a mod b with the sign of b (torch.remainder).")
defop("prelu", lambda t, x, w: t.call(torch.where, t.call(operator.ge, x, 0), x, t.call(operator.mul, x, w)),
      operands=("x", "slope"), traits=("elementwise", "binary"), channels=ch.BROADCAST, cost=_EW,
      doc="PReLU: x where x >= 0, else slope * x, the slope broadcast against x (ONNX PRelu).")
defop("where", lambda t, c, a, b: t.call(torch.where, c, a, b), operands=("cond", "a", "b"),
      traits=("elementwise",), shape=sh.where, channels=ch.WHERE, cost=_EW, doc="a where cond else b, broadcast.")


def _sum_n(t, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = t.call(operator.add, out, x)
    return out


defop("sum_n", _sum_n, operands=("+xs",), traits=("elementwise", "keeps_zero"), shape=sh.sum_n,
      channels=ch.WHERE, cost=co.sum_n_rule, doc="Sum of any number of broadcast operands (ONNX Sum).")
