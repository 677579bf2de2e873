"""Calibration of the latency roofline: a short onnxruntime micro-benchmark, cached per machine.

Each figure is the slope of a chain of single-op ONNX graphs (time of a long chain minus a
short one, divided by the extra nodes), so the session's fixed cost per ``run`` does not leak
into the per-node figures. Where the op takes a weight, every node of the chain has its own,
so weights are read cold as in a real network. Timings are medians, as measured latencies are.

- ``overhead_s``: per-node cost of a tiny Relu (dispatch, allocation);
- ``curves["bandwidth"]`` / ``bandwidth``: bytes/s of a Relu over activations from 50 KiB to
  12 MiB (read + write): activations, produced and consumed in turn, live in cache;
- ``weight_bandwidth``: bytes/s of a matrix-vector chain whose weights outgrow the cache;
- ``curves[kind]`` / ``rates[kind]``: FLOP/s of dense 3x3 and 1x1 convs at several sizes
  (``conv``), depthwise convs (``dwconv``), a 256x512x512 MatMul (``gemm``), 3x3 max pools
  (``reduce``) and Relu (``elementwise``).

A calibration is made for one onnxruntime thread setting and one clock (``wall``, or ``cpu``:
CPU time of a single thread, which a busy machine does not inflate).

The cache lives in ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else
``~/.cache/graphc``; the file name carries a hash of the machine key (architecture, CPU model,
core count, onnxruntime version, calibration version, threads, clock) so a cache shared between
machines never hands one machine's rates to another. Files are written to a temporary name,
then renamed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_VERSION = 4

__all__ = ["Calibration", "calibrate", "load_calibration", "cache_dir", "machine_key", "calibration_path"]


@dataclass
class Calibration:
    """Roofline parameters. ``rates`` and ``bandwidth`` are the figures at large sizes;
    ``curves`` (optional) hold measured points ``[work, rate]`` per kind (work in FLOPs, and in
    bytes for ``"bandwidth"``) because small problems run below peak; between points the rate
    is interpolated in log-log space, outside them it is clamped."""

    overhead_s: float
    bandwidth: float
    rates: dict[str, float]
    key: dict = field(default_factory=dict)
    created: float = 0.0
    details: dict = field(default_factory=dict)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    # bytes/s at which weights stream in from memory (0: use ``bandwidth``)
    weight_bandwidth: float = 0.0

    def rate(self, kind: str, work: float) -> float:
        pts = self.curves.get(kind)
        if not pts:
            return self.bandwidth if kind == "bandwidth" else (self.rates.get(kind) or self.rates["elementwise"])
        return _interp(pts, work)

    def node_seconds(self, kind: str, flops: float, traffic_bytes: float, weight_bytes: float = 0.0) -> float:
        """Roofline time of one node. ``traffic_bytes`` are activation bytes read and written,
        which a network produces and consumes while they are still in cache; ``weight_bytes``
        are read cold, once per inference, and stream in on top of compute (a batch-1
        network's weights rarely fit in cache, and the measured chains show no overlap)."""
        if kind == "view":
            return self.overhead_s
        weights = weight_bytes / (self.weight_bandwidth or self.bandwidth) if weight_bytes else 0.0
        memory = traffic_bytes / self.rate("bandwidth", traffic_bytes) if traffic_bytes else 0.0
        if kind in ("movement", "opaque"):
            return self.overhead_s + memory + weights
        compute = flops / self.rate(kind if kind in self.rates else "elementwise", flops) if flops else 0.0
        return self.overhead_s + max(compute, memory) + weights

    def as_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Calibration":
        return Calibration(float(d["overhead_s"]), float(d["bandwidth"]), {k: float(v) for k, v in d["rates"].items()},
                           dict(d.get("key", {})), float(d.get("created", 0.0)), dict(d.get("details", {})),
                           {k: [[float(a), float(b)] for a, b in v] for k, v in d.get("curves", {}).items()},
                           float(d.get("weight_bandwidth", 0.0)))


def _interp(points, x: float) -> float:
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1]
    if x >= pts[-1][0]:
        return pts[-1][1]
    xs = np.log([p[0] for p in pts])
    ys = np.log([p[1] for p in pts])
    return float(np.exp(np.interp(np.log(x), xs, ys)))


