import numpy as np
import pytest


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("k,dil", [(3, 1), (5, 1), (3, 2), (1, 1)])
def test_conv_plus_identity_fuses(h, groups, k, dil):
    b = h.Builder(shape=(1, 4, 7, 7))
    c = b.conv(b.x, 4, k=k, groups=groups, dilation=dil)
    g = b.out(b.op("relu", b.op("add", c, b.x)))
    ref = g.clone()
    res = h.run_pass(g, "fuse-resconv")
    assert res.changed and res.stats["identity"] == 1
    assert [n.op for n in g.nodes] == ["conv2d", "relu"]
    h.check_same(ref, g)
    assert not h.run_pass(g, "fuse-resconv").changed


def test_scaled_branches_with_bn_fuse(h):
    # y = a * BN(conv(x)) + b * x, identity on the left of the add.
    b = h.Builder(shape=(1, 3, 6, 6))
    x = b.op("relu", b.x)
    c = b.op("mul", b.bn(b.conv(x, 3, bias=False)), b.const(np.float32(0.3)))
    s = b.op("mul", b.const([[[[0.5]], [[2.0]], [[-1.0]]]]), x)
    g = b.out(b.op("add", s, c))
    ref = g.clone()
    res = h.run_pass(g, "fuse-resconv")
    assert res.changed and res.stats["identity"] == 1
    assert [n.op for n in g.nodes] == ["relu", "conv2d"]
    h.check_same(ref, g)


def test_repvgg_three_branches_become_one_conv(h):
    b = h.Builder(shape=(1, 4, 6, 6))
    x = b.op("relu", b.x)
    k3 = b.bn(b.conv(x, 4, k=3, bias=False, name="dense"), name="bn3")
    k1 = b.bn(b.conv(x, 4, k=1, padding=0, bias=False, name="pw"), name="bn1")
    idb = b.bn(x, name="bnid")
    g = b.out(b.op("relu", b.op("add", b.op("add", k3, k1, name="a1"), idb, name="a2"), name="out"))
    ref = g.clone()
    n0 = len(g.nodes)
    r1 = h.run_pass(g, "fuse-resconv")
    r2 = h.run_pass(g, "fuse-resconv")
    assert r1.stats["parallel"] + r2.stats["parallel"] == 1
    assert r1.stats["identity"] + r2.stats["identity"] == 1
    assert [n.op for n in g.nodes] == ["relu", "conv2d", "relu"] and n0 == 9
    h.check_same(ref, g)


def test_strided_conv_is_refused(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    c = b.conv(b.x, 4, k=3, stride=2)
    pool = b.op("max_pool2d", b.x, kernel_size=[2, 2], stride=[2, 2])
    g = b.out(b.op("add", c, pool))
    res = h.run_pass(g, "fuse-resconv")
    assert not res.changed and res.stats["refused"]["add"] == "the other branch is not the conv's input"


def test_valid_padding_is_refused(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    pad = b.op("pad", b.x, pad=[1, 1, 1, 1])
    c = b.conv(pad, 4, k=3, padding=0)
    g = b.out(b.op("add", c, b.x))
    res = h.run_pass(g, "fuse-resconv")
    assert not res.changed and "the other branch" in res.stats["refused"]["add"]


def test_asymmetric_kernel_fuses_at_its_centre(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    c = b.conv(b.x, 4, k=(3, 1), padding=[1, 0])
    g = b.out(b.op("add", c, b.x))
    ref = g.clone()
    assert h.run_pass(g, "fuse-resconv").changed
    h.check_same(ref, g)


def test_conv_with_other_reader_is_left(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    c = b.conv(b.x, 4)
    g = b.out(b.op("add", c, b.x), c)
    assert not h.run_pass(g, "fuse-resconv").changed


def test_channel_change_is_refused(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    c = b.conv(b.x, 8)
    g = b.out(b.op("add", c, b.op("concat", b.x, b.x, dim=1)))
    res = h.run_pass(g, "fuse-resconv")
    assert not res.changed and res.stats["refused"]["add"] == "the other branch is not the conv's input"


def test_parallel_grouped_and_dense_convs_are_refused(h):
    b = h.Builder(shape=(1, 4, 6, 6))
    x = b.op("relu", b.x)
    g = b.out(b.op("add", b.conv(x, 4, k=3, groups=2, name="g"), b.conv(x, 4, k=1, padding=0, name="d")))
    res = h.run_pass(g, "fuse-resconv")
    assert not res.changed
    assert res.stats["refused"]["add"] == "the convs differ in stride, dilation or groups"
    assert len(g.find("conv2d")) == 2
