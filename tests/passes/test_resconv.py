"""ResConv layer pruning: resconv-wrap, resconv-train, layer-prune, and the resconv preset.

The bookkeeping tests zero a block's layer scale by hand and compare the pruned graph with a
torch module written to compute the block's shortcut alone, so "removed down to its shortcut"
is checked against an independent reference, not against graphc itself."""
import numpy as np
import pytest
import torch

import graphc
from graphc.cli.main import main
from graphc.ir.interpret import run_graph
from graphc.models import build
from graphc.passes.resconv_wrap import find_blocks
from graphc.pipeline import run_pipeline
from graphc.registry import PassContext

RTOL, ATOL = 1e-4, 1e-5


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2)
    return model.eval()


def _close(a, b):
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL * scale)


def _ops(g):
    return {n.op for n in g.nodes}


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["plain20", "resnet20"])
def test_wrap_is_exact_idempotent_and_fuses_back_to_plain_convs(name, x):
    torch.manual_seed(0)
    model = _randomise_bn(build(name, size=8))
    g = graphc.load(model, example_inputs=x[:1])
    ops = _ops(g)
    rep = run_pipeline(g, "resconv-wrap")
    st = rep.passes[0].stats
    assert (st["layers"], st["residual"]) == ((16, 0) if name == "plain20" else (7, 9))
    assert st["skipped"]["stem.0"] == "changes the channels or the size"
    assert not run_pipeline(g, "resconv-wrap").changed
    blocks, broken = find_blocks(g)
    assert len(blocks) == 16 and not broken
    with torch.no_grad():
        ref = model(x[:1])
        _close(run_graph(g, [x[:1]])[0], ref)
        run_pipeline(g, "fuse")
        _close(run_graph(g, [x[:1]])[0], ref)
    assert not any(n.meta for n in g.nodes)
    assert _ops(g) == ops - {"batch_norm"} and "mul" not in _ops(g)


class _Shortcut(torch.nn.Module):
    """What a removed layer block computes: relu(beta * x)."""

    def __init__(self, beta):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return torch.relu(self.beta * x)


def test_zeroed_layer_scale_leaves_exactly_the_shortcut(x):
    torch.manual_seed(0)
    model = _randomise_bn(build("plain20", size=8))
    g = graphc.load(model, example_inputs=x[:1])
    run_pipeline(g, "resconv-wrap")
    blocks = {b.name: b for b in find_blocks(g)[0]}
    # features.3 (a layer in a chain) and features.9: alpha = 0, beta = 0.6 / 1.3
    for name, beta in (("features.3.0", 0.6), ("features.9.0", 1.3)):
        blocks[name].alpha.param.set_data(np.zeros((1, 1, 1, 1), np.float32))
        blocks[name].beta.param.set_data(np.full((1, 1, 1, 1), beta, np.float32))
    from graphc.backends.cost import totals

    macs = totals(g)["macs"]
    rep = run_pipeline(g, "layer-prune")
    st = rep.passes[0].stats
    assert rep.exact and st["removed"] == 2 and st["exact_removals"] == 2 and not st["refused"]
    conv_macs = 16 * 8 * 8 * 16 * 9 + (32 * 4 * 4 * 32 * 9)
    assert macs - totals(g)["macs"] == conv_macs == sum(r["macs"] for r in st["layers"].values())
    expected = build("plain20", size=8)
    expected.load_state_dict(model.state_dict())
    expected.features[3] = _Shortcut(0.6)
    expected.features[9] = _Shortcut(1.3)
    expected.eval()
    run_pipeline(g, "fuse")
    assert "mul" not in _ops(g) and "add" not in _ops(g) and not any(n.meta for n in g.nodes)
    assert len(g.find("conv2d")) == 19 - 2
    with torch.no_grad():
        _close(run_graph(g, [x[:1]])[0], expected(x[:1]))


