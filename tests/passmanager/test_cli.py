"""`graphc optimize` and `graphc passes`: the summary table, outputs only after success, JSON
reports, dumps, and one-line exit-2 errors that write nothing."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from graphc.cli.main import main
from graphc.ir import load_json, save_json
from graphc.registry import Pass, PassResult, all_passes, all_presets

FACTORY = '''
import torch


def make():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    with torch.no_grad():
        m[1].running_var.uniform_(0.5, 2.0)
    return m, torch.randn(1, 3, 16, 16)
'''


@dataclass(frozen=True)
class Skew(Pass):
    """Claims to be exact but scales the first weight."""

    name: ClassVar[str] = "t-skew"
    exact: ClassVar[bool] = True

    def run(self, graph, ctx):
        p = next(p for p in graph.params.values() if p.kind == "weight")
        p.set_data(p.data * 2)
        return PassResult(True)


@pytest.fixture
def model(tmp_path, build):
    path = tmp_path / "m.json"
    save_json(build.conv_bn_relu(), path)
    return path


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_optimize_prints_table_writes_output_and_report(model, tmp_path, capsys):
    out = tmp_path / "slim.json"
    rc, stdout, err = cli(capsys, "optimize", model, "--passes", "fold-bn,dce", "-o", out, "--report", tmp_path / "r.json")
    assert rc == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "pipeline: fold-bn,dce (exact)"
    assert lines[1].split() == ["pass", "changed", "time", "Δnodes", "Δparams", "ΔMACs"]
    assert lines[2].split()[:2] == ["fold-bn", "yes"] and lines[2].split()[3] == "-1"
    assert any(ln.split()[:3] == ["nodes", "3", "2"] for ln in lines)
    assert any(ln.startswith("check: 3 random inputs") and ln.endswith(": ok") for ln in lines)
    assert [n.op for n in load_json(out).nodes] == ["conv2d", "relu"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["changed"] and report["check"]["ok"] and report["after"]["nodes"] == 2
    assert [p["name"] for p in report["passes"]] == ["fold-bn", "dce"]


def test_json_flag_prints_the_report(model, capsys):
    rc, stdout, _ = cli(capsys, "optimize", model, "--passes", "fuse", "--json", "--check", "2")
    assert rc == 0
    d = json.loads(stdout)
    assert d["check"]["inputs"] == 2 and d["before"]["nodes"] == 3 and d["after"]["nodes"] == 2


def test_dump_ir(model, tmp_path, capsys):
    rc, _, _ = cli(capsys, "optimize", model, "--passes", "fold-bn,dce", "--dump-ir", tmp_path / "dump", "-q")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == ["000_input.gir", "001_fold-bn.gir", "002_dce.gir", "final.dot"]


def test_failed_check_exits_1_and_writes_no_output(model, tmp_path, capsys, temp_pass):
    temp_pass(Skew)
    out = tmp_path / "bad.json"
    rc, stdout, err = cli(capsys, "optimize", model, "--passes", "t-skew", "-o", out)
    assert rc == 1 and not out.exists() and not list(tmp_path.glob(".bad*"))
    assert "FAILED" in err and "not written" in err and len(err.strip().splitlines()) == 1
    rc, _, _ = cli(capsys, "optimize", model, "--passes", "t-skew", "-o", out, "--check", "0")
    assert rc == 0 and out.exists()  # --check 0 turns the check off


@pytest.mark.parametrize("argv, needle", [
    (["--passes", "fold-bm"], "unknown pass 'fold-bm' (did you mean: fold-bn"),
    (["--passes", "absorb-pool(allow-equl=true)"], "did you mean: allow-equal"),
    (["--passes", "absorb-pool(allow-equal=3.5)"], "expected true or false"),
    (["--passes", "fixpoint(dce"], "expected ',' or ')'"),
    (["-o", "{tmp}/missing/out.json"], "output folder does not exist"),
    (["-o", "{tmp}/out.txt"], "unknown suffix"),
    (["--report", "{tmp}/missing/r.json"], "report folder does not exist"),
    (["--input-shape", "1,x,3"], "bad --input-shape"),
    (["--check", "-1"], "--check wants N >= 0"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(model, tmp_path, capsys, argv, needle):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, stdout, err = cli(capsys, "optimize", model, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1 and err.startswith("graphc: error: ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_missing_model_and_unknown_spec(tmp_path, capsys):
    rc, _, err = cli(capsys, "optimize", tmp_path / "nope.json", "-o", tmp_path / "o.json")
    assert rc == 2 and "no such model file" in err
    rc, _, err = cli(capsys, "optimize", tmp_path / "m.weird")
    assert rc == 2 and "no such model file" in err


def test_torch_factory_model_checked_with_torch_and_saved_as_pt(tmp_path, capsys):
    (tmp_path / "tiny.py").write_text(FACTORY)
    rc, stdout, err = cli(capsys, "optimize", f"{tmp_path / 'tiny.py'}:make", "--passes", "fuse", "-o", tmp_path / "t.pt",
                              "--measure")
    assert rc == 0, err
    assert any(ln.split()[:3] == ["latency", "torch", "(ms)"] for ln in stdout.splitlines())
    assert "check: 3 random inputs, torch vs torch (emit_torch)" in stdout and stdout.count(": ok") == 1
    assert (tmp_path / "t.pt").stat().st_size > 0


def test_passes_lists_every_pass_and_preset(capsys):
    rc, stdout, _ = cli(capsys, "passes")
    assert rc == 0
    listed = {ln.split()[0] for ln in stdout.splitlines() if ln.startswith("  ") and ln.split()[0] != "options:"}
    assert set(all_passes()) <= listed and set(all_presets()) <= listed
    row = next(ln for ln in stdout.splitlines() if ln.split()[:1] == ["absorb-pool"])
    assert "exact" in row
    assert "options: allow-equal=false" in stdout
    rc, stdout, _ = cli(capsys, "passes", "--json")
    d = json.loads(stdout)
    assert {p["name"] for p in d["passes"]} == set(all_passes())
    assert all(p["summary"] and p["doc"] for p in d["passes"]), "every pass has a docstring"


def test_passes_name_shows_full_doc_and_options(capsys):
    rc, stdout, _ = cli(capsys, "passes", "absorb-pool")
    assert rc == 0 and stdout.startswith("absorb-pool (exact)")
    assert "==>" in stdout  # the before/after example
    assert "allow-equal: bool (default false)" in stdout
    rc, stdout, _ = cli(capsys, "passes", "fuse")
    assert rc == 0 and stdout.startswith("fuse (exact)") and "fold-bn" in stdout
    rc, stdout, _ = cli(capsys, "passes", "edp")
    assert rc == 0 and "(preset)" in stdout and "prune-merge" in stdout
    rc, _, err = cli(capsys, "passes", "fold-bm")
    assert rc == 2 and "did you mean: fold-bn" in err


def test_data_gives_accuracy_rows_before_and_after(tmp_path, capsys):
    import numpy as np

    from graphc.ir import Graph, TensorType

    r = np.random.default_rng(0)
    g = Graph("digits")
    x = g.add_input("x", TensorType((1, 1, 8, 8), "f32"))
    y = g.add_node("flatten", [x], {"start_dim": 1, "end_dim": -1}, "flat").output
    w = g.add_param(r.standard_normal((10, 64)).astype("f4"), source="fc.weight")
    y = g.add_node("linear", [y, w], {}, "fc").output
    y = g.add_node("dropout", [y], {"p": 0.5}, "drop").output
    g.set_outputs([y])
    save_json(g, tmp_path / "d.json")
    rc, stdout, err = cli(capsys, "optimize", tmp_path / "d.json", "--passes", "fuse", "--data", "digits", "--json")
    assert rc == 0, err
    d = json.loads(stdout)
    acc = d["metrics"]["accuracy"]
    assert acc["unit"] == "%" and 0 <= acc["before"] <= 100 and acc["before"] == acc["after"]
    assert any("digits" in n and "360 val" in n for n in d["notes"])
    rc, stdout, err = cli(capsys, "optimize", tmp_path / "d.json", "--passes", "fuse", "--data", "digits")
    assert rc == 0 and any(ln.split()[:2] == ["accuracy", "(%)"] for ln in stdout.splitlines())


def test_data_that_does_not_fit_the_model_is_a_note(model, capsys):
    rc, stdout, err = cli(capsys, "optimize", model, "--passes", "fuse", "--data", "digits")
    assert rc == 0 and "accuracy not measured: model input [3, 8, 8] does not match the data's examples [1, 8, 8]" in stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_model_checked_in_onnxruntime_and_written_as_onnx(tmp_path, capsys):
    import onnx
    import torch

    ns = {}
    exec(FACTORY, ns)
    m, x = ns["make"]()
    torch.onnx.export(m, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)
    rc, stdout, err = cli(capsys, "optimize", tmp_path / "m.onnx", "--passes", "fuse", "-o", tmp_path / "o.onnx", "-q")
    assert rc == 0, err
    assert "check: 3 random inputs, onnxruntime vs onnxruntime (emit_onnx)" in stdout and stdout.rstrip().endswith(f"wrote {tmp_path / 'o.onnx'}")
    out = onnx.load(str(tmp_path / "o.onnx"))
    onnx.checker.check_model(out, full_check=True)
    assert "BatchNormalization" not in {n.op_type for n in out.graph.node}


def test_predicted_latency_row_when_the_machine_is_calibrated(model, capsys, monkeypatch):
    import types

    import graphc.backends.calibration as calibration
    import graphc.backends.latency as latency

    # A stand-in calibration: the row's presence is under test, not the cost model's numbers.
    monkeypatch.setattr(calibration, "load_calibration", lambda *a, **k: object())
    monkeypatch.setattr(latency, "predict", lambda g, calib=None: types.SimpleNamespace(total_ms=0.01 * len(g)))
    rc, stdout, _ = cli(capsys, "optimize", model, "--passes", "fold-bn", "--json")
    assert rc == 0
    assert json.loads(stdout)["metrics"]["predicted latency"] == {"before": 0.03, "after": 0.02, "unit": "ms"}
    monkeypatch.setattr(calibration, "load_calibration", lambda *a, **k: None)
    rc, stdout, _ = cli(capsys, "optimize", model, "--passes", "fold-bn", "--json")
    assert "predicted latency" not in json.loads(stdout)["metrics"]


@dataclass(frozen=True)
class Trains(Pass):
    """Needs data."""

    name: ClassVar[str] = "t-trains"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    def run(self, graph, ctx):
        from graphc.data import resolve_data

        return PassResult(False, {"train": len(resolve_data(ctx, self.name).x_train)})


def test_pass_needing_data_without_data_is_exit_2_and_with_data_loads_it(model, tmp_path, capsys, temp_pass):
    temp_pass(Trains)
    rc, _, err = cli(capsys, "optimize", model, "--passes", "fold-bn,t-trains", "-o", tmp_path / "o.json")
    assert rc == 2 and "pass 't-trains' needs data: give --data" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists()
    rc, _, err = cli(capsys, "optimize", model, "--passes", "t-trains", "--data", "nosuch.npz", "-o", tmp_path / "o.json")
    assert rc == 2 and "nosuch.npz" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli(capsys, "optimize", model, "--passes", "t-trains", "--data", "digits", "-o", tmp_path / "o.json")
    assert rc == 2 and "[1, 8, 8]" in err and len(err.strip().splitlines()) == 1  # digits do not fit the model
    assert not (tmp_path / "o.json").exists()
    x = load_json(model).inputs[0]
    np.savez(tmp_path / "fits.npz", x=np.zeros((10, *x.shape[1:]), np.float32), y=np.arange(10) % 2)
    rc, stdout, err = cli(capsys, "optimize", model, "--passes", "t-trains", "--data", tmp_path / "fits.npz",
                          "--json", "--no-accuracy")
    assert rc == 0, err
    assert json.loads(stdout)["passes"][0]["stats"] == {"train": 8}


def test_inspect_after_prints_the_ir_after_a_pipeline(model, capsys):
    from graphc.ir import parse_graph

    rc, stdout, _ = cli(capsys, "inspect", model, "--after", "fold-bn,dce")
    assert rc == 0
    assert [n.op for n in parse_graph(stdout).nodes] == ["conv2d", "relu"]
    rc, stdout, _ = cli(capsys, "inspect", model)
    assert [n.op for n in parse_graph(stdout).nodes] == ["conv2d", "batch_norm", "relu"]
    rc, _, err = cli(capsys, "inspect", model, "--after", "fold-bm")
    assert rc == 2 and "did you mean: fold-bn" in err
