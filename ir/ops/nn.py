"""Layer ops: convolutions, linear/matmul, normalisations, pools, attention, softmax.

Conventions: operands follow torch.nn.functional's order; an optional tensor operand a layer
may lack (bias) is simply absent from the input tuple. Attributes are JSON-able: ints, floats,
strings, lists. Padding is always explicit ints (``same`` and asymmetric ONNX pads are lowered
on import, the latter into a ``pad`` node).
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import torch.nn.utils.prune  # noqa: F401  (masked params, see _set)

from graphc.ir import channel_rules as ch
from graphc.ir import cost_rules as co
from graphc.ir.ops import Attr, Layer, defop
from graphc.ir.ops import rules as sh


def _opt(xs, i):
    return xs[i] if len(xs) > i else None


# -- torch modules: what the torch back-end emits for a layer whose weights are params ----------
def _owns(node, first: int) -> bool:
    """The node's data operands are computed and every operand from ``first`` on is a param."""
    ps = node.params
    return all(p is None for p in ps[:first]) and all(p is not None for p in ps[first:])


def _tensor(p) -> torch.Tensor:
    # the module owns its weights (it can be trained again): a copy, not Param.tensor()'s view
    return torch.from_numpy(np.array(p.data, copy=True))


def _build_on(weight) -> str:
    """Where to build a layer before it gets the graph's weights: a large one on the meta device
    (no storage to allocate, which the weights replace anyway); a small one on the CPU, where
    that allocation costs less than the meta device's fixed overhead."""
    return "meta" if weight.data.size >= 16384 else "cpu"


_NO_INIT: dict[type, type] = {}


