"""Ops that move data without arithmetic (reshape, permute, concat, split, slice...) and
reductions. Every shape argument is static: the front-ends fold shape computations away.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from graphc.ir import channel_rules as ch
from graphc.ir import cost_rules as co
from graphc.ir.ops import Attr, defop
from graphc.ir.ops import rules as sh

_MOVE = ("shape", "keeps_zero")
_VIEW = ("shape", "keeps_zero", "view", "reshape")


def _unsqueeze(t, x, *, dims):
    # dims are positions in the output: inserting them in increasing order keeps each valid
    rank = len(t.shape(x)) + len(dims)
    for d in sorted(d % rank for d in dims):
        x = t.call(torch.unsqueeze, x, d)
    return x


def _slice(t, x, *, dim, start, end, step):
    return t.call(operator.getitem, x, tuple([slice(None)] * (dim % len(t.shape(x))) + [slice(start, end, step)]))


defop("reshape", lambda t, x, *, shape: t.call(torch.reshape, x, tuple(shape)), attrs={"shape": Attr("ints")},
      traits=_VIEW, shape=sh.reshape, channels=ch.RESHAPE, cost=co.view_rule,
      doc="Reshape to a static shape (one -1 allowed).")
defop("flatten", lambda t, x, *, start_dim, end_dim: t.call(torch.flatten, x, start_dim, end_dim),
      attrs={"start_dim": Attr("int", 1), "end_dim": Attr("int", -1)},
      traits=_VIEW, shape=sh.flatten, channels=ch.RESHAPE, cost=co.view_rule, doc="Merge axes start_dim..end_dim.")
defop("squeeze", lambda t, x, *, dims: t.call(torch.squeeze, x, tuple(dims)), attrs={"dims": Attr("ints")},
      traits=_VIEW, channels=ch.SQUEEZE, cost=co.view_rule, doc="Remove the listed size-1 axes.")
defop("unsqueeze", _unsqueeze, attrs={"dims": Attr("ints")},
      traits=_VIEW, channels=ch.UNSQUEEZE, cost=co.view_rule, doc="Insert size-1 axes at the listed output positions.")
defop("permute", lambda t, x, *, dims: t.call(torch.permute, x, tuple(dims)), attrs={"dims": Attr("ints")},
      traits=_MOVE, shape=sh.permute, channels=ch.PERMUTE, cost=co.movement_rule, doc="Reorder the axes.")
defop("expand", lambda t, x, *, shape: t.method("expand", x, *shape), attrs={"shape": Attr("ints")},
      traits=_MOVE, channels=ch.EXPAND, cost=co.movement_rule, doc="Broadcast size-1 axes to ``shape``.")
defop("tile", lambda t, x, *, repeats: t.method("repeat", x, *repeats), attrs={"repeats": Attr("ints")},
      traits=_MOVE, channels=ch.TILE, cost=co.movement_rule, doc="Repeat the tensor along each axis.")
defop("concat", lambda t, *xs, dim: t.call(torch.cat, list(xs), dim), operands=("+xs",), attrs={"dim": Attr("int")},
      traits=_MOVE, shape=sh.concat, channels=ch.CONCAT, cost=co.movement_rule, doc="Concatenate along ``dim``.")
defop("split", lambda t, x, *, dim, sizes: t.call(torch.split, x, list(sizes), dim),
      attrs={"dim": Attr("int"), "sizes": Attr("ints")}, num_outputs=lambda a: len(a["sizes"]),
      traits=_MOVE, shape=sh.split, channels=ch.SPLIT, cost=co.movement_rule, doc="Split along ``dim`` into ``sizes``.")
defop("slice", _slice, attrs={"dim": Attr("int"), "start": Attr("int"), "end": Attr("int"), "step": Attr("int", 1)},
      traits=_MOVE, channels=ch.SLICE, cost=co.movement_rule, doc="x[..., start:end:step, ...] along one axis.")
defop("select", lambda t, x, *, dim, index: t.call(torch.select, x, dim, index),
      attrs={"dim": Attr("int"), "index": Attr("int")}, traits=_MOVE, channels=ch.SELECT, cost=co.movement_rule,
      doc="x[..., index, ...] along one axis; the axis is removed.")
defop("index_select", lambda t, x, idx, *, dim: t.call(torch.index_select, x, dim, idx), operands=("x", "index"),
      attrs={"dim": Attr("int")}, traits=_MOVE, channels=ch.INDEX_SELECT, cost=co.movement_rule,
      doc="Gather whole slices along ``dim`` by an i64 index vector.")
defop("gather", lambda t, x, idx, *, dim: t.call(torch.gather, x, dim, idx), operands=("x", "index"),
      attrs={"dim": Attr("int")}, traits=_MOVE, channels=ch.GATHER, cost=co.movement_rule,
      doc="torch.gather along ``dim``.")
defop("roll", lambda t, x, *, shifts, dims: t.call(torch.roll, x, shifts, dims),
      attrs={"shifts": Attr("int|ints"), "dims": Attr("int|ints")}, traits=_MOVE, channels=ch.ROLL,
      cost=co.movement_rule, doc="Rotate elements along ``dims``.")
defop("pad", lambda t, x, *, pad, mode, value: t.call(F.pad, x, list(pad), mode, value if mode == "constant" else None),
      attrs={"pad": Attr("ints"), "mode": Attr("str", "constant"), "value": Attr("float", 0.0)},
      traits=("shape",), channels=ch.PAD, cost=co.movement_rule,
      doc="torch.nn.functional.pad: ``pad`` lists (before, after) pairs from the last axis.")
defop("pixel_shuffle", lambda t, x, *, upscale_factor: t.call(F.pixel_shuffle, x, upscale_factor),
      attrs={"upscale_factor": Attr("int")}, traits=("shape",),
      channels=ch.rule(ch.frozen("pixel_shuffle moves channels into space")), cost=co.movement_rule,
      doc="Move channel blocks into space (depth-to-space).")
defop("channel_shuffle", lambda t, x, *, groups: t.call(torch.channel_shuffle, x, groups), attrs={"groups": Attr("int")},
      traits=_MOVE, channels=ch.CHANNEL_SHUFFLE, cost=co.movement_rule, doc="ShuffleNet's channel shuffle.")
defop("interpolate", lambda t, x, *, size, scale_factor, mode, align_corners:
      t.call(F.interpolate, x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners),
      attrs={"size": Attr("int|ints?", None), "scale_factor": Attr("float|floats?", None),
             "mode": Attr("str", "nearest"), "align_corners": Attr("bool?", None)},
      traits=("shape", "keeps_zero"), channels=ch.POOL, cost=co.interpolate_rule, doc="Resize the spatial axes.")

# -- reductions ---------------------------------------------------------------------------------
_DIMS = {"dims": Attr("ints"), "keepdim": Attr("bool", False)}
for _name, _fn, _shape in (("mean", torch.mean, sh.mean), ("sum", torch.sum, None), ("amax", torch.amax, None),
                           ("amin", torch.amin, None)):
    defop(_name, (lambda f: lambda t, x, *, dims, keepdim: t.call(f, x, list(dims), keepdim))(_fn), attrs=_DIMS,
          traits=("reduction",), shape=_shape, channels=ch.REDUCTION, cost=co.per_input(1),
          doc=f"torch.{_name} over ``dims``.")
defop("prod", lambda t, x, *, dim, keepdim: t.call(torch.prod, x, dim, keepdim),
      attrs={"dim": Attr("int"), "keepdim": Attr("bool", False)}, traits=("reduction",), channels=ch.REDUCTION,
      cost=co.per_input(1), doc="Product along ``dim``.")
defop("var", lambda t, x, *, dims, keepdim, correction:
      t.call(torch.var, x, list(dims), keepdim=keepdim, correction=correction),
      attrs={**_DIMS, "correction": Attr("int", 1)}, traits=("reduction",), channels=ch.REDUCTION,
      cost=co.per_input(3), doc="Variance over ``dims``.")
defop("argmax", lambda t, x, *, dim, keepdim: t.call(torch.argmax, x, dim, keepdim),
      attrs={"dim": Attr("int"), "keepdim": Attr("bool", False)}, traits=("reduction",), channels=ch.REDUCTION,
      cost=co.per_input(1), doc="Index of the largest element along ``dim``.")
defop("norm", lambda t, x, *, dims, p, keepdim: t.call(torch.linalg.vector_norm, x, p, list(dims), keepdim),
      attrs={"dims": Attr("ints"), "p": Attr("float", 2.0), "keepdim": Attr("bool", False)}, traits=("reduction",),
      channels=ch.REDUCTION, cost=co.per_input(2), doc="Vector p-norm over ``dims``.")
