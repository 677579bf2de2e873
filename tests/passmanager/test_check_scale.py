"""The numeric check judges like graphc's tests: rtol 1e-4 and atol 1e-5 scaled by
max(1, max|reference|) per output, so an exact rewrite of a model whose outputs are in the
thousands passes, and a wrong one still fails."""
import numpy as np
import pytest
import torch

import graphc
from graphc.check import compare
from graphc.cli.main import main

FACTORY = """
import torch

def make():
    # Random weights and BN statistics with a tiny variance: outputs in the thousands, as in
    # Caffe2-era ResNets and ShuffleNets run with random weights.
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32)).eval()
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_var.uniform_(1e-4, 2e-4)
            bn.running_mean.uniform_(-1, 1)
    return m, torch.randn(1, 3, 16, 16)
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "big.py"
    path.write_text(FACTORY)
    return path


def _make(factory):
    scope = {}
    exec(compile(factory.read_text(), str(factory), "exec"), scope)
    return scope["make"]()


def test_fold_bn_on_outputs_in_the_thousands_passes_the_check(factory):
    m, x = _make(factory)
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.abs(ref).max() > 1000
    g, report = graphc.optimize(m, "fold-bn", example_inputs=x, check=3)
    assert "batch_norm" not in [n.op for n in g.nodes]
    assert report.check.ok and report.check.enforced
    with torch.no_grad():
        out = graphc.emit_torch(g)(x).numpy()
    # Exact to float rounding, yet beyond a fixed atol of 1e-5 on the elements near zero: the
    # rule this check used to apply would have refused the rewrite.
    err = np.abs(out - ref)
    assert err.max() / np.abs(ref).max() < 1e-6
    assert not (err <= 1e-5 + 1e-4 * np.abs(ref)).all()


def test_cli_writes_the_fold_and_names_the_criterion(factory, tmp_path, capsys):
    out = tmp_path / "folded.onnx"
    assert main(["optimize", f"{factory}:make", "--passes", "fold-bn", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1e-05 * max(1, max|reference|) + 0.0001 * |reference|" in text and ": ok" in text
    assert out.exists()


def test_scaled_atol_is_per_output_and_still_catches_a_wrong_result():
    rng = np.random.default_rng(0)
    big = rng.standard_normal(1000) * 5000
    big[0] = 0.01  # an element near zero in an output whose scale is thousands
    small = rng.standard_normal(10)
    # Rounding-sized errors on the large output (3e-4 absolute, 1e-5 * max|big| is ~0.1) pass,
    # also on its element near zero.
    assert compare([big, small], [big + 3e-4, small + 1e-6])[2]
    # The large output's scale does not loosen the small one's: 3e-4 there is a real error.
    assert not compare([big, small], [big, small + 3e-4])[2]
    # A relative error of 1e-3 is wrong at any scale.
    assert not compare([big, small], [big * (1 + 1e-3), small])[2]
    # Scale 1 below |reference| 1: the plain rule.
    assert compare([np.array([0.5, 0.0])], [np.array([0.5, 9e-6])])[2]
    assert not compare([np.array([0.5, 0.0])], [np.array([0.5, 2e-5])])[2]
