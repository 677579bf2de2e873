"""edp-train's proximal step and prune-merge on hand-zeroed models: rows and columns, through a
residual add (all producers must be zero), a BatchNorm (refused unless its shift is zero) and
an op that does not keep zero (refused)."""
import pytest
import torch

from graphc.models import build
from graphc.passes.decompose import find_pairs
from graphc.passes.edp_train import group_shrink, pair_sparsity


def coef(g, name):
    return g.node(name).input(1).param


def zero_rows(g, name, rows):
    a = coef(g, name).data.copy()
    a[rows] = 0
    coef(g, name).set_data(a)
    if len(g.node(name).inputs) > 2:
        b = g.node(name).input(2).param.data.copy()
        b[rows] = 0
        g.node(name).input(2).param.set_data(b)


def zero_cols(g, name, cols):
    a = coef(g, name).data.copy()
    a[:, cols] = 0
    coef(g, name).set_data(a)


def test_group_shrink_makes_exact_zeros():
    torch.manual_seed(0)
    a = torch.randn(6, 5, 1, 1)
    a[:, 1] *= 1e-3  # a weak column
    a[4] *= 1e-3  # a weak row
    bias = torch.randn(6)
    bias[4] = 1e-3
    group_shrink(a, bias, t_col=0.01, t_row=0.01)
    m = a.view(6, 5)
    assert torch.count_nonzero(m[:, 1]) == 0
    assert torch.count_nonzero(m[4]) == 0 and bias[4] == 0
    assert torch.count_nonzero(m[:, [0, 2, 3, 4]][[0, 1, 2, 3, 5]]) == 20  # strong groups only shrink
    before = a.clone()
    group_shrink(a, bias, 0.0, 0.0)
    assert torch.equal(a, before)


def test_edp_train_proximal_step_leaves_exact_zero_groups(lenet_graph):
    from graphc.registry import PassContext, all_passes

    torch.manual_seed(0)
    g = lenet_graph(build("lenet5", 8).eval())
    all_passes()["decompose"]().run(g, PassContext())
    res = all_passes()["edp-train"](lambda_col=2.0, lambda_row=2.0, max_steps=6, finetune=0).run(
        g, PassContext(data="digits", quiet=True))
    assert res.stats["zero_cols"] > 0 and res.stats["zero_rows"] > 0
    # pair_sparsity counts only groups whose every entry is exactly 0.0
    assert sum(pair_sparsity(p)[0] for p in find_pairs(g)) == res.stats["zero_cols"]
    assert sum(pair_sparsity(p)[2] for p in find_pairs(g)) == res.stats["zero_rows"]


def test_prune_merge_is_exact_on_hand_zeroed_lenet(lenet_graph, h):
    torch.manual_seed(0)
    g = lenet_graph(build("lenet5", 8).eval())
    h.run_pass(g, "decompose")
    zero_cols(g, "conv1", [3, 7, 11, 12, 13, 14, 15, 16, 17, 18, 19])  # rank 20 -> 9
    zero_rows(g, "conv1", [0, 5])
    zero_rows(g, "conv2", list(range(10)))
    zero_cols(g, "fc1", list(range(50, 200)))
    zero_rows(g, "fc1", list(range(0, 500, 2)))
    zero_rows(g, "fc2", [3])  # a graph output: must stay
    ref = g.clone()
    res = h.run_pass(g, "prune-merge")
    h.check_same(ref, g)
    st = res.stats
    assert st["columns_dropped"] == 11 + 150
    assert st["channels_removed"] == 2 + 10 + 250
    assert "fc2" in st["refused"] and "graph output" in st["refused"]["fc2"]
    assert g.node("conv1").input(1).shape[0] == 18 and g.node("conv2").input(1).shape[1] == 18
    assert g.node("fc2").input(1).shape[1] == 250  # fc2 merged back: 10 x 250
    assert st["kept_factorised"] >= 1  # fc1 at rank 50 of 200 is cheaper as a pair
    assert not h.run_pass(g, "prune-merge").changed


def _residual(h, bn=False, between=None):
    """x -> stem -> relu -> {a, b} -> add -> [bn] -> [op] -> relu -> c -> out, a/b/c decomposed."""
    b = h.Builder(shape=(1, 3, 6, 6), seed=1)
    s = b.op("relu", b.conv(b.x, 8, name="stem"), name="r0")
    y = b.op("add", b.conv(s, 6, name="a"), b.conv(s, 6, k=1, padding=0, name="b"), name="add")
    if bn:
        y = b.bn(y, name="bn")
    if between:
        y = b.op(between, y, name=between)
    y = b.op("relu", y, name="r1")
    g = b.out(b.conv(y, 4, name="c"))
    h.run_pass(g, "decompose")
    return g