def _built(cls, *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` without its default initialisation (``reset_parameters``),
    which :func:`_set` overwrites with the graph's weights anyway: for a small layer the
    random init is most of what building it costs. The layer is built as a subclass whose
    ``reset_parameters`` does nothing, then given ``cls`` back, so it is a plain ``cls``."""
    sub = _NO_INIT.get(cls)
    if sub is None:
        sub = _NO_INIT[cls] = type(cls.__name__, (cls,), {"reset_parameters": lambda self: None})
    m = sub(*args, **kwargs)
    m.__class__ = cls
    return m


def _set(m: nn.Module, node, names=("weight", "bias")) -> nn.Module:
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
    for name, p in zip(names, node.params[1:]):
        if p is not None and p.mask is not None:
            # torch's own pruning container: ``weight_orig`` trains, ``weight_mask`` is a buffer
            # and the forward sees their product, so further training keeps the pruned zeros.
            torch.nn.utils.prune.custom_from_mask(m, name, torch.from_numpy(p.mask.copy()))
    return m


def _conv_module(node):
    if not _owns(node, 1):
        return None
    w, a = node.params[1], node.attrs
    nd = int(node.op[-2])
    has_b = len(node.inputs) > 2
    groups = int(a["groups"])
    if node.op.startswith("conv_transpose"):
        cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}[nd]
        m = _built(cls, w.data.shape[0], w.data.shape[1] * groups, tuple(w.data.shape[2:]), a["stride"],
                   a["padding"], a["output_padding"], groups, has_b, a["dilation"], device=_build_on(w))
    else:
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
        m = _built(cls, w.data.shape[1] * groups, w.data.shape[0], tuple(w.data.shape[2:]), a["stride"],
                   a["padding"], a["dilation"], groups, has_b, device=_build_on(w))
    return Layer(_set(m, node))


def _linear_module(node):
    w = node.params[1]
    if not _owns(node, 1) or w.data.ndim != 2:
        return None
    return Layer(_set(_built(nn.Linear, w.data.shape[1], w.data.shape[0], bias=len(node.inputs) > 2,
                             device=_build_on(w)), node))


def _bn_module(node):
    rank = len(node.input(0).shape)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if not _owns(node, 1) or cls is None or any(p.kind == "const" and p.data.ndim != 1 for p in node.params[1:]):
        return None
    m = _set(cls(node.params[1].data.shape[0], eps=node.attrs["eps"]), node, ("weight", "bias"))
    with torch.no_grad():
        m.running_mean.copy_(_tensor(node.params[3]))
        m.running_var.copy_(_tensor(node.params[4]))
    return Layer(m)


def _ln_module(node):
    if not _owns(node, 1):
        return None
    n_wb = len(node.inputs) - 1
    return Layer(_set(nn.LayerNorm(node.attrs["normalized_shape"], eps=node.attrs["eps"],
                                   elementwise_affine=n_wb > 0, bias=n_wb > 1), node))


def _gn_module(node):
    if not _owns(node, 1) or len(node.inputs) not in (1, 3):
        return None
    return Layer(_set(nn.GroupNorm(node.attrs["num_groups"], node.input(0).shape[1], eps=node.attrs["eps"],
                                   affine=len(node.inputs) == 3), node))


def _mha_module(node):
    ps = node.params
    if ps[0] is not None or any(p is None for p in ps[3:]):
        return None
    e = node.input(0).shape[-1]
    # Built on the meta device (no default initialisation), then given the graph's weights in
    # the module's own dtype; operands of other shapes are copied (broadcast) as before.
    m = nn.MultiheadAttention(e, node.attrs["num_heads"], batch_first=node.attrs["batch_first"], device="meta")
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
    return Layer(m, inputs=3, kwargs={"need_weights": False}, output=0)


def _spatial(nd: int, **extra) -> dict:
    """The attrs every convolution has, for ``nd`` spatial axes."""
    return {"stride": Attr("ints", [1] * nd), "padding": Attr("ints", [0] * nd),
            "dilation": Attr("ints", [1] * nd), **extra, "groups": Attr("int", 1)}


# -- convolutions ---------------------------------------------------------------------------
for _nd, _fn in ((1, F.conv1d), (2, F.conv2d), (3, F.conv3d)):
    defop(f"conv{_nd}d", (lambda f: lambda t, x, w, *b, stride, padding, dilation, groups:
                          t.call(f, x, w, _opt(b, 0), stride, padding, dilation, groups))(_fn),
          operands=("x", "weight", "bias?"), attrs=_spatial(_nd),
          traits=("conv", "weight"), shape=sh.conv(_nd), channels=ch.CONV, cost=co.conv_rule, module=_conv_module,
          doc=f"{_nd}-d convolution, grouped and depthwise included (``groups``): "
              "y[n,o,...] = sum_{c,k} w[o,c,k] x[n,c,...*s+k*d-p] + b[o].")

for _nd, _fn in ((1, F.conv_transpose1d), (2, F.conv_transpose2d)):
    defop(f"conv_transpose{_nd}d",
          (lambda f: lambda t, x, w, *b, stride, padding, output_padding, dilation, groups:
           t.call(f, x, w, _opt(b, 0), stride, padding, output_padding, groups, dilation))(_fn),
          operands=("x", "weight", "bias?"), attrs=_spatial(_nd, output_padding=Attr("ints", [0] * _nd)),
          traits=("conv_transpose", "weight"), channels=ch.CONV_TRANSPOSE, cost=co.conv_transpose_rule,
          module=_conv_module,
          doc=f"{_nd}-d transposed convolution; weight is [in, out/groups, k...].")

# -- dense ------------------------------------------------------------------------------------
defop("linear", lambda t, x, w, *b: t.call(F.linear, x, w, _opt(b, 0)),
      operands=("x", "weight", "bias?"), traits=("linear", "weight"),
      shape=sh.linear, channels=ch.LINEAR, cost=co.linear_rule, module=_linear_module,
      doc="y = x @ w.T + b over the last axis (w is [out, in], as in torch).")
defop("matmul", lambda t, a, b: t.call(torch.matmul, a, b), operands=("a", "b"),
      traits=("matmul", "weight"), channels=ch.MATMUL, cost=co.matmul_rule,
      doc="Batched matrix product with numpy broadcasting of the batch axes.")
defop("einsum", lambda t, *xs, equation: t.call(torch.einsum, equation, *xs),
      operands=("+xs",), attrs={"equation": Attr("str")}, traits=("matmul",),
      channels=ch.rule(ch.frozen("einsum contracts axes named only by its equation")), cost=co.einsum_rule,
      doc="torch.einsum(equation, *xs): explicit-index contraction (MaxViT, ONNX Einsum).")

# -- normalisation ----------------------------------------------------------------------------
_EPS = {"eps": Attr("float", 1e-5)}

defop("batch_norm", lambda t, x, w, b, mean, var, *, eps: t.call(F.batch_norm, x, mean, var, w, b, False, 0.0, eps),
      operands=("x", "weight", "bias", "mean", "var"), attrs=_EPS,
      traits=("norm", "scale", "fusable"), shape=sh.batch_norm, channels=ch.BATCH_NORM, cost=co.per_output(2),
      module=_bn_module,
      doc="Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * weight + bias.")
defop("layer_norm", lambda t, x, *wb, normalized_shape, eps:
      t.call(F.layer_norm, x, list(normalized_shape), _opt(wb, 0), _opt(wb, 1), eps),
      operands=("x", "weight?", "bias?"), attrs={"normalized_shape": Attr("ints"), **_EPS},
      traits=("norm", "scale"), shape=sh.layer_norm, channels=ch.LAYER_NORM, cost=co.norm_rule, module=_ln_module,
      doc="Layer norm over the trailing ``normalized_shape`` axes; weight and bias optional.")
defop("group_norm", lambda t, x, *wb, num_groups, eps: t.call(F.group_norm, x, num_groups, _opt(wb, 0), _opt(wb, 1), eps),
      operands=("x", "weight?", "bias?"), attrs={"num_groups": Attr("int"), **_EPS},
      traits=("norm", "scale"), shape=sh.group_norm, channels=ch.GROUP_NORM, cost=co.norm_rule, module=_gn_module,
      doc="Group norm over axis 1 split into ``num_groups``; weight and bias optional.")
defop("instance_norm", lambda t, x, *wb, eps: t.call(F.instance_norm, x, weight=_opt(wb, 0), bias=_opt(wb, 1), eps=eps),
      operands=("x", "weight?", "bias?"), attrs=_EPS,
      traits=("norm", "scale"), channels=ch.INSTANCE_NORM, cost=co.norm_rule,
      doc="Instance norm (per sample, per channel); weight and bias optional.")
defop("lrn", lambda t, x, *, size, alpha, beta, k: t.call(F.local_response_norm, x, size, alpha, beta, k),
      attrs={"size": Attr("int"), "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75), "k": Attr("float", 1.0)},
      traits=("norm",), channels=ch.SAME, cost=co.lrn_rule,
      doc="Local response normalisation across channels (AlexNet/GoogLeNet, Caffe).")

# -- pools ------------------------------------------------------------------------------------
_POOL_TRAITS = ("pool", "keeps_zero")
for _nd, _fn in ((1, F.max_pool1d), (2, F.max_pool2d)):
    defop(f"max_pool{_nd}d", (lambda f: lambda t, x, *, kernel_size, stride, padding, dilation, ceil_mode:
                              t.call(f, x, kernel_size, stride, padding, dilation, ceil_mode))(_fn),
          attrs={"kernel_size": Attr("int|ints"), "stride": Attr("int|ints"), "padding": Attr("int|ints", [0] * _nd),
                 "dilation": Attr("int|ints", [1] * _nd), "ceil_mode": Attr("bool", False)},
          traits=_POOL_TRAITS, shape=sh.pool(_nd, True), channels=ch.POOL, cost=co.pool_rule,
          doc=f"{_nd}-d max pool; padding counts as -inf.")
defop("avg_pool1d", lambda t, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad:
      t.call(F.avg_pool1d, x, kernel_size, stride, padding, ceil_mode, count_include_pad),
      attrs={"kernel_size": Attr("int|ints"), "stride": Attr("int|ints"), "padding": Attr("int|ints", [0]),
             "ceil_mode": Attr("bool", False), "count_include_pad": Attr("bool", True)},
      traits=_POOL_TRAITS, shape=sh.pool(1, False), channels=ch.POOL, cost=co.pool_rule,
      doc="1-d average pool; ``count_include_pad`` says whether zero padding counts in the divisor.")
defop("avg_pool2d", lambda t, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override:
      t.call(F.avg_pool2d, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override),
      attrs={"kernel_size": Attr("int|ints"), "stride": Attr("int|ints"), "padding": Attr("int|ints", [0, 0]),
             "ceil_mode": Attr("bool", False), "count_include_pad": Attr("bool", True),
             "divisor_override": Attr("int?", None)},
      traits=_POOL_TRAITS, shape=sh.pool(2, False), channels=ch.POOL, cost=co.pool_rule,
      doc="2-d average pool; ``count_include_pad`` says whether zero padding counts in the divisor.")
for _name, _fn, _nd in (("adaptive_avg_pool1d", F.adaptive_avg_pool1d, 1), ("adaptive_avg_pool2d", F.adaptive_avg_pool2d, 2),
                        ("adaptive_max_pool2d", F.adaptive_max_pool2d, 2)):
    defop(_name, (lambda f: lambda t, x, *, output_size: t.call(f, x, output_size))(_fn),
          attrs={"output_size": Attr("int|ints")}, traits=_POOL_TRAITS, shape=sh.adaptive_pool(_nd),
          channels=ch.POOL, cost=co.per_input(1),
          doc="Adaptive pool to ``output_size``; [1,1] is global pooling.")

# -- softmax and friends ----------------------------------------------------------------------
defop("softmax", lambda t, x, *, dim: t.call(torch.softmax, x, dim), attrs={"dim": Attr("int")},
      shape=sh.softmax, channels=ch.SAME, cost=co.per_output(5), doc="Softmax along ``dim``.")
defop("log_softmax", lambda t, x, *, dim: t.call(torch.log_softmax, x, dim), attrs={"dim": Attr("int")},
      shape=sh.softmax, channels=ch.SAME, cost=co.per_output(5), doc="Log-softmax along ``dim``.")
defop("dropout", lambda t, x, *, p: x, attrs={"p": Attr("float", 0.5)},
      traits=("identity_at_inference", "view", "keeps_zero"), shape=sh.same_any, channels=ch.SAME, cost=co.view_rule,
      module=lambda node: Layer(nn.Dropout(node.attrs["p"])),
      doc="Dropout at inference: the identity.")


# -- attention --------------------------------------------------------------------------------
def _mha(t, q, k, v, in_w, in_b, out_w, out_b, *, num_heads, batch_first):
    if batch_first:
        q, k, v = (t.method("transpose", a, 0, 1) for a in (q, k, v))
    out = t.call(F.multi_head_attention_forward, q, k, v, t.shape(q)[-1], num_heads, in_w, in_b, None, None,
                 False, 0.0, out_w, out_b, training=False, need_weights=False)
    out = t.call(operator.getitem, out, 0)
    return t.method("transpose", out, 0, 1) if batch_first else out


defop("multi_head_attention", _mha,
      operands=("q", "k", "v", "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"),
      attrs={"num_heads": Attr("int"), "batch_first": Attr("bool", False)}, traits=("attention",),
      channels=ch.MULTI_HEAD_ATTENTION, cost=co.mha_rule, module=_mha_module,
      doc="torch.nn.MultiheadAttention self/cross attention (need_weights=False): returns the attention "
          "output only. Projections are packed: in_proj_weight is [3E, E].")
defop("scaled_dot_product_attention", lambda t, q, k, v, *mask, scale, is_causal:
      t.call(F.scaled_dot_product_attention, q, k, v, attn_mask=_opt(mask, 0), is_causal=is_causal, scale=scale),
      operands=("q", "k", "v", "mask?"), attrs={"scale": Attr("float?", None), "is_causal": Attr("bool", False)},
      traits=("attention",), channels=ch.SDPA, cost=co.sdpa_rule,
      doc="softmax(q k^T * scale + mask) v over the last two axes.")
