"""Sparse weight storage in ONNX: pruned (masked) params as ``sparse_initializer`` entries.

ONNX's standard encoding of a sparse constant is a ``SparseTensorProto`` in
``graph.sparse_initializer``: the kept values plus their linear (flattened) int64 indices. Any
ONNX reader loads it and onnxruntime densifies it when the session starts, so the model runs
unchanged. Per kept weight it costs the value plus an 8-byte index, so a param is stored sparse
only when that is smaller than its dense array (fewer than about a third of it kept in f32).

Invariants: ``sparsify`` moves initializers, never changes a value; densifying the result
gives back the dense model's arrays bit for bit. ONNX shape inference types a sparse
initializer as a sparse tensor, which no dense operator accepts, so a sparsified model is
checked structurally (``onnx.checker`` without shape inference); its dense twin was checked in
full before it was sparsified.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sparsify", "sparse_summary", "compression"]


def _sparse_bytes(nnz: int, itemsize: int) -> int:
    return nnz * (itemsize + 8)


def sparsify(model, masks: dict[str, np.ndarray], *, mode: str = "auto"):
    """Move the initializers named in ``masks`` into ``sparse_initializer`` (in place; returns
    the model). ``mode``: ``auto`` (only where smaller), ``always`` or ``never``."""
    from onnx import helper, numpy_helper

    if mode == "never" or not masks:
        return model
    keep, moved = [], []
    for t in model.graph.initializer:
        mask = masks.get(t.name)
        if mask is None:
            keep.append(t)
            continue
        arr = numpy_helper.to_array(t)
        flat = np.flatnonzero(mask.reshape(-1))
        if mode == "auto" and _sparse_bytes(flat.size, arr.dtype.itemsize) >= arr.nbytes:
            keep.append(t)
            continue
        values = numpy_helper.from_array(np.ascontiguousarray(arr.reshape(-1)[flat]), t.name)
        indices = numpy_helper.from_array(flat.astype(np.int64), f"{t.name}.indices")
        moved.append(helper.make_sparse_tensor(values, indices, list(arr.shape)))
    if moved:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        model.graph.sparse_initializer.extend(moved)
    return model


def sparse_summary(model) -> dict:
    """Stored weight counts of an ONNX model: dense initializer elements, sparse values kept,
    the dense size those sparse tensors stand for, and the initializer bytes."""
    from onnx import numpy_helper

    dense = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    kept = sum(int(np.prod(s.values.dims)) for s in model.graph.sparse_initializer)
    full = sum(int(np.prod(s.dims)) for s in model.graph.sparse_initializer)
    nbytes = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    nbytes += sum(numpy_helper.to_array(s.values).nbytes + numpy_helper.to_array(s.indices).nbytes
                  for s in model.graph.sparse_initializer)
    return {"dense_elements": dense, "sparse_kept": kept, "sparse_elements": full, "bytes": nbytes}


def compression(graph) -> dict:
    """The paper's measure on a graph: total weights / non-zero weights (weight params only)."""
    total = nonzero = 0
    for p in graph.params.values():
        if p.kind == "weight":
            total += int(p.data.size)
            nonzero += int(np.count_nonzero(p.data))
    return {"weights": total, "nonzero": nonzero, "ratio": total / max(1, nonzero)}