def test_residual_rows_need_every_producer_zero(h):
    g = _residual(h)
    zero_rows(g, "a", [1, 4])
    zero_rows(g, "b", [4])
    ref = g.clone()
    st = h.run_pass(g, "prune-merge").stats
    h.check_same(ref, g)
    assert st["channels_removed"] == 1  # channel 4: zero in a and b; channel 1 only in a
    assert "1 zero rows kept" in st["refused"]["a"] and "conv2d b" in st["refused"]["a"]
    reader = g.node("c.basis") if "c.basis" in {n.name for n in g.nodes} else g.node("c")
    assert reader.input(1).shape[1] == 5
    assert g.node("add").output.shape[1] == 5


def test_batchnorm_after_zero_rows_refuses_unless_its_shift_is_zero(h):
    g = _residual(h, bn=True)
    zero_rows(g, "a", [1, 4])
    zero_rows(g, "b", [1, 4])
    bn = g.node("bn")
    beta, mean = bn.input(2).param.data.copy(), bn.input(3).param.data.copy()
    beta[4] = mean[4] = 0.0  # shift of channel 4 is zero; channel 1's is not
    bn.input(2).param.set_data(beta)
    bn.input(3).param.set_data(mean)
    ref = g.clone()
    st = h.run_pass(g, "prune-merge").stats
    h.check_same(ref, g)
    assert st["channels_removed"] == 1
    assert "batch_norm bn" in st["refused"]["a"] and "fold-bn" in st["refused"]["a"]
    assert g.node("bn").input(1).shape == (5,)


@pytest.mark.parametrize("op", ["sigmoid", "softplus"])
def test_op_that_does_not_keep_zero_refuses(h, op):
    g = _residual(h, between=op)
    zero_rows(g, "a", [2])
    zero_rows(g, "b", [2])
    ref = g.clone()
    st = h.run_pass(g, "prune-merge").stats
    h.check_same(ref, g)
    assert st["channels_removed"] == 0 and f"{op} {op} does not keep" in st["refused"]["a"]


def test_threshold_treats_small_groups_as_zero(lenet_graph, h):
    torch.manual_seed(0)
    g = lenet_graph(build("lenet5", 8).eval())
    h.run_pass(g, "decompose")
    a = coef(g, "fc1").data.copy()
    a[:, 100:] *= 1e-7
    coef(g, "fc1").set_data(a)
    assert h.run_pass(g.clone(), "prune-merge").stats["columns_dropped"] == 0
    st = h.run_pass(g, "prune-merge", threshold=1e-4).stats
    assert st["columns_dropped"] == 100


def test_zero_times_anything_is_zero(h):
    """An SE-style gate x * sigmoid(x): the sigmoid of a zero channel is not zero, but only the
    product reads it, and the product is zero; a sigmoid read by the next conv is refused."""
    b = h.Builder(shape=(1, 3, 6, 6), seed=2)
    y = b.conv(b.x, 6, name="a")
    y = b.op("mul", y, b.op("sigmoid", y, name="gate"), name="mul")
    g = b.out(b.conv(b.op("relu", y, name="r"), 4, name="c"))
    h.run_pass(g, "decompose")
    zero_rows(g, "a", [0, 3])
    ref = g.clone()
    st = h.run_pass(g, "prune-merge").stats
    h.check_same(ref, g)
    assert st["channels_removed"] == 2 and not st["refused"]
    assert g.node("gate").output.shape[1] == 4


def test_zero_rows_of_a_conv_read_by_a_flatten(h):
    """A one-channel conv read by a flatten is also a member of the flatten's group along a
    spatial axis (7 units): only its channel-axis member holds the zero rows. Found by
    bench/fuzz.py."""
    b = h.Builder(shape=(1, 2, 8, 8), seed=2)
    y = b.op("flatten", b.conv(b.x, 1, k=2, padding=0, name="a"), start_dim=1, name="flat")
    g = b.out(b.linear(y, 3, name="fc"))
    h.run_pass(g, "decompose")
    zero_rows(g, "a", [0])
    ref = g.clone()
    res = h.run_pass(g, "prune-merge")
    h.check_same(ref, g)
    assert res.stats["channels_removed"] == 0 and "a single unit" in res.stats["refused"]["a"]
