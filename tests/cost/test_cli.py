"""The cost and calibrate commands: figures printed with their labels, JSON, bad input -> one
line and exit 2, no partial plot file."""
import json

import pytest
import torch

from graphc.cli.main import main


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_calibrate_show_without_cache_is_one_line_exit_2(cache, capsys):
    assert main(["calibrate", "--show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "graphc calibrate" in err[0]


def test_calibrate_writes_and_reuses_the_cache(cache, capsys):
    assert main(["calibrate", "--quick", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["rates"]["conv"] > 0 and first["path"].startswith(str(cache))
    assert main(["calibrate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == first["created"]


@pytest.mark.parametrize("argv,needle", [
    (["cost", "no/such/model.onnx"], "no such model"),
    (["cost", "torchvision:not_a_model"], "unknown torchvision"),
    (["cost", "torchvision:resnet18", "--batch", "0"], "--batch"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def _graph(batch=1):
    import graphc

    return graphc.load(TinyNet().eval(), example_inputs=torch.randn(batch, 3, 16, 16))


def test_text_report_labels_macs_and_flops(cache, capsys, monkeypatch):
    pytest.importorskip("graphc.api")
    from graphc.cli import cost

    monkeypatch.setattr(cost, "load_model", lambda spec, batch=1, size=None, input_shape=None: (_graph(batch), None, None))
    assert main(["cost", "tiny", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    macs = 2 * (8 * 27 * 256 + 40)
    assert f"{macs / 1e3:.3f} KMACs" in out
    assert "FLOPs" in out and "params" in out and "peak live memory" in out
    assert "top 10 layers by MACs" in out and "batch 2" in out
    assert "graphc calibrate" in out  # no calibration cached: says how to get a prediction


def test_json_report_and_plot(cache, capsys, monkeypatch, tmp_path):
    pytest.importorskip("graphc.api")
    from graphc.backends.calibration import Calibration, _save, calibration_path
    from graphc.cli import cost

    _save(Calibration(1e-6, 1e10, {"conv": 1e11, "dwconv": 1e10, "gemm": 1e11, "elementwise": 1e10, "reduce": 1e10}),
          calibration_path())
    monkeypatch.setattr(cost, "load_model", lambda spec, batch=1, size=None, input_shape=None: (_graph(batch), None, None))
    out_png = tmp_path / "layers.png"
    assert main(["cost", "tiny", "--json", "--per-layer", "--plot", str(out_png)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["macs"] == 8 * 27 * 256 + 40
    assert d["totals"]["params"] == sum(p.numel() for p in TinyNet().parameters())
    assert d["predicted_ms"] > 0 and d["calibrated"]
    assert {row["op"] for row in d["layers"]} >= {"conv2d", "linear"}
    assert out_png.exists() and out_png.stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp*"))


def test_plot_with_a_bad_suffix_writes_nothing(cache, capsys, monkeypatch, tmp_path):
    pytest.importorskip("graphc.api")
    from graphc.cli import cost

    monkeypatch.setattr(cost, "load_model", lambda spec, batch=1, size=None, input_shape=None: (_graph(), None, None))
    assert main(["cost", "tiny", "--plot", str(tmp_path / "out.txt")]) == 2
    assert not list(tmp_path.iterdir())


def test_measure_reports_onnxruntime_and_torch_and_per_layer_times(cache, capsys, monkeypatch):
    from graphc.cli import cost

    monkeypatch.setattr(cost, "load_model", lambda spec, batch=1, size=None, input_shape=None: (_graph(batch), None, None))
    assert main(["cost", "tiny", "--measure", "--json", "--per-layer", "--repeats", "3", "--warmup", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("measured_onnx", "measured_torch"):
        m = d[key]
        assert m["repeats"] >= 3 and m["min_ms"] <= m["median_ms"] <= m["max_ms"]
    assert d["calibrated"] and d["predicted_ms"] > 0  # --measure calibrates when nothing is cached
    # profiled times land on IR layer names (a fused conv chain on its conv)
    timed = {row["name"] for row in d["layers"] if row["latency_ms"]}
    assert "conv" in timed and "fc" in timed


def test_passes_show_before_and_after(cache, capsys, monkeypatch):
    from graphc.cli import cost

    monkeypatch.setattr(cost, "load_model", lambda spec, batch=1, size=None, input_shape=None: (_graph(batch), None, None))
    assert main(["cost", "tiny", "--json", "--passes", "fold-bn"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in d["compare"]}
    # folding BN keeps every MAC and drops BN's 2 FLOPs per element (the conv had a bias already)
    assert rows["macs"]["delta"] == 0
    assert rows["flops"]["delta"] == -2 * 8 * 16 * 16
    assert d["after"]["totals"]["nodes"] == d["totals"]["nodes"] - 1
