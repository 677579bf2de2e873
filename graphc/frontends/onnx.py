"""ONNX front-end: an ``.onnx`` file or ``onnx.ModelProto`` becomes a graphc :class:`Graph`.

Invariants of the graph it returns:

- Every value has a static shape. Symbolic input dims (``batch``) become 1 unless
  ``input_shapes`` gives the input's shape.
- Tensors that do not depend on a graph input -- initializers (also those shadowing a graph
  input, as opset-9 era exporters wrote them), ``Constant``, ``ConstantOfShape``, ``Shape`` of a
  statically shaped tensor, and any deterministic node fed only by such tensors -- are folded
  with ``onnx.reference`` and never become IR nodes. They enter the IR as params only where an
  op takes them as a tensor operand; shape-like operands (Reshape's shape, Slice's starts...)
  become attributes.
- A param keeps its initializer name (torch exporters use state_dict keys); anonymous tensors
  (``onnx::Conv_123``) are named after their consumer and role (``layer1.0.conv1.weight``).
  A weight consumed by several nodes is copied per node, so a pass that rewrites one layer's
  weight never changes another's (exporters share equal-valued tensors between layers).
- ONNX ops with no graphc mapping become ``opaque`` nodes that keep the ONNX node verbatim,
  typed by ``onnx.shape_inference`` run on that node with its static input types (for an op
  onnx has no schema for, by the model's own static ``value_info``); a node whose output
  types cannot be found raises :class:`UnsupportedError` naming it.
- Graph inputs and outputs keep their ONNX names exactly (``Graph.input_names`` /
  ``output_names``); value names inside the IR are sanitised.
- Node names are the ONNX node names cleaned into module paths
  (``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``), so the same model gives the same dump.
"""
from __future__ import annotations

import ast
import base64
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graphc.errors import GraphcError, InputError, IRError, UnsupportedError
from graphc.ir.graph import Graph, Value
from graphc.ir.types import TensorType, dtype_from_numpy, dtype_from_onnx, numpy_dtype

# Ops whose outputs are not a function of their inputs: never folded.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}
# Opsets older than this are first brought up by onnx.version_converter (kept as they are if
# the converter refuses); handlers still read both the attribute and the input forms.
_CONVERT_BELOW = 11


class Fallback(Exception):
    """Raised by an op handler: this node is kept as an opaque ONNX node."""


def load_onnx(model: Any, input_shapes: dict[str, Sequence[int]] | Sequence[Sequence[int]] | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) as a graphc Graph.

    ``input_shapes`` fixes the shapes of the graph inputs (a dict by input name or a list in
    input order); symbolic dims without one become 1.
    """
    proto, base_dir = _read_model(model)
    validate(proto)
    return Importer(proto, input_shapes, base_dir).run()


MIN_OPSET = 7


def validate(proto) -> None:
    """Refuse a model onnxruntime could not run either: an opset outside 7 to the newest onnx
    knows, no outputs, a name with two producers, or shapes that do not type-check under
    onnx's strict shape inference (declared shapes contradicting inferred ones included)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    opset = {o.domain or "": o.version for o in proto.opset_import}.get("", None)
    if opset is None:
        opset = {o.domain: o.version for o in proto.opset_import}.get("ai.onnx")
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise UnsupportedError(f"ONNX opset {opset} is not supported (graphc reads opsets {MIN_OPSET} to {newest})")
    g = proto.graph
    if not g.output:
        raise InputError("the ONNX graph has no outputs")
    inits = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    produced = {i.name for i in g.input if i.name not in inits} | inits
    for n in g.node:
        for o in n.output:
            if o and o in produced:
                raise InputError(f"ONNX name {o!r} has two producers (node {n.name or n.op_type} "
                                 f"redefines it); a graph must assign each name once")
            produced.add(o)
    for n in g.node:
        for i in n.input:
            if i and i not in produced:
                raise InputError(f"ONNX node {n.name or n.op_type} ({n.op_type}) reads {i!r}, which nothing produces")
    for i in g.input:
        if i.name not in inits:
            if not i.type.HasField("tensor_type"):
                raise UnsupportedError(f"graph input {i.name!r} is not a tensor")
            _dtype(i.type.tensor_type.elem_type, f"graph input {i.name!r}")
    if proto.ByteSize() < 2**31 - 2**20:  # shape inference serialises the model: protobuf's 2 GB limit
        checked = proto
        if g.sparse_initializer:
            # onnx types a sparse initializer as a sparse tensor, which no dense operator takes;
            # onnxruntime densifies them at load, so the types are checked on the dense form.
            from onnx import numpy_helper

            checked = onnx.ModelProto()
            checked.CopyFrom(proto)
            dense = [numpy_helper.from_array(_densify(sp)[0], sp.values.name) for sp in checked.graph.sparse_initializer]
            del checked.graph.sparse_initializer[:]
            checked.graph.initializer.extend(dense)
        try:
            onnx.shape_inference.infer_shapes(checked, check_type=True, strict_mode=True)
        except onnx.shape_inference.InferenceError as e:
            raise InputError(f"the ONNX graph's shapes do not type-check: {_inference_reason(e)}") from None
        except Exception:
            pass  # anything else (an op onnx cannot infer without data) is left to the importer


