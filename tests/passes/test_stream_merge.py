"""stream-merge: each merge kind gives a runnable graph of the stated shape, the exact cases stay
exact, the metadata is printed, parsed back and verified, the targets stop early, and the pass
works on an ONNX import."""
import numpy as np
import pytest
import torch

import graphc
from graphc.errors import GraphcError, VerifyError
from graphc.ir.printer import parse_graph, print_graph
from graphc.models import build
from graphc.pipeline import run_pipeline


def stream(graph, **opts):
    from graphc.passes.stream_merge import StreamMerge
    from graphc.registry import PassContext

    res = StreamMerge(**opts).run(graph, PassContext())
    if res.changed:
        graph.verify()
    return res


def emitted(graph, x):
    return graphc.emit_torch(graph)(x)


def conv_pool(h, pool, act=False):
    b = h.Builder((2, 3, 12, 12))
    y = b.conv(b.x, 6, k=3, padding=0, name="conv")
    if act:
        y = b.op("relu", y, name="relu")
    y = b.op(pool, y, kernel_size=[2, 2], stride=[2, 2], name="pool")
    return b.out(y)


def test_avg_pool_merge_grows_the_kernel_and_is_exact(h):
    g = conv_pool(h, "avg_pool2d")
    before = g.clone()
    res = stream(g, kinds=("pool",))
    assert res.stats["pool"] == 1
    (conv,) = g.nodes
    assert conv.op == "conv2d" and conv.input(1).shape == (6, 3, 4, 4) and conv.attrs["stride"] == [2, 2]
    assert conv.meta == {"stream": ["conv", "pool"], "stream_init": "exact"}
    assert g.outputs[0].shape == (2, 6, 5, 5)
    h.check_same(before, g)
    assert not stream(g, kinds=("pool",)).changed


@pytest.mark.parametrize("kernel, k", [("grow", 4), ("keep", 3)])
def test_max_pool_merge_is_one_strided_conv_with_the_activation_after(h, kernel, k):
    g = conv_pool(h, "max_pool2d", act=True)
    before = g.clone()
    stream(g, kinds=("pool",), pool_kernel=kernel)
    assert [n.op for n in g.nodes] == ["conv2d", "relu"]
    conv = g.nodes[0]
    assert conv.input(1).shape == (6, 3, k, k) and conv.attrs["stride"] == [2, 2]
    assert conv.meta["stream"] == ["conv", "relu", "pool"] and conv.meta["stream_init"] == "approx"
    x = torch.randn(2, 3, 12, 12)
    y = emitted(g, x)
    assert y.shape == h.execute(before, x)[0].shape == (2, 6, 5, 5)
    if kernel == "grow":  # initialised as the window's mean: below the max, never above it
        assert bool((y <= h.execute(before, x)[0] + 1e-5).all())


def test_chain_merges_are_the_exact_passes_recorded(h):
    b = h.Builder((1, 4, 10, 10))
    y = b.conv(b.x, 8, k=3, padding=1, name="c1")
    y = b.bn(y, name="bn1")
    y = b.conv(y, 6, k=1, padding=0, bias=False, name="c2")
    g = b.out(y)
    before = g.clone()
    res = stream(g, kinds=("chain",))
    assert res.stats["chain"] == 2 and [n.op for n in g.nodes] == ["conv2d"]
    assert g.nodes[0].meta == {"stream": ["c1", "bn1", "c2"], "stream_init": "exact"}
    h.check_same(before, g)
    assert not stream(g, kinds=("chain",)).changed


def test_linear_relu_linear_becomes_one_linear_exact_where_relu_is_identity(h):
    b = h.Builder((4, 16))
    fc1 = b.linear(b.x, 32, name="fc1")
    y = b.linear(b.op("relu", fc1, name="relu"), 3, name="fc2")
    g = b.out(y)
    g.params["fc1.bias"].set_data(np.full(32, 100.0, np.float32))  # pre-activations all positive
    before = g.clone()
    res = stream(g, kinds=("relu",))
    assert res.stats["relu"] == 1
    (fc,) = g.nodes
    assert fc.op == "linear" and fc.input(1).shape == (3, 16)
    assert fc.meta == {"stream": ["fc1", "relu", "fc2"], "stream_init": "approx"}
    x = torch.randn(4, 16) * 0.1
    torch.testing.assert_close(h.execute(g, x)[0], h.execute(before, x)[0], rtol=1e-4, atol=1e-3)


def test_relu_merge_is_refused_when_the_merged_conv_costs_more(h):
    b = h.Builder((1, 16, 8, 8))
    y = b.conv(b.x, 4, k=1, padding=0, name="reduce")
    y = b.conv(b.op("relu", y), 16, k=1, padding=0, name="expand")
    g = b.out(y)
    res = stream(g, kinds=("relu",))
    assert not res.changed and "expand" in res.stats["refused"]
    assert [n.op for n in g.nodes] == ["conv2d", "relu", "conv2d"]


