import numpy as np
import pytest


def test_linear_pair_merges_when_cheaper(h):
    b = h.Builder(shape=(2, 16))
    g = b.out(b.linear(b.linear(b.x, 32, name="fc1"), 4, name="fc2"))
    ref = g.clone()
    res = h.run_pass(g, "merge-linear")
    assert res.changed and res.stats["merged"] == 1
    assert [n.name for n in g.nodes] == ["fc2"] and g.nodes[0].input(1).shape == (4, 16)
    h.check_same(ref, g)
    assert not h.run_pass(g, "merge-linear").changed


def test_linear_bottleneck_is_not_merged(h):
    b = h.Builder(shape=(2, 64))
    g = b.out(b.linear(b.linear(b.x, 4, name="fc1"), 64, name="fc2"))
    res = h.run_pass(g, "merge-linear")
    assert not res.changed
    assert res.stats["refused"]["fc2"].startswith("merged linear costs")


def test_relu_between_blocks_the_merge(h):
    b = h.Builder(shape=(2, 16))
    g = b.out(b.linear(b.op("relu", b.linear(b.x, 8, name="fc1")), 4, name="fc2"))
    assert not h.run_pass(g, "merge-linear").changed


@pytest.mark.parametrize("k1,s1,p1,k2,s2,g1,g2,bias,merges", [
    (3, 1, 1, 1, 1, 1, 1, True, True),      # kxk then 1x1
    (1, 1, 0, 1, 1, 1, 1, True, True),      # 1x1 then 1x1
    (3, 2, 1, 1, 1, 1, 1, True, True),      # strided kxk then 1x1
    (3, 1, 1, 3, 2, 2, 2, True, True),      # grouped pair, equal groups: one 5x5 stride-2 conv
    (3, 1, 0, 1, 1, 4, 1, False, False),    # depthwise then pointwise: separable is cheaper
])
def test_conv_pairs_compose(h, k1, s1, p1, k2, s2, g1, g2, bias, merges):
    b = h.Builder(shape=(1, 4, 9, 9))
    a = b.conv(b.x, 4, k=k1, stride=s1, padding=p1, groups=g1, bias=bias, name="a")
    g = b.out(b.op("relu", b.conv(a, 4, k=k2, stride=s2, padding=0, groups=g2, name="b")))
    ref = g.clone()
    res = h.run_pass(g, "merge-linear")
    assert res.changed == merges
    if res.changed:
        conv = g.node("b")
        assert conv.input(1).shape[2] == k1 + s1 * (k2 - 1)
        assert conv.attrs["stride"] == [s1 * s2] * 2
        h.check_same(ref, g)
        assert not h.run_pass(g, "merge-linear").changed
    else:
        assert "MACs" in res.stats["refused"]["b"]


def test_pointwise_then_kxk_merges_when_it_saves_macs(h):
    # EDP's decomposed pair: a 1x1 that widens, then a 3x3: merged it is one 3x3 on fewer
    # input channels.
    b = h.Builder(shape=(1, 2, 8, 8))
    a = b.conv(b.x, 8, k=1, padding=0, bias=False, name="a")
    g = b.out(b.conv(a, 4, k=3, padding=1, name="b"))
    ref = g.clone()
    res = h.run_pass(g, "merge-linear")
    assert res.changed
    conv = g.node("b")
    assert conv.input(1).shape == (4, 2, 3, 3) and conv.attrs["padding"] == [1, 1]
    h.check_same(ref, g)


def test_padded_second_conv_is_refused_when_first_has_bias(h):
    b = h.Builder(shape=(1, 2, 8, 8))
    a = b.conv(b.x, 8, k=1, padding=0, bias=True, name="a")
    g = b.out(b.conv(a, 4, k=3, padding=1, name="b"))
    res = h.run_pass(g, "merge-linear")
    assert not res.changed and "pads its input" in res.stats["refused"]["b"]


def test_kxk_then_kxk_is_refused_as_more_expensive(h):
    b = h.Builder(shape=(1, 8, 10, 10))
    a = b.conv(b.x, 8, k=3, padding=1, name="a")
    g = b.out(b.conv(a, 8, k=3, padding=0, name="b"))
    res = h.run_pass(g, "merge-linear")
    assert not res.changed and res.stats["refused"]["b"].startswith("merged conv costs")


def test_first_conv_with_another_reader_is_refused(h):
    b = h.Builder()
    a = b.conv(b.x, 4, k=1, padding=0, name="a")
    c = b.conv(a, 4, k=1, padding=0, name="b")
    g = b.out(b.op("add", a, c))
    res = h.run_pass(g, "merge-linear")
    assert not res.changed and "other readers" in res.stats["refused"]["b"]


def test_dilated_first_conv_composes(h):
    b = h.Builder(shape=(1, 3, 12, 12))
    a = b.conv(b.x, 4, k=3, dilation=2, padding=2, name="a")
    g = b.out(b.conv(a, 2, k=1, padding=0, name="b"))
    ref = g.clone()
    assert h.run_pass(g, "merge-linear").changed
    h.check_same(ref, g)


def test_conv1d_pair(h):
    b = h.Builder(shape=(1, 3, 16))
    a = b.conv(b.x, 4, k=3, padding=1, name="a")
    g = b.out(b.conv(a, 2, k=1, padding=0, name="b"))
    ref = g.clone()
    assert h.run_pass(g, "merge-linear").changed
    h.check_same(ref, g)
    assert np.prod(g.node("b").input(1).shape) == 2 * 3 * 3


def test_grouped_then_dense_pair_composes_densely(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    a = b.conv(b.x, 8, k=3, padding=1, groups=2, name="a")
    g = b.out(b.conv(a, 1, k=1, padding=0, name="b"))
    ref = g.clone()
    assert h.run_pass(g, "merge-linear").changed
    assert g.node("b").attrs["groups"] == 1 and g.node("b").input(1).shape == (1, 4, 3, 3)
    h.check_same(ref, g)
