"""ONNX front-end across opsets: one small CNN (conv, batch norm, relu, a concat branch, a
residual add, max/avg pools, flatten, gemm, softmax), exported by torch at opset 9 (which writes the pool's padding as a Pad node) and brought
by ``onnx.version_converter`` to every opset from 7 to the newest this onnx knows, imports and
comes back out of both back-ends with the model's own outputs (rtol 1e-4, atol 1e-5)."""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

RTOL, ATOL = 1e-4, 1e-5
OPSETS = list(range(7, onnx.defs.onnx_opset_version() + 1))
# Opsets the converter reaches for this model with every onnx release graphc supports; newer
# ones are checked where the installed onnx has adapters for them.
MUST_CONVERT = range(7, 22)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(x + torch.cat([self.a(x), self.b(x)], 1))
        return torch.softmax(self.fc(torch.flatten(self.avg(x), 1)), -1)


@pytest.fixture(scope="module")
def source():
    """(model, input, reference output, its opset-9 ONNX export with BN kept as a node)."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        y = model(x)
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, dynamo=False, opset_version=9, input_names=["x"], output_names=["y"],
                      do_constant_folding=False)
    return model, x, y, onnx.load_from_string(f.getvalue())


def _convert(proto, opset):
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, opset)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as e:
        if opset in MUST_CONVERT:
            raise
        pytest.skip(f"onnx.version_converter cannot bring this model to opset {opset}: {str(e)[:120]}")
    return converted


def _ort(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("opset", OPSETS)
def test_small_cnn_at_every_opset(source, opset):
    from graphc.backends.onnx import emit_onnx
    from graphc.backends.torch import emit_torch
    from graphc.frontends.onnx import load_onnx

    model, x, y, proto = source
    converted = _convert(proto, opset)
    assert converted.opset_import[0].version == opset
    graph = load_onnx(converted)
    graph.verify()
    assert [n.op for n in graph.nodes] == ["conv2d", "batch_norm", "relu", "conv2d", "conv2d", "concat", "add",
                                           "max_pool2d", "pad", "avg_pool2d", "flatten", "linear", "softmax"]
    assert graph.params["conv1.weight"].kind == "weight" and graph.params["bn1.running_var"].kind == "buffer"
    np.testing.assert_allclose(_ort(emit_onnx(graph), x), y.numpy(), rtol=RTOL, atol=ATOL)
    with torch.no_grad():
        out = emit_torch(graph)(x)
    np.testing.assert_allclose(out.numpy(), y.numpy(), rtol=RTOL, atol=ATOL)