def test_zeroed_residual_scale_leaves_the_shortcut(x):
    torch.manual_seed(0)
    model = _randomise_bn(build("resnet20", size=8))
    g = graphc.load(model, example_inputs=x[:1])
    run_pipeline(g, "resconv-wrap")
    blocks = find_blocks(g)[0]
    residual = [b for b in blocks if b.kind == "residual"]
    for b in (residual[1], residual[3]):  # layers.1 (identity shortcut), layers.3 (projection)
        b.alpha.param.set_data(np.zeros((1, 1, 1, 1), np.float32))
    # layers.0.conv1 as a layer block: its input also feeds the block's shortcut, so its factor
    # folds downstream, into layers.0.conv2.
    (inner,) = [b for b in blocks if b.name == "layers.0.conv1"]
    inner.alpha.param.set_data(np.zeros((1, 1, 1, 1), np.float32))
    inner.beta.param.set_data(np.full((1, 1, 1, 1), 0.5, np.float32))
    st = run_pipeline(g, "layer-prune,fuse").passes[0].stats
    assert st["removed"] == 3 and not st["refused"]
    # The reference: the same blocks with a zero residual branch (bn2 = 0) compute relu(shortcut).
    for blk in (model.layers[1], model.layers[3]):
        blk.bn2.weight.data.zero_()
        blk.bn2.bias.data.zero_()
    model.layers[0].conv1 = torch.nn.Identity()
    model.layers[0].bn1 = _Shortcut(0.5)
    with torch.no_grad():
        _close(run_graph(g, [x[:1]])[0], model(x[:1]))
    names = {n.name for n in g.nodes}
    assert not any(n.startswith(("layers.0.conv1", "layers.1.conv", "layers.3.conv")) for n in names)
    assert any(n.startswith("layers.3.down") for n in names)
    assert not any(n.meta for n in g.nodes)


def _graph_input_block():
    from graphc.ir import Graph, TensorType

    g = Graph("t")
    x = g.add_input("x", TensorType((1, 4, 6, 6), "f32"))
    w = g.add_param(np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype("f4"), source="conv.weight")
    c = g.add_node("conv2d", [x, w], {"padding": [1, 1]}, "conv").output
    r = g.add_node("relu", [c], {}, "relu").output
    h = g.add_node("conv2d", [r, g.add_param(np.ones((4, 4, 1, 1), "f4"), source="c2.weight")], {}, "c2").output
    g.set_outputs([h])
    return g


def test_layer_prune_refuses_a_factor_it_cannot_fold():
    g = _graph_input_block()
    run_pipeline(g, "resconv-wrap")
    (b,) = find_blocks(g)[0]
    b.alpha.param.set_data(np.zeros((1, 1, 1, 1), np.float32))
    b.beta.param.set_data(np.full((1, 1, 1, 1), 0.5, np.float32))
    rep = run_pipeline(g, "layer-prune")
    st = rep.passes[0].stats
    assert not rep.changed and st["removed"] == 0
    assert st["refused"] == {"conv": "the shortcut factor cannot be folded: %x is a graph input"}
    # beta = 1: nothing to fold, the layer goes (relu(x) stays: x may be negative)
    b.beta.param.set_data(np.ones((1, 1, 1, 1), np.float32))
    xs = torch.randn(1, 4, 6, 6)
    ref = run_graph(g, [xs])[0]
    assert run_pipeline(g, "layer-prune").changed
    _close(run_graph(g, [xs])[0], ref)
    assert [n.op for n in g.nodes] == ["relu", "conv2d"]


def test_train_zeroes_scales_and_prune_of_zeros_is_exact():
    torch.manual_seed(0)
    model = build("plain20", size=8).eval()
    x = torch.randn(1, 1, 8, 8)
    g = graphc.load(model, example_inputs=x)
    # lambda this large zeroes every scale within the steps; the shortcuts gain what they lose.
    rep = run_pipeline(g, "resconv-wrap,resconv-train(lambda=60,max-steps=6,lr=0.01)", PassContext(data="digits", quiet=True))
    st = rep.passes[1].stats
    assert st["steps"] == 6 and st["zero_scales"] == st["blocks"] == 16
    assert 0 <= st["acc_before"] <= 1 and 0 <= st["acc_after"] <= 1 and "digits" in st["split"]
    betas = [float(b.beta.param.data.reshape(-1)[0]) for b in find_blocks(g)[0]]
    assert min(betas) > 0.5  # open shortcuts, not closed ones
    ref = run_graph(g, [x])[0]
    rep = run_pipeline(g, "layer-prune,fuse")
    assert rep.passes[0].stats["removed"] == 16
    _close(run_graph(g, [x])[0], ref)
    assert len(g.find("conv2d")) == 3 and "mul" not in _ops(g)


