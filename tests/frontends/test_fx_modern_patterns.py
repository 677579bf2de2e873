"""fx front-end: patterns of modern vision code (timm) that import exactly.

- a layer's ``weight.device`` read to build a positional encoding (XCiT, EdgeNeXt);
- an attention-bias table indexed by a slice and an index tensor (LeViT, EfficientFormer,
  EfficientViT-M, TinyViT): the table stays a weight;
- an ``autocast(enabled=False)`` region that torch.export wraps as ``wrap_with_autocast``
  (EfficientViT-MIT's linear attention).
"""
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

import graphc
from graphc.backends.torch import emit_torch


def _exact(model, x):
    model.eval()
    g = graphc.load(model, example_inputs=x)
    g.verify()
    with torch.no_grad():
        torch.testing.assert_close(emit_torch(g)(x), model(x), rtol=1e-4, atol=1e-5)
    return g


class FourierPositions(nn.Module):
    """XCiT's PositionalEncodingFourier, reduced: the grid is built on the layer's device."""

    def __init__(self, hidden=4, dim=6):
        super().__init__()
        self.token_projection = nn.Conv2d(2 * hidden, dim, 1)
        self.hidden = hidden

    def forward(self, x):
        b, _, h, w = x.shape
        device = self.token_projection.weight.device
        mask = ~torch.zeros((b, h, w)).to(device=device, dtype=torch.bool)
        y_embed = mask.cumsum(1, dtype=torch.float32)
        x_embed = mask.cumsum(2, dtype=torch.float32)
        dim_t = torch.arange(self.hidden, dtype=torch.int64, device=device).to(torch.float32)
        dim_t = 10000.0 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden)
        pos = torch.cat(((y_embed[..., None] / dim_t).sin(), (x_embed[..., None] / dim_t).cos()), dim=3)
        return x + self.token_projection(pos.permute(0, 3, 1, 2))


def test_weight_device_read_through_getattr_imports_and_keeps_the_layer_weights():
    torch.manual_seed(0)
    m = FourierPositions()
    g = _exact(m, torch.randn(2, 6, 5, 7))
    weights = {p.source for p in g.params.values() if p.kind == "weight"}
    # The encoding's projection is a layer on a constant input, not a folded constant.
    assert {"token_projection.weight", "token_projection.bias"} <= weights
    assert "conv2d" in [n.op for n in g.nodes]


class AttentionBias(nn.Module):
    """LeViT's attention with a learned bias per head and relative offset."""

    def __init__(self, heads=2, res=3, dim=4):
        super().__init__()
        points = list(itertools.product(range(res), range(res)))
        offsets, idxs = {}, []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.randn(heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.LongTensor(idxs).view(res * res, res * res),
                             persistent=False)
        self.qk = nn.Linear(dim, dim * heads)
        self.heads, self.dim = heads, dim

    def forward(self, x):
        b, n, _ = x.shape
        q = self.qk(x).reshape(b, n, self.heads, self.dim).transpose(1, 2)
        attn = q @ q.transpose(-1, -2) + self.attention_biases[:, self.attention_bias_idxs]
        return attn.softmax(-1)


def test_attention_bias_table_indexed_by_slice_and_tensor_stays_a_weight():
    torch.manual_seed(0)
    m = AttentionBias()
    g = _exact(m, torch.randn(2, 9, 4))
    table = [p for p in g.params.values() if p.source == "attention_biases"]
    assert table and table[0].kind == "weight"
    assert "index_select" in [n.op for n in g.nodes]
    assert "opaque" not in [n.op for n in g.nodes]
    # The ONNX back-end lowers it too (Gather), and onnxruntime agrees.
    import numpy as np
    import onnxruntime as ort

    x = torch.randn(2, 9, 4)
    sess = ort.InferenceSession(graphc.emit_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, m(x).numpy(), rtol=1e-4, atol=1e-5)


class AutocastOff(nn.Module):
    """A float32 region under autocast(enabled=False); the device test sends fx to torch.export."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Conv2d(3, 6, 1)

    def forward(self, x):
        q, v = self.qkv(x).chunk(2, dim=1)
        if x.device.type != "meta":  # data about the tensor: fx cannot trace it, torch.export can
            with torch.autocast(device_type=x.device.type, enabled=False):
                out = (q.float() @ v.float().transpose(-1, -2)).to(x.dtype)
        else:
            out = q @ v.transpose(-1, -2)
        return out


def test_autocast_off_region_is_inlined():
    from graphc.frontends.fx import _inline_autocast_off

    torch.manual_seed(0)
    m = AutocastOff().eval()
    x = torch.randn(1, 3, 4, 4)
    gm = torch.export.export(m, (x,), strict=False).module()
    assert any("wrap_with_autocast" in str(n.target) for n in gm.graph.nodes)
    _inline_autocast_off(gm)
    assert not any("wrap_with_autocast" in str(n.target) for n in gm.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x))
    g = _exact(m, x)
    assert "opaque" not in [n.op for n in g.nodes]
    assert "matmul" in [n.op for n in g.nodes]


class SamePadding(nn.Module):
    """TF-style 'same' padding (timm's Conv2dSame): control flow over the input's size, and a
    buffer written in place on the way, which the trace must not write for real."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        ih, iw = x.size()[-2:]
        pad_h = max((math.ceil(ih / 2) - 1) * 2 + 3 - ih, 0)
        pad_w = max((math.ceil(iw / 2) - 1) * 2 + 3 - iw, 0)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        self.calls.add_(0)
        return self.conv(x) * x.shape[1]


def test_control_flow_over_shapes_traces_with_fx_not_export(monkeypatch):
    torch.manual_seed(0)
    m = SamePadding().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}

    def no_export(*a, **k):
        raise AssertionError("torch.export was used")

    monkeypatch.setattr(torch.export, "export", no_export)
    g = _exact(m, torch.randn(1, 3, 9, 8))
    assert [n.op for n in g.nodes if n.op != "mul"] == ["pad", "conv2d"]
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
