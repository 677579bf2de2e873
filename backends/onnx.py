"""ONNX back-end: a graphc Graph becomes an ``onnx.ModelProto``.

Invariants of the model it emits:

- It passes ``onnx.checker.check_model(model, full_check=True)`` and runs in onnxruntime
  (models over 2 GB are checked from disk, with their weights as external data).
- Every IR op is lowered by one entry of the table in :mod:`graphc.backends.onnx_ops`, keyed
  by op name. An op without an entry (attention, interpolate, opaque torch nodes from fx...) is
  exported by ``torch.onnx`` from the op's own torch semantics and spliced in
  (:mod:`graphc.backends.onnx_torch`), so any graph can be emitted. Opaque ONNX nodes are
  re-emitted verbatim.
- Graph inputs and outputs carry the graph's external names (``Graph.input_names`` /
  ``output_names``: the source model's, whatever characters they hold), in order, with their
  dtypes and shapes. Other tensor names are the IR value names; an initializer takes its param's source name (the
  state_dict key) unless that would collide; node names are the IR node names.
- Emission never mutates the graph.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from graphc.errors import GraphcError, InputError, UnsupportedError
from graphc.ir.gc_pause import gc_paused
from graphc.ir.graph import Graph, Node
from graphc.ir.types import onnx_dtype

DEFAULT_OPSET = 17
# Protobuf cannot serialise a message over 2 GB: such models keep weights as external data.
_PROTO_LIMIT = 2 * 1024 ** 3 - 64 * 1024 ** 2
_DEFER_BYTES = 64 * 1024 ** 2


class Emitter:
    """Collects ONNX nodes and initializers while the lowering table walks the graph."""

    def __init__(self, graph: Graph, opset: int):
        self.graph = graph
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.opsets: dict[str, int] = {"": opset}
        self.names: dict[int, str] = {}
        self._taken: set[str] = set()
        self._node_names: set[str] = set()
        self._next: dict[tuple[str, str], int] = {}
        self._current: Node | None = None

    # -- naming ----------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        return self._claim(base, self._taken, "value")

    def node_name(self, base: str) -> str:
        return self._claim(base, self._node_names, "node")

    def _claim(self, base: str, taken: set[str], kind: str) -> str:
        # names are never released: the search for a base resumes where its last one stopped,
        # so many values of one base name cost linear time, not quadratic
        name, i = base, self._next.get((kind, base), 1)
        while name in taken:
            name = f"{base}_{i}"
            i += 1
        self._next[(kind, base)] = i
        taken.add(name)
        return name

    def name_of(self, value) -> str:
        return self.names[id(value)]

    # -- building --------------------------------------------------------------------------
    def const(self, arr, base: str = "const") -> str:
        from onnx import numpy_helper

        name = self.fresh(f"{self._current.name}.{base}" if self._current is not None else base)
        self.initializers.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def i64(self, values, base: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), base)

    def op(self, op_type: str, inputs, outputs=None, *, n_out: int = 1, name: str | None = None,
           domain: str = "", **attrs) -> list[str]:
        """Add one ONNX node; ``outputs`` names its outputs (fresh names when omitted)."""
        from onnx import helper

        base = name or (self._current.name if self._current is not None else op_type)
        if outputs is None:
            outputs = [self.fresh(f"{base}.{op_type.lower()}") for _ in range(n_out)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.node_name(base),
                                           domain=domain or None, **attrs))
        return list(outputs)

    def op1(self, op_type: str, inputs, output=None, **kw) -> str:
        return self.op(op_type, inputs, output, **kw)[0]

    def cast(self, name: str, from_dtype: str, to_dtype: str) -> str:
        if from_dtype == to_dtype:
            return name
        return self.op1("Cast", [name], to=onnx_dtype(to_dtype))


def emit_onnx(graph: Graph, opset: int = DEFAULT_OPSET, *, check: bool = True, sparse: str = "auto"):
    """Lower ``graph`` to an ``onnx.ModelProto`` (checked with full_check unless told not to).
    Masked (pruned) params go to ``sparse_initializer`` where that is smaller (``sparse``:
    ``auto``, ``always``, ``never``; see :mod:`graphc.backends.onnx_sparse`)."""
    with gc_paused():
        return _emit_onnx(graph, opset, check, sparse)


def _emit_onnx(graph: Graph, opset: int, check: bool, sparse: str):
    import onnx
    from onnx import helper

    from graphc.backends.onnx_ops import lower_node

    if opset < 13:
        raise UnsupportedError(f"the ONNX back-end emits opset 13 or newer, not {opset}")
    e = Emitter(graph, opset)
    in_names, out_names = graph.input_names, graph.output_names
    # The external names are claimed first, so no internal tensor can take one of them.
    e._taken.update(in_names)
    e._taken.update(out_names)
    inputs = []
    for v, name in zip(graph.inputs, in_names):
        e.names[id(v)] = name
        inputs.append(helper.make_tensor_value_info(name, onnx_dtype(v.dtype), list(v.shape)))
    # A node output listed once as a graph output is written under the output's name; an input
    # or param passed through, or a value listed twice, reaches its name through an Identity.
    listed = Counter(id(v) for v in graph.outputs)
    direct = {id(v): name for v, name in zip(graph.outputs, out_names)
              if v.producer is not None and listed[id(v)] == 1}
    value_names = {v.name for v in graph.values()}
    for p in graph.params.values():
        src = p.source
        name = src if src and src != p.name and src not in value_names and src not in e._taken else p.name
        name = e.fresh(name)
        e.names[id(p.value)] = name
    for n in graph.nodes:
        for v in n.outputs:
            e.names[id(v)] = direct.get(id(v)) or e.fresh(v.name)
    from onnx import numpy_helper

    used = {id(v) for n in graph.nodes for v in n.inputs} | {id(v) for v in graph.outputs}
    deferred = []  # (initializer index, array): weights filled in once the model is built
    for p in graph.params.values():
        if id(p.value) in used:
            arr = np.asarray(p.data)
            if arr.nbytes >= _DEFER_BYTES and arr.dtype.kind in "fiub":
                # Protobuf copies a message it adds to another by serialising it, which fails
                # for a tensor over 2 GB: the model is built with the weight's type and shape
                # only, and its bytes are set on the model's own initializer afterwards.
                deferred.append((len(e.initializers), arr))
                e.initializers.append(onnx.TensorProto(name=e.names[id(p.value)], dims=list(arr.shape),
                                                       data_type=helper.np_dtype_to_tensor_dtype(arr.dtype)))
            else:
                e.initializers.append(numpy_helper.from_array(arr, e.names[id(p.value)]))
    for n in graph.nodes:
        e._current = n
        try:
            lower_node(e, n)
        except GraphcError:
            raise
        except Exception as err:
            raise UnsupportedError(f"cannot lower {n.op} node {n.name} to ONNX: {_first_line(err)}") from err
    e._current = None
    outputs = []
    for v, name in zip(graph.outputs, out_names):
        if e.names[id(v)] != name:
            if name in in_names:
                raise UnsupportedError(f"graph output {name!r} has the name of a graph input but another value")
            e.op1("Identity", [e.names[id(v)]], name, name="output")
        outputs.append(helper.make_tensor_value_info(name, onnx_dtype(v.dtype), list(v.shape)))
    g = helper.make_graph(e.nodes, graph.name, inputs, outputs, initializer=e.initializers)
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(e.opsets.items())]
    model = helper.make_model(g, opset_imports=opsets, producer_name="graphc",
                              ir_version=_ir_version(opsets))
    del g
    for i, arr in deferred:
        model.graph.initializer[i].raw_data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    # Unified weights (unify) are stored as block values + sign bits with a standard-op decoder.
    unified = {e.names[id(n.input(1))]: n.meta["unify"] for n in graph.nodes
               if "unify" in n.meta and n.input(1).param is not None}
    if unified:
        from graphc.backends.onnx_unify import encode_unified

        encode_unified(model, unified)
    if check:
        check_model(model)
    masks = {e.names[id(p.value)]: p.mask for p in graph.params.values() if p.mask is not None and id(p.value) in used}
    if masks and sparse != "never":
        from graphc.backends.onnx_sparse import sparsify

        sparsify(model, masks, mode=sparse)
        if check and len(model.graph.sparse_initializer):
            onnx.checker.check_model(model)
    return model


def _ir_version(opsets) -> int:
    from onnx import helper

    # The lowest IR version that carries these opsets: runtimes that predate newer IR
    # versions still load the model.
    return max(8, helper.find_min_ir_version_for(opsets, ignore_unknown=True))


def model_nbytes(model) -> int:
    """Bytes of the model's initializers (from their shapes: reading ``raw_data`` would copy it)."""
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        if t.HasField("raw_data"):
            n = 1
            for d in t.dims:
                n *= d
            try:
                total += n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            except (KeyError, ValueError, TypeError):  # packed sub-byte types: count the bytes
                total += len(t.raw_data)
        else:
            total += t.ByteSize()
    return total + sum(t.ByteSize() for t in model.graph.sparse_initializer)


