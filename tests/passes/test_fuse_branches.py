"""fuse-branches: sums of scaled conv / BN / identity branches of one input become one conv."""
import pytest
import torch
from torch import nn

import graphc
from graphc.passes.fuse_branches import FuseBranches


def _bn(c):
    b = nn.BatchNorm2d(c)
    with torch.no_grad():  # fresh BNs are the identity: give them statistics a fold must carry
        b.running_mean.uniform_(-1, 1)
        b.running_var.uniform_(0.5, 2)
        b.weight.uniform_(0.5, 1.5)
        b.bias.uniform_(-1, 1)
    return b


class RepMixer(nn.Module):
    """FastViT's RepMixer: x + gamma * (mixer(x) - norm(x)), mixer = dw kxk + dw 1x1 + BN."""

    def __init__(self, c=6, groups=6):
        super().__init__()
        self.kxk = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False), _bn(c))
        self.k1 = nn.Sequential(nn.Conv2d(c, c, 1, groups=groups, bias=False), _bn(c))
        self.mid, self.norm = _bn(c), _bn(c)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1))

    def forward(self, x):
        return x + self.gamma * ((self.kxk(x) + self.k1(x) + self.mid(x)) - self.norm(x))


class Mixed(nn.Module):
    """Dilated and plain kernels, a constant minus a branch, a division and a scalar scale."""

    def __init__(self, c=4):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(c, c, 5, padding=2, bias=False)
        self.n = _bn(c)
        self.k = nn.Parameter(torch.rand(1, c, 1, 1) + 0.5)

    def forward(self, x):
        return (self.a(x) - 0.5 * self.b(x)) / self.k + (self.k - self.n(x))


def _run(model, x):
    torch.manual_seed(0)
    model.eval()
    g = graphc.load(model, example_inputs=x)
    res = graphc.run_pipeline(g, "fuse-branches")
    with torch.no_grad():
        y, ref = graphc.emit_torch(g)(x), model(x)
    for a, b in zip(y if isinstance(y, tuple) else (y,), ref if isinstance(ref, tuple) else (ref,)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))
    return g, res


@pytest.mark.parametrize("make", [RepMixer, lambda: RepMixer(groups=1), Mixed], ids=["repmixer", "dense", "mixed"])
def test_branch_sum_folds_to_one_conv_exactly_and_idempotently(make):
    torch.manual_seed(0)
    g, res = _run(make(), torch.randn(2, 6 if make is not Mixed else 4, 7, 7))
    assert res.changed
    assert [n.op for n in g.nodes] == ["conv2d"]
    assert not graphc.run_pipeline(g, "fuse-branches").changed


def test_fuse_preset_folds_repmixer_like_timm():
    torch.manual_seed(0)
    m = RepMixer().eval()
    x = torch.randn(1, 6, 8, 8)
    g = graphc.load(m, example_inputs=x)
    graphc.run_pipeline(g, "fuse")
    assert [n.op for n in g.nodes] == ["conv2d"] and g.nodes[0].attrs["groups"] == 6
    with torch.no_grad():
        torch.testing.assert_close(graphc.emit_torch(g)(x), m(x), rtol=1e-4, atol=1e-5)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.a(x) + self.b(torch.relu(x))


class Strided(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1, stride=2)
        self.n = _bn(4)

    def forward(self, x):
        return self.a(x) - self.n(x)[:, :, ::2, ::2]


class Shared(nn.Module):
    """The conv's output is read twice: folding would lose the other reader's value."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.n = _bn(4)

    def forward(self, x):
        c = self.a(x)
        return c - self.n(x), torch.sigmoid(c)


@pytest.mark.parametrize("make", [TwoInputs, Strided, Shared])
def test_not_an_affine_map_of_one_input_stays(make):
    torch.manual_seed(0)
    g, res = _run(make(), torch.randn(1, 4, 6, 6))
    assert not res.changed
    assert sum(n.op == "conv2d" for n in g.nodes) >= 1 and any(n.op in ("add", "sub") for n in g.nodes)


def test_pass_contract():
    assert FuseBranches.exact and FuseBranches.name == "fuse-branches"
