"""Typed node metadata: what one pass hands over to a later one about a node.

A node's ``meta`` maps a registered key to a value of that key's kind; the printer shows it
(``[edp="basis"]`` after the attributes), the parser and the JSON form keep it, and the
verifier checks every entry against its :class:`MetaKey`. Passes find their hand-overs here,
never in node or value names, so renaming a node cannot break a pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetaKey:
    """One kind of node metadata: the values it may take and the ops that may carry it."""

    name: str
    values: tuple
    ops: tuple[str, ...]
    doc: str


NODE_META: dict[str, MetaKey] = {}


def register_meta(key: MetaKey) -> MetaKey:
    NODE_META[key.name] = key
    return key


EDP = register_meta(MetaKey(
    "edp", ("basis", "coef"), ("conv2d", "linear"),
    "EDP's decomposed pair (decompose -> edp-train -> prune-merge): the basis layer feeds the "
    "1x1 coefficient layer, its only reader"))


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
        if v not in key.values:
            return f"metadata {k}={v!r} is not one of {list(key.values)}"
        if node.op not in key.ops:
            return f"metadata {k} on a {node.op} (only on {', '.join(key.ops)})"
    return None


__all__ = ["MetaKey", "NODE_META", "register_meta", "check_meta", "EDP", "UNIFY"]
