"""The op table: one declarative :class:`OpDef` per op, everything graphc knows of it.

An op is defined once, with :func:`defop`, in the module of its family (``nn.py``,
``elementwise.py``, ``shape.py``, ``opaque.py``). The definition holds:

- ``operands``: operand names; ``"bias?"`` is optional (absent from the input tuple, never a
  placeholder), ``"*xs"`` is any number and ``"+xs"`` one or more. The verifier checks a node's operand count against them.
- ``attrs``: ``{name: Attr(type, default)}``. A node is canonicalised when it is built (every
  default filled in), so a rule reads ``node.attrs["eps"]`` and never restates a default; the
  verifier checks names, types and that none is missing.
- ``traits``: what passes and back-ends may assume of the op (see :data:`TRAITS`); passes ask
  :func:`ops_with` instead of keeping their own lists of op names.
- ``torch``: the semantics, ``f(t, *inputs, **attrs)`` written against a tiny builder ``t``
  (``t.call(fn, ...)``, ``t.method(name, x, ...)``, ``t.shape(x)``, static). The reference interpreter
  runs it eagerly; the torch back-end runs it on torch.fx nodes, so the emitted module calls
  the same torch functions and nothing of graphc. Shape inference runs it on meta tensors
  unless ``shape`` answers.
- ``module``: optional ``f(node) -> Layer | None``: the ``torch.nn`` layer the torch back-end
  emits for a node whose weights are params, so the emitted module's ``state_dict`` reads like
  the source's and it trains again; None (or no hook) emits the ``torch`` hook's calls.
- ``shape``: optional closed-form type rule ``f(types, attrs) -> list[TensorType] | None``
  (:mod:`graphc.ir.ops.rules`); ``infer`` replaces shape inference altogether (opaque).
- ``channels``: how channel axes flow through the op (:mod:`graphc.ir.channel_rules`).
- ``cost``: MACs, FLOPs and bytes of one node (:mod:`graphc.ir.cost_rules`).
- ``onnx``: the ONNX lowering, attached by :mod:`graphc.backends.onnx_ops` (``@lowers``, read
  it with :meth:`OpDef.onnx_lowering`) because it needs the ONNX emitter; an op without one is
  exported through torch.onnx. Lifting from ONNX and torch.fx stays in the front-ends, where
  the source spellings are.

Ops not in the table are kept as ``opaque`` nodes whose output types were fixed on import.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from graphc.errors import IRError
from graphc.ir.types import TensorType, dtype_from_torch, torch_dtype

# The traits an op may declare, and what declaring one promises.
TRAITS: dict[str, str] = {
    "elementwise": "output element i depends only on the operands' elements at i (after broadcasting)",
    "unary": "elementwise with one operand",
    "binary": "elementwise with two broadcasting operands",
    "reduction": "reduces the axes listed in its attrs",
    "pool": "a sliding-window or adaptive pool over the spatial axes",
    "norm": "a normalisation layer",
    "conv": "a (non-transposed) convolution: operands x, weight[, bias]",
    "conv_transpose": "a transposed convolution: operands x, weight[, bias]",
    "linear": "y = x @ w.T + b",
    "matmul": "a contraction of its operands",
    "attention": "an attention block",
    "shape": "moves data without arithmetic",
    "view": "moves no bytes: the output is the input, reinterpreted (reshape, identity...)",
    "reshape": "keeps the elements in their order, changes only the shape",
    "identity_at_inference": "the identity once the model is in eval mode",
    "keeps_zero": "a channel that is zero in every operand stays zero in the output",
    "fusable": "onnxruntime fuses it into the conv/GEMM before it (BN folding, activation fusion)",
    "weight": "holds a weight matrix whose rows/columns are units to prune",
    "scale": "holds a per-channel scale (normalisation layers)",
    "opaque": "unknown to graphc: a barrier to every pass",
}

REQUIRED = object()


@dataclass
class Layer:
    """What an op's ``module`` hook gives the torch back-end: a ``torch.nn`` module holding the
    node's params, called on the node's first ``inputs`` operands with ``kwargs``; ``output``
    picks one element of a tuple result."""

    module: Any
    inputs: int = 1
    kwargs: dict = field(default_factory=dict)
    output: int | None = None


@dataclass(frozen=True)
class Attr:
    """One attribute: its type (``int``, ``float``, ``bool``, ``str``, ``ints``, ``floats``,
    ``any``; ``"int|ints"`` allows either, a trailing ``?`` allows None) and its default."""

    type: str
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def accepts(self, v) -> bool:
        kinds = _kinds(self.type)
        if v is None:
            return self.type.endswith("?") or "any" in kinds
        return any(_CHECKS[k](v) for k in kinds)


@functools.lru_cache(maxsize=None)
def _kinds(type_: str) -> tuple[str, ...]:
    # the verifier asks for every attribute of every node: the type string is parsed once
    return tuple(type_.rstrip("?").split("|"))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_float,
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "ints": lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) for x in v),
    "floats": lambda v: isinstance(v, (list, tuple)) and all(_is_float(x) for x in v),
    "any": lambda v: True,
}


class Eager:
    """The builder the reference interpreter gives an op's ``torch`` hook: runs torch now."""

    @staticmethod
    def call(fn, *args, **kwargs):
        return fn(*args, **kwargs)

    @staticmethod
    def method(name, x, *args, **kwargs):
        return getattr(x, name)(*args, **kwargs)

    @staticmethod
    def shape(x) -> tuple[int, ...]:
        return tuple(x.shape)


