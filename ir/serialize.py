"""Saving the IR: JSON structure with weights beside it (``.npz``), and a DOT export.

JSON layout::

    {"format": "graphc-ir", "version": 1, "name": ..., "inputs": [{"name", "type"}],
     "params": [{"name", "type", "source", "kind"}],
     "nodes": [{"name", "op", "inputs": [value names], "outputs": [{"name", "type"}], "attrs", "meta" (optional)}],
     "outputs": [value names], "input_names": [...], "output_names": [...]}

``input_names``/``output_names`` (optional) are the graph's external names, in order.

The weights file holds one array per param, keyed by value name; a masked (weight-pruned)
param is marked ``"masked": true`` and its mask is the bool array ``NAME#mask``.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from graphc.errors import InputError
from graphc.ir.graph import PARAM_KINDS, Graph
from graphc.ir.ops import has_op
from graphc.ir.types import TensorType, numpy_dtype

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
                **({"meta": n.meta} if n.meta else {}),
            }
            for n in graph.nodes
        ],
        "outputs": [v.name for v in graph.outputs],
        # External names of the inputs and outputs (any characters), in order, where recorded.
        **{k: names for k, names in zip(("input_names", "output_names"), graph.recorded_io_names)
           if names is not None},
    }


def from_json(doc, weights: dict | None = None) -> Graph:
    """Build a Graph from a JSON document and its weights, refusing anything malformed.

    Every field is checked for presence and type before use, every param must have an array of
    its declared shape and dtype in ``weights`` (a missing array is an error, never zeros),
    and the finished graph must pass the verifier; each failure is one :class:`InputError`
    naming the field, so a broken file is blamed on the file and never on a later pass.
    """
    _header(doc)
    weights = {} if weights is None else weights
    name = _field(doc, "name", str, "the document")
    g = Graph(name or "main")
    values: dict[str, object] = {}

    def define(vname: str, where: str):
        if vname in values:
            raise InputError(f"{where}: value name {vname!r} is defined twice")

    for i, d in enumerate(_field(doc, "inputs", list, "the document")):
        where = f"inputs[{i}]"
        vname = _field(d, "name", str, where)
        define(vname, where)
        values[vname] = g.add_input(vname, _type(d, where))
    for i, d in enumerate(_field(doc, "params", list, "the document")):
        where = f"params[{i}]"
        vname = _field(d, "name", str, where)
        define(vname, where)
        t = _type(d, where)
        source = _field(d, "source", str, where)
        kind = _field(d, "kind", str, where)
        if kind not in PARAM_KINDS:
            raise InputError(f"{where}: kind {kind!r} is not one of {', '.join(PARAM_KINDS)}")
        data = _weight(weights, vname, t)
        values[vname] = g.add_param(data, source=source, name=vname, kind=kind)
        masked = d.get("masked", False)
        if not isinstance(masked, bool):
            raise InputError(f"{where}: 'masked' is {_kind(masked)}, expected a boolean")
        if masked:
            mask = weights.get(f"{vname}#mask")
            if mask is None:
                raise InputError(f"param {vname!r} is masked, but the weights file has no mask for it")
            if tuple(mask.shape) != t.shape:
                raise InputError(f"param {vname!r}: its mask has shape {list(mask.shape)}, its type says {t}")
            values[vname].param.set_mask(mask)
    node_names: set[str] = set()
    for i, d in enumerate(_field(doc, "nodes", list, "the document")):
        where = f"nodes[{i}]"
        nname = _field(d, "name", str, where)
        where = f"node {nname!r}"
        if nname in node_names:
            raise InputError(f"{where}: node name {nname!r} is used twice")
        node_names.add(nname)
        op = _field(d, "op", str, where)
        if not has_op(op):
            raise InputError(f"{where}: unknown op {op!r}")
        ins = _field(d, "inputs", list, where)
        for j, vname in enumerate(ins):
            if not isinstance(vname, str):
                raise InputError(f"{where}: inputs[{j}] is {_kind(vname)}, expected a value name")
            if vname not in values:
                raise InputError(f"{where}: input {vname!r} is not defined before it")
        outs = _field(d, "outputs", list, where)
        out_names, out_types = [], []
        for j, o in enumerate(outs):
            ow = f"{where} outputs[{j}]"
            oname = _field(o, "name", str, ow)
            define(oname, ow)
            out_names.append(oname)
            out_types.append(_type(o, ow))
        attrs = _field(d, "attrs", dict, where)
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise InputError(f"{where}: 'meta' is {_kind(meta)}, expected an object")
        n = g.add_node(op, [values[v] for v in ins], attrs, nname, out_types=out_types, out_names=out_names)
        n.meta.update(meta)
        for oname, v in zip(out_names, n.outputs):
            values[oname] = v
    outputs = _field(doc, "outputs", list, "the document")
    if not outputs:
        raise InputError("the graph has no outputs")
    for j, vname in enumerate(outputs):
        if not isinstance(vname, str) or vname not in values:
            raise InputError(f"outputs[{j}] ({vname!r}) names no value of the graph")
    g.set_outputs([values[o] for o in outputs])
    _set_io_names(g, doc)
    _verify(g)
    return g


def _header(doc) -> None:
    if not isinstance(doc, dict):
        raise InputError(f"not a graphc IR JSON document (top level is {_kind(doc)}, expected an object)")
    if doc.get("format") != FORMAT:
        raise InputError("not a graphc IR JSON document (no \"format\": \"graphc-ir\")")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:
        raise InputError(f"graphc IR version {version!r} is not supported (this graphc reads version {VERSION})")


def _kind(x) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), "a number" if isinstance(x, (int, float)) else type(x).__name__)


def _field(d, key: str, typ: type, where: str):
    if not isinstance(d, dict):
        raise InputError(f"{where} is {_kind(d)}, expected an object")
    if key not in d:
        raise InputError(f"{where} has no {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
        raise InputError(f"{where}: {key!r} is {_kind(v)}, expected "
                         f"{ {dict: 'an object', list: 'a list', str: 'a string'}[typ]}")
    return v


def _type(d, where: str) -> TensorType:
    text = _field(d, "type", str, where)
    try:
        return TensorType.parse(text)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {e}") from None


def _weight(weights: dict, name: str, t: TensorType) -> np.ndarray:
    if name not in weights:
        raise InputError(f"param {name!r} ({t}) has no array in the weights file")
    data = weights[name]
    want = numpy_dtype(t.dtype) if t.dtype != "bf16" else None  # numpy has no bfloat16
    if data.dtype.kind not in "biuf" or (want is not None and data.dtype != want):
        raise InputError(f"param {name!r}: the weights file holds {data.dtype} values, its type says {t.dtype}")
    if tuple(data.shape) != t.shape:
        raise InputError(f"param {name!r}: the weights file holds shape {list(data.shape)}, its type says {t}")
    return data


def _verify(g: Graph) -> None:
    """The verifier, then each node's attributes run through its op on meta tensors: a closed-form
    type rule reads only the attributes it needs, the op's own code checks all of them."""
    from graphc.errors import IRError
    from graphc.ir.ops import _freeze, _meta_infer

    try:
        g.verify()
    except IRError as e:
        raise InputError(e.args[0].removeprefix("verify: ")) from None
    for n in g.nodes:
        opdef = n.opdef
        if opdef.torch is None or opdef.infer is not None:
            continue
        types = tuple(v.type for v in n.inputs)
        try:
            inferred = list(_meta_infer(n.op, types, _freeze(n.attrs)))
        except Exception as e:
            raise InputError(f"node {n.name!r} ({n.op}): its attributes or operands are invalid "
                             f"({type(e).__name__}: {_first_line(e)})") from None
        if inferred != [v.type for v in n.outputs]:
            raise InputError(f"node {n.name!r} ({n.op}): output types "
                             f"{', '.join(str(v.type) for v in n.outputs)} do not follow from its inputs "
                             f"({', '.join(str(t) for t in inferred)})")


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__


