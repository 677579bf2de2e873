"""Rules that map torch.fx nodes onto IR ops: ``torch.nn`` layers, and the functions and
tensor methods torchvision-style models call.

A rule is ``rule(cv, node, args, kwargs) -> Value | tuple``: ``args`` hold IR Values where the
fx graph had dynamic tensors, recorded tensors where it had constant ones, and plain Python
values elsewhere; ``cv.results[node]`` is the node's recorded output, so shape-only ops
(reshape, expand, split sizes) take their static shapes from it. A rule raises
:class:`NoRule` for a form it does not cover; the front-end then keeps the call as an opaque
node. Dims are normalised to non-negative ints so passes can compare them.
"""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from graphc.frontends import fx_inplace
from graphc.ir import Value


class NoRule(Exception):
    """This call has a form the rule does not cover."""


def _pair(v, n):
    if isinstance(v, (list, tuple)):
        return [int(i) for i in v]
    return [int(v)] * n


def _dim(d, rank):
    return int(d) % rank if rank else int(d)


def _shape(cv):
    return list(cv.results[cv.node].shape)


def _x(args, kwargs, key="input"):
    x = args[0] if args else kwargs.get(key)
    if not isinstance(x, Value):
        raise NoRule
    return x


# -- layers -----------------------------------------------------------------------------------
def _conv(cv, m, x):
    nd = m.weight.dim() - 2
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    ins = [x, cv.param(m.weight)] + ([cv.param(m.bias)] if m.bias is not None else [])
    attrs = {"stride": _pair(m.stride, nd)}
    if transposed:
        attrs.update(padding=_pair(m.padding, nd), output_padding=_pair(m.output_padding, nd))
    else:
        pads = list(m._reversed_padding_repeated_twice)  # F.pad order: last axis first
        before, after = pads[0::2][::-1], pads[1::2][::-1]
        if m.padding_mode != "zeros" or before != after:
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            ins[0] = cv.emit("pad", [x], {"pad": pads, "mode": mode, "value": 0.0}, name=f"{cv.node_name}.pad")
            before = [0] * nd
        attrs["padding"] = before
    attrs.update(dilation=_pair(m.dilation, nd), groups=int(m.groups))
    op = f"conv_transpose{nd}d" if transposed else f"conv{nd}d"
    return cv.emit(op, ins, attrs)


def _linear(cv, m, x):
    return cv.emit("linear", [x, cv.param(m.weight)] + ([cv.param(m.bias)] if m.bias is not None else []))


def _ones(cv, m, n, what):
    fill = 1.0 if what == "weight" else 0.0
    return cv.param(torch.full((n,), fill), name=f"{cv.node_name}.{what}")


def _batch_norm(cv, m, x):
    w = cv.param(m.weight) if m.weight is not None else _ones(cv, m, m.num_features, "weight")
    b = cv.param(m.bias) if m.bias is not None else _ones(cv, m, m.num_features, "bias")
    return cv.emit("batch_norm", [x, w, b, cv.param(m.running_mean), cv.param(m.running_var)], {"eps": float(m.eps)})


def _layer_norm(cv, m, x):
    wb = [cv.param(t) for t in (m.weight, m.bias) if t is not None]
    if m.weight is None and m.bias is not None:
        raise NoRule
    return cv.emit("layer_norm", [x] + wb, {"normalized_shape": list(m.normalized_shape), "eps": float(m.eps)})


def _group_norm(cv, m, x):
    wb = [cv.param(m.weight), cv.param(m.bias)] if m.affine else []
    return cv.emit("group_norm", [x] + wb, {"num_groups": int(m.num_groups), "eps": float(m.eps)})


def _instance_norm(cv, m, x):
    wb = [cv.param(m.weight), cv.param(m.bias)] if m.affine else []
    return cv.emit("instance_norm", [x] + wb, {"eps": float(m.eps)})


def _max_pool(cv, m, x):
    nd = 1 if isinstance(m, nn.MaxPool1d) else 2
    return cv.emit(f"max_pool{nd}d", [x], {
        "kernel_size": _pair(m.kernel_size, nd), "stride": _pair(m.stride or m.kernel_size, nd),
        "padding": _pair(m.padding, nd), "dilation": _pair(m.dilation, nd), "ceil_mode": bool(m.ceil_mode)})


