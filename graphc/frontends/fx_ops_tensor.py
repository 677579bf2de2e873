"""fx rules for tensor functions of modern vision code, each lowered to IR ops whose channel
rules already say how channels flow (so pruning sees through them):

- ``addcmul`` / ``addcdiv`` (ConvNeXt-V2's global response norm): ``x + value * a * b``
  (``a / b``) as mul/div, mul and add: broadcast ties;
- ``Tensor.norm`` / ``torch.norm`` / ``torch.linalg.vector_norm`` with p 1 or 2 over given
  dims: the ``norm`` reduction (reduced axes absorbed, kept axes tied);
- ``unbind`` (Swin's ``q, k, v = qkv.unbind(0)``): one ``select`` per index, which freezes
  only the unbound axis;
- ``F.group_norm`` (PoolFormer): the ``group_norm`` op (whole normalisation groups go at once).

Registered into :mod:`graphc.frontends.fx_ops`'s tables (and the ATen table for graphs from
torch.export) when that module is imported.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from graphc.frontends.fx_ops import NoRule, _dim, _x
from graphc.ir import Value


def _scaled_pointwise(op: str):
    def rule(cv, n, args, kwargs):
        names = ["input", "tensor1", "tensor2"]
        vals = dict(zip(names, args))
        vals.update(kwargs)
        value = vals.get("value", 1)
        if isinstance(value, (torch.Tensor, Value)) or vals.get("out") is not None or len(args) > 3:
            raise NoRule
        # Any of the three may be the constant (GRN: ``addcmul(bias, weight, x * n)``).
        like = next((v for v in (vals.get(k) for k in names) if isinstance(v, Value)), None)
        if like is None:
            raise NoRule
        x, a, b = (cv.value(vals[k], like) for k in names)
        y = cv.emit(op, [a, b], name=f"{cv.node_name}.{op}")
        if value != 1:
            y = cv.emit("mul", [y, cv.const(float(value), like)], name=f"{cv.node_name}.scale")
        return cv.emit("add", [x, y])
    return rule


def _norm(cv, n, args, kwargs):
    """torch.norm / Tensor.norm(p, dim, keepdim) and linalg.vector_norm(ord, dim, keepdim)."""
    x = _x(args, kwargs)
    vector = n.target is torch.linalg.vector_norm
    names = ["input", "ord" if vector else "p", "dim", "keepdim"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    if vals.get("dtype") is not None or vals.get("out") is not None:
        raise NoRule
    p = vals.get("ord" if vector else "p", 2)
    dims = vals.get("dim")
    r = len(x.shape)
    if p == "fro" and (dims is None or isinstance(dims, int) or len(dims) <= 2):
        p = 2  # Frobenius = 2-norm of the flattened entries (over one or two axes)
    if p is None:
        p = 2
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or float(p) not in (1.0, 2.0):
        raise NoRule  # other orders: no IR op lowers them everywhere; kept opaque
    dims = list(range(r)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    return cv.emit("norm", [x], {"dims": [_dim(d, r) for d in dims], "p": float(p),
                                 "keepdim": bool(vals.get("keepdim", False))})


def _unbind(cv, n, args, kwargs):
    x = _x(args, kwargs)
    dim = _dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), len(x.shape))
    return tuple(cv.emit("select", [x], {"dim": dim, "index": i}, name=f"{cv.node_name}.{i}")
                 for i in range(x.shape[dim]))


def _group_norm_fn(cv, n, args, kwargs):
    names = ["input", "num_groups", "weight", "bias", "eps"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    x = _x(args, kwargs)
    c = x.shape[1] if len(x.shape) > 1 else 0
    groups = vals["num_groups"]
    if not isinstance(groups, int) or groups < 1 or not c or c % groups:
        raise NoRule
    w, b = vals.get("weight"), vals.get("bias")
    if (w is None) != (b is None):  # the op takes both or neither: make the missing one explicit
        w = w if w is not None else torch.ones(c)
        b = b if b is not None else torch.zeros(c)
    wb = [cv.value(w), cv.value(b)] if w is not None else []
    return cv.emit("group_norm", [x] + wb, {"num_groups": groups, "eps": float(vals.get("eps", 1e-5))})


FUNCTIONS = {
    torch.addcmul: _scaled_pointwise("mul"), torch.addcdiv: _scaled_pointwise("div"),
    torch.norm: _norm, torch.linalg.vector_norm: _norm,
    torch.unbind: _unbind, F.group_norm: _group_norm_fn,
}
METHODS = {
    "addcmul": _scaled_pointwise("mul"), "addcdiv": _scaled_pointwise("div"), "norm": _norm, "unbind": _unbind,
}
ATEN = {
    torch.ops.aten.addcmul: _scaled_pointwise("mul"), torch.ops.aten.addcdiv: _scaled_pointwise("div"),
    torch.ops.aten.unbind: _unbind,
}