def test_resconv_preset_from_onnx(tmp_path):
    torch.manual_seed(0)
    model = build("resnet20", size=8).eval()
    path = tmp_path / "r20.onnx"
    torch.onnx.export(model, torch.randn(1, 1, 8, 8), str(path), dynamo=False)
    out = tmp_path / "slim.onnx"
    assert main(["optimize", str(path), "--passes",
                 "resconv-wrap,resconv-train(lambda=5,max-steps=4),layer-prune(target-macs=0.6),fuse",
                 "--data", "digits", "-q", "-o", str(out)]) == 0
    g = graphc.load(str(out))
    assert "mul" not in _ops(g)
    from graphc.backends.cost import totals

    assert totals(g)["macs"] <= 0.6 * totals(graphc.load(str(path)))["macs"]
    assert "resconv" in graphc.registry.all_presets()


@pytest.mark.parametrize("spec, words", [
    ("layer-prune(threshold=-1)", "threshold must be >= 0"),
    ("layer-prune(target-macs=0)", "target-macs must be > 0"),
    ("resconv-train(lambda=-1)", "lambda must be >= 0"),
    ("layer-prune(recalibrate=-1)", "recalibrate must be >= 0"),
])
def test_bad_options_are_one_line(spec, words, tmp_path, capsys):
    assert main(["optimize", "torchvision:resnet18", "--passes", spec, "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_resconv_train_without_data_says_so(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    torch.onnx.export(build("plain20", size=8).eval(), torch.randn(1, 1, 8, 8), str(src), dynamo=False)
    assert main(["optimize", str(src), "--passes", "resconv", "-o", str(tmp_path / "o.onnx")]) == 2
    assert "needs data" in capsys.readouterr().err


def test_forced_removal_moves_the_scale_onto_the_shortcut(x):
    # A target forces out a block with alpha != 0: it becomes relu((beta + alpha) * x), the
    # identity-like shortcut the prox step moves towards, not the nearly closed relu(beta * x).
    torch.manual_seed(0)
    model = _randomise_bn(build("plain20", size=8))
    g = graphc.load(model, example_inputs=x[:1])
    run_pipeline(g, "resconv-wrap")
    blocks = {b.name: b for b in find_blocks(g)[0]}
    for b in blocks.values():
        b.alpha.param.set_data(np.full((1, 1, 1, 1), 1.0, np.float32))
    blocks["features.3.0"].alpha.param.set_data(np.full((1, 1, 1, 1), 0.75, np.float32))
    blocks["features.3.0"].beta.param.set_data(np.full((1, 1, 1, 1), 0.05, np.float32))
    rep = run_pipeline(g, "layer-prune(target-layers=1)")
    st = rep.passes[0].stats
    assert not rep.exact and st["removed"] == 1 and st["exact_removals"] == 0
    assert st["layers"]["features.3.0"]["alpha"] == 0.75 and st["layers"]["features.3.0"]["beta"] == pytest.approx(0.05)
    expected = build("plain20", size=8)
    expected.load_state_dict(model.state_dict())
    expected.features[3] = _Shortcut(0.8)
    expected.eval()
    run_pipeline(g, "fuse")
    with torch.no_grad():
        _close(run_graph(g, [x[:1]])[0], expected(x[:1]))


def test_layer_prune_recalibrates_the_bn_statistics_alone():
    # recalibrate=N without a fine-tune: only BN statistics change, and they become the data's
    torch.manual_seed(0)
    model = _randomise_bn(build("resnet20", size=8))
    g = graphc.load(model, example_inputs=torch.randn(1, 1, 8, 8))
    run_pipeline(g, "resconv-wrap")
    weights = {k: p.data.copy() for k, p in g.params.items()}
    rep = run_pipeline(g, "layer-prune(target-layers=2,recalibrate=3)", PassContext(data="digits", quiet=True))
    st = rep.passes[0].stats
    assert st["removed"] == 2 and st["recalibrated_bn"] > 10 and "finetune_steps" not in st
    assert 0 <= st["acc_before_recalibrate"] <= 1 and 0 <= st["acc_recalibrated"] <= 1
    changed = [k for k, d in weights.items() if k in g.params and not np.array_equal(g.params[k].data, d)]
    bn_stats = {n.input(i).name for n in g.find("batch_norm") for i in (3, 4)}
    assert changed and set(changed) <= bn_stats


def test_resconv_train_under_torchrun_keeps_replicas_equal(tmp_path, blobs, torchrun):
    from pathlib import Path

    torchrun(Path(__file__).with_name("resconv_ddp_worker.py"), blobs, tmp_path / "rank")
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r0["steps"]) > 0 and int(r0["zero"]) > 0
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k])