def _avg_pool(cv, m, x):
    nd = 1 if isinstance(m, nn.AvgPool1d) else 2
    attrs = {"kernel_size": _pair(m.kernel_size, nd), "stride": _pair(m.stride or m.kernel_size, nd),
             "padding": _pair(m.padding, nd), "ceil_mode": bool(m.ceil_mode),
             "count_include_pad": bool(m.count_include_pad)}
    if nd == 2:
        attrs["divisor_override"] = m.divisor_override
    return cv.emit(f"avg_pool{nd}d", [x], attrs)


def _adaptive(cv, op, x, output_size):
    nd = 1 if op.endswith("1d") else 2
    size = list(output_size) if isinstance(output_size, (list, tuple)) else [output_size] * nd
    size = [int(x.shape[-nd + i]) if s is None else int(s) for i, s in enumerate(size)]
    return cv.emit(op, [x], {"output_size": size})


def _unary(op, **fixed):
    def rule(cv, m, x):
        attrs = {k: (getattr(m, src) if isinstance(src, str) else src(m)) for k, src in fixed.items()}
        return cv.emit(op, [x], attrs)
    return rule


def _mha(cv, m, q, k, v, key_padding_mask=None, need_weights=True, attn_mask=None, average_attn_weights=True,
         is_causal=False):
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise NoRule
    ins = [q, k, v, cv.param(m.in_proj_weight), cv.param(m.in_proj_bias), cv.param(m.out_proj.weight),
           cv.param(m.out_proj.bias)]
    out = cv.emit("multi_head_attention", ins, {"num_heads": int(m.num_heads), "batch_first": bool(m.batch_first)})
    return (out, None)


def _pad_module(mode):
    def rule(cv, m, x):
        return cv.emit("pad", [x], {"pad": [int(p) for p in m.padding], "mode": mode,
                                    "value": float(getattr(m, "value", 0.0))})
    return rule


def _mha_ok(m):
    return m._qkv_same_embed_dim and m.in_proj_bias is not None and m.bias_k is None and not m.add_zero_attn


_ACT = {
    nn.ReLU: _unary("relu"), nn.ReLU6: _unary("relu6"), nn.Sigmoid: _unary("sigmoid"), nn.Tanh: _unary("tanh"),
    nn.SiLU: _unary("silu"), nn.Hardswish: _unary("hardswish"), nn.Hardsigmoid: _unary("hardsigmoid"),
    nn.Mish: _unary("mish"), nn.SELU: _unary("selu"), nn.Softsign: _unary("softsign"), nn.GELU: _unary("gelu", approximate="approximate"),
    nn.LeakyReLU: _unary("leaky_relu", negative_slope=lambda m: float(m.negative_slope)),
    nn.ELU: _unary("elu", alpha=lambda m: float(m.alpha)), nn.CELU: _unary("celu", alpha=lambda m: float(m.alpha)),
    nn.Softplus: _unary("softplus", beta=lambda m: float(m.beta), threshold=lambda m: float(m.threshold)),
    nn.Hardtanh: _unary("hardtanh", min_val=lambda m: float(m.min_val), max_val=lambda m: float(m.max_val)),
}

MODULE_RULES = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv, nn.ConvTranspose1d: _conv, nn.ConvTranspose2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm, nn.BatchNorm2d: _batch_norm, nn.BatchNorm3d: _batch_norm,
    nn.LayerNorm: _layer_norm, nn.GroupNorm: _group_norm,
    nn.InstanceNorm1d: _instance_norm, nn.InstanceNorm2d: _instance_norm,
    nn.LocalResponseNorm: lambda cv, m, x: cv.emit("lrn", [x], {"size": int(m.size), "alpha": float(m.alpha),
                                                               "beta": float(m.beta), "k": float(m.k)}),
    nn.MaxPool1d: _max_pool, nn.MaxPool2d: _max_pool, nn.AvgPool1d: _avg_pool, nn.AvgPool2d: _avg_pool,
    nn.AdaptiveAvgPool1d: lambda cv, m, x: _adaptive(cv, "adaptive_avg_pool1d", x, m.output_size),
    nn.AdaptiveAvgPool2d: lambda cv, m, x: _adaptive(cv, "adaptive_avg_pool2d", x, m.output_size),
    nn.AdaptiveMaxPool2d: lambda cv, m, x: _adaptive(cv, "adaptive_max_pool2d", x, m.output_size),
    nn.Softmax: lambda cv, m, x: cv.emit("softmax", [x], {"dim": _dim(m.dim, len(x.shape))}),
    nn.LogSoftmax: lambda cv, m, x: cv.emit("log_softmax", [x], {"dim": _dim(m.dim, len(x.shape))}),
    nn.Flatten: lambda cv, m, x: cv.emit("flatten", [x], {"start_dim": _dim(m.start_dim, len(x.shape)),
                                                          "end_dim": _dim(m.end_dim, len(x.shape))}),
    nn.Identity: lambda cv, m, x, *a, **k: x,
    nn.MultiheadAttention: _mha,
    nn.PixelShuffle: lambda cv, m, x: cv.emit("pixel_shuffle", [x], {"upscale_factor": int(m.upscale_factor)}),
    nn.ChannelShuffle: lambda cv, m, x: cv.emit("channel_shuffle", [x], {"groups": int(m.groups)}),
    nn.ZeroPad2d: _pad_module("constant"), nn.ConstantPad1d: _pad_module("constant"),
    nn.ConstantPad2d: _pad_module("constant"), nn.ReflectionPad1d: _pad_module("reflect"),
    nn.ReflectionPad2d: _pad_module("reflect"), nn.ReplicationPad2d: _pad_module("replicate"),
    **_ACT,
}
for _d in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
    MODULE_RULES[_d] = lambda cv, m, x: cv.emit("dropout", [x], {"p": float(m.p)})

