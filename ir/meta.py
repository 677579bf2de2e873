"""Typed node metadata: what one pass hands over to a later one about a node.

A node's ``meta`` maps a registered key to a value of that key's kind; the printer shows it
(``[edp="basis"]`` after the attributes), the parser and the JSON form keep it, and the
verifier checks every entry against its :class:`MetaKey`. Passes find their hand-overs here,
never in node or value names, so renaming a node cannot break a pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MetaKey:
    """One kind of node metadata: the values it may take and the ops that may carry it.
    ``check`` (optional) validates a free-form value instead of ``values``: it returns why the
    value is malformed, or None."""

    name: str
    values: tuple
    ops: tuple[str, ...]
    doc: str
    check: Callable[[object], str | None] | None = None


NODE_META: dict[str, MetaKey] = {}


def register_meta(key: MetaKey) -> MetaKey:
    NODE_META[key.name] = key
    return key


EDP = register_meta(MetaKey(
    "edp", ("basis", "coef"), ("conv2d", "linear"),
    "EDP's decomposed pair (decompose -> edp-train -> prune-merge): the basis layer feeds the "
    "1x1 coefficient layer, its only reader"))

RESCONV = register_meta(MetaKey(
    "resconv", ("scale", "shortcut"), ("mul",),
    "a ResConv block (resconv-wrap -> resconv-train -> layer-prune): the layer's scaling factor "
    "on its conv branch (scale) and the information-control factor on its shortcut (shortcut)"))


def _origin_names(v) -> str | None:
    if not isinstance(v, list) or len(v) < 2:
        return "expected a list of at least two original node names"
    if not all(isinstance(n, str) and n for n in v):
        return "every original node name must be a non-empty string"
    if len(set(v)) != len(v):
        return "an original node is named twice"
    return None


_MERGED_OPS = ("conv1d", "conv2d", "conv3d", "linear")
STREAM = register_meta(MetaKey(
    "stream", (), _MERGED_OPS,
    "stream-merge: the original nodes (by name, in data-flow order) this one layer replaces; "
    "rebirth runs them in the graph stream-merge received to get its stage-1 targets",
    check=_origin_names))
STREAM_INIT = register_meta(MetaKey(
    "stream_init", ("exact", "approx"), _MERGED_OPS,
    "stream-merge: whether the merged layer's weights equal its original subgraph (exact) or only "
    "approximate it until rebirth retrains them (approx)"))


UNIFY = register_meta(MetaKey(
    "unify", tuple(f"cin{k}{s}" for k in range(2, 65) for s in ("", "-shared") if not (s and k > 12))
    + ("kernel", "kernel-shared"), ("conv1d", "conv2d", "conv3d", "linear"),
    "the weight's micro-structured block shape after unify: each block is one value times "
    "signs, or zero (read by the ONNX block encoding and unify-realize)"))


def check_meta(node) -> str | None:
    """Why ``node.meta`` breaks its schema, or None."""
    for k, v in node.meta.items():
        key = NODE_META.get(k)
        if key is None:
            return f"unknown metadata {k!r} (known: {', '.join(sorted(NODE_META))})"
        if key.check is not None:
            why = key.check(v)
            if why is not None:
                return f"metadata {k}={v!r}: {why}"
        elif v not in key.values:
            return f"metadata {k}={v!r} is not one of {list(key.values)}"
        if node.op not in key.ops:
            return f"metadata {k} on a {node.op} (only on {', '.join(key.ops)})"
    return None


__all__ = ["MetaKey", "NODE_META", "register_meta", "check_meta", "EDP", "RESCONV", "STREAM", "STREAM_INIT", "UNIFY"]