def _inference_reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = re.sub(r"^\[ShapeInferenceError\] Inference error\(s\): ", "", text)
    return text[:300]


# -- reading --------------------------------------------------------------------------------
def _read_model(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, None
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:
            raise InputError(f"cannot parse ONNX bytes: {_first_line(e)}") from None
        _check_parsed(proto, "the given bytes")
        return proto, None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise InputError(f"ONNX model not found: {path}")
        if not path.is_file():
            raise InputError(f"ONNX model path is not a file: {path}")
        try:
            proto = onnx.load(str(path), load_external_data=True)
        except Exception as e:
            raise InputError(f"{path} is not a readable ONNX model ({_first_line(e)})") from None
        _check_parsed(proto, str(path))
        return proto, str(path.parent)
    raise InputError(f"cannot load an ONNX model from {type(model).__name__}")


def _check_parsed(proto, what: str) -> None:
    # Protobuf parses many byte strings (text, truncated files) into a model with no graph.
    if not proto.graph.node and not proto.graph.output:
        raise InputError(f"{what} is not an ONNX model (no graph found; truncated or not ONNX?)")
    if not proto.opset_import:
        raise InputError(f"{what} is not a valid ONNX model (no opset imports)")


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else type(e).__name__


# -- naming ---------------------------------------------------------------------------------
def _scope_path(parts: list[str]) -> str:
    """Join exporter scopes into one dotted module path.

    torch.onnx (TorchScript) writes a scope relative to its parent unless it repeats the
    parent's name as a prefix: ``features/features.1/block/block.0`` is
    ``features.1.block.0``.
    """
    full: list[str] = []
    prev = None
    for c in parts:
        if not c:
            continue
        if prev is not None and c.startswith(prev + ".") and full:
            full[-1] = full[-1][: len(full[-1]) - len(prev)] + c
        else:
            full.append(c)
        prev = c
    return ".".join(full)


def _raw_node_name(node) -> tuple[str, str]:
    """(module path, op part) for a node, from its name or the dynamo exporter's metadata."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(p.value) if s]
            except (ValueError, SyntaxError):
                break
            if scopes:
                return (scopes[-2] if len(scopes) > 1 else ""), scopes[-1]
    name = node.name
    if name.startswith("/"):
        parts = name.strip("/").split("/")
        return _scope_path(parts[:-1]), parts[-1]
    return "", name or node.op_type


def node_names(nodes) -> list[str]:
    """Readable, deterministic base names for ``nodes`` (uniqueness is the Graph's job)."""
    raw = [_raw_node_name(n) for n in nodes]
    by_path: dict[str, set[str]] = {}
    for (path, _), n in zip(raw, nodes):
        by_path.setdefault(path, set()).add(n.op_type)
    count: dict[str, int] = {}
    for path, _ in raw:
        count[path] = count.get(path, 0) + 1
    names = []
    for (path, op_part), n in zip(raw, nodes):
        if not path:
            base = op_part if not n.name.startswith("/") else n.op_type.lower()
            names.append(re.sub(r"^node_", "", base) or n.op_type.lower())
        elif count[path] == 1 or len(by_path[path]) == 1:
            names.append(path)
        else:
            names.append(f"{path}.{n.op_type.lower()}")
    return names


_ANON = re.compile(r"(::|/)|^_?v(al)?_\d+$|^const(ant)?_?\d*$|^\d+$")


def _readable(name: str) -> bool:
    return bool(name) and not _ANON.search(name) and any(c.isalpha() for c in name)


# -- attributes -----------------------------------------------------------------------------
def attr_to_json(a):
    """An AttributeProto as a JSON-able value; tensors, graphs and empty lists as base64."""
    from onnx import AttributeProto as A

    if a.type == A.INT:
        return int(a.i)
    if a.type == A.FLOAT:
        return float(a.f)
    if a.type == A.STRING:
        try:
            return a.s.decode()
        except UnicodeDecodeError:
            pass
    elif a.type == A.INTS and len(a.ints):
        return [int(i) for i in a.ints]
    elif a.type == A.FLOATS and len(a.floats):
        return [float(f) for f in a.floats]
    elif a.type == A.STRINGS and len(a.strings):
        try:
            return [s.decode() for s in a.strings]
        except UnicodeDecodeError:
            pass
    return {"$onnx": base64.b64encode(a.SerializeToString()).decode()}


class Importer:
    """One import: walks the ONNX graph once in topological order."""

    def __init__(self, model, input_shapes=None, base_dir=None):
        import onnx

        model = _prepare(model)
        self.model = model
        self.onnx_graph = model.graph
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 1))
        self.graph = Graph(model.graph.name or "onnx")
        self.graph.meta["onnx_opsets"] = dict(self.opsets)
        self.consts: dict[str, np.ndarray] = {}
        self.from_init: set[str] = set()
        self.sparse_masks: dict[str, np.ndarray] = {}
        self.values: dict[str, Value] = {}
        self.sequences: dict[str, list[Value]] = {}
        self._params: dict[tuple[str, str], Value] = {}
        self._param_users: dict[str, int] = {}
        self.input_shapes = input_shapes
        self._onnx = onnx
        self._declared = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)}

    # -- inputs and constants -----------------------------------------------------------
    def _add_inputs(self) -> None:
        from onnx import numpy_helper

        inits = {t.name for t in self.onnx_graph.initializer}
        for t in self.onnx_graph.initializer:
            try:
                arr = numpy_helper.to_array(t)
            except Exception as e:
                raise InputError(f"initializer {t.name!r} cannot be read ({_first_line(e)})") from None
            self.consts[t.name] = _supported_array(arr, t.name)
            self.from_init.add(t.name)
        for sp in self.onnx_graph.sparse_initializer:
            arr, mask = _densify(sp)
            self.consts[sp.values.name] = _supported_array(arr, sp.values.name)
            self.from_init.add(sp.values.name)
            self.sparse_masks[sp.values.name] = mask
            inits.add(sp.values.name)
        real = [i for i in self.onnx_graph.input if i.name not in inits]
        self.input_names = [i.name for i in real]
        shapes = self.input_shapes
        if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], int):
            shapes = [shapes]
        if isinstance(shapes, (list, tuple)):
            if len(shapes) != len(real):
                raise InputError(f"{len(shapes)} input shapes given for {len(real)} graph inputs")
            shapes = {i.name: s for i, s in zip(real, shapes)}
        shapes = dict(shapes or {})
        unknown = set(shapes) - {i.name for i in real}
        if unknown:
            raise InputError(f"input_shapes names unknown inputs: {', '.join(sorted(unknown))}")
        for inp in real:
            tt = inp.type.tensor_type
            if not inp.type.HasField("tensor_type"):
                raise UnsupportedError(f"graph input {inp.name!r} is not a tensor")
            dtype = _dtype(tt.elem_type, f"graph input {inp.name!r}")
            if inp.name in shapes:
                shape = tuple(int(d) for d in shapes[inp.name])
            else:
                if not tt.HasField("shape"):
                    raise InputError(f"graph input {inp.name!r} has no shape; pass input_shapes")
                if any(d.HasField("dim_value") and d.dim_value <= 0 for d in tt.shape.dim):
                    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
                    raise InputError(f"graph input {inp.name!r} declares a dimension of size 0 ({dims}); "
                                     "graphc needs positive sizes (give --input-shape)")
                shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
            self.values[inp.name] = self.graph.add_input(inp.name, TensorType(shape, dtype))

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def type_of(self, name: str) -> TensorType:
        if name in self.consts:
            return TensorType.of(self.consts[name])
        return self.values[name].type

    def param(self, name: str, consumer: tuple, role: str | None = None, kind: str | None = None) -> Value:
        """The IR value for constant ``name`` as an operand of ``consumer`` (a key and a name)."""
        key = (name, consumer[0])
        consumer = consumer[1]
        if key in self._params:
            return self._params[key]
        arr = self.consts[name]
        shared = self._param_users.get(name, 0) > 0
        self._param_users[name] = self._param_users.get(name, 0) + 1
        if kind is None:
            floating = arr.dtype.kind == "f"
            kind = "weight" if floating and arr.ndim > 0 and name in self.from_init else "const"
        if _readable(name) and not shared:
            vname = source = name
        else:
            vname = f"{consumer}.{role}" if role else f"{consumer}.const"
            source = name if _readable(name) else vname
        v = self.graph.add_param(arr.copy() if shared else arr, source=source, name=vname, kind=kind)
        mask = self.sparse_masks.get(name)
        if mask is not None and kind == "weight" and mask.shape == arr.shape:
            v.param.set_mask(mask)
        self._params[key] = v
        return v

    # -- folding and inference ------------------------------------------------------------
    def _one_node_model(self, node, inputs_as_init: bool, input_types=None, init_limit: int | None = None):
        """A model of ``node`` alone; constants become initializers (only those under
        ``init_limit`` bytes when given: larger ones become typed inputs)."""
        from onnx import helper, numpy_helper

        inits, ins = [], []
        for n in node.input:
            if not n:
                continue
            if n in self.consts and init_limit is not None and self.consts[n].nbytes > init_limit:
                arr = self.consts[n]
                if not any(i.name == n for i in ins):
                    ins.append(helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                             list(arr.shape)))
            elif n in self.consts and (inputs_as_init or n not in self.values):
                if not any(t.name == n for t in inits):
                    inits.append(numpy_helper.from_array(self.consts[n], n))
            elif n in self.values or (input_types and n in input_types):
                t = input_types[n] if input_types and n in input_types else self.values[n].type
                if not any(i.name == n for i in ins):
                    ins.append(helper.make_tensor_value_info(n, _onnx_elem(t.dtype), list(t.shape)))
        outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        g = helper.make_graph([node], "one", ins, outs, initializer=inits)
        m = helper.make_model(g, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
        m.functions.extend(self.model.functions)
        return m

    def fold(self, node) -> list[np.ndarray]:
        from onnx.reference import ReferenceEvaluator

        m = self._one_node_model(node, inputs_as_init=True)
        outs = ReferenceEvaluator(m).run(None, {})
        return [np.asarray(o) for o in outs]

    def infer_types(self, node, label: str) -> list[TensorType]:
        """Output types of one node by onnx shape inference on its static input types."""
        import onnx

        # Shape inference reads the values of small constants (shapes, axes) only: a weight goes
        # in as a typed input, so no one-node model copies it, or exceeds protobuf's 2 GB.
        m = self._one_node_model(node, inputs_as_init=True, init_limit=1 << 20)
        failure = None
        try:
            inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
            known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        except Exception as e:
            failure, known = f": {_first_line(e)}", {}
        types = []
        for o in node.output:
            if not o:
                continue
            t = _static_type(known.get(o), label)
            if t is None:
                # A custom op onnx has no schema for: the model's own annotation, when static.
                t = _static_type(self._declared.get(o), label)
            if t is None:
                raise UnsupportedError(f"cannot infer a static shape for output {o!r} of ONNX node "
                                       f"{label} ({node.op_type}){failure or ''}")
            types.append(t)
        return types

    def _foldable(self, node) -> bool:
        if node.op_type in _NONDETERMINISTIC or node.domain not in ("", "ai.onnx"):
            return False
        if any(a.type in (5, 10) for a in node.attribute):  # GRAPH / GRAPHS: outer-scope refs
            return False
        if node.op_type in ("Shape", "Size") and node.input[0] in self.values:
            return True
        return all(n in self.consts for n in node.input if n)

    def _fold_static(self, node) -> list[np.ndarray]:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            from onnx import numpy_helper

            return [numpy_helper.to_array(node.attribute[0].t)]
        if node.op_type == "Identity":
            return [self.consts[node.input[0]]]
        if node.op_type in ("Shape", "Size") and node.input[0] in self.values:
            shape = np.array(self.values[node.input[0]].shape, dtype=np.int64)
            if node.op_type == "Size":
                return [np.array(int(np.prod(shape)), dtype=np.int64)]
            attrs = {a.name: a.i for a in node.attribute}
            start, end = attrs.get("start", 0), attrs.get("end", None)
            return [shape[start:end]]
        return self.fold(node)

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> Graph:
        from graphc.frontends.onnx_ops import HANDLERS, NodeContext

        self._add_inputs()
        nodes = list(self.onnx_graph.node)
        names = node_names(nodes)
        for node, base in zip(nodes, names):
            label = node.name or base
            if self._foldable(node):
                try:
                    outs = self._fold_static(node)
                except Exception as e:
                    raise UnsupportedError(f"cannot evaluate constant ONNX node {label} ({node.op_type}): "
                                           f"{_first_line(e)}") from None
                derived = any(n in self.from_init for n in node.input if n)
                for o, arr in zip(node.output, outs):
                    if o:
                        self.consts[o] = _supported_array(arr, o)
                        if derived:
                            self.from_init.add(o)
                continue
            missing = [n for n in node.input
                       if n and n not in self.values and n not in self.consts and n not in self.sequences]
            if missing:
                raise InputError(f"ONNX node {label} ({node.op_type}) reads {missing[0]!r}, which nothing "
                                 f"produces (graph not topologically sorted?)")
            cx = NodeContext(self, node, base)
            handler = HANDLERS.get((node.domain or "", node.op_type)) if node.domain in ("", "ai.onnx") else None
            results = None
            if handler is not None:
                try:
                    results = handler(cx)
                except Fallback:
                    cx.discard()
                    results = None
                except GraphcError as e:
                    cx.discard()
                    if not isinstance(e, IRError):
                        raise
                    if "cannot infer types" in str(e):
                        # graphc's op refused the operand shapes: the node is ill-typed, and an
                        # opaque copy of it would only fail later, in onnxruntime.
                        given = " with the given input shapes" if self.input_shapes else ""
                        raise InputError(f"ONNX node {label} ({node.op_type}): its operand shapes do not "
                                         f"type-check{given}: {_first_line(e).split('): ', 1)[-1]}") from None
                    results = None
            if results is None:
                results = cx.opaque()
            outs = [o for o in node.output if o]
            if len(results) < len(outs):
                raise UnsupportedError(f"ONNX node {label} ({node.op_type}): {len(outs)} outputs, mapped {len(results)}")
            for o, r in zip(outs, results):
                if isinstance(r, np.ndarray):
                    self.consts[o] = r
                elif isinstance(r, list):
                    self.sequences[o] = r
                else:
                    self.values[o] = r
        self._set_outputs()
        self.graph.prune_unused_params()
        return self.graph

    def _set_outputs(self) -> None:
        outs = []
        for o in self.onnx_graph.output:
            if o.name in self.values:
                outs.append(self.values[o.name])
            elif o.name in self.consts:
                c = self.param(o.name, ("output", "output"), "value")
                outs.append(self.graph.add_node("identity", [c], {}, name=_clean(o.name)).output)
            else:
                raise InputError(f"graph output {o.name!r} is produced by no node")
        self.graph.set_outputs(outs)
        names = [o.name for o in self.onnx_graph.output]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"graph output {dup[0]!r} is listed {names.count(dup[0])} times")
        # Serving code binds tensors by these exact names; the IR's value names are sanitised.
        self.graph.set_io_names(self.input_names, names)