# Layers whose every configuration converts: the rest are checked here before tracing, so a
# configuration graphc cannot express is traced through into functions instead.
_LAYER_OK = {
    nn.BatchNorm1d: lambda m: m.track_running_stats and m.running_mean is not None,
    nn.BatchNorm2d: lambda m: m.track_running_stats and m.running_mean is not None,
    nn.BatchNorm3d: lambda m: m.track_running_stats and m.running_mean is not None,
    nn.InstanceNorm1d: lambda m: not m.track_running_stats,
    nn.InstanceNorm2d: lambda m: not m.track_running_stats,
    nn.MaxPool1d: lambda m: not m.return_indices, nn.MaxPool2d: lambda m: not m.return_indices,
    nn.AdaptiveMaxPool2d: lambda m: not m.return_indices,
    nn.MultiheadAttention: _mha_ok,
    nn.Softmax: lambda m: m.dim is not None, nn.LogSoftmax: lambda m: m.dim is not None,
    nn.ConvTranspose1d: lambda m: m.padding_mode == "zeros", nn.ConvTranspose2d: lambda m: m.padding_mode == "zeros",
}


def is_layer(m: nn.Module) -> bool:
    t = type(m)
    return t in MODULE_RULES and _LAYER_OK.get(t, lambda _: True)(m)


# -- functions and methods ----------------------------------------------------------------------
def _binary(op):
    def rule(cv, n, args, kwargs):
        if len(args) < 2 or kwargs.get("alpha", 1) != 1 or kwargs.get("out") is not None:
            raise NoRule
        a, b = args[0], args[1]
        like = a if isinstance(a, Value) else b
        return cv.emit(op, [cv.value(a, like), cv.value(b, like)])
    return rule


def _rbinary(op):
    def rule(cv, n, args, kwargs):
        a, b = args[0], args[1]
        return cv.emit(op, [cv.value(b, a), a])
    return rule


