"""The `fuse` preset end to end: registered as one fixed-point group of the exact passes,
safe on any graph, rerunnable, and exact through the front-ends and back-ends."""
import numpy as np
import pytest
import torch
from torch import nn

import graphc
from graphc.passes.fuse import FUSE_PASSES
from graphc.registry import all_passes, all_presets


def test_preset_is_one_fixpoint_group_of_exact_passes():
    text = all_presets()["fuse"]
    assert text.startswith("fixpoint(") and all(p in text for p in FUSE_PASSES)
    passes = all_passes()
    assert all(passes[p].exact for p in FUSE_PASSES)


class Net(nn.Module):
    """Every fusion the preset knows, in one small network."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.res = nn.Conv2d(8, 8, 3, padding=1)
        self.pw = nn.Conv2d(8, 8, 1)
        self.down = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.AvgPool2d(2))
        self.drop = nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(8 * 4 * 4, 32), nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(0.5 * self.res(x) + x + self.pw(x))
        x = self.down(x)
        x = self.drop(torch.flatten(x, 1))
        return self.fc2(self.fc1(x))


@pytest.fixture
def net():
    torch.manual_seed(0)
    m = Net().eval()
    g = torch.Generator().manual_seed(1)
    for bn in (m.stem[1], m.down[1]):
        bn.running_mean.copy_(torch.randn(8, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    return m


def test_fuse_collapses_the_network_exactly_and_once(net):
    from graphc.backends.torch import emit_torch

    x = torch.randn(1, 3, 8, 8)
    g = graphc.load(net, example_inputs=x)
    n0 = len(g.nodes)
    assert graphc.run_pipeline(g, "fuse").changed
    ops = [n.op for n in g.nodes]
    assert "batch_norm" not in ops and "dropout" not in ops and "avg_pool2d" not in ops
    assert ops.count("conv2d") == 3 and ops.count("linear") == 1 and ops.count("add") == 0
    assert len(g.nodes) < n0
    with torch.no_grad():
        torch.testing.assert_close(emit_torch(g)(x), net(x), rtol=1e-4, atol=1e-5)
    assert not graphc.run_pipeline(g, "fuse").changed


def test_fuse_through_onnx_round_trip(net, tmp_path):
    import onnxruntime as ort

    from graphc.backends.onnx import emit_onnx

    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, do_constant_folding=False)
    g = graphc.load(str(path))
    graphc.run_pipeline(g, "fuse")
    sess = ort.InferenceSession(emit_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), rtol=1e-4, atol=1e-5)


def test_fuse_leaves_what_it_cannot_prove(h):
    # Weights that arrive as graph inputs (older ONNX exporters) are not constants: nothing
    # folds, nothing breaks.
    b = h.Builder(shape=(1, 3, 6, 6))
    from graphc.ir import TensorType

    w = b.g.add_input("w", TensorType((3, 3, 3, 3), "f32"))
    c = b.g.add_node("conv2d", [b.x, w], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1},
                     "conv").output
    g = b.out(b.op("add", b.bn(c), b.x))
    before = str(g)
    assert not h.fuse(g).changed
    assert str(g) == before
