"""unify-realize: a unified conv with shared sign patterns becomes a signed-summation conv and
a narrower conv with fewer MACs, exactly (torch and onnxruntime)."""
import numpy as np
import pytest
import torch
from torch import nn

import graphc
from graphc.backends.cost import totals
from graphc.passes.unify_blocks import parse_block, project, to_blocks
from graphc.passes.unify_realize import UnifyRealize
from graphc.registry import PassContext


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 12, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(12, 8, 3, padding=1, bias=False)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))


def _unified(block, drop_group=False):
    torch.manual_seed(0)
    net = Net().eval()
    spec = parse_block(block)
    with torch.no_grad():
        for conv in (net.c2, net.c3):
            n = to_blocks(conv.weight, spec).shape[0]
            z = project(conv.weight, spec, n, 0).z
            if drop_group:  # every block of input channels 0..3 pruned: those channels drop
                z[:, :4] = 0
            conv.weight.copy_(z)
    x = torch.randn(2, 3, 10, 10)
    g = graphc.load(net, example_inputs=x)
    for name in ("c2", "c3"):
        g.node(name).meta["unify"] = block
    return net, g, x


def _macs(g):
    return totals(g)["macs"]


@pytest.mark.parametrize("block,drop", [("cin4-shared", False), ("kernel-shared", False), ("cin4-shared", True)])
def test_realization_is_exact_with_fewer_macs(block, drop):
    import onnxruntime as ort

    net, g, x = _unified(block, drop)
    before = _macs(g)
    res = UnifyRealize().run(g, PassContext())
    assert res.changed and res.stats["realized"] == 2, res.stats
    g.verify()
    assert _macs(g) < before
    assert before - _macs(g) == res.stats["macs_saved"]
    if drop:
        assert "index_select" in {n.op for n in g.nodes}
    ref = net(x)
    torch.testing.assert_close(graphc.emit_torch(g)(x), ref, rtol=1e-4, atol=1e-5)
    sess = ort.InferenceSession(graphc.emit_onnx(g).SerializeToString())
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert not UnifyRealize().run(g, PassContext()).changed  # idempotent: the marks are gone


def test_own_signs_refused_with_reason():
    net, g, x = _unified("cin4")
    res = UnifyRealize().run(g, PassContext())
    assert not res.changed
    assert "sign patterns per group" in res.stats["refused"]["c2"]


def test_free_blocks_refused():
    net, g, x = _unified("cin4-shared")
    w = g.params[g.node("c2").input(1).name]
    data = w.data.copy()
    data[0, 0, 0, 0] *= 1.5  # one block no longer unified
    w.set_data(data)
    res = UnifyRealize().run(g, PassContext())
    assert "not unified" in res.stats["refused"]["c2"] and res.stats["realized"] == 1


def test_cost_counts_multiplies_apart_from_adds():
    from graphc.backends.onnx_unify import unified_cost

    net, g, x = _unified("cin4-shared")
    rows = unified_cost(g)
    c2 = rows["c2"]  # 12 x 16 x 3 x 3 weight, 5 x 5 outputs, batch 2: every block unified
    positions = 2 * 5 * 5
    assert c2["dense_macs"] == positions * 12 * 16 * 9
    assert c2["multiplies"] == positions * 12 * 16 * 9 // 4 and c2["adds"] == c2["dense_macs"]
    assert c2["realised_by"].startswith("unify-realize")
    net, g, x = _unified("cin4")
    assert "refuses" in unified_cost(g)["c2"]["realised_by"]