def _fn_unary(op, **defaults):
    def rule(cv, n, args, kwargs):
        x = _x(args, kwargs)
        attrs = {}
        for i, (k, default) in enumerate(defaults.items(), start=1):
            v = args[i] if len(args) > i else kwargs.get(k, default)
            attrs[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        return cv.emit(op, [x], attrs)
    return rule


def _dims_arg(args, kwargs, key="dims"):
    rest = args[1:]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    return list(rest) if rest else list(kwargs.get(key, kwargs.get("dim", ())))


def _reshape(cv, n, args, kwargs):
    return cv.emit("reshape", [_x(args, kwargs)], {"shape": _shape(cv)})


def _expand(cv, n, args, kwargs):
    x = _x(args, kwargs)
    shape = _shape(cv)
    if list(x.shape) == shape:
        return x
    return cv.emit("expand", [x], {"shape": shape})


def _flatten(cv, n, args, kwargs):
    x = _x(args, kwargs)
    r = len(x.shape)
    start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
    return cv.emit("flatten", [x], {"start_dim": _dim(start, r), "end_dim": _dim(end, r)})


def _permute(cv, n, args, kwargs):
    x = _x(args, kwargs)
    dims = [_dim(d, len(x.shape)) for d in _dims_arg(args, kwargs)]
    return cv.emit("permute", [x], {"dims": dims})


def _transpose(cv, n, args, kwargs):
    x = _x(args, kwargs)
    r = len(x.shape)
    d0 = _dim(args[1] if len(args) > 1 else kwargs["dim0"], r)
    d1 = _dim(args[2] if len(args) > 2 else kwargs["dim1"], r)
    dims = list(range(r))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return cv.emit("permute", [x], {"dims": dims})


def _cat(cv, n, args, kwargs):
    xs = args[0] if args else kwargs["tensors"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    vals = [cv.value(t) for t in xs]
    if len(vals) == 1:
        return vals[0]
    return cv.emit("concat", vals, {"dim": _dim(dim, len(vals[0].shape))})


def _stack(cv, n, args, kwargs):
    xs = args[0] if args else kwargs["tensors"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    d = _dim(dim, len(cv.value(xs[0]).shape) + 1)
    parts = [cv.emit("unsqueeze", [cv.value(t)], {"dims": [d]}, name=f"{cv.node_name}.unsqueeze") for t in xs]
    return cv.emit("concat", parts, {"dim": d})


def _split(cv, n, args, kwargs):
    x = _x(args, kwargs)
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    d = _dim(dim, len(x.shape))
    sizes = [int(t.shape[d]) for t in cv.results[n]]
    if len(sizes) == 1:
        return (x,)
    return tuple(cv.emit("split", [x], {"dim": d, "sizes": sizes}))


def _reduce(op):
    def rule(cv, n, args, kwargs):
        x = _x(args, kwargs)
        if kwargs.get("dtype") is not None:
            raise NoRule
        dims = args[1] if len(args) > 1 else kwargs.get("dim", None)
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        r = len(x.shape)
        dims = list(range(r)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
        return cv.emit(op, [x], {"dims": [_dim(d, r) for d in dims], "keepdim": bool(keep)})
    return rule


def _softmax(op):
    def rule(cv, n, args, kwargs):
        x = _x(args, kwargs)
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None or kwargs.get("dtype") is not None:
            raise NoRule
        return cv.emit(op, [x], {"dim": _dim(dim, len(x.shape))})
    return rule


def _squeeze(cv, n, args, kwargs):
    x = _x(args, kwargs)
    dims = _dims_arg(args, kwargs, "dim")
    r = len(x.shape)
    dims = [d for d in range(r) if x.shape[d] == 1] if not dims else [_dim(d, r) for d in dims]
    dims = [d for d in dims if x.shape[d] == 1]
    return cv.emit("squeeze", [x], {"dims": dims}) if dims else x


def _unsqueeze(cv, n, args, kwargs):
    x = _x(args, kwargs)
    d = args[1] if len(args) > 1 else kwargs["dim"]
    return cv.emit("unsqueeze", [x], {"dims": [_dim(d, len(x.shape) + 1)]})


def _adaptive_fn(op):
    def rule(cv, n, args, kwargs):
        return _adaptive(cv, op, _x(args, kwargs), args[1] if len(args) > 1 else kwargs["output_size"])
    return rule


def _pool_fn(kind):
    def rule(cv, n, args, kwargs):
        x = _x(args, kwargs)
        names = ["kernel_size", "stride", "padding"] + (["dilation", "ceil_mode"] if kind == "max" else
                                                        ["ceil_mode", "count_include_pad", "divisor_override"])
        vals = dict(zip(names, args[1:]))
        vals.update(kwargs)
        if vals.get("return_indices"):
            raise NoRule
        ks = _pair(vals["kernel_size"], 2)
        attrs = {"kernel_size": ks, "stride": _pair(vals.get("stride") or ks, 2), "padding": _pair(vals.get("padding", 0), 2)}
        if kind == "max":
            attrs.update(dilation=_pair(vals.get("dilation", 1), 2), ceil_mode=bool(vals.get("ceil_mode", False)))
        else:
            attrs.update(ceil_mode=bool(vals.get("ceil_mode", False)),
                         count_include_pad=bool(vals.get("count_include_pad", True)),
                         divisor_override=vals.get("divisor_override"))
        return cv.emit(f"{kind}_pool2d", [x], attrs)
    return rule


def _identity(cv, n, args, kwargs):
    return _x(args, kwargs)


def _dropout_fn(cv, n, args, kwargs):
    training = args[2] if len(args) > 2 else kwargs.get("training", True)
    if training:
        raise NoRule
    return _x(args, kwargs)


def _layer_norm_fn(cv, n, args, kwargs):
    names = ["input", "normalized_shape", "weight", "bias", "eps"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    w, b = vals.get("weight"), vals.get("bias")
    if w is None and b is not None:
        raise NoRule
    ins = [_x(args, kwargs)] + [cv.value(t) for t in (w, b) if t is not None]
    eps = {"eps": float(vals["eps"])} if "eps" in vals else {}
    return cv.emit("layer_norm", ins, {"normalized_shape": list(vals["normalized_shape"]), **eps})


def _linear_fn(cv, n, args, kwargs):
    names = ["input", "weight", "bias"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    ins = [_x(args, kwargs), cv.value(vals["weight"])] + ([cv.value(vals["bias"])] if vals.get("bias") is not None else [])
    return cv.emit("linear", ins)


def _conv_fn(nd):
    def rule(cv, n, args, kwargs):
        names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
        vals = dict(zip(names, args))
        vals.update(kwargs)
        ins = [_x(args, kwargs), cv.value(vals["weight"])] + ([cv.value(vals["bias"])] if vals.get("bias") is not None else [])
        dilation = _pair(vals.get("dilation", 1), nd)
        padding = vals.get("padding", 0)
        if padding == "valid":
            padding = 0
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, ins[1].shape[2:])]
            padding = [t // 2 for t in total]
            if any(t % 2 for t in total):  # torch puts the odd extra pixel after: an explicit pad
                pads = [v for t in reversed(total) for v in (t // 2, t - t // 2)]
                ins[0] = cv.emit("pad", [ins[0]], {"pad": pads, "mode": "constant", "value": 0.0},
                                 name=f"{cv.node_name}.pad")
                padding = 0
        return cv.emit(f"conv{nd}d", ins, {"stride": _pair(vals.get("stride", 1), nd), "padding": _pair(padding, nd),
                                           "dilation": _pair(vals.get("dilation", 1), nd), "groups": int(vals.get("groups", 1))})
    return rule


def _conv_transpose_fn(nd):
    def rule(cv, n, args, kwargs):
        names = ["input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"]
        vals = dict(zip(names, args))
        vals.update(kwargs)
        ins = [_x(args, kwargs), cv.value(vals["weight"])] + ([cv.value(vals["bias"])] if vals.get("bias") is not None else [])
        return cv.emit(f"conv_transpose{nd}d", ins, {
            "stride": _pair(vals.get("stride", 1), nd), "padding": _pair(vals.get("padding", 0), nd),
            "output_padding": _pair(vals.get("output_padding", 0), nd), "dilation": _pair(vals.get("dilation", 1), nd),
            "groups": int(vals.get("groups", 1))})
    return rule


def _batch_norm_fn(cv, n, args, kwargs):
    names = ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    if vals.get("training") or vals.get("running_mean") is None:
        raise NoRule
    x = _x(args, kwargs)
    c = x.shape[1]
    w = cv.value(vals["weight"]) if vals.get("weight") is not None else cv.param(torch.ones(c), name=f"{cv.node_name}.weight")
    b = cv.value(vals["bias"]) if vals.get("bias") is not None else cv.param(torch.zeros(c), name=f"{cv.node_name}.bias")
    return cv.emit("batch_norm", [x, w, b, cv.value(vals["running_mean"]), cv.value(vals["running_var"])],
                   {"eps": float(vals["eps"])} if "eps" in vals else {})


def _matmul(cv, n, args, kwargs):
    a, b = args[0], args[1]
    return cv.emit("matmul", [cv.value(a), cv.value(b)])


def _getitem(cv, n, args, kwargs):
    x, idx = args
    if not isinstance(x, Value):
        if isinstance(x, (tuple, list)):
            return x[idx]
        raise NoRule
    return index_value(cv, x, idx)


def index_value(cv, x: Value, idx):
    """``x[idx]`` for ints, slices, None and Ellipsis as select/slice/unsqueeze ops; one
    integer index tensor after whole slices (``table[:, idx]``) as an index_select."""
    idx = idx if isinstance(idx, tuple) else (idx,)
    gathered = _index_by_tensor(cv, x, idx)
    if gathered is not None:
        return gathered
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) or isinstance(i, bool) for i in idx):
        raise NoRule
    real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out: list = []
    for i in idx:
        if i is Ellipsis:
            out.extend([slice(None)] * (len(x.shape) - real))
        else:
            out.append(i)
    d = 0
    for i in out:
        shape = x.shape
        if i is None:
            x = cv.emit("unsqueeze", [x], {"dims": [d]}, name=f"{cv.node_name}.unsqueeze")
            d += 1
        elif isinstance(i, int):
            x = cv.emit("select", [x], {"dim": d, "index": _dim(i, shape[d])}, name=f"{cv.node_name}.select")
        else:
            start, stop, step = i.indices(shape[d])
            if step <= 0:
                raise NoRule
            if (start, stop, step) != (0, shape[d], 1):
                x = cv.emit("slice", [x], {"dim": d, "start": start, "end": stop, "step": step},
                            name=f"{cv.node_name}.slice")
            d += 1
    return x


def _index_by_tensor(cv, x: Value, idx: tuple):
    """``x[:, ..., :, t]`` (whole slices, then one constant integer tensor ``t``, then nothing or
    whole slices): the rows ``t`` names along that axis, shaped like ``t`` (attention-bias
    tables, ``attention_biases[:, attention_bias_idxs]``). None when ``idx`` is not that."""
    pos = [i for i, t in enumerate(idx) if isinstance(t, torch.Tensor)]
    if len(pos) != 1:
        return None
    d = pos[0]
    t = idx[d]
    full = slice(None)
    if t.dtype not in (torch.int64, torch.int32) or t.device.type != "cpu" or d >= len(x.shape):
        return None
    if any(not (isinstance(s, slice) and s == full) for k, s in enumerate(idx) if k != d):
        return None
    flat = t.to(torch.int64).reshape(-1)
    if flat.numel() and (int(flat.min()) < -x.shape[d] or int(flat.max()) >= x.shape[d]):
        return None  # torch would raise: leave it to the recorded run's own error path
    flat = torch.where(flat < 0, flat + x.shape[d], flat)
    out = cv.emit("index_select", [x, cv.param(flat, name=f"{cv.node_name}.index")], {"dim": d},
                  name=f"{cv.node_name}.index_select")
    shape = [*x.shape[:d], *t.shape, *x.shape[d + 1:]]
    if list(out.shape) != shape:
        out = cv.emit("reshape", [out], {"shape": shape}, name=f"{cv.node_name}.reshape")
    return out


def _getattr(cv, n, args, kwargs):
    obj, name = args[0], args[1]
    if isinstance(obj, Value):
        raise NoRule
    return getattr(obj, name)


def _cast(cv, n, args, kwargs):
    x = _x(args, kwargs)
    res = cv.results[n]
    from graphc.ir.types import dtype_from_torch

    short = dtype_from_torch(res.dtype)
    if res.device != torch.device("cpu"):
        raise NoRule
    return x if short == x.dtype else cv.emit("cast", [x], {"dtype": short})


def _clamp(cv, n, args, kwargs):
    x = _x(args, kwargs)
    lo = args[1] if len(args) > 1 else kwargs.get("min")
    hi = args[2] if len(args) > 2 else kwargs.get("max")
    if isinstance(lo, Value) or isinstance(hi, Value) or isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        raise NoRule
    return cv.emit("clamp", [x], {"min": lo, "max": hi})


def _interpolate(cv, n, args, kwargs):
    names = ["input", "size", "scale_factor", "mode", "align_corners"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    if vals.get("antialias"):
        raise NoRule
    x = _x(args, kwargs)
    r = len(x.shape)
    return cv.emit("interpolate", [x], {"size": _shape(cv)[2:], "mode": vals.get("mode", "nearest"),
                                        "align_corners": vals.get("align_corners")} if r else {})


def _pad_fn(cv, n, args, kwargs):
    names = ["input", "pad", "mode", "value"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    value = vals.get("value")
    return cv.emit("pad", [_x(args, kwargs)], {"pad": [int(p) for p in vals["pad"]], "mode": vals.get("mode", "constant"),
                                               "value": 0.0 if value is None else float(value)})


def _roll(cv, n, args, kwargs):
    x = _x(args, kwargs)
    shifts = args[1] if len(args) > 1 else kwargs["shifts"]
    dims = args[2] if len(args) > 2 else kwargs.get("dims")
    if dims is None:
        raise NoRule
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    return cv.emit("roll", [x], {"shifts": [int(s) for s in shifts], "dims": [_dim(d, len(x.shape)) for d in dims]})


def _sdpa(cv, n, args, kwargs):
    names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"]
    vals = dict(zip(names, args))
    vals.update(kwargs)
    if vals.get("dropout_p", 0.0) or vals.get("enable_gqa"):
        raise NoRule
    ins = [cv.value(vals["query"]), cv.value(vals["key"]), cv.value(vals["value"])]
    if vals.get("attn_mask") is not None:
        ins.append(cv.value(vals["attn_mask"]))
    return cv.emit("scaled_dot_product_attention", ins, {"scale": vals.get("scale"), "is_causal": bool(vals.get("is_causal", False))})


def _where(cv, n, args, kwargs):
    if len(args) != 3:
        raise NoRule
    cond, a, b = args
    like = a if isinstance(a, Value) else b if isinstance(b, Value) else None
    return cv.emit("where", [cv.value(cond), cv.value(a, like), cv.value(b, like)])


def _masked_fill(cv, n, args, kwargs):
    x = _x(args, kwargs)
    mask = args[1] if len(args) > 1 else kwargs["mask"]
    value = args[2] if len(args) > 2 else kwargs["value"]
    return cv.emit("where", [cv.value(mask), cv.value(value, x), x])


def _einsum(cv, n, args, kwargs):
    eq, ops = args[0], args[1:]
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = ops[0]
    return cv.emit("einsum", [cv.value(o) for o in ops], {"equation": str(eq)})


_UNARY_FNS = {
    "relu": [torch.relu, F.relu, torch.Tensor.relu], "relu6": [F.relu6],
    "sigmoid": [torch.sigmoid, F.sigmoid, torch.Tensor.sigmoid], "tanh": [torch.tanh, F.tanh, torch.Tensor.tanh],
    "silu": [F.silu], "hardswish": [F.hardswish], "hardsigmoid": [F.hardsigmoid], "mish": [F.mish],
    "softsign": [F.softsign],
    "exp": [torch.exp, torch.Tensor.exp], "sqrt": [torch.sqrt, torch.Tensor.sqrt], "rsqrt": [torch.rsqrt],
    "neg": [operator.neg, torch.neg, torch.Tensor.neg], "abs": [torch.abs, torch.Tensor.abs], "erf": [torch.erf],
    "log": [torch.log, torch.Tensor.log],
}

FUNCTION_RULES = {
    operator.add: _binary("add"), torch.add: _binary("add"),
    operator.sub: _binary("sub"), torch.sub: _binary("sub"),
    operator.mul: _binary("mul"), torch.mul: _binary("mul"),
    operator.truediv: _binary("div"), torch.div: _binary("div"),
    torch.maximum: _binary("maximum"), torch.minimum: _binary("minimum"), operator.pow: _binary("pow"),
    torch.pow: _binary("pow"), torch.rsub: _rbinary("sub"),
    operator.matmul: _matmul, torch.matmul: _matmul, torch.bmm: _matmul,
    operator.getitem: _getitem, getattr: _getattr,
    torch.flatten: _flatten, torch.reshape: _reshape, torch.permute: _permute, torch.transpose: _transpose,
    torch.cat: _cat, torch.concat: _cat, torch.stack: _stack,
    torch.chunk: _split, torch.split: _split, torch.squeeze: _squeeze, torch.unsqueeze: _unsqueeze,
    torch.mean: _reduce("mean"), torch.sum: _reduce("sum"), torch.amax: _reduce("amax"),
    torch.softmax: _softmax("softmax"), F.softmax: _softmax("softmax"), F.log_softmax: _softmax("log_softmax"),
    F.adaptive_avg_pool2d: _adaptive_fn("adaptive_avg_pool2d"), F.adaptive_avg_pool1d: _adaptive_fn("adaptive_avg_pool1d"),
    F.adaptive_max_pool2d: _adaptive_fn("adaptive_max_pool2d"),
    F.max_pool2d: _pool_fn("max"), F.avg_pool2d: _pool_fn("avg"),
    F.dropout: _dropout_fn, F.dropout2d: _dropout_fn,
    F.gelu: lambda cv, n, a, k: cv.emit("gelu", [_x(a, k)], {"approximate": k.get("approximate", "none")}),
    F.leaky_relu: _fn_unary("leaky_relu", negative_slope=0.01), F.hardtanh: _fn_unary("hardtanh", min_val=-1.0, max_val=1.0),
    F.elu: _fn_unary("elu", alpha=1.0),
    torch.clamp: _clamp, torch.clip: _clamp,
    F.layer_norm: _layer_norm_fn, F.linear: _linear_fn, F.conv2d: _conv_fn(2), F.conv1d: _conv_fn(1),
    F.conv_transpose1d: _conv_transpose_fn(1), F.conv_transpose2d: _conv_transpose_fn(2), F.batch_norm: _batch_norm_fn,
    F.interpolate: _interpolate, F.pad: _pad_fn, torch.roll: _roll,
    F.scaled_dot_product_attention: _sdpa,
    torch.einsum: _einsum, torch.where: _where, torch.swapaxes: _transpose, torch.swapdims: _transpose,
    torch.channel_shuffle: lambda cv, n, a, k: cv.emit("channel_shuffle", [_x(a, k)], {"groups": int(a[1])}),
    F.pixel_shuffle: lambda cv, n, a, k: cv.emit("pixel_shuffle", [_x(a, k)], {"upscale_factor": int(a[1])}),
}
for _op, _fns in _UNARY_FNS.items():
    for _f in _fns:
        FUNCTION_RULES[_f] = _fn_unary(_op)

METHOD_RULES = {
    "add": _binary("add"), "sub": _binary("sub"), "mul": _binary("mul"),
    "div": _binary("div"), "pow": _binary("pow"), "matmul": _matmul,
    "view": _reshape, "reshape": _reshape, "flatten": _flatten, "expand": _expand, "expand_as": _expand,
    "view_as": _reshape, "reshape_as": _reshape,
    "permute": _permute, "transpose": _transpose, "swapaxes": _transpose, "swapdims": _transpose, "contiguous": _identity,
    "chunk": _split, "split": _split, "squeeze": _squeeze, "unsqueeze": _unsqueeze,
    "mean": _reduce("mean"), "sum": _reduce("sum"), "amax": _reduce("amax"), "softmax": _softmax("softmax"),
    "masked_fill": _masked_fill, "to": _cast, "float": _cast, "type_as": _cast, "clamp": _clamp, "clip": _clamp,
    "relu": _fn_unary("relu"), "sigmoid": _fn_unary("sigmoid"), "tanh": _fn_unary("tanh"),
    "exp": _fn_unary("exp"), "sqrt": _fn_unary("sqrt"), "neg": _fn_unary("neg"), "abs": _fn_unary("abs"),
}

def _swin_relative_position_bias(cv, n, args, kwargs):
    """torchvision Swin's ``_get_relative_position_bias(table, index, window_size)``: the bias
    table gathered by a fixed index into (1, heads, N, N), kept as ops on the table."""
    table, index, window = args
    if not isinstance(table, Value) or not isinstance(index, torch.Tensor):
        raise NoRule
    size = int(window[0]) * int(window[1])
    idx = cv.param(index.reshape(-1).to(torch.int64).clone())
    y = cv.emit("index_select", [table, idx], {"dim": 0})
    y = cv.emit("reshape", [y], {"shape": [size, size, -1]})
    y = cv.emit("permute", [y], {"dims": [2, 0, 1]})
    return cv.emit("unsqueeze", [y], {"dims": [0]})


# Wrapped (fx leaf) library functions, by module and name: importing their libraries here
# would slow every import of graphc.
QUALNAME_RULES = {
    ("torchvision.models.swin_transformer", "_get_relative_position_bias"): _swin_relative_position_bias,
}

# In-place calls never reach these tables: fx_inplace rewrites them into pure calls and the
# helpers below, and the recorder refuses any write it left.
FUNCTION_RULES.update(fx_inplace.RULES)


def rule_for(node, gm):
    """The rule for one fx node, or None."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        rule = MODULE_RULES.get(type(m))
        if rule is None:
            return None
        return lambda cv, n, args, kwargs: rule(cv, m, *args, **kwargs)
    if node.op == "call_function":
        if isinstance(node.target, torch._ops.OpOverload):
            from graphc.frontends.fx_aten import aten_rule

            return aten_rule(node.target)
        try:
            rule = FUNCTION_RULES.get(node.target)
        except TypeError:  # unhashable callable
            return None
        if rule is None:
            key = (getattr(node.target, "__module__", None), getattr(node.target, "__name__", None))
            rule = QUALNAME_RULES.get(key)
        return rule
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    return None


def _register_tensor_rules() -> None:
    from graphc.frontends import fx_ops_tensor

    FUNCTION_RULES.update(fx_ops_tensor.FUNCTIONS)
    METHOD_RULES.update(fx_ops_tensor.METHODS)


_register_tensor_rules()
