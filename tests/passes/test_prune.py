"""prune on small hand-built graphs, one per coupling kind: ratio 0 is the identity, removing
channels made dead beforehand leaves outputs unchanged (the bookkeeping is exact), and ratio 0.5
gives a valid, smaller graph with the same output shape."""
import numpy as np
import pytest
import torch

from graphc.backends.cost import totals
from graphc.errors import PassError
from graphc.passes.channel_groups import channel_groups, prune_groups, remove_channels
from graphc.passes.prune import Prune, prune_graph
from graphc.registry import PassContext
from zoo import kill_units


def resnet_block(h):
    b = h.Builder((1, 3, 8, 8))
    a = b.op("relu", b.bn(b.conv(b.x, 8, name="stem"), name="stem.bn"))
    r = b.op("relu", b.bn(b.conv(a, 6, name="c1"), name="bn1"))
    y = b.op("relu", b.op("add", a, b.bn(b.conv(r, 8, name="c2"), name="bn2")))
    p = b.op("flatten", b.op("adaptive_avg_pool2d", y, output_size=[1, 1]), start_dim=1, end_dim=-1)
    return b.out(b.linear(p, 5, name="fc"))


def se_block(h):
    b = h.Builder((1, 3, 8, 8))
    x = b.op("relu", b.bn(b.conv(b.x, 8, name="c1"), name="bn1"))
    s = b.op("adaptive_avg_pool2d", x, output_size=[1, 1])
    s = b.op("sigmoid", b.conv(b.op("relu", b.conv(s, 4, k=1, name="fc1")), 8, k=1, name="fc2"))
    return b.out(b.conv(b.op("mul", x, s), 4, name="c2"))


def concat_split(h):
    b = h.Builder((1, 3, 8, 8))
    p = b.op("relu", b.conv(b.x, 4, name="p"))
    q = b.op("relu", b.conv(b.x, 6, name="q"))
    cat = b.op("concat", p, q, dim=1)
    s = b.g.add_node("split", [b.bn(cat, name="bn")], {"dim": 1, "sizes": [5, 5]}, "split")
    y = b.op("add", b.conv(s.outputs[0], 4, name="l"), b.conv(s.outputs[1], 4, name="r"))
    return b.out(y)


def depthwise_grouped(h):
    b = h.Builder((1, 3, 8, 8))
    x = b.op("relu", b.bn(b.conv(b.x, 8, name="c1"), name="bn1"))
    d = b.op("relu", b.bn(b.conv(x, 8, groups=8, name="dw"), name="bn2"))
    gc = b.op("relu", b.bn(b.conv(d, 16, groups=4, name="gc"), name="bn3"))
    return b.out(b.conv(gc, 4, name="c2"))


def flatten_linear(h):
    b = h.Builder((1, 3, 8, 8))
    x = b.op("relu", b.conv(b.x, 6, name="c1"))
    f = b.op("flatten", b.op("max_pool2d", x, kernel_size=[2, 2], stride=[2, 2]), start_dim=1, end_dim=-1)
    return b.out(b.linear(b.op("relu", b.linear(f, 10, name="fc1")), 3, name="fc2"))


def shuffle(h):
    b = h.Builder((1, 3, 8, 8))
    x = b.op("relu", b.conv(b.x, 8, name="c0"))
    s = b.g.add_node("split", [x], {"dim": 1, "sizes": [4, 4]}, "chunk")
    br = b.op("relu", b.bn(b.conv(s.outputs[1], 4, k=1, name="b1"), name="bn1"))
    br = b.bn(b.conv(br, 4, groups=4, name="b2"), name="bn2")
    cat = b.op("concat", s.outputs[0], br, dim=1)
    r = b.op("reshape", cat, shape=[1, 2, 4, 8, 8])
    sh = b.op("reshape", b.op("permute", r, dims=[0, 2, 1, 3, 4]), shape=[1, 8, 8, 8])
    sh = b.op("channel_shuffle", b.op("relu", b.conv(sh, 8, k=1, name="c1")), groups=2)
    return b.out(b.conv(sh, 4, name="head"))


