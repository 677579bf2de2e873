"""unify: ADMM drives ||W - Z|| down on a small model, the result is unified per the stats,
and the ONNX encoding decodes to the unified weights bit for bit in a smaller file."""
import numpy as np
import pytest
import torch
from torch import nn

import graphc
from graphc.backends.onnx_unify import graph_bits, layer_bits, structure
from graphc.cli.main import main
from graphc.errors import DataError
from graphc.passes.unify import Unify
from graphc.passes.unify_blocks import parse_block, project, to_blocks
from graphc.registry import PassContext


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        return self.fc(torch.flatten(x, 1))


def _graph(seed=0):
    torch.manual_seed(seed)
    return graphc.load(Tiny().eval(), example_inputs=torch.randn(1, 1, 8, 8))


def test_admm_converges_and_structure_holds():
    g = _graph()
    res = Unify(block="cin4", prune_ratio=0.25, epochs=3, finetune=0.5, rho=0.05, rho_max=5.0, lr=0.05).run(
        g, PassContext(data="digits", quiet=True))
    s = res.stats
    gaps = s["gap_history"]  # ||W - Z|| / ||W|| at the start and after each Z-step
    assert len(gaps) >= 8, gaps
    assert gaps[-1] < 0.4 * gaps[0] and np.mean(gaps[-3:]) < 0.5 * np.mean(gaps[:3]), gaps
    assert s["acc_after"] > 0.5 and "acc_before" in s and "split" in s
    assert s["skipped"] == {"conv1": "1 input channels are not a multiple of 4"}
    for name in ("conv2", "fc"):
        node = g.node(name)
        assert node.meta["unify"] == "cin4"
        st = structure(node.input(1).param.data, parse_block("cin4"))
        assert not st["free"].any()  # every block unified or pruned
        assert st["pruned"].sum() == round(0.25 * len(st["pruned"]))
        assert "pruned 25.0%" in s["layers"][name]


@pytest.mark.parametrize("block,ratio,prune", [("cin4", 1.0, 0.3), ("cin2", 0.8, 0.2), ("kernel-shared", 1.0, 0.5),
                                               ("cin4-shared", 0.6, 0.0)])
def test_encoding_round_trip_bit_for_bit(block, ratio, prune):
    import onnx
    import onnxruntime as ort

    g = _graph(1)
    spec = parse_block(block)
    unified = {}
    for name in ("conv2", "conv1", "fc"):
        node = g.node(name)
        p = node.input(1).param
        lspec = spec if node.op != "linear" else parse_block("cin4" + ("-shared" if spec.shared else ""))
        if lspec.why_not(p.data.shape):
            continue
        n = to_blocks(torch.from_numpy(p.data), lspec).shape[0]
        z = project(torch.from_numpy(p.data), lspec, round(ratio * n) - round(prune * n), round(prune * n)).z
        p.set_data(z.numpy())
        node.meta["unify"] = str(lspec)
        unified[p.source] = p.data.copy()
    model = graphc.emit_onnx(g)  # checker-valid (full check) inside
    names = {i.name for i in model.graph.initializer}
    assert not names & set(unified)  # the dense weights are gone, decoders produce them
    stored = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer
              if i.name.rsplit(".", 1)[-1] in ("unified", "free", "signs", "values", "free_values")]
    bits = graph_bits(g)
    # what is stored is what graph_bits counts, up to byte rounding and one leading 0 per table
    slack = sum(8 + 32 * a.shape[-1] for a in stored)
    assert bits["bits"] - 32 * (bits["weights"] - sum(a.size for a in unified.values())) \
        <= 8 * sum(a.nbytes for a in stored) <= bits["bits"] + slack
    assert sum(a.nbytes for a in stored) < sum(a.nbytes for a in unified.values())
    model.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in unified])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(list(unified), {sess.get_inputs()[0].name: np.zeros((1, 1, 8, 8), np.float32)})
    for (name, ref), got in zip(unified.items(), outs):
        assert got.dtype == ref.dtype and np.array_equal(got.view(np.uint32), ref.view(np.uint32)), name
    assert bits["bits_per_weight"] < 32


def test_bits_count_what_is_stored():
    w = np.zeros((2, 8, 1, 1), np.float32)
    w[0, :4] = 0.5 * np.array([1, -1, 1, 1], np.float32)[:, None, None]  # unified
    w[1, 4:] = np.arange(1, 5, dtype=np.float32)[:, None, None]  # free
    b = layer_bits(w, parse_block("cin4"))
    # 4 blocks: unified bitmap 4 + free bitmap 4 + one value 32 + one free block 4x32 + 4 sign bits
    assert (b["unified"], b["free"], b["pruned"], b["bits"]) == (1, 1, 2, 4 + 4 + 32 + 128 + 4)


NET = """import torch
from torch import nn
def make():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)), torch.randn(1, 1, 8, 8)
"""


def test_needs_data_and_bad_options(capsys, tmp_path):
    with pytest.raises(DataError, match="unify.*--data"):
        Unify().run(_graph(), PassContext())
    (tmp_path / "net.py").write_text(NET)
    model, out = f"{tmp_path / 'net.py'}:make", str(tmp_path / "o.onnx")
    for bad, says in [("unify(block=row4)", "block must be cin<k> or kernel"),
                      ("unify(prune-ratio=0.6,ratio=0.5)", "prune-ratio <= ratio"),
                      ("unify(target-bits=-1)", "target-bits must be > 0"),
                      ("unify(method=magic)", "admm, oneshot"), ("unify", "needs data")]:
        rc = main(["optimize", model, "--passes", bad, "-o", out])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0], (bad, err)


def test_oneshot_and_target_bits():
    g = _graph(2)
    res = Unify(block="cin4", target_bits=12.0, method="oneshot", epochs=0.5, finetune=0.5).run(
        g, PassContext(data="digits", quiet=True))
    assert res.stats["acc_admm"] is None and res.stats["gap_history"] == []
    assert graph_bits(g)["model_bits_per_weight"] <= 12.0


def test_from_onnx_torch_and_onnx_backends_agree(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "tiny.onnx"
    graphc.save(_graph(3), str(path))
    g = graphc.load(str(path))
    res = Unify(block="cin4-shared", prune_ratio=0.5, method="oneshot", epochs=0, finetune=0.3).run(
        g, PassContext(data="digits", quiet=True))
    assert res.changed and res.stats["unified_blocks"] == res.stats["pruned_blocks"]
    x = torch.rand(1, 1, 8, 8)
    ref = graphc.emit_torch(g)(x).detach().numpy()
    sess = ort.InferenceSession(graphc.emit_onnx(g).SerializeToString())
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