def inception_block(h, pool_branch: bool):
    b = h.Builder((2, 8, 9, 9))
    outs = [b.op("relu", b.conv(b.x, 4, k=1, padding=0, name="b1"), name="r1"),
            b.op("relu", b.conv(b.x, 5, k=3, padding=1, name="b3"), name="r3"),
            b.op("relu", b.conv(b.x, 3, k=5, padding=2, name="b5"), name="r5")]
    if pool_branch:
        # ceil_mode adds no window at stride 1 (as in torchvision's GoogLeNet)
        p = b.op("max_pool2d", b.x, kernel_size=[3, 3], stride=[1, 1], padding=[1, 1], ceil_mode=True, name="bp")
        outs.append(b.op("relu", b.conv(p, 2, k=1, padding=0, name="bpc"), name="rp"))
    return b.out(b.op("concat", *outs, dim=1, name="cat"))


def test_branch_merge_of_single_conv_branches_is_one_exact_wider_conv(h):
    g = inception_block(h, pool_branch=False)
    before = g.clone()
    res = stream(g, kinds=("branch",), max_growth=10)
    assert res.stats["branch"] == 1
    assert [n.op for n in g.nodes] == ["conv2d", "relu"]
    conv = g.nodes[0]
    assert conv.input(1).shape == (12, 8, 5, 5) and conv.attrs["padding"] == [2, 2]
    assert conv.meta["stream_init"] == "exact" and conv.meta["stream"][-1] == "cat"
    assert g.outputs[0].name == before.outputs[0].name
    h.check_same(before, g)


def test_branch_merge_with_a_pool_branch_is_approximate_and_runnable(h):
    g = inception_block(h, pool_branch=True)
    res = stream(g, kinds=("branch",), max_growth=10)
    assert res.stats["branch"] == 1 and g.nodes[0].meta["stream_init"] == "approx"
    assert g.nodes[0].input(1).shape == (14, 8, 5, 5)
    assert emitted(g, torch.randn(2, 8, 9, 9)).shape == (2, 14, 9, 9)


def test_branch_merge_respects_max_growth(h):
    g = inception_block(h, pool_branch=False)
    res = stream(g, kinds=("branch",))
    assert not res.changed and "MACs" in res.stats["refused"]["cat"]


def test_metadata_prints_parses_back_and_is_verified(h):
    g = conv_pool(h, "max_pool2d")
    stream(g, kinds=("pool",))
    text = print_graph(g)
    assert '[stream=["conv","pool"], stream_init="approx"]' in text
    back = parse_graph(text)
    back.verify()
    assert back.nodes[0].meta == g.nodes[0].meta
    for bad in (["conv"], "conv", ["conv", "conv"], ["conv", ""]):
        broken = back.clone()
        broken.nodes[0].meta["stream"] = bad
        with pytest.raises(VerifyError, match="stream"):
            broken.verify()


def lenet(batch=2):
    torch.manual_seed(0)
    m = build("lenet5", 28).eval()
    return m, graphc.load(m, example_inputs=torch.randn(batch, 1, 28, 28))


def test_lenet_pool_and_chain_merges_leave_one_conv_and_the_classifier():
    m, g = lenet()
    res = stream(g, kinds=("pool", "chain"))
    assert res.stats["pool"] == 2 and res.stats["chain"] == 1
    convs = g.find("conv2d")
    assert len(convs) == 1 and convs[0].meta["stream"] == ["conv1", "pool1", "conv2", "pool2"]
    assert convs[0].input(1).shape == (50, 1, 16, 16) and convs[0].attrs["stride"] == [4, 4]
    assert emitted(g, torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_target_macs_applies_the_largest_saving_first_and_stops():
    _, g = lenet()
    res = stream(g, target_macs=0.6)
    assert res.stats["target_reached"]
    assert res.stats["macs_after"] <= 0.6 * res.stats["macs_before"]
    # conv2 + pool2 saves the most; nothing else was needed
    assert res.stats["pool"] == 1 and res.stats["relu"] == 0 and list(res.stats["layers"]) == ["conv2"]


def test_works_on_an_onnx_import(tmp_path):
    m, g = lenet(batch=1)
    path = tmp_path / "lenet5.onnx"
    graphc.save(g, str(path))
    g2 = graphc.load(str(path))
    res = stream(g2, kinds=("pool", "chain", "relu"))
    assert res.stats["pool"] == 2 and res.stats["relu"] == 1
    assert sum(1 for n in g2.nodes if n.op in ("conv2d", "linear")) == 2
    out = tmp_path / "merged.onnx"
    graphc.save(g2, str(out))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: np.random.rand(1, 1, 28, 28).astype(np.float32)})[0]
    assert y.shape == (1, 10)


@pytest.mark.parametrize("spec, msg", [("stream-merge(kinds=[pools])", "pools"),
                                       ("stream-merge(pool-kernel=big)", "big"),
                                       ("stream-merge(max-growth=0.5)", "max-growth"),
                                       ("stream-merge(target-macs=-1)", "target-macs")])
def test_bad_options_are_one_clear_error(spec, msg):
    _, g = lenet()
    with pytest.raises(GraphcError, match=msg):
        run_pipeline(g, spec)
