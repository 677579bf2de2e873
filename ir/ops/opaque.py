"""Opaque nodes: ops graphc does not know, kept as they came.

``opaque`` keeps the output types fixed at import (from onnx shape inference or from
tracing); passes treat it as a barrier (its channels are frozen). Attributes:

- ``source``: ``"torch"`` or ``"onnx"``.
- ``target`` (torch): the qualified name of a callable (``torch.roll``,
  ``torchvision.models.swin_transformer.shifted_window_attention``), called with ``args`` and
  ``kwargs`` where ``{"$input": i}`` stands for the node's i-th operand.
- ``op_type``/``domain``/``attributes`` (onnx): the original ONNX node, re-emitted verbatim by
  the ONNX back-end; the torch back-end cannot run it and says so.
"""
from __future__ import annotations

import importlib

from graphc.errors import UnsupportedError
from graphc.ir import channel_rules as ch
from graphc.ir import cost_rules as co
from graphc.ir.ops import defop
from graphc.ir.types import TensorType


def resolve_target(qualname: str):
    """Import ``a.b.c`` (or ``a.b:c``) and return the object it names."""
    if ":" in qualname:
        mod, _, attr = qualname.partition(":")
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    parts = qualname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise UnsupportedError(f"cannot resolve callable {qualname!r}")


def fill_template(template, inputs):
    if isinstance(template, dict):
        if set(template) == {"$input"}:
            return inputs[template["$input"]]
        if set(template) == {"$tuple"}:
            return tuple(fill_template(t, inputs) for t in template["$tuple"])
        if set(template) == {"$dtype"}:
            from graphc.ir.types import torch_dtype

            return torch_dtype(template["$dtype"])
        return {k: fill_template(v, inputs) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(t, inputs) for t in template]
    return template


def _run_opaque(t, *inputs, source, target=None, args=(), kwargs=None, op_type=None, **_):
    if source != "torch":
        raise UnsupportedError(f"opaque ONNX op {op_type!r} has no torch implementation")
    fn_args = fill_template(list(args), inputs)
    fn_kwargs = fill_template(dict(kwargs or {}), inputs)
    if target.startswith("torch.Tensor."):
        return t.method(target[len("torch.Tensor."):], *fn_args, **fn_kwargs)
    return t.call(resolve_target(target), *fn_args, **fn_kwargs)


def _infer_opaque(types, attrs):
    return [TensorType.parse(t) for t in attrs["out_types"]]


defop("opaque", _run_opaque, operands=("*xs",), open_attrs=True, infer=_infer_opaque,
      num_outputs=lambda a: len(a["out_types"]), traits=("opaque",), channels=ch.OPAQUE, cost=co.opaque_rule,
      doc="An op graphc does not know, kept as it came (see the module docstring).")