def _static_type(vi, label: str) -> TensorType | None:
    """The TensorType of a ValueInfoProto whose dtype and every dim are known, else None."""
    tt = vi.type.tensor_type if vi is not None and vi.type.HasField("tensor_type") else None
    if (tt is None or not tt.elem_type or not tt.HasField("shape")
            or any(not d.HasField("dim_value") for d in tt.shape.dim)):
        return None
    return TensorType(tuple(d.dim_value for d in tt.shape.dim), _dtype(tt.elem_type, label))


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name).strip("._") or "output"


def _prepare(model):
    """Inline local functions and bring very old opsets up, so handlers see fewer forms."""
    import onnx

    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:
            raise UnsupportedError(f"cannot inline the model's local functions: {_first_line(e)}") from None
    opset = {o.domain or "": o.version for o in model.opset_import}.get("", None)
    if opset is not None and opset < _CONVERT_BELOW:
        try:
            from onnx import version_converter

            converted = version_converter.convert_version(model, _CONVERT_BELOW)
            onnx.checker.check_model(converted)
            model = converted
        except Exception:
            pass  # handlers read the old attribute forms too
    try:
        _toposorted(model.graph)
    except InputError:
        raise
    return model


def _densify(sp) -> tuple[np.ndarray, np.ndarray]:
    """A SparseTensorProto (COO, linear or [NNZ, rank] indices) as (dense array, kept mask)."""
    from onnx import numpy_helper

    try:
        vals = numpy_helper.to_array(sp.values)
        idx = numpy_helper.to_array(sp.indices).astype(np.int64) if sp.HasField("indices") else np.zeros(0, np.int64)
    except Exception as e:
        raise InputError(f"sparse initializer {sp.values.name!r} cannot be read ({_first_line(e)})") from None
    dims = tuple(int(d) for d in sp.dims)
    size = int(np.prod(dims)) if dims else 1
    flat = idx if idx.ndim == 1 else (np.ravel_multi_index(tuple(idx.T), dims) if idx.size else np.zeros(0, np.int64))
    if flat.size != vals.size or (flat.size and (flat.min() < 0 or flat.max() >= size)):
        raise InputError(f"sparse initializer {sp.values.name!r}: {vals.size} values, {flat.size} indices "
                         f"for shape {list(dims)}")
    dense = np.zeros(size, vals.dtype)
    dense[flat] = vals
    mask = np.zeros(size, bool)
    mask[flat] = True
    return dense.reshape(dims), mask.reshape(dims)


