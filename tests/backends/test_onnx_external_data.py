"""Models over protobuf's 2 GB limit: written as OUT.onnx + OUT.onnx.data by convert, fuse and
prune, checked from the file, and never half-written.

The limit itself is lowered here so the same code paths run on a model of kilobytes; the real
thing (a generated 2.06 GiB model through the same three commands) is ``bench/big_model.py``."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphc.backends.onnx as onnx_backend
from graphc.cli.main import main


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(onnx_backend, "_PROTO_LIMIT", 4096)
    monkeypatch.setattr(onnx_backend, "_DEFER_BYTES", 1024)  # weights set after the model is built


@pytest.fixture
def gemm_chain(tmp_path):
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(3):
        inits += [numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32) / 6, f"fc{i}.weight"),
                  numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), f"fc{i}.bias")]
        nodes += [helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}"], transB=1),
                  helper.make_node("Relu", [f"fc{i}"], [f"relu{i}"])]
        x = f"relu{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 32])], initializer=inits)
    path = tmp_path / "src" / "chain.onnx"
    path.parent.mkdir()
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path),
                    save_as_external_data=True, location="chain.onnx.data", size_threshold=0)
    return path


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("args", [["convert"], ["optimize", "--passes", "fuse", "-q"],
                                  ["optimize", "--passes", "prune(ratio=0.5)", "-q"]])
def test_over_the_limit_writes_onnx_and_data(small_limit, gemm_chain, tmp_path, args):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "big.onnx"
    src_bytes = (gemm_chain.parent / "chain.onnx.data").read_bytes()
    assert main([args[0], str(gemm_chain), "-o", str(out)] + args[1:]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["big.onnx", "big.onnx.data"]
    model = onnx.load(str(out), load_external_data=False)
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_location == TensorProto.EXTERNAL for t in weights)
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    if args[0] == "convert" or "fuse" in args:
        np.testing.assert_allclose(_run(out, x), _run(gemm_chain, x), rtol=1e-4, atol=1e-5)
    else:
        assert _run(out, x).shape == (1, 32)
    assert (gemm_chain.parent / "chain.onnx.data").read_bytes() == src_bytes


def test_save_external_leaves_the_proto_as_it_was(tmp_path, gemm_chain):
    model = onnx.load(str(gemm_chain))
    before = model.SerializeToString()
    onnx_backend.save_external(model, tmp_path / "m.onnx", "m.onnx.data")
    assert model.SerializeToString() == before
    x = np.ones((1, 32), np.float32)
    np.testing.assert_array_equal(_run(tmp_path / "m.onnx", x), _run(gemm_chain, x))


FACTORY = """
import torch, torch.nn as nn

class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 32)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) * self.calls

def make():
    return Counter().eval(), torch.randn(1, 32)
"""


def test_failed_check_over_the_limit_leaves_no_file(small_limit, tmp_path, capsys):
    (tmp_path / "factory.py").write_text(FACTORY)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["convert", f"{tmp_path / 'factory.py'}:make", "-o", str(out_dir / "m.onnx")]) == 1
    assert "not written" in capsys.readouterr().err
    assert not list(out_dir.iterdir())