def _set_io_names(g: Graph, doc: dict) -> None:
    from graphc.errors import IRError

    try:
        g.set_io_names(doc.get("input_names"), doc.get("output_names"))
    except (IRError, TypeError) as e:
        raise InputError(f"graphc IR: bad input_names/output_names: {e}") from None


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
    """Read a graph saved by :func:`save_json`: the JSON document and the ``.npz`` beside it.

    Weights are read with ``allow_pickle=False``; anything that is not the format (binary bytes,
    deep nesting, a damaged or pickled ``.npz``) is an :class:`InputError` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read graphc IR {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not a graphc IR file (not UTF-8 text: byte {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise InputError(f"{path} is not a graphc IR file (JSON nested too deeply)") from None
    wpath = path.with_suffix(".npz")
    try:
        _header(doc)  # the document's own errors come before the weights are looked for
        weights = _load_weights(wpath) if _field(doc, "params", list, "the document") else {}
        return from_json(doc, weights)
    except InputError as e:
        msg = str(e)
        named = msg.startswith((f"{path} ", f"{wpath} "))  # the weights file's errors name it
        raise InputError(msg if named else f"{path}: {msg}") from None


def _load_weights(wpath: Path) -> dict[str, np.ndarray]:
    import zipfile

    with open(wpath, "rb") if wpath.is_file() else contextlib.nullcontext() as f:
        if f is not None and f.read(4) != b"PK\x03\x04":
            raise InputError(f"{wpath} is not an .npz weights file (not a zip archive)")
    if not wpath.is_file():
        raise InputError(f"{wpath.with_suffix('.json')} has params but its weights file {wpath} is missing")
    try:
        with np.load(wpath, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise InputError(f"{wpath} is not an .npz weights file (a bare .npy array)")
            return {k: z[k] for k in z.files}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        why = "pickled data is never loaded" if "pickle" in str(e) else _first_line(e)
        raise InputError(f"{wpath} is not a readable .npz weights file ({why})") from None


def _atomic_write(path: Path, write) -> None:
    from graphc.files import atomic_write

    atomic_write(path, write)


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
