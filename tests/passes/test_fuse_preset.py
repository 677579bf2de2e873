"""The `fuse` pass end to end: one pattern set made of the exact passes' patterns, safe on any
graph, rerunnable, equal to running its member passes to a fixed point, and exact through the
front-ends and back-ends."""
import numpy as np
import pytest
import torch
from torch import nn

import graphc
from graphc.passes.fuse import FUSE_PASSES
from graphc.registry import all_passes, all_presets


def test_fuse_is_one_pattern_set_made_of_the_exact_passes_patterns():
    passes = all_passes()
    assert "fuse" in passes and "fuse" not in all_presets()
    assert passes["fuse"]().exact and all(passes[p]().exact for p in FUSE_PASSES)
    members = [type(p) for name in FUSE_PASSES for p in passes[name]().patterns()]
    assert [type(p) for p in passes["fuse"]().patterns()] == members and len(set(members)) >= len(FUSE_PASSES)


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


def test_fuse_equals_its_member_passes_run_to_a_fixed_point(net):
    from graphc.ir.printer import print_graph

    x = torch.randn(1, 3, 8, 8)
    one, looped = graphc.load(net, example_inputs=x), graphc.load(net, example_inputs=x)
    rep = graphc.run_pipeline(one, "fuse")
    assert len(rep.passes) == 1 and rep.passes[0].stats["rewrites"] > 5
    graphc.run_pipeline(looped, "fixpoint(" + ",".join(FUSE_PASSES) + ")")
    assert sorted(n.op for n in one.nodes) == sorted(n.op for n in looped.nodes)
    assert len(print_graph(one).splitlines()) == len(print_graph(looped).splitlines())


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