def needs_external_data(model) -> bool:
    """Whether ``model`` is too large for one protobuf message (its weights go to a file)."""
    return model_nbytes(model) >= _PROTO_LIMIT


def check_model(model, full: bool = True) -> None:
    """onnx.checker with full_check (``full``: shape inference too, which a model with sparse
    initializers cannot pass), on a proto or a file; a proto over 2 GB is checked from a
    temporary file."""
    import onnx

    try:
        if isinstance(model, (str, os.PathLike)):
            onnx.checker.check_model(str(model), full_check=full)
            return
        if not needs_external_data(model):
            onnx.checker.check_model(model, full_check=full)
            return
        with tempfile.TemporaryDirectory(prefix="graphc-check-") as d:
            path = os.path.join(d, "model.onnx")
            save_external(model, path, "model.onnx.data")
            onnx.checker.check_model(path, full_check=full)
    except onnx.checker.ValidationError as err:
        raise UnsupportedError(f"emitted ONNX model fails the checker: {_first_line(err)}") from err
    except onnx.shape_inference.InferenceError as err:
        raise UnsupportedError(f"emitted ONNX model fails shape inference: {_first_line(err)}") from err


def save_onnx(graph_or_model, path, opset: int = DEFAULT_OPSET, sparse: str = "auto", *, verify=None) -> Path:
    """Write a graph (or a ModelProto) to ``path`` atomically; weights go to ``<name>.data``
    beside it when the model is over 2 GB.

    The model is written once, into a temporary folder beside ``path``; the checker runs on
    that file (a model over 2 GB cannot be checked in memory), then ``verify(file)`` when
    given (a numeric check of the exact file to be written); only then are the file and its
    data moved into place. Any failure leaves nothing behind. A proto emitted here from a
    graph is consumed by the write (its weights move to the file, not to a copy)."""
    import onnx

    own = not isinstance(graph_or_model, onnx.ModelProto)
    # A masked graph is checked in full in its dense form inside emit_onnx: onnx's shape
    # inference cannot type the sparse initializers it then gets.
    masked = own and any(p.mask is not None for p in graph_or_model.params.values())
    model = emit_onnx(graph_or_model, opset, check=masked, sparse=sparse) if own else graph_or_model
    path = Path(path)
    if not path.parent.exists():
        raise InputError(f"output directory does not exist: {path.parent}")
    external = needs_external_data(model)
    tmpdir = tempfile.mkdtemp(prefix=".graphc-", dir=path.parent)
    try:
        tmp = Path(tmpdir) / path.name
        data_name = path.name + ".data"
        if external:
            save_external(model, tmp, data_name, keep=not own)
        else:
            onnx.save_model(model, str(tmp))
        sparse_weights = len(model.graph.sparse_initializer) > 0
        if own:
            del model
        check_model(str(tmp), full=not sparse_weights)
        if verify is not None:
            verify(tmp)
        if external:
            os.replace(Path(tmpdir) / data_name, path.parent / data_name)
        os.replace(tmp, path)
    finally:
        for f in Path(tmpdir).iterdir() if Path(tmpdir).exists() else ():
            f.unlink()
        if Path(tmpdir).exists():
            os.rmdir(tmpdir)
    return path


