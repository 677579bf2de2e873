import pytest


@pytest.mark.parametrize("k,groups,kp,sp,bias,allow_equal", [
    (1, 1, 2, 2, True, True),     # densenet transition: 1x1 conv + 2x2 pool -> 2x2 stride-2 conv
    (3, 1, 2, 2, True, False),    # 3x3 + 2x2 pool -> 4x4 stride 2: 16 taps per output, not 36
    (3, 4, 2, 2, False, False),   # depthwise conv
    (1, 2, 3, 3, True, True),     # grouped 1x1 + 3x3 pool
])
def test_conv_then_avgpool_becomes_one_conv(h, k, groups, kp, sp, bias, allow_equal):
    b = h.Builder(shape=(1, 4, 12, 12))
    c = b.conv(b.x, 8 if groups == 1 else 4, k=k, groups=groups, bias=bias)
    g = b.out(b.op("relu", b.op("avg_pool2d", c, kernel_size=[kp, kp], stride=[sp, sp])))
    ref = g.clone()
    if allow_equal:
        res = h.run_pass(g, "absorb-pool")
        assert not res.changed and "not fewer" in res.stats["refused"]["avg_pool2d"]
    res = h.run_pass(g, "absorb-pool", allow_equal=allow_equal)
    assert res.changed and res.stats["absorbed"] == 1
    assert [n.op for n in g.nodes] == ["conv2d", "relu"]
    assert g.nodes[0].attrs["stride"] == [sp, sp]
    h.check_same(ref, g)
    assert not h.run_pass(g, "absorb-pool", allow_equal=allow_equal).changed


def test_global_pool_after_conv_is_absorbed_when_no_dearer(h):
    b = h.Builder(shape=(1, 4, 5, 5))
    c = b.conv(b.x, 6, k=3)
    g = b.out(b.op("flatten", b.op("adaptive_avg_pool2d", c, output_size=[1, 1]), start_dim=1))
    ref = g.clone()
    assert h.run_pass(g, "absorb-pool").stats["absorbed"] == 1
    h.check_same(ref, g)


def test_padded_pool_is_refused(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    c = b.conv(b.x, 4, k=1, padding=0)
    g = b.out(b.op("avg_pool2d", c, kernel_size=[3, 3], stride=[2, 2], padding=[1, 1]))
    res = h.run_pass(g, "absorb-pool")
    assert not res.changed and res.stats["refused"]["avg_pool2d"] == "the pool pads its input"


def test_ceil_mode_partial_window_is_refused(h):
    b = h.Builder(shape=(1, 4, 9, 9))
    c = b.conv(b.x, 4, k=1, padding=0)
    g = b.out(b.op("avg_pool2d", c, kernel_size=[2, 2], stride=[2, 2], ceil_mode=True))
    res = h.run_pass(g, "absorb-pool")
    assert not res.changed and "partial" in res.stats["refused"]["avg_pool2d"]


def test_overlapping_pool_is_refused_when_dearer(h):
    b = h.Builder(shape=(1, 8, 12, 12))
    c = b.conv(b.x, 8, k=3)
    g = b.out(b.op("avg_pool2d", c, kernel_size=[3, 3], stride=[1, 1]))
    res = h.run_pass(g, "absorb-pool")
    assert not res.changed and "MACs" in res.stats["refused"]["avg_pool2d"]


def test_relu_between_blocks_absorption(h):
    b = h.Builder(shape=(1, 4, 8, 8))
    c = b.op("relu", b.conv(b.x, 4, k=1, padding=0))
    g = b.out(b.op("avg_pool2d", c, kernel_size=[2, 2], stride=[2, 2]))
    assert not h.run_pass(g, "absorb-pool").changed


def test_single_logit_head_swaps_linear_first(h):
    # One output feature and fewer pixels than channels: the linear is cheaper before the pool.
    b = h.Builder(shape=(1, 16, 2, 2))
    p = b.op("adaptive_avg_pool2d", b.op("relu", b.x), output_size=[1, 1])
    g = b.out(b.linear(b.op("flatten", p, start_dim=1), 1))
    ref = g.clone()
    res = h.run_pass(g, "absorb-pool")
    assert res.stats["swapped"] == 1
    assert [n.op for n in g.nodes] == ["relu", "conv2d", "adaptive_avg_pool2d", "flatten"]
    h.check_same(ref, g)
    assert not h.run_pass(g, "absorb-pool").changed
    # At equal cost the new 1x1 conv may also absorb the global pool: one 2x2 conv is the head.
    assert h.run_pass(g, "absorb-pool", allow_equal=True).stats["absorbed"] == 1
    assert [n.op for n in g.nodes] == ["relu", "conv2d", "flatten"]
    h.check_same(ref, g)
    assert not h.run_pass(g, "absorb-pool", allow_equal=True).changed


def test_classifier_head_is_not_swapped(h):
    b = h.Builder(shape=(1, 16, 4, 4))
    p = b.op("adaptive_avg_pool2d", b.op("relu", b.x), output_size=[1, 1])
    g = b.out(b.linear(b.op("flatten", p, start_dim=1), 10))
    res = h.run_pass(g, "absorb-pool")
    assert not res.changed and "linear first would cost" in res.stats["refused"]["adaptive_avg_pool2d"]
