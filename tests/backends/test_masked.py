"""Masked (weight-pruned) params in both back-ends: the torch module applies the masks and
keeps the zeros through training; ONNX stores them as sparse_initializer, onnxruntime runs
the file with the dense masked model's outputs, and loading it back is exact."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import graphc
from graphc.backends.onnx import emit_onnx, save_onnx
from graphc.backends.onnx_sparse import compression, sparse_summary
from graphc.backends.torch import emit_torch, run_graph
from graphc.errors import VerifyError
from graphc.models import build


def masked_graph(name, keep=0.1, seed=0):
    torch.manual_seed(seed)
    g = graphc.load(build(name, size=8).eval(), example_inputs=torch.randn(2, 1, 8, 8))
    rng = np.random.default_rng(seed)
    for p in g.params.values():
        if p.kind == "weight":
            p.set_mask(rng.random(p.data.shape) < keep)
    return g


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("name", ["lenet5", "lenet300"])
def test_torch_backend_applies_masks_and_keeps_zeros_when_trained(name, tmp_path):
    g = masked_graph(name)
    g.verify()
    x = torch.randn(5, 1, 8, 8)
    mod = emit_torch(g)
    sd = mod.state_dict()
    assert any(k.endswith("weight_mask") for k in sd) and any(k.endswith("weight_orig") for k in sd)
    close(mod(x), run_graph(g, [x])[0])
    path = graphc.save(g, tmp_path / "m.pt")
    loaded = torch.load(path, weights_only=False)
    close(loaded(x), run_graph(g, [x])[0])
    opt = torch.optim.SGD(loaded.parameters(), lr=0.5)
    loaded.train()
    for _ in range(2):
        opt.zero_grad()
        loaded(x).square().sum().backward()
        opt.step()
    for key, m in loaded.state_dict().items():
        if key.endswith("_mask"):
            layer = loaded.get_submodule(key.rsplit(".", 1)[0])
            w = getattr(layer, key.rsplit(".", 1)[1][: -len("_mask")])
            assert (w[m == 0] == 0).all()


@pytest.mark.parametrize("name", ["lenet5", "lenet300"])
def test_sparse_onnx_round_trip_is_exact(name, tmp_path):
    g = masked_graph(name)
    path = save_onnx(g, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert len(model.graph.sparse_initializer) > 0 and len(model.graph.initializer) == 0
    s = sparse_summary(model)
    assert s["sparse_kept"] == sum(int(p.mask.sum()) for p in g.params.values())
    dense = emit_onnx(g, sparse="never")
    assert path.stat().st_size < dense.ByteSize() / 2
    x = torch.randn(2, 1, 8, 8)  # the batch the graph was traced at
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    close(torch.from_numpy(out), emit_torch(g)(x).detach())
    back = graphc.load(str(path))
    assert sorted(back.params) == sorted(g.params)
    for k, p in g.params.items():
        np.testing.assert_array_equal(back.params[k].data, p.data)
        np.testing.assert_array_equal(back.params[k].mask, p.mask)
    assert compression(back)["ratio"] == pytest.approx(compression(g)["ratio"])


def test_dense_params_stay_dense_and_auto_keeps_dense_where_smaller():
    g = masked_graph("lenet300", keep=0.9)
    assert len(emit_onnx(g).graph.sparse_initializer) == 0
    assert len(emit_onnx(g, sparse="always").graph.sparse_initializer) == len(g.params)
    plain = graphc.load(build("lenet300", size=8).eval(), example_inputs=torch.randn(1, 1, 8, 8))
    assert len(emit_onnx(plain, sparse="always").graph.sparse_initializer) == 0


def test_verifier_rejects_a_nonzero_masked_weight():
    g = masked_graph("lenet300")
    p = g.params["fc1.weight"]
    p.data[~p.mask] = 1.0
    with pytest.raises(VerifyError, match="masked weights are not zero"):
        g.verify()


def test_ir_json_keeps_masks(tmp_path):
    from graphc.ir.serialize import load_json, save_json

    g = masked_graph("lenet5")
    save_json(g, tmp_path / "g.json")
    back = load_json(tmp_path / "g.json")
    back.verify()
    for k, p in g.params.items():
        np.testing.assert_array_equal(back.params[k].mask, p.mask)
        np.testing.assert_array_equal(back.params[k].data, p.data)