EAGER = Eager()


@dataclass
class OpDef:
    name: str
    torch: Callable[..., Any] | None
    operands: tuple[str, ...] = ("x",)
    attrs: dict[str, Attr] = field(default_factory=dict)
    traits: frozenset = field(default_factory=frozenset)
    shape: Callable[[list[TensorType], dict], list[TensorType] | None] | None = None
    infer: Callable[[list[TensorType], dict], list[TensorType]] | None = None
    channels: Any = None
    cost: Any = None
    onnx: Callable | None = None
    module: Callable[[Any], Layer | None] | None = None
    num_outputs: int | Callable[[dict], int] = 1
    doc: str = ""
    # opaque keeps whatever attributes its source had
    open_attrs: bool = False

    def __post_init__(self):
        unknown = set(self.traits) - set(TRAITS)
        if unknown:
            raise ValueError(f"op {self.name}: unknown traits {sorted(unknown)}")
        self._defaults = {k: a.default for k, a in self.attrs.items() if not a.required}

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def onnx_lowering(self) -> Callable | None:
        """``onnx``, once the ONNX back-end has attached its lowerings."""
        import graphc.backends.onnx_ops  # noqa: F401

        return self.onnx

    # -- schema ------------------------------------------------------------------------------------
    def canonical(self, attrs: dict) -> dict:
        """``attrs`` with every missing default filled in after the given ones (a new dict)."""
        out = dict(attrs)
        for k, d in self._defaults.items():
            if k not in out:
                out[k] = list(d) if isinstance(d, list) else d
        return out

    def operand_range(self) -> tuple[int, float]:
        """(least, most) operand count the schema allows (kept while ``operands`` is the same
        tuple: the verifier asks for every node)."""
        cached = self.__dict__.get("_range")
        if cached is not None and cached[0] is self.operands:
            return cached[1]
        lo = sum(1 for o in self.operands if not o.endswith("?") and not o.startswith("*"))
        hi = float("inf") if any(o[0] in "*+" for o in self.operands) else len(self.operands)
        self._range = (self.operands, (lo, hi))
        return lo, hi

    def check(self, n_inputs: int, attrs: dict) -> str | None:
        """Why a node with ``n_inputs`` operands and ``attrs`` breaks the schema, or None."""
        lo, hi = self.operand_range()
        if not lo <= n_inputs <= hi:
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi == float("inf") else f"{lo} to {hi}"
            return f"{self.name} takes {want} operands ({', '.join(self.operands)}), got {n_inputs}"
        if self.open_attrs:
            return None
        for k, v in attrs.items():
            a = self.attrs.get(k)
            if a is None:
                return f"{self.name} has no attribute {k!r}"
            if not a.accepts(v):
                return f"{self.name}: attribute {k}={v!r} is not {a.type}"
        missing = [k for k in self.attrs if k not in attrs]  # a built node is canonical
        if missing:
            return f"{self.name}: missing attribute(s) {', '.join(missing)}"
        return None

    # -- semantics ---------------------------------------------------------------------------------
    def n_outputs(self, attrs: dict) -> int:
        return self.num_outputs(attrs) if callable(self.num_outputs) else self.num_outputs

    def infer_node(self, node) -> list[TensorType]:
        types = [v.type for v in node.inputs]
        try:
            if self.infer is not None:
                return list(self.infer(types, node.attrs))
            if self.shape is not None and all(all(t.shape) for t in types):
                out = self.shape(types, node.attrs)
                if out is not None:
                    return out
            return list(_meta_infer(self.name, tuple(types), _freeze(node.attrs)))
        except IRError:
            raise
        except Exception as e:  # the op's own check failed: say which node and why
            ins = ", ".join(str(t) for t in types)
            raise IRError(f"{node.op} {node.name}: cannot infer types from ({ins}): {_first_line(e)}") from e

    def run(self, inputs, attrs: dict):
        """The op on torch tensors, eagerly (``attrs`` canonical or not)."""
        if self.torch is None:
            raise IRError(f"op {self.name} has no torch implementation")
        return self.torch(EAGER, *inputs, **self.canonical(attrs))


_OPS: dict[str, OpDef] = {}


def defop(name: str, torch=None, **fields) -> OpDef:
    """Define op ``name`` (see the module docstring for the fields)."""
    if name in _OPS:
        raise ValueError(f"op {name!r} defined twice")
    op = OpDef(name, torch, **{k: frozenset(v) if k == "traits" else v for k, v in fields.items()})
    _OPS[name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return _OPS[name]
    except KeyError:
        raise IRError(f"unknown op {name!r}") from None


def has_op(name: str) -> bool:
    return name in _OPS


def all_ops() -> dict[str, OpDef]:
    return dict(_OPS)


def ops_with(*traits: str) -> frozenset[str]:
    """Names of the ops that declare every one of ``traits``."""
    bad = set(traits) - set(TRAITS)
    if bad:
        raise ValueError(f"unknown traits {sorted(bad)}")
    return frozenset(n for n, o in _OPS.items() if all(t in o.traits for t in traits))


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


# Importing the families defines their ops.
from graphc.ir.ops import nn as _nn  # noqa: E402,F401
from graphc.ir.ops import elementwise as _elementwise  # noqa: E402,F401
from graphc.ir.ops import shape as _shape  # noqa: E402,F401
from graphc.ir.ops import opaque as _opaque  # noqa: E402,F401
