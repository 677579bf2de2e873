"""Latency: the roofline prediction (with a fixed calibration, so exact), the calibration cache,
and measured timings on small ONNX chains."""
import json

import numpy as np
import pytest

from graphc.backends import calibration
from graphc.backends.calibration import Calibration, cache_dir, calibrate, calibration_path, load_calibration, machine_key
from graphc.backends.cost import per_node
from graphc.backends.latency import measure_onnx, predict, profile_onnx

FIXED = Calibration(overhead_s=2e-6, bandwidth=1e10,
                    rates={"conv": 1e11, "dwconv": 2e10, "gemm": 5e10, "elementwise": 5e9, "reduce": 1e10},
                    weight_bandwidth=2e9)


def test_prediction_is_the_sum_of_per_node_rooflines(residual_block):
    g = residual_block(c=8, hw=16)
    pred = predict(g, FIXED)
    assert pred.total_ms == pytest.approx(sum(pred.per_node.values()))
    rows = {r.name: r for r in per_node(g)}
    a = rows["a"]
    weights = 8 * 8 * 9 * 4  # conv a's weight, read cold at the weight bandwidth
    activations = a.read_bytes + a.write_bytes - weights
    expect = FIXED.overhead_s + max(a.flops / 1e11, activations / 1e10) + weights / 2e9
    assert pred.per_node["a"] == pytest.approx(expect * 1e3)
    # flatten is a view: overhead only
    assert pred.per_node["flat"] == pytest.approx(FIXED.overhead_s * 1e3)


def test_size_curves_interpolate_in_log_space_and_clamp():
    c = Calibration(1e-6, 1e10, {"elementwise": 1e9, "conv": 1e11},
                    curves={"conv": [[1e6, 1e10], [1e8, 1e11]]})
    assert c.rate("conv", 1e7) == pytest.approx(10 ** 10.5)
    assert c.rate("conv", 1e3) == 1e10 and c.rate("conv", 1e12) == 1e11
    assert c.rate("bandwidth", 123) == 1e10  # no curve: the scalar
    # a small conv runs below peak, so it takes longer than flops / peak
    assert c.node_seconds("conv", 1e7, 0) > 1e-6 + 1e7 / 1e11


def test_ops_onnxruntime_fuses_into_a_conv_cost_nothing(residual_block):
    g = residual_block(c=8, hw=16)
    pred = predict(g, FIXED)
    # bn and relu ride on conv a; the residual add and the relu after it ride on conv b
    assert set(pred.fused) == {"bn", "r", "add", "r2"}
    assert all(pred.per_node[n] == 0.0 for n in pred.fused)
    assert pred.per_node["gap"] > 0


def test_wider_and_larger_models_are_predicted_slower(residual_block):
    small, wide, big = (predict(residual_block(c=c, hw=hw), FIXED).total_ms for c, hw in ((8, 16), (32, 16), (8, 64)))
    assert small < wide and small < big


def test_calibration_is_cached_per_machine_in_the_configured_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    path = calibration_path()
    assert path.parent == tmp_path / "c" and path.name.startswith("calibration-")
    assert load_calibration() is None
    calib = calibrate(quick=True)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    assert calib.overhead_s > 0 and calib.bandwidth > 0
    assert set(calib.rates) >= {"conv", "dwconv", "gemm", "elementwise", "reduce"}
    assert calib.weight_bandwidth > 0 and len(calib.curves["bandwidth"]) >= 2
    assert all(r > 0 for r in calib.rates.values())
    assert calib.key == machine_key()
    # the second call reads the cache instead of benchmarking again
    again = calibrate()
    assert again.created == calib.created and again.rates == calib.rates
    # another machine key gives another file
    other = dict(machine_key(), cpu="some other cpu")
    assert calibration_path(other) != path


def test_cache_dir_falls_back_to_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("GRAPHC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "graphc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "graphc"


def test_a_corrupt_cache_file_reads_as_no_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    calibration_path().write_text("{not json")
    assert load_calibration() is None
    calibration_path().write_text(json.dumps(FIXED.as_dict()))
    assert load_calibration().rates == FIXED.rates


def test_measured_timing_has_median_and_spread():
    model = calibration._chain("Relu", 4, (1, 8, 16, 16))
    t = measure_onnx(model, warmup=1, repeats=7)
    assert len(t.samples) == 7
    assert t.min <= t.median <= t.max and t.iqr >= 0
    assert set(t.as_dict()) == {"median_ms", "min_ms", "max_ms", "iqr_ms", "repeats"}


def test_profile_reports_each_node_by_name():
    w = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    model = calibration._chain("Conv", 3, (1, 8, 16, 16), attrs={"pads": [1, 1, 1, 1]}, weight=w)
    per = profile_onnx(model, warmup=1, repeats=3)
    assert {"n0", "n1", "n2"} <= set(per)
    assert all(v >= 0 for v in per.values())


def test_profiled_time_of_a_fused_chain_lands_on_its_conv(residual_block):
    from graphc.backends.latency import attribute_to_heads

    g = residual_block()
    # onnxruntime may name a fused conv+bn+relu after the relu, and conv+add+relu after the add
    per = attribute_to_heads(g, {"r": 1.0, "a": 0.5, "add": 2.0, "gap": 0.25, "ReorderOutput": 0.1})
    assert per == {"a": 1.5, "b": 2.0, "gap": 0.25, "ReorderOutput": 0.1}
