"""Per-layer figures of a run, before and after: channels, MACs, predicted and measured time.

A layer is a node with a weight param (conv, linear, matmul by a weight); rows are matched by
node name, which the passes keep for the layers they keep (a layer a pass removed or merged
has no "after" figures). Predicted time is the calibrated cost model's (a node onnxruntime
fuses into the layer before it counts on that layer); measured time comes from onnxruntime's
profiler on the emitted ONNX, with each fused chain's time credited to its conv or GEMM.

Invariants: :func:`layer_rows` reads types and params only (nothing runs); every figure in
:func:`merge` is a JSON type; a figure that was not measured is None, never 0.
"""
from __future__ import annotations

from graphc.ir.ops import ops_with

_LAYER_OPS = ops_with("weight")
_CHANNELS_LAST = {"linear", "matmul"}


def _is_layer(node) -> bool:
    return node.op in _LAYER_OPS and any(v.param is not None and v.param.kind == "weight" for v in node.inputs[1:2])


def _channels(value, op: str) -> int | None:
    shape = value.shape
    if not shape:
        return None
    axis = -1 if op in _CHANNELS_LAST or len(shape) < 2 else 1
    return int(shape[axis])


def layer_rows(graph, predicted: dict[str, float] | None = None) -> dict[str, dict]:
    """``{node name: {op, in_channels, channels, macs, predicted_ms}}`` in topological order;
    ``predicted``: per-node predicted ms (:func:`graphc.backends.latency.predict`), where a
    fused node's time is added to the layer it rides on."""
    from graphc.backends.cost import per_node

    macs = {r.name: r.macs for r in per_node(graph)}
    pred_by_layer: dict[str, float] = {}
    if predicted:
        from graphc.backends.latency import fusion_heads

        heads = fusion_heads(graph)
        for name, ms in predicted.items():
            key = heads.get(name, name)
            pred_by_layer[key] = pred_by_layer.get(key, 0.0) + ms
    out = {}
    for n in graph.nodes:
        if not _is_layer(n):
            continue
        out[n.name] = {"op": n.op, "in_channels": _channels(n.inputs[0], n.op), "channels": _channels(n.outputs[0], n.op),
                       "macs": int(macs.get(n.name, 0)),
                       "predicted_ms": pred_by_layer.get(n.name) if predicted else None}
    return out


def predicted_per_node(graph) -> dict[str, float] | None:
    """Per-node predicted ms when this machine is calibrated; None otherwise (never a
    calibration run as a side effect)."""
    from graphc.backends.calibration import load_calibration
    from graphc.backends.latency import predict

    calib = load_calibration()
    return predict(graph, calib).per_node if calib is not None else None


def measured_per_layer(graph) -> dict[str, float]:
    """Per-layer measured ms: onnxruntime's profiler on the emitted ONNX."""
    from graphc.backends.latency import attribute_to_heads, profile_onnx
    from graphc.backends.onnx import emit_onnx

    return attribute_to_heads(graph, profile_onnx(emit_onnx(graph)))


def snapshot(graph, measure: bool = False) -> dict[str, dict]:
    rows = layer_rows(graph, predicted_per_node(graph))
    if measure:
        times = measured_per_layer(graph)
        for name, row in rows.items():
            row["measured_ms"] = times.get(name)
    return rows


def merge(before: dict[str, dict], after: dict[str, dict]) -> list[dict]:
    """One row per layer of ``before`` (then any layer only ``after`` has), with ``*_before``
    and ``*_after`` figures."""
    keys = ("in_channels", "channels", "macs", "predicted_ms", "measured_ms")
    rows = []
    for name in list(before) + [n for n in after if n not in before]:
        b, a = before.get(name), after.get(name)
        row = {"name": name, "op": (b or a)["op"]}
        for k in keys:
            row[f"{k}_before"] = None if b is None else b.get(k)
            row[f"{k}_after"] = None if a is None else a.get(k)
        rows.append(row)
    return rows
