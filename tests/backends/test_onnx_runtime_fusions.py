"""The ONNX back-end writes decompositions in the forms onnxruntime fuses: after the runtime's
graph optimizations, graphc's model of each block has no more kernels than the model
torch.onnx.export writes for it, and GELU becomes one Gelu kernel."""
import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphc

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


class Attention(nn.Module):
    def __init__(self, manual=False):
        super().__init__()
        self.qkv, self.proj, self.manual = nn.Linear(16, 48), nn.Linear(16, 16), manual

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(1, 10, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        if self.manual:
            o = ((q * 8 ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(1, 10, 16))


class LayerNorm2d(nn.LayerNorm):
    """timm's channels-first layer norm: permute, layer_norm, permute back."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


CASES = {
    "gelu": (lambda: nn.Sequential(nn.Linear(16, 16), nn.GELU()), (1, 10, 16)),
    "gelu_tanh": (lambda: nn.Sequential(nn.Linear(16, 16), nn.GELU(approximate="tanh")), (1, 10, 16)),
    "conv_gelu": (lambda: nn.Sequential(nn.Conv2d(4, 8, 1), nn.GELU()), (1, 4, 6, 6)),
    "layer_norm": (lambda: nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16)), (1, 10, 16)),
    "layer_norm_2d": (lambda: nn.Sequential(nn.Conv2d(4, 8, 1), LayerNorm2d(8)), (1, 4, 6, 6)),
    "hardswish": (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.Hardswish()), (1, 4, 6, 6)),
    "silu": (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.SiLU()), (1, 4, 6, 6)),
    "sdpa": (Attention, (1, 10, 16)),
    "attention_manual": (lambda: Attention(manual=True), (1, 10, 16)),
}


def _kernels(model_bytes: bytes, tmp_path, tag: str) -> collections.Counter:
    """Node types of the model after onnxruntime's graph optimizations (basic + extended)."""
    path = tmp_path / f"{tag}.opt.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(path)
    ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("case", list(CASES))
def test_graphc_onnx_fuses_as_well_as_torch_export(case, tmp_path):
    make, shape = CASES[case]
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(shape)
    ref_path = tmp_path / "torch.onnx"
    torch.onnx.export(m, (x,), str(ref_path), dynamo=False, opset_version=17)
    ref = _kernels(ref_path.read_bytes(), tmp_path, "torch")
    g = graphc.load(m, example_inputs=x)
    graphc.run_pipeline(g, "fuse")
    model = graphc.emit_onnx(g).SerializeToString()
    ours = _kernels(model, tmp_path, "graphc")
    assert sum(ours.values()) <= sum(ref.values()), f"graphc {dict(ours)} vs torch.onnx.export {dict(ref)}"
    if case in ("gelu", "conv_gelu"):
        assert ours["Gelu"] == 1 and ours["Erf"] == 0
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, m(x).numpy(), rtol=1e-4, atol=1e-5)


def test_opset_20_writes_gelu_itself():
    m = nn.Sequential(nn.Linear(8, 8), nn.GELU()).eval()
    x = torch.randn(2, 8)
    g = graphc.load(m, example_inputs=x)
    model = graphc.emit_onnx(g, opset=20)
    assert [n.op_type for n in model.graph.node].count("Gelu") == 1
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], m(x).numpy(),
                                   rtol=1e-4, atol=1e-5)
