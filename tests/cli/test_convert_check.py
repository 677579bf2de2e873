"""graphc convert checks the model it writes against the source, like an exact pipeline."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from graphc.cli.main import main

FACTORY = """
import torch, torch.nn as nn

class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.c(x)
        y.relu_()
        z = self.d(y)
        z += y
        return z

class Counter(nn.Module):
    # Python state the trace bakes in: the traced graph multiplies by 1, the module by its call count.
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.c(x) * self.calls

def make():
    torch.manual_seed(0)
    return InPlace().eval(), torch.randn(1, 3, 8, 8)

def counter():
    torch.manual_seed(0)
    return Counter().eval(), torch.randn(1, 3, 8, 8)
"""


@pytest.fixture
def factory(tmp_path):
    p = tmp_path / "factory.py"
    p.write_text(FACTORY)
    return p


def _module(factory, name="make"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("factory_under_test", factory)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)()[0]


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_convert_checks_and_writes_a_model_equal_to_the_module(factory, tmp_path, capsys, suffix):
    out = tmp_path / f"out{suffix}"
    assert main(["convert", f"{factory}:make", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "check: 3 random inputs" in err and "max abs err" in err and ": ok" in err
    m = _module(factory)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        want = m(x.clone()).numpy()
    if suffix == ".onnx":
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    else:
        got = torch.load(out, weights_only=False)(x.clone()).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_convert_refuses_to_write_a_model_that_differs(factory, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    before = set(tmp_path.iterdir())
    assert main(["convert", f"{factory}:counter", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FAILED" in err and "max abs err" in err and "not written" in err, err
    assert set(tmp_path.iterdir()) == before


def test_check_0_skips_the_check(factory, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert main(["convert", f"{factory}:counter", "-o", str(out), "--check", "0"]) == 0
    assert out.exists() and "check:" not in capsys.readouterr().err


def test_negative_check_is_bad_input(factory, tmp_path, capsys):
    assert main(["convert", f"{factory}:make", "-o", str(tmp_path / "o.onnx"), "--check", "-1"]) == 2
    assert "--check" in capsys.readouterr().err
