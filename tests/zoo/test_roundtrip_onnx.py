"""ONNX round trips over the torchvision zoo: the model's ONNX export (torch.onnx, dynamo=False,
opset 17) -> graphc IR -> ONNX (run in onnxruntime) and -> torch; both outputs allclose
(rtol 1e-4, atol 1e-5) to the model's own output. The dynamo exporter's graphs (onnxscript),
which look quite different, are checked the same way: on the models GRAPHC_ZOO names, or on
DYNAMO by default."""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import SLOW, case, model_names

RTOL, ATOL = 1e-4, 1e-5
DYNAMO = ["resnet18", "mobilenet_v3_small", "swin_t"]
DYNAMO_SLOW = {"swin_t"}


def run_ort(model, x: torch.Tensor) -> torch.Tensor:
    """Run an emitted model in onnxruntime; over 2 GB it goes through a file with external data."""
    import onnxruntime as ort

    from graphc.backends.onnx import _PROTO_LIMIT, model_nbytes, save_onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if model_nbytes(model) < _PROTO_LIMIT:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        return torch.from_numpy(np.asarray(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]))
    with tempfile.TemporaryDirectory(prefix="graphc-ort-") as d:
        path = os.path.join(d, "model.onnx")
        save_onnx(model, path)
        sess = ort.InferenceSession(path, opts, providers=providers)
        return torch.from_numpy(np.asarray(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]))


def _close(y, ref):
    """rtol 1e-4 / atol 1e-5, the absolute part scaled by the output's magnitude when that is
    above 1: randomly initialised inception_v3 gives logits near 1e8, where float32 rounding
    alone (ORT on torch's own export) exceeds a fixed 1e-5 on the small logits."""
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(y, ref, rtol=RTOL, atol=ATOL * scale)


def _roundtrip(graph, zoo_case):
    from graphc.backends.onnx import emit_onnx
    from graphc.backends.torch import emit_torch

    graph.verify()
    assert graph.inputs[0].shape == tuple(zoo_case.x.shape)
    y_onnx = run_ort(emit_onnx(graph), zoo_case.x)
    _close(y_onnx, zoo_case.y)
    if not any(n.op == "opaque" for n in graph.nodes):
        with torch.no_grad():
            y_torch = emit_torch(graph)(zoo_case.x)
        y_torch = y_torch[0] if isinstance(y_torch, (tuple, list)) else y_torch
        _close(y_torch, zoo_case.y)


def test_onnx_export_roundtrip(zoo):
    from graphc.frontends.onnx import load_onnx

    graph = load_onnx(zoo.onnx_path())
    assert not graph.find("opaque"), [n.attrs["op_type"] for n in graph.find("opaque")]
    _roundtrip(graph, zoo)


def pytest_generate_tests(metafunc):
    """`dynamo_zoo`: the zoo case of each model the dynamo check runs on -- the models
    GRAPHC_ZOO names, or DYNAMO when it is unset (the dynamo exporter takes 15-60 s a model on
    a 2-core CPU, too long for the whole CI subset)."""
    if "dynamo_zoo" in metafunc.fixturenames:
        names = model_names() if os.environ.get("GRAPHC_ZOO", "").strip() else DYNAMO
        metafunc.parametrize("dynamo_zoo", [
            pytest.param(n, id=n, marks=[pytest.mark.zoo, pytest.mark.xdist_group(n)]
                         + ([pytest.mark.slow] if n in SLOW or n in DYNAMO_SLOW else [])) for n in names],
            indirect=True)


@pytest.fixture
def dynamo_zoo(request):
    return case(request.param)


def _dynamo_export(zc, tmp_path):
    """The model exported by torch.onnx with dynamo=True (opset 18, the exporter's default
    optimisation), cached beside the TorchScript exports when GRAPHC_ZOO_CACHE is set."""
    cache = os.environ.get("GRAPHC_ZOO_CACHE")
    path = (Path(cache) if cache else tmp_path) / f"{zc.name}.dynamo.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            program = torch.onnx.export(zc.model, (zc.x,), dynamo=True, opset_version=18, verbose=False)
        tmp = path.with_suffix(".tmp.onnx")
        program.save(str(tmp))
        tmp.replace(path)
    return path


def test_dynamo_export_roundtrip(dynamo_zoo, tmp_path):
    from graphc.frontends.onnx import load_onnx

    graph = load_onnx(_dynamo_export(dynamo_zoo, tmp_path))
    assert not graph.find("opaque"), [n.attrs["op_type"] for n in graph.find("opaque")]
    _roundtrip(graph, dynamo_zoo)
