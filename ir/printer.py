"""Text form of the IR: a printer and a parser that reads the printout back.

``print_graph(parse_graph(text)) == text`` for any text the printer made; ``//`` starts a
comment that runs to the end of the line (text tests annotate their input). Node metadata
(:mod:`graphc.ir.meta`) follows the attributes in brackets, ``[edp="basis"]``. Weights are never
printed (small constants of at most 8 elements are, so a dump stays meaningful); the parser
gives zero-filled weights unless a ``weights`` mapping (source name or value name -> array)
is passed.

    graph @block(%x: f32[1,64,56,56]) {
      %conv1.weight: f32[64,64,3,3] = param "layer1.0.conv1.weight"
      %conv1: f32[1,64,56,56] = conv2d(%x, %conv1.weight) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # layer1.0.conv1
      %add: f32[1,64,56,56] = add(%conv1, %x)  # add
      return %add
    }
"""
from __future__ import annotations

import json
import re

import numpy as np

from graphc.errors import ParseError
from graphc.ir.graph import Graph, Node
from graphc.ir.types import TensorType, numpy_dtype

_SMALL_CONST = 8


def _attr_value(v) -> str:
    return json.dumps(v, separators=(",", ":"), allow_nan=True)


def format_attrs(attrs: dict) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={_attr_value(v)}" for k, v in attrs.items()) + "}"


def format_meta(meta: dict) -> str:
    if not meta:
        return ""
    return " [" + ", ".join(f"{k}={_attr_value(v)}" for k, v in meta.items()) + "]"


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)
    ins = ", ".join(f"%{v.name}" for v in node.inputs)
    return f"{outs} = {node.op}({ins}){format_attrs(node.attrs)}{format_meta(node.meta)}  # {node.name}"


def format_param(p) -> str:
    head = f"%{p.value.name}: {p.value.type} = {p.kind}"
    if p.kind == "const":
        if p.data.size <= _SMALL_CONST:
            head += " " + _attr_value(p.data.tolist())
        return head
    return f'{head} {json.dumps(p.source)}'