def cache_dir() -> Path:
    env = os.environ.get("GRAPHC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "graphc"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_key(threads: int | None = None, clock: str = "wall") -> dict:
    import onnxruntime as ort

    return {"machine": platform.machine(), "cpu": _cpu_model(), "cores": os.cpu_count() or 1,
            "onnxruntime": ort.__version__, "version": CALIBRATION_VERSION, "threads": threads or "default",
            "clock": clock}


def calibration_path(key: dict | None = None) -> Path:
    key = key or machine_key()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"calibration-{key['machine']}-{digest}.json"


def load_calibration(path: str | os.PathLike | None = None, *, threads: int | None = None,
                     clock: str = "wall") -> Calibration | None:
    """The cached calibration for this machine (and thread count and clock), or None when there
    is none (or it is unreadable)."""
    p = Path(path) if path else calibration_path(machine_key(threads, clock))
    try:
        return Calibration.from_dict(json.loads(p.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(calib: Calibration, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(calib.as_dict(), indent=2))
    os.replace(tmp, path)


# -- micro-benchmarks -------------------------------------------------------------------------------
def _chain(op: str, n: int, shape, attrs=None, weight=None):
    """An ONNX model of n chained ``op`` nodes on an input of ``shape``. Where the op takes a
    weight, each node gets its own copy (a fresh initializer, rolled so no two are equal): a
    real network reads every layer's weights cold, which a chain sharing one weight would hide."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    prev = "x"
    for i in range(n):
        out = f"t{i}"
        ins = [prev]
        if weight is not None:
            inits.append(numpy_helper.from_array(np.roll(weight, i).astype(np.float32), f"w{i}"))
            ins.append(f"w{i}")
        nodes.append(helper.make_node(op, ins, [out], name=f"n{i}", **(attrs or {})))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run_time(model, shape, budget_s: float, threads=None, clock="wall") -> float:
    from graphc.backends.latency import clock_fn, ort_session

    now = clock_fn(clock)
    sess = ort_session(model, threads=threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(2):
        sess.run(None, {"x": x})
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or (time.perf_counter() - start < budget_s and len(samples) < 200):
        t0 = now()
        sess.run(None, {"x": x})
        samples.append(now() - t0)
    # the median, as the latencies it predicts are reported
    return float(np.median(samples))


def _per_node_raw(op, shape, n_short, n_long, budget_s, threads=None, clock="wall", **kw) -> float:
    t_short = _run_time(_chain(op, n_short, shape, **kw), shape, budget_s, threads, clock)
    t_long = _run_time(_chain(op, n_long, shape, **kw), shape, budget_s, threads, clock)
    return max((t_long - t_short) / (n_long - n_short), 1e-9)


def calibrate(*, force: bool = False, quick: bool = False, save: bool = True, path=None, threads: int | None = None,
              clock: str = "wall") -> Calibration:
    """Run the micro-benchmark (about ten seconds; ``quick`` shortens it) and cache the result.
    Returns the cached calibration instead unless ``force``. ``threads`` and ``clock`` are those
    the latencies to predict are measured with (see :func:`graphc.backends.latency.clock_fn`)."""
    from graphc.backends.latency import check_clock

    check_clock(clock, threads)
    key = machine_key(threads, clock)
    target = Path(path) if path else calibration_path(key)
    if not force:
        cached = load_calibration(target)
        if cached is not None:
            return cached
    _per_node = functools.partial(_per_node_raw, threads=threads, clock=clock)
    budget = 0.08 if quick else 0.3
    rng = np.random.default_rng(0)
    details: dict[str, float] = {}
    curves: dict[str, list[list[float]]] = {}

    # per-node overhead: a Relu on 16 floats is all dispatch
    overhead = _per_node("Relu", (1, 16), 4, 64, budget)
    details["relu_tiny_s"] = overhead

    def net(t):  # the part of a node's time that is not dispatch
        return max(t - overhead, 1e-9)

    def point(kind, work, t, label):
        details[label] = t
        curves.setdefault(kind, []).append([float(work), float(work / net(t))])

    # bandwidth and elementwise rate: Relu over activations from cache-sized to memory-sized
    for hw in (14, 28, 56, 112, 224):
        shape = (1, 64, hw, hw)
        t = _per_node("Relu", shape, 2, 10, budget)
        numel = int(np.prod(shape))
        point("bandwidth", 8 * numel, t, f"relu_{hw}_s")
        point("elementwise", numel, t, f"relu_{hw}_flops_s")

    def conv(label, cin, cout, k, hw, group=1, kind="conv"):
        w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32) * 0.05
        attrs = {"pads": [k // 2] * 4, "group": group}
        t = _per_node("Conv", (1, cin, hw, hw), 1, 4, budget, attrs=attrs, weight=w)
        point(kind, 2 * cout * (cin // group) * k * k * hw * hw, t, label)

    conv("conv3x3_64_28_s", 64, 64, 3, 28)
    conv("conv1x1_256_28_s", 256, 256, 1, 28)
    conv("conv1x1_64_14_s", 64, 64, 1, 14)
    conv("conv3x3_64_7_s", 64, 64, 3, 7)
    conv("dwconv_128_56_s", 128, 128, 3, 56, group=128, kind="dwconv")
    conv("dwconv_256_14_s", 256, 256, 3, 14, group=256, kind="dwconv")
    conv("dwconv_512_7_s", 512, 512, 3, 7, group=512, kind="dwconv")

    wm = rng.standard_normal((512, 512)).astype(np.float32) * 0.05
    tm = _per_node("MatMul", (256, 512), 1, 4, budget, weight=wm)
    point("gemm", 2 * 256 * 512 * 512, tm, "matmul_256x512x512_s")
    # weights stream from memory: a matrix-vector chain whose distinct 16 MiB weights
    # together outgrow the cache does nothing but read them
    wv = rng.standard_normal((2048, 2048)).astype(np.float32) * 0.05
    tv = _per_node("MatMul", (1, 2048), 1, 4, budget, weight=wv)
    details["matvec_2048_s"] = tv
    weight_bandwidth = wv.nbytes / net(tv)

    for hw in (14, 56):
        shape = (1, 64, hw, hw)
        t = _per_node("MaxPool", shape, 1, 4, budget, attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
        point("reduce", 9 * int(np.prod(shape)), t, f"maxpool_{hw}_s")

    # peak figures: the fastest measured point of each kind
    rates = {k: max(r for _, r in pts) for k, pts in curves.items() if k != "bandwidth"}
    bandwidth = max(r for _, r in curves["bandwidth"])
    calib = Calibration(float(overhead), float(bandwidth), rates, key, time.time(), details, curves,
                        float(weight_bandwidth))
    if save:
        _save(calib, target)
    return calib
