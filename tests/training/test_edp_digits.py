"""End to end on digits, the README's two commands: ``graphc train-example lenet5 --data digits``
then ``graphc optimize lenet5.onnx --passes "edp(target-macs=0.5),fuse" --data digits``. The bounds
are loose and honest: EDP lands on half the MACs, keeps accuracy within 2 points of the source
and cuts parameters."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphc.cli.main import main
from graphc.data import load_data


@pytest.fixture(scope="module")
def lenet5_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("example") / "lenet5.onnx"
    assert main(["train-example", "lenet5", "--data", "digits", "-o", str(out), "-q"]) == 0
    return out


def ort_accuracy(path, data):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x, y = data.x_val.numpy(), data.y_val.numpy()
    pred = [int(np.argmax(sess.run(None, {name: x[i:i + 1]})[0])) for i in range(len(y))]
    return float(np.mean(np.array(pred) == y))


def test_train_example_writes_a_trained_onnx(lenet5_onnx, capsys):
    model = onnx.load(str(lenet5_onnx))
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 8, 8]
    assert ort_accuracy(lenet5_onnx, load_data("digits")) > 0.9


def test_train_example_rejects_bad_input(tmp_path, capsys):
    assert main(["train-example", "lenet7", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "unknown example model" in capsys.readouterr().err
    assert main(["train-example", "lenet5", "-o", str(tmp_path / "m.txt")]) == 2
    assert main(["train-example", "lenet5", "--data", "nope.npz", "-o", str(tmp_path / "m.onnx")]) == 2
    assert not list(tmp_path.iterdir())


def test_edp_fuse_on_digits_keeps_accuracy_and_cuts_params(lenet5_onnx, tmp_path, capsys):
    slim, report = tmp_path / "slim.onnx", tmp_path / "report.json"
    assert main(["optimize", str(lenet5_onnx), "--passes", "edp(target-macs=0.5),fuse", "--data", "digits", "-q",
                 "--report", str(report), "-o", str(slim)]) == 0
    out = capsys.readouterr().out
    assert "accuracy (%)" in out and "params" in out and "MACs" in out
    r = json.loads(report.read_text())
    acc = r["metrics"]["accuracy"]
    assert acc["after"] >= acc["before"] - 2.0
    assert r["after"]["params"] < 0.7 * r["before"]["params"]
    assert 0.475 * r["before"]["macs"] <= r["after"]["macs"] <= 0.5 * r["before"]["macs"]
    search = next(p for p in r["passes"] if p["name"] == "edp-train")["stats"]["search"]
    assert search["evaluations"] >= 1 and search["reached"]["macs"] <= search["targets"]["macs"]
    pm = next(p for p in r["passes"] if p["name"] == "prune-merge")
    assert pm["stats"]["columns_dropped"] > 0
    # The written model is the one measured: same accuracy under onnxruntime.
    assert ort_accuracy(slim, load_data("digits")) * 100 == pytest.approx(acc["after"], abs=1e-6)