def print_graph(graph: Graph) -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"graph @{graph.name}({ins}) {{"]
    for p in graph.params.values():
        lines.append("  " + format_param(p))
    for n in graph.nodes:
        lines.append("  " + format_node(n))
    lines.append("  return " + ", ".join(f"%{v.name}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def context(graph: Graph, node: Node, radius: int = 3) -> str:
    """The lines of the dump around ``node``, with the node underlined."""
    nodes = graph.nodes
    try:
        i = nodes.index(node)
    except ValueError:
        return "  " + format_node(node)
    lines = []
    for n in nodes[max(0, i - radius): i + radius + 1]:
        text = "  " + format_node(n)
        lines.append(text)
        if n is node:
            lines.append("  " + "^" * min(len(text) - 2, 60))
    return "\n".join(lines)


# -- parser -------------------------------------------------------------------------------------
_NAME = r"[A-Za-z0-9_.]+"
_TYPE = r"[a-z0-9]+\[[0-9,]*\]"
_HEADER = re.compile(rf"^graph @({_NAME})\((.*)\) \{{$")
_TYPED = re.compile(rf"%({_NAME}): ({_TYPE})")
_PARAM = re.compile(rf"^%({_NAME}): ({_TYPE}) = (weight|buffer|const|param)(?: (.*))?$")
_NODE_HEAD = re.compile(rf"^((?:%{_NAME}: {_TYPE}(?:, )?)+) = ([A-Za-z_][A-Za-z0-9_.]*)\(([^)]*)\)")
_DECODER = json.JSONDecoder()


def _parse_attrs(text: str, lineno: int, brackets: str = "{}", what: str = "attribute") -> tuple[dict, str]:
    attrs: dict = {}
    if not text.startswith(" " + brackets[0]):
        return attrs, text
    i = 2
    while True:
        m = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=").match(text, i)
        if not m:
            raise ParseError(f"line {lineno}: bad {what} near {text[i:i + 20]!r}")
        try:
            val, end = _DECODER.raw_decode(text, m.end())
        except json.JSONDecodeError as e:
            raise ParseError(f"line {lineno}: bad value for {what} {m.group(1)}: {e.msg}") from None
        attrs[m.group(1)] = val
        if text.startswith(", ", end):
            i = end + 2
        elif text.startswith(brackets[1], end):
            return attrs, text[end + 1:]
        else:
            raise ParseError(f"line {lineno}: expected ',' or '{brackets[1]}' after {what} {m.group(1)}")


def _strip_comment(line: str) -> str:
    """``line`` without a ``//`` comment (a ``//`` inside a quoted string is text)."""
    quoted = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "/" and not quoted and line.startswith("//", i):
            return line[:i]
        i += 1
    return line


def parse_graph(text: str, weights: dict | None = None) -> Graph:
    """Parse a text dump back into a Graph (types re-checked by the verifier afterwards)."""
    weights = weights or {}
    # Comment-only lines go (keeping line numbers for errors); blank lines stay.
    numbered = [(i, _strip_comment(ln).rstrip()) for i, ln in enumerate(text.splitlines(), start=1)]
    numbered = [(i, ln) for i, ln in numbered if ln.strip()]
    if not numbered:
        raise ParseError("empty IR text")
    lines = [ln for _, ln in numbered]
    linenos = [i for i, _ in numbered]
    m = _HEADER.match(lines[0])
    if not m:
        raise ParseError(f"line {linenos[0]}: expected 'graph @name(...) {{', got {lines[0][:60]!r}")
    g = Graph(m.group(1))
    values = {}
    for vm in _TYPED.finditer(m.group(2)):
        v = g.add_input(vm.group(1), TensorType.parse(vm.group(2)))
        values[v.name] = v
    saw_return = False
    for lineno, raw in zip(linenos[1:], lines[1:]):
        line = raw.strip()
        if not line or line == "}":
            continue
        if line.startswith("return"):
            names = re.findall(rf"%({_NAME})", line)
            try:
                g.set_outputs([values[n] for n in names])
            except KeyError as e:
                raise ParseError(f"line {lineno}: return of undefined value %{e.args[0]}") from None
            saw_return = True
            continue
        pm = _PARAM.match(line)
        if pm:
            name, t, kind, rest = pm.group(1), TensorType.parse(pm.group(2)), pm.group(3), pm.group(4)
            kind = "weight" if kind == "param" else kind
            source = ""
            data = None
            if kind == "const":
                if rest:
                    data = np.array(json.loads(rest), dtype=numpy_dtype(t.dtype)).reshape(t.shape)
            else:
                source = json.loads(rest) if rest else name
            if data is None:
                w = weights.get(source, weights.get(name))
                data = np.asarray(w) if w is not None else np.zeros(t.shape, numpy_dtype(t.dtype))
            v = g.add_param(data, source=source, name=name, kind=kind)
            if v.name != name:
                raise ParseError(f"line {lineno}: duplicate value name %{name}")
            values[name] = v
            continue
        nm = _NODE_HEAD.match(line)
        if not nm:
            raise ParseError(f"line {lineno}: cannot parse {line[:80]!r}")
        outs = [(o.group(1), TensorType.parse(o.group(2))) for o in _TYPED.finditer(nm.group(1))]
        arg_names = re.findall(rf"%({_NAME})", nm.group(3))
        try:
            ins = [values[a] for a in arg_names]
        except KeyError as e:
            raise ParseError(f"line {lineno}: use of undefined value %{e.args[0]}") from None
        attrs, rest = _parse_attrs(line[nm.end():], lineno)
        meta, rest = _parse_attrs(rest, lineno, "[]", "metadata")
        node_name = None
        rest = rest.strip()
        if rest.startswith("#"):
            node_name = rest[1:].strip()
        elif rest:
            raise ParseError(f"line {lineno}: unexpected text {rest[:40]!r}")
        node = g.add_node(nm.group(2), ins, attrs, node_name or outs[0][0],
                          out_types=[t for _, t in outs], out_names=[n for n, _ in outs])
        node.meta.update(meta)
        for (n, _), v in zip(outs, node.outputs):
            if v.name != n:
                raise ParseError(f"line {lineno}: duplicate value name %{n}")
            values[n] = v
    if not saw_return:
        raise ParseError("missing 'return' line")
    return g