def norms_and_scale(h):
    b = h.Builder((1, 3, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    gn = b.g.add_node("group_norm", [x, b.w(8, name="gn.weight"), b.w(8, name="gn.bias")],
                      {"num_groups": 4, "eps": 1e-5}, "gn").output
    gamma = b.g.add_param(np.full((8, 1, 1), 0.5, "f4"), source="layer_scale")
    y = b.op("add", b.op("mul", b.op("gelu", gn), gamma), x)
    t = b.op("permute", y, dims=[0, 2, 3, 1])
    ln = b.g.add_node("layer_norm", [t, b.w(8, name="ln.weight"), b.w(8, name="ln.bias")],
                      {"normalized_shape": [8], "eps": 1e-5}, "ln").output
    m = b.linear(b.op("gelu", b.linear(ln, 12, name="mlp.0")), 8, name="mlp.1")
    return b.out(b.linear(b.op("mean", b.op("add", m, t), dims=[1, 2]), 3, name="head"))


def attention(h):
    b = h.Builder((1, 6, 8))
    e = b.linear(b.x, 8, name="embed")
    q, k, v = (b.op("permute", b.op("reshape", b.linear(e, 8, name=n), shape=[1, 6, 2, 4]), dims=[0, 2, 1, 3])
               for n in ("q", "k", "v"))
    a = b.op("reshape", b.op("permute", b.op("scaled_dot_product_attention", q, k, v), dims=[0, 2, 1, 3]),
             shape=[1, 6, 8])
    return b.out(b.linear(b.op("add", b.linear(a, 8, name="o"), e), 3, name="head"))


BUILDERS = [resnet_block, se_block, concat_split, depthwise_grouped, flatten_linear, shuffle, norms_and_scale,
            attention]
# Pruning dead channels is exact where no normalisation spans channels of one group (a
# GroupNorm/LayerNorm's statistics change when a channel, dead or not, leaves its group).
EXACT = [resnet_block, se_block, concat_split, depthwise_grouped, flatten_linear, shuffle, attention]


def _inputs(g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(v.shape, generator=gen) for v in g.inputs]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_ratio_zero_is_the_identity(h, build):
    g = build(h)
    before = str(g)
    res = Prune(ratio=0.0).run(g, PassContext())
    assert not res.changed and str(g) == before


@pytest.mark.parametrize("build", EXACT, ids=lambda f: f.__name__)
def test_removing_dead_channels_leaves_outputs_unchanged(h, build):
    g = build(h)
    xs = _inputs(g)
    groups = [gr for gr in channel_groups(g) if gr.prunable]
    assert groups
    plan = []
    for gr in groups:
        dead = np.arange(gr.size)[1::2]
        kill_units(gr, dead)
        plan.append((gr, np.setdiff1d(np.arange(gr.size), dead)))
    y_dead = h.execute(g, *xs)
    shapes = {p.source: p.data.shape for p in g.params.values()}
    assert prune_groups(g, plan) > 0
    g.verify()
    assert any(p.data.shape != shapes[p.source] for p in g.params.values())
    for a, b in zip(y_dead, h.execute(g, *xs)):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_half_pruned_graph_is_valid_and_cheaper(h, build):
    g = build(h)
    shapes = [v.shape for v in g.outputs]
    macs = totals(g)["macs"]
    res = Prune(ratio=0.5).run(g, PassContext())
    assert res.changed and res.stats["prune.units_removed"] > 0
    g.verify()
    ys = h.execute(g, *_inputs(g))
    assert [tuple(y.shape) for y in ys] == shapes
    assert totals(g)["macs"] < macs


def test_grouped_conv_keeps_its_groups_consistent(h):
    g = depthwise_grouped(h)
    prune_graph(g, ratio=0.5)
    g.verify()
    dw, gc = g.node("dw"), g.node("gc")
    assert dw.attrs["groups"] == dw.inputs[0].shape[1] == 4
    assert gc.attrs["groups"] == 2 and gc.inputs[1].shape == (8, 2, 3, 3)


def test_split_sizes_and_reshape_shapes_follow(h):
    g = shuffle(h)
    prune_graph(g, ratio=0.5)
    g.verify()
    split = g.find("split")[0]
    assert sum(split.attrs["sizes"]) == split.inputs[0].shape[1] < 8
    r = g.find("reshape")[0]
    assert r.attrs["shape"][1] == 2 and r.attrs["shape"][2] * 2 == r.inputs[0].shape[1]


@pytest.mark.parametrize("importance", ["l1", "l2", "bn-scale", "random"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_importance_and_scope_options(h, importance, scope):
    g = resnet_block(h)
    macs = totals(g)["macs"]
    assert Prune(ratio=0.5, importance=importance, scope=scope).run(g, PassContext()).changed
    g.verify()
    assert totals(g)["macs"] < macs


def test_l1_removes_the_weakest_channels(h):
    g = flatten_linear(h)
    w = g.params["c1.weight"].data.copy()
    w[[0, 3, 4]] *= 1e-3
    g.params["c1.weight"].set_data(w)
    prune_graph(g, ratio=0.5)
    assert g.params["c1.weight"].data.shape[0] == 3
    np.testing.assert_array_equal(g.params["c1.weight"].data, w[[1, 2, 5]])


def test_min_channels_and_round_to(h):
    g = resnet_block(h)
    prune_graph(g, ratio=0.9, min_channels=3)
    assert g.params["c1.weight"].data.shape[0] == 3 and g.params["stem.weight"].data.shape[0] == 3
    g = resnet_block(h)
    prune_graph(g, ratio=0.5, round_to=4)
    assert g.params["c1.weight"].data.shape[0] == 4 and g.params["stem.weight"].data.shape[0] == 4


def test_protect_keeps_named_layers_whole(h):
    g = resnet_block(h)
    prune_graph(g, ratio=0.5, protect=("c1",))
    assert g.params["c1.weight"].data.shape[0] == 6
    assert g.params["stem.weight"].data.shape[0] == 4


def test_target_macs_is_reached_by_bisection(h):
    g = resnet_block(h)
    full = totals(g)["macs"]
    res = Prune(target_macs=0.6).run(g, PassContext())
    g.verify()
    assert totals(g)["macs"] <= 0.6 * full
    assert res.stats["prune.macs"] == totals(g)["macs"]
    looser = resnet_block(h)
    prune_graph(looser, ratio=max(0.0, res.stats["prune.ratio"] - 1 / 128))
    assert totals(looser)["macs"] > 0.6 * full


def test_target_params_is_reached_by_bisection_alone_or_with_macs(h):
    g = resnet_block(h)
    full = totals(g)
    res = Prune(target_params=0.5).run(g, PassContext())
    assert totals(g)["params"] <= 0.5 * full["params"] and res.stats["prune.params"] == totals(g)["params"]
    looser = resnet_block(h)
    prune_graph(looser, ratio=max(0.0, res.stats["prune.ratio"] - 1 / 128))
    assert totals(looser)["params"] > 0.5 * full["params"]
    both = resnet_block(h)
    Prune(target_params=0.9, target_macs=0.4).run(both, PassContext())
    assert totals(both)["macs"] <= 0.4 * full["macs"] and totals(both)["params"] <= 0.9 * full["params"]
    with pytest.raises(ValueError, match="target-params"):
        Prune(target_params=0)


def test_inputs_and_outputs_keep_their_channels(h):
    g = resnet_block(h)
    prune_graph(g, ratio=0.9)
    assert g.inputs[0].shape == (1, 3, 8, 8) and g.outputs[0].shape == (1, 5)
    assert g.params["stem.weight"].data.shape[1] == 3 and g.params["fc.weight"].data.shape[0] == 5


def test_bad_options_and_frozen_groups_fail_clearly(h):
    g = resnet_block(h)
    with pytest.raises(PassError, match="ratio"):
        Prune(ratio=1.0).run(g, PassContext())
    frozen = next(gr for gr in channel_groups(g) if not gr.prunable)
    with pytest.raises(PassError, match="frozen"):
        remove_channels(g, frozen, [0])
    grp = next(gr for gr in channel_groups(g) if gr.prunable)
    with pytest.raises(PassError, match="subset"):
        remove_channels(g, grp, [])


def test_prune_through_the_pipeline_string(h):
    pipeline = pytest.importorskip("graphc.pipeline")
    g = resnet_block(h)
    report = pipeline.run_pipeline(g, "prune(ratio=0.5,importance=l2,min-channels=2,protect=[fc])")
    assert report.changed
    g.verify()
    assert g.params["c1.weight"].data.shape[0] == 3


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_removing_no_unit_through_the_whole_path_is_the_identity(h, build):
    """A ratio too small to remove a unit from any group still runs the analysis, the plan and
    the rewrite: nothing may change, weights and outputs included."""
    g = build(h)
    before, xs = str(g), _inputs(g)
    data = {p.source: p.data.copy() for p in g.params.values()}
    y0 = h.execute(g, *xs)
    assert prune_graph(g, ratio=1e-6) == 0
    assert str(g) == before
    for p in g.params.values():
        np.testing.assert_array_equal(p.data, data[p.source])
    for a, b in zip(y0, h.execute(g, *xs)):
        assert torch.equal(a, b)


def test_keeping_every_unit_is_the_identity(h):
    g = concat_split(h)
    before = str(g)
    assert prune_groups(g, [(gr, np.arange(gr.size)) for gr in channel_groups(g) if gr.prunable]) == 0
    assert str(g) == before
