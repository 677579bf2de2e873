"""Channel rules for the ops of modern vision blocks: each block imports without an opaque
node, its inner channels form a prunable group, and removing units made dead (every param
slice zeroed) leaves the outputs where they were."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphc
from graphc.passes.channel_groups import channel_groups, prune_groups
from zoo import kill_units


class GRN(nn.Module):
    """ConvNeXt-V2's global response norm between two pointwise convs (Tensor.norm, addcmul)."""

    def __init__(self, c=4, hidden=8):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)
        self.weight, self.bias = nn.Parameter(torch.randn(hidden)), nn.Parameter(torch.randn(hidden))

    def forward(self, x):
        h = self.fc1(x)
        g = h.norm(p=2, dim=(2, 3), keepdim=True)
        n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
        h = torch.addcmul(self.bias.view(1, -1, 1, 1), self.weight.view(1, -1, 1, 1), h * n) + h
        return x + self.fc2(h)


class AddcmulNorm(GRN):
    """The same ops without GRN's mean over channels: a per-channel spatial norm and addcmul."""

    def forward(self, x):
        h = self.fc1(x)
        g = torch.linalg.vector_norm(h, 2, dim=(2, 3), keepdim=True)
        h = h.addcmul(self.weight.view(1, -1, 1, 1), h * g, value=0.5)
        return x + self.fc2(h)


class UnbindAttention(nn.Module):
    """Swin-style attention: q, k, v = qkv.unbind(0), heads split off the channels."""

    def __init__(self, dim=4, heads=2, hd=6):
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * heads * hd), nn.Linear(heads * hd, dim)
        self.heads, self.hd = heads, hd

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class GroupNormBlock(nn.Module):
    """PoolFormer's token mixer with F.group_norm (a whole-channel GroupNorm1, and groups of 2)."""

    def __init__(self, c=4, hidden=8, groups=1):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)
        self.w, self.b = nn.Parameter(torch.randn(hidden)), nn.Parameter(torch.randn(hidden))
        self.groups = groups

    def forward(self, x):
        h = F.group_norm(self.fc1(x), self.groups, self.w, self.b, 1e-5)
        return x + self.fc2(F.relu(h))


class RadixSplit(nn.Module):
    """ResNeSt's split attention: radix branches, a radix softmax (view, transpose, softmax,
    reshape back) and the weighted sum of the branches."""

    def __init__(self, c=4, width=6, radix=2):
        super().__init__()
        self.conv = nn.Conv2d(c, width * radix, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(width, 5, 1), nn.Conv2d(5, width * radix, 1)
        self.out = nn.Conv2d(width, c, 1)
        self.radix, self.width = radix, width

    def forward(self, x):
        b = x.shape[0]
        h = F.relu(self.conv(x))
        h = h.reshape(b, self.radix, self.width, *h.shape[2:])
        gap = h.sum(1).mean((2, 3), keepdim=True)
        a = self.fc2(F.relu(self.fc1(gap)))
        a = a.view(b, 1, self.radix, -1).transpose(1, 2)
        a = F.softmax(a, dim=1).reshape(b, -1).view(b, -1, 1, 1)
        return x + self.out((h * a.reshape(b, self.radix, self.width, 1, 1)).sum(1))


CASES = {
    "grn": (GRN, (2, 4, 5, 5), "fc1.weight"),
    "addcmul_norm": (AddcmulNorm, (2, 4, 5, 5), "fc1.weight"),
    "unbind_attention": (UnbindAttention, (2, 5, 4), "qkv.weight"),
    "group_norm_1": (lambda: GroupNormBlock(groups=1), (2, 4, 5, 5), "fc1.weight"),
    "group_norm_4": (lambda: GroupNormBlock(groups=4), (2, 4, 5, 5), "fc1.weight"),
    "radix_softmax": (RadixSplit, (2, 4, 5, 5), "conv.weight"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_block_prunes_through_the_op(case):
    make, shape, weight = CASES[case]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(shape)
    g = graphc.load(model, example_inputs=x)
    assert "opaque" not in [n.op for n in g.nodes]
    groups = channel_groups(g)
    inner = [gr for gr in groups if any(m.value.param is not None and m.value.param.source == weight and m.axis == 0
                                        for m in gr.params())]
    assert inner, f"{weight} is in no group"
    gr = inner[0]
    assert gr.prunable, f"{weight}'s group is frozen: {gr.reason}"
    dead = np.arange(gr.size)[1::2]
    kill_units(gr, dead)
    with torch.no_grad():
        y_dead = graphc.emit_torch(g)(x)
        assert prune_groups(g, [(gr, np.setdiff1d(np.arange(gr.size), dead))]) > 0
        g.verify()
        y = graphc.emit_torch(g)(x)
    assert y.shape == y_dead.shape
    if case in ("group_norm_1", "grn"):
        return  # a statistic over all channels (one norm group, GRN's mean): a dead channel counted
    torch.testing.assert_close(y, y_dead, rtol=1e-4, atol=1e-5)
