"""Rules for ATen ops, the vocabulary of graphs that come from ``torch.export`` (the fallback
when symbolic tracing fails). They reuse the function rules of :mod:`graphc.frontends.fx_ops`
where the ATen signature matches the functional one; any other ATen op stays an opaque call of
its ``torch.ops.aten`` overload, which runs (and saves) anywhere torch does.
"""
from __future__ import annotations

import torch

from graphc.frontends import fx_ops as R

aten = torch.ops.aten


def _batch_norm(cv, n, args, kwargs):
    names = ["input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    if vals.get("training") or vals.get("running_mean") is None or vals.get("running_var") is None:
        raise R.NoRule
    x = R._x(args, kwargs)
    c = x.shape[1]
    for k, fill in (("weight", torch.ones), ("bias", torch.zeros)):
        if vals.get(k) is None:
            vals[k] = cv.param(fill(c), name=f"{cv.node_name}.{k}")
    ins = [x] + [cv.value(vals[k]) for k in names[1:5]]
    return cv.emit("batch_norm", ins, {"eps": float(vals["eps"])} if "eps" in vals else {})


def _slice(cv, n, args, kwargs):
    x = R._x(args, kwargs)
    dim = R._dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), len(x.shape))
    start = args[2] if len(args) > 2 else kwargs.get("start")
    end = args[3] if len(args) > 3 else kwargs.get("end")
    step = args[4] if len(args) > 4 else kwargs.get("step", 1)
    idx = (slice(None),) * dim + (slice(start, end, step),)
    return R.index_value(cv, x, idx)


def _select(cv, n, args, kwargs):
    x = R._x(args, kwargs)
    dim = R._dim(args[1], len(x.shape))
    return R.index_value(cv, x, (slice(None),) * dim + (int(args[2]),))


ATEN_RULES = {
    aten.conv1d: R._conv_fn(1), aten.conv2d: R._conv_fn(2), aten.linear: R._linear_fn,
    aten.conv_transpose1d: R._conv_transpose_fn(1), aten.conv_transpose2d: R._conv_transpose_fn(2),
    aten.batch_norm: _batch_norm, aten.layer_norm: R._layer_norm_fn,
    aten.add: R._binary("add"), aten.sub: R._binary("sub"),
    aten.mul: R._binary("mul"), aten.div: R._binary("div"), aten.rsub: R._rbinary("sub"),
    aten.matmul: R._matmul, aten.bmm: R._matmul,
    aten.view: R._reshape, aten.reshape: R._reshape, aten._unsafe_view: R._reshape,
    aten.flatten: R._flatten, aten.permute: R._permute, aten.transpose: R._transpose,
    aten.expand: R._expand, aten.cat: R._cat, aten.unsqueeze: R._unsqueeze, aten.squeeze: R._squeeze,
    aten.split: R._split, aten.chunk: R._split, aten.slice: _slice, aten.select: _select,
    aten.mean: R._reduce("mean"), aten.sum: R._reduce("sum"), aten.amax: R._reduce("amax"),
    aten.softmax: R._softmax("softmax"), aten._softmax: R._softmax("softmax"),
    aten.max_pool2d: R._pool_fn("max"), aten.avg_pool2d: R._pool_fn("avg"),
    aten.adaptive_avg_pool2d: R._adaptive_fn("adaptive_avg_pool2d"),
    aten.dropout: R._dropout_fn, aten.contiguous: R._identity, aten.clone: R._identity,
    aten.relu: R._fn_unary("relu"), aten.sigmoid: R._fn_unary("sigmoid"),
    aten.tanh: R._fn_unary("tanh"), aten.silu: R._fn_unary("silu"),
    aten.hardswish: R._fn_unary("hardswish"),
    aten.hardsigmoid: R._fn_unary("hardsigmoid"), aten.hardtanh: R._fn_unary("hardtanh", min_val=-1.0, max_val=1.0),
    aten.gelu: lambda cv, n, a, k: cv.emit("gelu", [R._x(a, k)], {"approximate": k.get("approximate", "none")}),
    aten.scaled_dot_product_attention: R._sdpa,
}


def _register_tensor_rules() -> None:
    from graphc.frontends import fx_ops_tensor

    ATEN_RULES.update(fx_ops_tensor.ATEN)


_register_tensor_rules()


def aten_rule(target):
    packet = getattr(target, "overloadpacket", None)
    return ATEN_RULES.get(packet) if packet is not None else None
