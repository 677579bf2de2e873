"""Calibration of the latency roofline: a short onnxruntime micro-benchmark, cached per machine.

Each figure is the slope of a chain of identical single-op ONNX graphs (time of a long chain
minus a short one, divided by the extra nodes), so the session's fixed cost per ``run`` does
not leak into the per-node figures:

- ``overhead_s``: per-node cost of a tiny Relu (dispatch, allocation);
- ``bandwidth``: bytes/s of a Relu over an activation-sized tensor (read + write);
- ``rates[kind]``: FLOP/s of dense 3x3 and 1x1 convs (``conv``), a depthwise conv
  (``dwconv``), a MatMul (``gemm``), a 3x3 max pool (``reduce``), and Relu (``elementwise``).

The cache lives in ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else
``~/.cache/graphc``; the file name carries a hash of the machine key (architecture, CPU model,
core count, onnxruntime version, calibration version) so a cache shared between machines never
hands one machine's rates to another. Files are written to a temporary name, then renamed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_VERSION = 1

__all__ = ["Calibration", "calibrate", "load_calibration", "cache_dir", "machine_key", "calibration_path"]


@dataclass
class Calibration:
    overhead_s: float
    bandwidth: float
    rates: dict[str, float]
    key: dict = field(default_factory=dict)
    created: float = 0.0
    details: dict = field(default_factory=dict)

    def node_seconds(self, kind: str, flops: float, traffic_bytes: float) -> float:
        if kind == "view":
            return self.overhead_s
        memory = traffic_bytes / self.bandwidth
        if kind in ("movement", "opaque"):
            return self.overhead_s + memory
        rate = self.rates.get(kind) or self.rates["elementwise"]
        return self.overhead_s + max(flops / rate, memory)

    def as_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Calibration":
        return Calibration(float(d["overhead_s"]), float(d["bandwidth"]), {k: float(v) for k, v in d["rates"].items()},
                           dict(d.get("key", {})), float(d.get("created", 0.0)), dict(d.get("details", {})))


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


def machine_key() -> dict:
    import onnxruntime as ort

    return {"machine": platform.machine(), "cpu": _cpu_model(), "cores": os.cpu_count() or 1,
            "onnxruntime": ort.__version__, "version": CALIBRATION_VERSION}


def calibration_path(key: dict | None = None) -> Path:
    key = key or machine_key()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"calibration-{key['machine']}-{digest}.json"


def load_calibration(path: str | os.PathLike | None = None) -> Calibration | None:
    """The cached calibration for this machine, or None when there is none (or it is unreadable)."""
    p = Path(path) if path else calibration_path()
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
def _chain(op: str, n: int, shape, attrs=None, weight=None, second=None):
    """An ONNX model of n chained ``op`` nodes on an input of ``shape`` (each node maps the
    previous output, with the same weight initializer where the op takes one)."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    if weight is not None:
        inits.append(numpy_helper.from_array(weight.astype(np.float32), "w"))
    prev = "x"
    for i in range(n):
        out = f"t{i}"
        ins = [prev] + (["w"] if weight is not None else [])
        nodes.append(helper.make_node(op, ins, [out], name=f"n{i}", **(attrs or {})))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run_time(model, shape, budget_s: float) -> float:
    from graphc.backends.latency import ort_session

    sess = ort_session(model)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(2):
        sess.run(None, {"x": x})
    samples = []
    start = time.perf_counter()
    while len(samples) < 5 or (time.perf_counter() - start < budget_s and len(samples) < 200):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        samples.append(time.perf_counter() - t0)
    return float(statistics.median(samples))


def _per_node(op, shape, n_short, n_long, budget_s, **kw) -> float:
    t_short = _run_time(_chain(op, n_short, shape, **kw), shape, budget_s)
    t_long = _run_time(_chain(op, n_long, shape, **kw), shape, budget_s)
    return max((t_long - t_short) / (n_long - n_short), 1e-9)


def calibrate(*, force: bool = False, quick: bool = False, save: bool = True, path=None) -> Calibration:
    """Run the micro-benchmark (a few seconds; ``quick`` shortens it) and cache the result.
    Returns the cached calibration instead unless ``force``."""
    target = Path(path) if path else calibration_path()
    if not force:
        cached = load_calibration(target)
        if cached is not None:
            return cached
    budget = 0.15 if quick else 0.6
    rng = np.random.default_rng(0)
    details: dict[str, float] = {}

    # per-node overhead: a Relu on 16 floats is all dispatch
    overhead = _per_node("Relu", (1, 16), 4, 64, budget)
    details["relu_tiny_s"] = overhead

    def net(t):  # the part of a node's time that is not dispatch
        return max(t - overhead, 1e-9)

    act = (1, 64, 56, 56)
    t = _per_node("Relu", act, 2, 12, budget)
    nbytes = 4 * int(np.prod(act))
    bandwidth = 2 * nbytes / net(t)
    details["relu_act_s"] = t

    rates: dict[str, float] = {"elementwise": np.prod(act) / net(t)}

    c, hw = 64, 28
    w3 = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.05
    t3 = _per_node("Conv", (1, c, hw, hw), 1, 5, budget, attrs={"pads": [1, 1, 1, 1]}, weight=w3)
    f3 = 2 * c * c * 9 * hw * hw
    w1 = rng.standard_normal((4 * c, 4 * c, 1, 1)).astype(np.float32) * 0.05
    t1 = _per_node("Conv", (1, 4 * c, hw, hw), 1, 5, budget, weight=w1)
    f1 = 2 * (4 * c) ** 2 * hw * hw
    rates["conv"] = (f3 + f1) / (net(t3) + net(t1))
    details.update(conv3x3_s=t3, conv1x1_s=t1)

    cd = 128
    wd = rng.standard_normal((cd, 1, 3, 3)).astype(np.float32) * 0.3
    td = _per_node("Conv", (1, cd, 56, 56), 1, 5, budget, attrs={"pads": [1, 1, 1, 1], "group": cd}, weight=wd)
    rates["dwconv"] = 2 * cd * 9 * 56 * 56 / net(td)
    details["dwconv_s"] = td

    wm = rng.standard_normal((512, 512)).astype(np.float32) * 0.05
    tm = _per_node("MatMul", (256, 512), 1, 5, budget, weight=wm)
    rates["gemm"] = 2 * 256 * 512 * 512 / net(tm)
    details["matmul_s"] = tm

    tp = _per_node("MaxPool", act, 1, 5, budget, attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    rates["reduce"] = 9 * np.prod(act) / net(tp)
    details["maxpool_s"] = tp

    calib = Calibration(float(overhead), float(bandwidth), {k: float(v) for k, v in rates.items()},
                        machine_key(), time.time(), details)
    if save:
        _save(calib, target)
    return calib
