"""Layer ops: convolutions, linear/matmul, normalisations, pools, attention, softmax.

Conventions: inputs follow torch.nn.functional's order; every optional tensor operand that a
layer may lack (bias) is simply absent from the input tuple. Attributes are JSON-able: ints,
floats, strings, lists. Padding is always explicit ints (``same`` and asymmetric ONNX pads are
lowered on import, the latter into a ``pad`` node).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from graphc.ir.ops import op


def _b(rest):
    return rest[0] if rest else None


# -- convolutions ---------------------------------------------------------------------------
@op("conv1d", tags=("conv",))
def conv1d(x, w, *rest, stride=(1,), padding=(0,), dilation=(1,), groups=1):
    """1-d convolution: y[n,o,l] = sum_{c,k} w[o,c,k] x[n,c,l*s+k*d-p] + b[o]."""
    return F.conv1d(x, w, _b(rest), stride, padding, dilation, groups)


@op("conv2d", tags=("conv",))
def conv2d(x, w, *rest, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """2-d convolution, grouped and depthwise included (``groups``)."""
    return F.conv2d(x, w, _b(rest), stride, padding, dilation, groups)


@op("conv3d", tags=("conv",))
def conv3d(x, w, *rest, stride=(1, 1, 1), padding=(0, 0, 0), dilation=(1, 1, 1), groups=1):
    """3-d convolution."""
    return F.conv3d(x, w, _b(rest), stride, padding, dilation, groups)


@op("conv_transpose1d", tags=("conv_transpose",))
def conv_transpose1d(x, w, *rest, stride=(1,), padding=(0,), output_padding=(0,), dilation=(1,), groups=1):
    """1-d transposed convolution; weight is [in, out/groups, k]."""
    return F.conv_transpose1d(x, w, _b(rest), stride, padding, output_padding, groups, dilation)


@op("conv_transpose2d", tags=("conv_transpose",))
def conv_transpose2d(x, w, *rest, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1), groups=1):
    """2-d transposed convolution; weight is [in, out/groups, kh, kw]."""
    return F.conv_transpose2d(x, w, _b(rest), stride, padding, output_padding, groups, dilation)


# -- dense ------------------------------------------------------------------------------------
@op("linear", tags=("linear",))
def linear(x, w, *rest):
    """y = x @ w.T + b over the last axis (w is [out, in], as in torch)."""
    return F.linear(x, w, _b(rest))


@op("matmul", tags=("matmul",))
def matmul(a, b):
    """Batched matrix product with numpy broadcasting of the batch axes."""
    return torch.matmul(a, b)


@op("einsum", tags=("matmul",))
def einsum(*xs, equation):
    """torch.einsum(equation, *xs): explicit-index contraction (MaxViT, ONNX Einsum)."""
    return torch.einsum(equation, *xs)


# -- normalisation ----------------------------------------------------------------------------
@op("batch_norm", tags=("norm",))
def batch_norm(x, weight, bias, mean, var, *, eps=1e-5):
    """Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * weight + bias."""
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


@op("layer_norm", tags=("norm",))
def layer_norm(x, *wb, normalized_shape, eps=1e-5):
    """Layer norm over the trailing ``normalized_shape`` axes; weight and bias optional."""
    w = wb[0] if len(wb) > 0 else None
    b = wb[1] if len(wb) > 1 else None
    return F.layer_norm(x, list(normalized_shape), w, b, eps)


@op("group_norm", tags=("norm",))
def group_norm(x, *wb, num_groups, eps=1e-5):
    """Group norm over axis 1 split into ``num_groups``; weight and bias optional."""
    w = wb[0] if len(wb) > 0 else None
    b = wb[1] if len(wb) > 1 else None
    return F.group_norm(x, num_groups, w, b, eps)


@op("instance_norm", tags=("norm",))
def instance_norm(x, *wb, eps=1e-5):
    """Instance norm (per sample, per channel); weight and bias optional."""
    w = wb[0] if len(wb) > 0 else None
    b = wb[1] if len(wb) > 1 else None
    return F.instance_norm(x, weight=w, bias=b, eps=eps)


@op("lrn", tags=("norm",))
def lrn(x, *, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels (AlexNet/GoogLeNet, Caffe)."""
    return F.local_response_norm(x, size, alpha, beta, k)


# -- pools ------------------------------------------------------------------------------------
@op("max_pool1d", tags=("pool",))
def max_pool1d(x, *, kernel_size, stride, padding=(0,), dilation=(1,), ceil_mode=False):
    return F.max_pool1d(x, kernel_size, stride, padding, dilation, ceil_mode)


@op("max_pool2d", tags=("pool",))
def max_pool2d(x, *, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """Max pool; padding counts as -inf."""
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


@op("avg_pool1d", tags=("pool",))
def avg_pool1d(x, *, kernel_size, stride, padding=(0,), ceil_mode=False, count_include_pad=True):
    return F.avg_pool1d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)


@op("avg_pool2d", tags=("pool",))
def avg_pool2d(x, *, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Average pool; ``count_include_pad`` says whether zero padding counts in the divisor."""
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@op("adaptive_avg_pool1d", tags=("pool",))
def adaptive_avg_pool1d(x, *, output_size):
    return F.adaptive_avg_pool1d(x, output_size)


@op("adaptive_avg_pool2d", tags=("pool",))
def adaptive_avg_pool2d(x, *, output_size):
    """Adaptive average pool; output_size [1,1] is global average pooling."""
    return F.adaptive_avg_pool2d(x, output_size)


@op("adaptive_max_pool2d", tags=("pool",))
def adaptive_max_pool2d(x, *, output_size):
    return F.adaptive_max_pool2d(x, output_size)


# -- softmax and friends ----------------------------------------------------------------------
@op("softmax")
def softmax(x, *, dim):
    return torch.softmax(x, dim)


@op("log_softmax")
def log_softmax(x, *, dim):
    return torch.log_softmax(x, dim)


@op("dropout", tags=("identity_at_inference",))
def dropout(x, *, p=0.5):
    """Dropout at inference: the identity."""
    return x


# -- attention --------------------------------------------------------------------------------
@op("multi_head_attention", tags=("attention",))
def multi_head_attention(q, k, v, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, *, num_heads, batch_first=False):
    """torch.nn.MultiheadAttention self/cross attention (need_weights=False): returns the
    attention output only. Projections are packed: in_proj_weight is [3E, E]."""
    out, _ = F.multi_head_attention_forward(
        q.transpose(0, 1) if batch_first else q,
        k.transpose(0, 1) if batch_first else k,
        v.transpose(0, 1) if batch_first else v,
        q.shape[-1], num_heads, in_proj_weight, in_proj_bias, None, None, False, 0.0,
        out_proj_weight, out_proj_bias, training=False, need_weights=False,
    )
    return out.transpose(0, 1) if batch_first else out


@op("scaled_dot_product_attention", tags=("attention",))
def scaled_dot_product_attention(q, k, v, *mask, scale=None, is_causal=False):
    """softmax(q k^T * scale + mask) v over the last two axes."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[0] if mask else None, is_causal=is_causal, scale=scale)
