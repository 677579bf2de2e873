"""Latency: measured (onnxruntime and torch on this CPU) and predicted (a calibrated roofline).

Measured figures come from warm-up runs followed by timed repeats; a :class:`Timing` keeps
every sample and reports the median and the spread (min, max, interquartile range). Per-node
times come from onnxruntime's profiler and are keyed by ONNX node name, which the ONNX back-end
takes from the IR node name.

Predicted latency sums, over the nodes in topological order, a roofline per node::

    t(node) = overhead + max(flops / rate[kind], activation_bytes / bandwidth)
              + weight_bytes / weight_bandwidth

where ``kind`` is the node's latency class from :mod:`graphc.ir.cost_rules`. Nodes that
onnxruntime fuses into the conv or GEMM before them (inference batch norm, activations, the
residual add feeding from a conv) cost nothing extra; view ops cost only the overhead. The
rates, bandwidth and overhead come from :func:`calibrate`, a micro-benchmark of a few
single-op chains in onnxruntime, cached per machine (see :mod:`graphc.backends.calibration`).
"""
from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from graphc.backends.calibration import Calibration, calibrate, load_calibration
from graphc.backends.cost import per_node
from graphc.errors import InputError
from graphc.ir.ops import ops_with

__all__ = ["CLOCKS", "clock_fn", "Timing", "measure_onnx", "measure_torch", "profile_onnx", "predict", "Prediction", "fusion_heads",
           "attribute_to_heads",
           "Calibration", "calibrate", "load_calibration", "ort_session"]


@dataclass
class Timing:
    """Wall-clock samples in milliseconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def min(self) -> float:
        return float(min(self.samples))

    @property
    def max(self) -> float:
        return float(max(self.samples))

    @property
    def iqr(self) -> float:
        q = np.percentile(self.samples, [25, 75])
        return float(q[1] - q[0])

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return self.iqr / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict:
        return {"median_ms": self.median, "min_ms": self.min, "max_ms": self.max, "iqr_ms": self.iqr,
                "repeats": len(self.samples)}

    def __str__(self) -> str:
        return f"{self.median:.3f} ms (min {self.min:.3f}, max {self.max:.3f}, IQR {self.iqr:.3f}, n={len(self.samples)})"


CLOCKS = ("wall", "cpu")


def clock_fn(clock: str):
    """``wall``: elapsed time. ``cpu``: CPU time of the calling thread, which a busy machine
    does not inflate; it is the whole cost only when onnxruntime runs on that one thread
    (``threads=1``), so it is refused otherwise."""
    if clock == "wall":
        return time.perf_counter
    if clock == "cpu":
        return time.thread_time
    raise InputError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")


def check_clock(clock: str, threads: int | None) -> None:
    clock_fn(clock)
    if clock == "cpu" and threads != 1:
        raise InputError("the cpu clock measures one thread: use it with threads=1")


def _time(fn, warmup: int, repeats: int, min_seconds: float = 0.0, clock: str = "wall") -> Timing:
    now = clock_fn(clock)
    for _ in range(max(warmup, 0)):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - start < min_seconds and len(samples) < 10 * repeats):
        t0 = now()
        fn()
        samples.append((now() - t0) * 1e3)
    return Timing(samples)


def ort_session(model, *, threads: int | None = None, profile_prefix: str | None = None):
    """An onnxruntime CPU session for a ModelProto, serialized bytes or a path."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        model = os.fspath(model)
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad models
        raise InputError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from e