def _toposorted(graph) -> None:
    known = ({i.name for i in graph.input} | {t.name for t in graph.initializer}
             | {t.values.name for t in graph.sparse_initializer} | {""})
    for n in graph.node:
        for i in n.input:
            if i not in known:
                # Reorder once (graphs from some tools list nodes out of order).
                _sort_nodes(graph)
                return
        known.update(n.output)


def _sort_nodes(graph) -> None:
    known = ({i.name for i in graph.input} | {t.name for t in graph.initializer}
             | {t.values.name for t in graph.sparse_initializer} | {""})
    pending = list(graph.node)
    order = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                order.append(n)
                known.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            bad = rest[0]
            missing = next(i for i in bad.input if i not in known)
            raise InputError(f"ONNX node {bad.name or bad.op_type} reads {missing!r}, which nothing produces")
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def _dtype(elem_type: int, what: str) -> str:
    try:
        return dtype_from_onnx(elem_type)
    except TypeError:
        raise UnsupportedError(f"{what}: ONNX element type {elem_type} is not supported") from None


def _onnx_elem(dtype: str) -> int:
    from graphc.ir.types import onnx_dtype

    return onnx_dtype(dtype)


def _supported_array(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    try:
        dtype_from_numpy(arr.dtype)
    except TypeError:
        if arr.dtype.kind == "U" or arr.dtype == object:
            return arr  # strings stay folded constants; an op consuming one falls back to opaque
        raise UnsupportedError(f"tensor {name!r} has unsupported dtype {arr.dtype}") from None
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


__all__ = ["load_onnx", "Importer", "Fallback", "attr_to_json", "node_names", "numpy_dtype"]
