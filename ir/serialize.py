"""Saving the IR: JSON structure with weights beside it (``.npz``), and a DOT export.

JSON layout::

    {"format": "graphc-ir", "version": 1, "name": ..., "inputs": [{"name", "type"}],
     "params": [{"name", "type", "source", "kind"}],
     "nodes": [{"name", "op", "inputs": [value names], "outputs": [{"name", "type"}], "attrs"}],
     "outputs": [value names]}

The weights file holds one array per param, keyed by value name; a masked (weight-pruned)
param is marked ``"masked": true`` and its mask is the bool array ``NAME#mask``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from graphc.errors import InputError
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType

FORMAT = "graphc-ir"
VERSION = 1


def to_json(graph: Graph) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "inputs": [{"name": v.name, "type": str(v.type)} for v in graph.inputs],
        "params": [
            {"name": p.name, "type": str(p.value.type), "source": p.source, "kind": p.kind,
             **({"masked": True} if p.mask is not None else {})}
            for p in graph.params.values()
        ],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": [v.name for v in n.inputs],
                "outputs": [{"name": v.name, "type": str(v.type)} for v in n.outputs],
                "attrs": n.attrs,
            }
            for n in graph.nodes
        ],
        "outputs": [v.name for v in graph.outputs],
    }


def from_json(doc: dict, weights: dict | None = None) -> Graph:
    if doc.get("format") != FORMAT:
        raise InputError("not a graphc IR JSON document")
    weights = weights or {}
    g = Graph(doc["name"])
    values = {}
    for d in doc["inputs"]:
        values[d["name"]] = g.add_input(d["name"], TensorType.parse(d["type"]))
    for d in doc["params"]:
        t = TensorType.parse(d["type"])
        if d["name"] in weights:
            data = np.asarray(weights[d["name"]])
        else:
            from graphc.ir.types import numpy_dtype

            data = np.zeros(t.shape, numpy_dtype(t.dtype))
        values[d["name"]] = g.add_param(data, source=d["source"], name=d["name"], kind=d["kind"])
        if d.get("masked") and f"{d['name']}#mask" in weights:
            values[d["name"]].param.set_mask(weights[f"{d['name']}#mask"])
    for d in doc["nodes"]:
        n = g.add_node(
            d["op"], [values[i] for i in d["inputs"]], d["attrs"], d["name"],
            out_types=[TensorType.parse(o["type"]) for o in d["outputs"]],
            out_names=[o["name"] for o in d["outputs"]],
        )
        for o, v in zip(d["outputs"], n.outputs):
            values[o["name"]] = v
    g.set_outputs([values[o] for o in doc["outputs"]])
    return g


def save_json(graph: Graph, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and ``path`` with suffix ``.npz`` (weights), each atomically."""
    path = Path(path)
    wpath = path.with_suffix(".npz")
    _atomic_write(path, lambda f: f.write(json.dumps(to_json(graph), indent=1).encode()))
    _atomic_write(wpath, lambda f: np.savez(f, **{p.name: p.data for p in graph.params.values()},
                                                **{f"{p.name}#mask": p.mask for p in graph.params.values()
                                                   if p.mask is not None}))
    return path, wpath


def load_json(path: str | os.PathLike) -> Graph:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read graphc IR {path}: {e}") from None
    wpath = path.with_suffix(".npz")
    weights = dict(np.load(wpath)) if wpath.exists() else {}
    return from_json(doc, weights)


def _atomic_write(path: Path, write) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_dot(graph: Graph) -> str:
    """Graphviz DOT: one box per node (op, name, output type), edges labelled by shape."""
    def q(s: str) -> str:
        return json.dumps(s)

    lines = [f"digraph {q(graph.name)} {{", "  rankdir=TB;", '  node [shape=box, fontname="monospace", fontsize=10];']
    for v in graph.inputs:
        lines.append(f"  {q('in:' + v.name)} [label={q(v.name + chr(10) + str(v.type))}, shape=oval];")
    for n in graph.nodes:
        label = f"{n.op}\\n{n.name}\\n" + "\\n".join(str(v.type) for v in n.outputs)
        lines.append(f'  {q(n.name)} [label="{label}"];')
    for n in graph.nodes:
        for v in n.inputs:
            if v.param is not None:
                continue
            src = q(v.producer.name) if v.producer is not None else q("in:" + v.name)
            lines.append(f"  {src} -> {q(n.name)} [label={q(str(v.type))}];")
    for i, v in enumerate(graph.outputs):
        lines.append(f"  {q('out:' + str(i))} [label={q(v.name)}, shape=oval];")
        src = q(v.producer.name) if v.producer is not None else q("in:" + v.name)
        lines.append(f"  {src} -> {q('out:' + str(i))};")
    lines.append("}")
    return "\n".join(lines) + "\n"