def save_external(model, path, data_name: str, threshold: int = 1024, keep: bool = True) -> None:
    """Write ``model`` to ``path`` with every initializer of ``threshold`` bytes or more in
    ``data_name`` beside it; ``keep``: leave ``model`` as it was (else its weights are gone).

    ``onnx.save_model(save_as_external_data=True)`` rewrites the proto it is given, so callers
    used to save a copy: a second copy of every weight, which for a model over 2 GB is the
    difference between fitting in memory and not. Here each tensor's bytes move to the file
    one at a time and are put back once the (small) proto is written."""
    import onnx
    from onnx import TensorProto
    from onnx.external_data_helper import set_external_data

    moved = []
    path = Path(path)
    try:
        with open(path.parent / data_name, "wb") as f:
            for t in model.graph.initializer:
                if not t.HasField("raw_data"):
                    continue
                data = t.raw_data
                if len(data) < threshold:
                    continue
                # Offsets aligned to 4 KiB, as onnx's own writer does, so runtimes can map them.
                f.write(b"\0" * (-f.tell() % 4096))
                offset = f.tell()
                f.write(data)
                set_external_data(t, data_name, offset, len(data))
                t.ClearField("raw_data")
                moved.append((t, data) if keep else None)
                del data
        onnx.save_model(model, str(path))
    finally:
        for t, data in moved if keep else ():
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
            t.raw_data = data


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__
