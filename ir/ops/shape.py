"""Ops that move data without arithmetic (reshape, permute, concat, split, slice...) and
reductions. Every shape argument is static: the front-ends fold shape computations away.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from graphc.ir.ops import register_op

register_op("reshape", lambda x, shape: torch.reshape(x, list(shape)), tags=("shape",),
            doc="Reshape to a static shape (one -1 allowed).")
register_op("flatten", lambda x, start_dim=1, end_dim=-1: torch.flatten(x, start_dim, end_dim), tags=("shape",))
register_op("permute", lambda x, dims: x.permute(*dims), tags=("shape",))
register_op("squeeze", lambda x, dims: _squeeze(x, dims), tags=("shape",))
register_op("unsqueeze", lambda x, dims: _unsqueeze(x, dims), tags=("shape",))
register_op("expand", lambda x, shape: x.expand(*shape), tags=("shape",))
register_op("tile", lambda x, repeats: x.repeat(*repeats), tags=("shape",))
register_op("concat", lambda *xs, dim: torch.cat(xs, dim), tags=("shape",))
register_op("split", lambda x, dim, sizes: tuple(torch.split(x, list(sizes), dim)),
            num_outputs=lambda a: len(a["sizes"]), tags=("shape",))
register_op("slice", lambda x, dim, start, end, step=1: _slice(x, dim, start, end, step), tags=("shape",),
            doc="x[..., start:end:step, ...] along one axis.")
register_op("select", lambda x, dim, index: x.select(dim, index), tags=("shape",),
            doc="x[..., index, ...] along one axis; the axis is removed.")
register_op("index_select", lambda x, idx, dim: torch.index_select(x, dim, idx), tags=("shape",),
            doc="Gather whole slices along ``dim`` by an i64 index vector.")
register_op("gather", lambda x, idx, dim: torch.gather(x, dim, idx), tags=("shape",))
register_op("roll", lambda x, shifts, dims: torch.roll(x, shifts, dims), tags=("shape",))
register_op("pad", lambda x, pad, mode="constant", value=0.0: F.pad(x, list(pad), mode, value if mode == "constant" else None),
            tags=("shape",), doc="torch.nn.functional.pad: ``pad`` lists (before, after) pairs from the last axis.")
register_op("pixel_shuffle", lambda x, upscale_factor: F.pixel_shuffle(x, upscale_factor), tags=("shape",))
register_op("channel_shuffle", lambda x, groups: _channel_shuffle(x, groups), tags=("shape",))
register_op("interpolate", lambda x, size=None, scale_factor=None, mode="nearest", align_corners=None:
            F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners), tags=("shape",))

for _name, _fn in {"mean": torch.mean, "sum": torch.sum, "amax": torch.amax, "amin": torch.amin}.items():
    register_op(_name, (lambda f: lambda x, dims, keepdim=False: f(x, list(dims), keepdim=keepdim))(_fn), tags=("reduction",))
register_op("prod", lambda x, dim, keepdim=False: torch.prod(x, dim, keepdim=keepdim), tags=("reduction",))
register_op("var", lambda x, dims, keepdim=False, correction=1: torch.var(x, list(dims), keepdim=keepdim, correction=correction), tags=("reduction",))
register_op("argmax", lambda x, dim, keepdim=False: torch.argmax(x, dim, keepdim), tags=("reduction",))
register_op("norm", lambda x, dims, p=2.0, keepdim=False: torch.linalg.vector_norm(x, p, list(dims), keepdim), tags=("reduction",))


def _slice(x, dim, start, end, step):
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(start, end, step)
    return x[tuple(idx)]


def _squeeze(x, dims):
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = x.squeeze(d)
    return x


def _unsqueeze(x, dims):
    rank = x.dim() + len(dims)
    for d in sorted(d % rank for d in dims):
        x = x.unsqueeze(d)
    return x


def _channel_shuffle(x, groups):
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)
