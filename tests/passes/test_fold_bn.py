import numpy as np
import pytest


def _bn_chain(h, op="conv", bias=True, seed=0):
    b = h.Builder(seed=seed)
    if op == "conv":
        c = b.conv(b.x, 6, bias=bias)
    else:
        f = b.op("flatten", b.x, start_dim=1)
        c = b.linear(f, 5, bias=bias)
    return b, c


@pytest.mark.parametrize("op", ["conv", "linear"])
@pytest.mark.parametrize("bias", [True, False])
def test_bn_after_folds_exactly_and_once(h, op, bias):
    b, c = _bn_chain(h, op, bias)
    g = b.out(b.op("relu", b.bn(c)))
    ref = g.clone()
    res = h.run_pass(g, "fold-bn")
    assert res.changed and res.stats["bn_after"] == 1
    assert not g.find("batch_norm") and len(g.nodes) == len(ref.nodes) - 1
    assert not any("running" in p.source for p in g.params.values())
    h.check_same(ref, g)
    assert not h.run_pass(g, "fold-bn").changed


def test_bn_as_graph_output_keeps_output_name(h):
    b, c = _bn_chain(h)
    g = b.out(b.bn(c, name="head"))
    ref = g.clone()
    assert h.run_pass(g, "fold-bn").changed
    assert g.outputs[0].name == "head"
    h.check_same(ref, g)


def test_bn_after_conv_with_two_readers_is_refused(h):
    b, c = _bn_chain(h)
    g = b.out(b.op("add", b.bn(c), c))
    res = h.run_pass(g, "fold-bn")
    assert not res.changed
    assert "other readers" in res.stats["refused"]["bn"]


def test_bn_after_shared_weight_gets_its_own_copy(h):
    b = h.Builder()
    c1 = b.conv(b.x, 4, name="c1")
    c2 = b.g.add_node("conv2d", [b.x, b.g.node("c1").input(1)], dict(b.g.node("c1").attrs), "c2").output
    g = b.out(b.op("add", b.bn(c1), c2))
    ref = g.clone()
    assert h.run_pass(g, "fold-bn").changed
    assert g.node("c1").input(1) is not g.node("c2").input(1)
    h.check_same(ref, g)


def test_bn_before_unpadded_conv_folds(h):
    b = h.Builder()
    n = b.bn(b.op("relu", b.x))
    g = b.out(b.conv(n, 6, k=3, padding=0, groups=2))
    ref = g.clone()
    res = h.run_pass(g, "fold-bn")
    assert res.changed and res.stats["bn_before"] == 1 and not g.find("batch_norm")
    h.check_same(ref, g)


def test_bn_before_linear_folds(h):
    b = h.Builder(shape=(2, 8))
    g = b.out(b.linear(b.bn(b.x), 3))
    ref = g.clone()
    assert h.run_pass(g, "fold-bn").stats["bn_before"] == 1
    h.check_same(ref, g)


def test_bn_before_padded_conv_is_refused_unless_shift_is_zero(h):
    b = h.Builder()
    n = b.bn(b.op("relu", b.x))
    g = b.out(b.conv(n, 6, k=3, padding=1))
    res = h.run_pass(g, "fold-bn")
    assert not res.changed
    assert "does not map zero to zero" in res.stats["refused"]["bn"]
    # A BN whose shift is zero keeps padded zeros at zero: the fold is exact.
    bn = g.node("bn")
    w, beta, mean, var = (p.data for p in bn.params[1:])
    beta[...] = 0
    mean[...] = 0
    ref = g.clone()
    assert h.run_pass(g, "fold-bn").changed
    h.check_same(ref, g)


@pytest.mark.parametrize("op,shape", [("mul", (1, 6, 1, 1)), ("add", (6, 1, 1)), ("div", (1, 6, 1, 1)),
                                      ("sub", ()), ("mul", (1,))])
def test_caffe2_scale_layers_fold(h, op, shape):
    b = h.Builder()
    c = b.conv(b.x, 6)
    k = b.const(np.random.default_rng(3).random(shape) + 0.5)
    g = b.out(b.op("relu", b.op(op, c, k)))
    ref = g.clone()
    res = h.run_pass(g, "fold-bn")
    assert res.changed and res.stats["affine"] == 1 and not g.find(op)
    h.check_same(ref, g)
    assert not h.run_pass(g, "fold-bn").changed


def test_scale_and_shift_chain_after_linear(h):
    b = h.Builder(shape=(3, 8))
    lin = b.linear(b.x, 5)
    m = b.op("mul", b.const(np.linspace(0.5, 2, 5)), lin)
    g = b.out(b.op("add", m, b.const(np.arange(5.0))))
    ref = g.clone()
    assert h.run_pass(g, "fold-bn").stats["affine"] == 2
    assert [n.op for n in g.nodes] == ["linear"]
    h.check_same(ref, g)


def test_spatial_constant_is_refused(h):
    b = h.Builder()
    c = b.conv(b.x, 6)
    g = b.out(b.op("mul", c, b.const(np.ones((1, 1, 8, 8)) * 2)))
    res = h.run_pass(g, "fold-bn")
    assert not res.changed and res.stats["refused"]["mul"] == "the constant is not per-channel"


def test_bn_after_relu_is_left_alone(h):
    b = h.Builder()
    g = b.out(b.op("relu", b.bn(b.op("relu", b.x))))
    res = h.run_pass(g, "fold-bn")
    assert not res.changed and res.stats["refused"]["bn"] == "not after a conv or linear"


def test_layer_scale_after_permuted_linear_folds(h):
    # ConvNeXt: linear over channels-last, permute back to NCHW, then a [C,1,1] layer scale.
    b = h.Builder(shape=(1, 4, 3, 3))
    nhwc = b.op("permute", b.x, dims=[0, 2, 3, 1])
    back = b.op("permute", b.linear(nhwc, 6), dims=[0, 3, 1, 2], name="back")
    g = b.out(b.op("relu", b.op("mul", back, b.const(np.linspace(0.1, 1.0, 6).reshape(6, 1, 1)))))
    ref = g.clone()
    res = h.run_pass(g, "fold-bn")
    assert res.stats["affine"] == 1 and not g.find("mul")
    h.check_same(ref, g)
    assert not h.run_pass(g, "fold-bn").changed


def test_spatial_scale_after_permute_is_refused(h):
    b = h.Builder(shape=(1, 4, 3, 3))
    nhwc = b.op("permute", b.x, dims=[0, 2, 3, 1])
    back = b.op("permute", b.linear(nhwc, 6), dims=[0, 3, 1, 2], name="back")
    g = b.out(b.op("mul", back, b.const(np.linspace(0.1, 1.0, 3).reshape(3, 1))))
    res = h.run_pass(g, "fold-bn")
    assert not res.changed and res.stats["refused"]["mul"] == "the constant is not per-channel"