def _feeds(sess, inputs=None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, info in enumerate(sess.get_inputs()):
        if isinstance(inputs, dict) and info.name in inputs:
            feeds[info.name] = np.asarray(inputs[info.name])
            continue
        if isinstance(inputs, (list, tuple)) and i < len(inputs):
            feeds[info.name] = np.asarray(inputs[i])
            continue
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
        if "float" in info.type:
            dt = np.float16 if "float16" in info.type else (np.float64 if "double" in info.type else np.float32)
            feeds[info.name] = rng.standard_normal(shape).astype(dt)
        elif "bool" in info.type:
            feeds[info.name] = np.zeros(shape, bool)
        else:
            feeds[info.name] = np.zeros(shape, np.int64 if "int64" in info.type else np.int32)
    return feeds


def measure_onnx(model, inputs=None, *, warmup: int = 3, repeats: int = 10, threads: int | None = None,
                 min_seconds: float = 0.0, clock: str = "wall") -> Timing:
    """Latency samples of onnxruntime runs (random inputs unless given); see :func:`clock_fn`."""
    check_clock(clock, threads)
    sess = ort_session(model, threads=threads)
    feeds = _feeds(sess, inputs)
    return _time(lambda: sess.run(None, feeds), warmup, repeats, min_seconds, clock)


def measure_torch(module, example_inputs, *, warmup: int = 3, repeats: int = 10, min_seconds: float = 0.0,
                  threads: int | None = None, clock: str = "wall") -> Timing:
    """Latency of ``module(*example_inputs)`` under ``torch.inference_mode`` (``threads`` sets
    torch's intra-op threads for the measurement only)."""
    import torch

    check_clock(clock, threads)
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    module.eval()

    def run():
        with torch.inference_mode():
            module(*args)

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _time(run, warmup, repeats, min_seconds, clock)
    finally:
        torch.set_num_threads(before)


def profile_onnx(model, inputs=None, *, warmup: int = 2, repeats: int = 5, threads: int | None = None) -> dict[str, float]:
    """Median milliseconds per ONNX node (by node name) from onnxruntime's profiler.

    Nodes onnxruntime fused away do not appear; their time is inside the node they were fused
    into (a fused node keeps the name of the node it grew from)."""
    with tempfile.TemporaryDirectory(prefix="graphc-prof-") as d:
        sess = ort_session(model, threads=threads, profile_prefix=os.path.join(d, "prof"))
        feeds = _feeds(sess, inputs)
        for _ in range(warmup):
            sess.run(None, feeds)
        for _ in range(repeats):
            sess.run(None, feeds)
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    resolve = _name_resolver(model)
    per_run: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        per_run.setdefault(name, []).append(ev.get("dur", 0) / 1e3)
    out: dict[str, float] = {}
    for k, v in per_run.items():
        # the first `warmup` occurrences of every node are warm-up runs
        key = resolve(k, v)
        out[key] = out.get(key, 0.0) + float(statistics.median(v[warmup:] or v))
    return out


_ORT_SUFFIX = re.compile(r"(_nchwc|_token_\d+|_fused.*)+$")


def _name_resolver(model):
    """Map onnxruntime's names for rewritten nodes back to the model's node names: its layout
    pass names a node after its output tensor plus ``_nchwc``; inserted reorders keep their
    own name (``ReorderOutput...``), which is returned as is."""
    import onnx

    try:
        proto = model if hasattr(model, "graph") else onnx.load(os.fspath(model), load_external_data=False)
        nodes = {n.name for n in proto.graph.node}
        by_output = {o: n.name for n in proto.graph.node for o in n.output}
    except Exception:  # an unreadable model only loses the renaming
        nodes, by_output = set(), {}

    def resolve(name: str, _samples=None) -> str:
        if name in nodes:
            return name
        base = _ORT_SUFFIX.sub("", name)
        if base in nodes:
            return base
        return by_output.get(base, by_output.get(name, name))

    return resolve


# -- prediction ---------------------------------------------------------------------------------
# Ops onnxruntime folds into a preceding conv/GEMM (BN folding, activation fusion).
_FUSABLE = ops_with("fusable")
_PRODUCERS = {"conv", "dwconv", "gemm"}


@dataclass
class Prediction:
    total_ms: float
    per_node: dict[str, float] = field(default_factory=dict)
    fused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _fused_nodes(graph, kinds: dict[str, str]) -> dict[str, str]:
    """Nodes that ride on the conv/GEMM before them, mapped to that conv/GEMM: a chain of
    fusable ops hanging off a single-use conv output (one residual add allowed, as
    onnxruntime's NCHWc conv does)."""
    fused: dict[str, str] = {}
    for n in graph.nodes:
        if kinds.get(n.name) not in _PRODUCERS:
            continue
        cur, adds = n, 0
        while True:
            outs = cur.outputs
            if len(outs) != 1 or len(outs[0].uses()) != 1 or outs[0].is_output:
                break
            nxt = outs[0].uses()[0].node
            if nxt.op not in _FUSABLE or (nxt.op == "add" and adds):
                break
            adds += nxt.op == "add"
            fused[nxt.name] = n.name
            cur = nxt
    return fused


def fusion_heads(graph) -> dict[str, str]:
    """``{fused node: the conv/GEMM it is fused into}`` as the predictor assumes it."""
    return _fused_nodes(graph, {r.name: r.kind for r in per_node(graph)})


def attribute_to_heads(graph, per_node_ms: dict[str, float]) -> dict[str, float]:
    """Profiled times re-keyed so a fused chain's time sits on its conv/GEMM (onnxruntime
    names a fused node after any member of the chain)."""
    heads = fusion_heads(graph)
    out: dict[str, float] = {}
    for name, ms in per_node_ms.items():
        key = heads.get(name, name)
        out[key] = out.get(key, 0.0) + ms
    return out


def predict(graph, calib: Calibration | None = None) -> Prediction:
    """Predicted onnxruntime latency (ms) of the graph on the calibrated machine."""
    calib = calib or load_calibration() or calibrate()
    rows = per_node(graph)
    kinds = {r.name: r.kind for r in rows}
    fused = _fused_nodes(graph, kinds)
    weight_bytes = {n.name: sum(v.type.nbytes for v in n.inputs if v.param is not None) for n in graph.nodes}
    out: dict[str, float] = {}
    for r in rows:
        if r.name in fused:
            out[r.name] = 0.0
            continue
        wb = weight_bytes[r.name]
        out[r.name] = calib.node_seconds(r.kind, r.flops, r.read_bytes + r.write_bytes - wb, wb) * 1e3
    return Prediction(float(sum(out.values())), out, sorted(fused))
