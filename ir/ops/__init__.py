"""The op table: one :class:`OpDef` per op.

An OpDef is the single source of truth about an op:

- ``torch``: its semantics, as a function ``f(*inputs, **attrs)`` of torch tensors. The
  torch back-end and the numeric checks run it; shape inference runs it on meta tensors unless
  the op gives a faster ``infer``.
- ``infer``: optional ``f(types, attrs) -> list[TensorType]``.
- ``rule``: optional closed-form ``f(types, attrs) -> list[TensorType] | None`` (see
  :mod:`graphc.ir.ops.rules`); None hands the node to the meta-tensor path.
- ``channels``: how channel axes flow through the op (see :mod:`graphc.ir.channel_rules`).
- ``cost``: MACs and other figures per node (see :mod:`graphc.ir.cost_rules`).
- ``num_outputs``: an int, or a function of the attrs.

Ops not in the table are kept as ``opaque`` nodes whose output types were fixed on import.
Op families live in ``nn.py``, ``elementwise.py``, ``shape.py`` and ``opaque.py``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from graphc.errors import IRError
from graphc.ir.types import TensorType, dtype_from_torch, torch_dtype


@dataclass
class OpDef:
    name: str
    torch: Callable[..., Any] | None
    infer: Callable[[list[TensorType], dict], list[TensorType]] | None = None
    num_outputs: int | Callable[[dict], int] = 1
    doc: str = ""
    # Filled in by the rule modules; each module owns one field.
    channels: Any = None
    cost: Any = None
    # Free-form tags: "elementwise", "unary", "binary", "reduction", "pool", "norm", ...
    tags: frozenset = field(default_factory=frozenset)
    rule: Callable[[list[TensorType], dict], list[TensorType] | None] | None = None

    def n_outputs(self, attrs: dict) -> int:
        return self.num_outputs(attrs) if callable(self.num_outputs) else self.num_outputs

    def infer_node(self, node) -> list[TensorType]:
        types = [v.type for v in node.inputs]
        try:
            if self.infer is not None:
                return list(self.infer(types, node.attrs))
            if self.rule is not None and all(all(t.shape) for t in types):
                out = self.rule(types, node.attrs)
                if out is not None:
                    return out
            return list(_meta_infer(self.name, tuple(types), _freeze(node.attrs)))
        except IRError:
            raise
        except Exception as e:  # the op's own check failed: say which node and why
            ins = ", ".join(str(t) for t in types)
            raise IRError(f"{node.op} {node.name}: cannot infer types from ({ins}): {_first_line(e)}") from e

    def run(self, inputs, attrs: dict):
        if self.torch is None:
            raise IRError(f"op {self.name} has no torch implementation")
        return self.torch(*inputs, **attrs)


_OPS: dict[str, OpDef] = {}


def register_op(name: str, torch_fn=None, *, infer=None, num_outputs=1, tags=(), doc: str = "") -> OpDef:
    if name in _OPS:
        raise ValueError(f"op {name!r} registered twice")
    op = OpDef(name, torch_fn, infer=infer, num_outputs=num_outputs, tags=frozenset(tags), doc=doc)
    _OPS[name] = op
    return op


def op(name: str, *, infer=None, num_outputs=1, tags=(), doc: str = ""):
    """Decorator form of :func:`register_op` for the torch semantics function."""

    def deco(fn):
        register_op(name, fn, infer=infer, num_outputs=num_outputs, tags=tags, doc=doc or (fn.__doc__ or ""))
        return fn

    return deco


def get_op(name: str) -> OpDef:
    try:
        return _OPS[name]
    except KeyError:
        raise IRError(f"unknown op {name!r}") from None


def has_op(name: str) -> bool:
    return name in _OPS


def all_ops() -> dict[str, OpDef]:
    return dict(_OPS)


def ops_with_tag(tag: str) -> set[str]:
    return {n for n, o in _OPS.items() if tag in o.tags}


def _first_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def _freeze(attrs: dict) -> str:
    return json.dumps(attrs, sort_keys=True, default=repr)


@functools.lru_cache(maxsize=65536)
def _meta_infer(op_name: str, types: tuple[TensorType, ...], frozen_attrs: str) -> tuple[TensorType, ...]:
    import torch

    attrs = json.loads(frozen_attrs)
    opdef = _OPS[op_name]
    ins = [torch.empty(t.shape, dtype=torch_dtype(t.dtype), device="meta") for t in types]
    with torch.no_grad():
        out = opdef.run(ins, attrs)
    if isinstance(out, torch.Tensor):
        out = (out,)
    return tuple(TensorType(tuple(o.shape), dtype_from_torch(o.dtype)) for o in out)


# Importing the families registers their ops.
from graphc.ir.ops import nn as _nn  # noqa: E402,F401
from graphc.ir.ops import elementwise as _elementwise  # noqa: E402,F401
from graphc.ir.ops import shape as _shape  # noqa: E402,F401
from graphc.ir.ops import opaque as _opaque  # noqa: E402,F401
from graphc.ir.ops import rules as _rules  # noqa: E402

for _name, _rule in _rules.RULES.items():
    _OPS[_name].rule = _rule
