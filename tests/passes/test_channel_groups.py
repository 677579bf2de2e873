"""The channel-group analysis on small hand-built graphs: one test per coupling kind, checking
which axes land in one group, how units map to channels, and why a group is frozen."""
import numpy as np
import pytest

from graphc.passes.channel_groups import channel_groups, format_groups


def group_of(groups, value, axis):
    for g in groups:
        for m in g.members:
            if m.value is value and m.axis == axis:
                return g, m
    raise AssertionError(f"%{value.name} axis {axis} is in no group")


def members(group):
    return {(m.value.name, m.axis) for m in group.members}


def test_residual_add_couples_both_branches_and_their_weights(h):
    b = h.Builder((1, 4, 8, 8))
    a = b.op("relu", b.bn(b.conv(b.x, 8, name="c1"), name="bn1"))
    c = b.conv(a, 8, name="c2")
    y = b.op("add", a, c)
    g = b.out(b.conv(y, 4, name="c3"))
    groups = channel_groups(g)
    grp, _ = group_of(groups, a, 1)
    assert grp.prunable and grp.size == 8
    names = members(grp)
    assert {("c1.weight", 0), ("c1.bias", 0), ("c2.weight", 0), ("c2.weight", 1), ("c3.weight", 1),
            ("bn1.weight", 0), ("bn1.running_var", 0)} <= names
    for m in grp.members:
        assert list(m.units) == list(range(8))


def test_se_scaling_broadcast_couples_squeeze_excite_and_trunk(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    s = b.op("adaptive_avg_pool2d", x, output_size=[1, 1])
    s = b.op("relu", b.conv(s, 2, k=1, name="fc1"))
    s = b.op("sigmoid", b.conv(s, 8, k=1, name="fc2"))
    y = b.op("mul", x, s)
    g = b.out(b.conv(y, 4, name="c2"))
    groups = channel_groups(g)
    grp, _ = group_of(groups, x, 1)
    assert ("fc2.weight", 0) in members(grp) and ("fc1.weight", 1) in members(grp)
    assert ("c2.weight", 1) in members(grp) and grp.prunable
    hidden, _ = group_of(groups, g.params["fc1.weight"].value, 0)
    assert hidden is not grp and hidden.prunable and hidden.size == 2


def test_concat_members_sit_at_their_offsets(h):
    b = h.Builder((1, 4, 8, 8))
    p = b.conv(b.x, 3, name="p")
    q = b.conv(b.x, 5, name="q")
    cat = b.op("concat", p, q, dim=1)
    g = b.out(b.conv(cat, 4, name="c"))
    grp, mc = group_of(channel_groups(g), cat, 1)
    _, mp = group_of([grp], p, 1)
    _, mq = group_of([grp], q, 1)
    assert grp.size == 8 and mp.offset == 0 and mq.offset == 3
    assert list(mc.units) == list(range(8))
    assert list(mq.units) == [3, 4, 5, 6, 7]


def test_split_outputs_sit_at_their_offsets(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 6, name="c")
    s = b.g.add_node("split", [x], {"dim": 1, "sizes": [2, 4]}, "split")
    y = b.op("add", b.conv(s.outputs[0], 4, name="l"), b.conv(s.outputs[1], 4, name="r"))
    g = b.out(y)
    grp, _ = group_of(channel_groups(g), x, 1)
    _, m1 = group_of([grp], s.outputs[1], 1)
    assert grp.size == 6 and m1.offset == 2
    assert ("l.weight", 1) in members(grp) and ("r.weight", 1) in members(grp)


def test_depthwise_conv_couples_input_and_output_channels(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    d = b.conv(x, 8, groups=8, name="dw")
    g = b.out(b.conv(d, 4, name="c2"))
    grp, _ = group_of(channel_groups(g), x, 1)
    assert ("dw.weight", 0) in members(grp) and ("c2.weight", 1) in members(grp)
    assert grp.size == 8 and grp.prunable


def test_grouped_conv_prunes_whole_groups(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    gc = b.conv(x, 16, groups=4, name="gc")
    g = b.out(b.conv(gc, 4, name="c2"))
    groups = channel_groups(g)
    grp, m_in = group_of(groups, x, 1)
    _, m_out = group_of([grp], gc, 1)
    assert grp.size == 4  # one unit per conv group
    assert list(m_in.units) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(m_out.units) == [u for u in range(4) for _ in range(4)]
    # the per-group input width is never cut: that axis of the weight is in no group
    with pytest.raises(AssertionError):
        group_of(groups, g.params["gc.weight"].value, 1)


def test_group_norm_units_are_its_groups(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    w, bb = b.w(8, name="gn.weight"), b.w(8, name="gn.bias")
    y = b.g.add_node("group_norm", [x, w, bb], {"num_groups": 2, "eps": 1e-5}, "gn").output
    g = b.out(b.conv(y, 4, name="c2"))
    grp, m = group_of(channel_groups(g), x, 1)
    assert grp.size == 2 and ("gn.weight", 0) in members(grp)
    assert list(m.units) == [0] * 4 + [1] * 4


def test_layer_norm_couples_its_affine_with_the_features(h):
    b = h.Builder((1, 5, 6))
    x = b.linear(b.x, 8, name="fc1")
    w, bb = b.w(8, name="ln.weight"), b.w(8, name="ln.bias")
    y = b.g.add_node("layer_norm", [x, w, bb], {"normalized_shape": [8], "eps": 1e-5}, "ln").output
    g = b.out(b.linear(y, 3, name="fc2"))
    grp, _ = group_of(channel_groups(g), x, 2)
    assert {("ln.weight", 0), ("ln.bias", 0), ("fc1.weight", 0), ("fc2.weight", 1)} <= members(grp)
    assert grp.prunable


def test_flatten_into_linear_maps_a_channel_to_a_block_of_features(h):
    b = h.Builder((1, 4, 4, 4))
    x = b.conv(b.x, 3, name="c1")
    p = b.op("max_pool2d", x, kernel_size=[2, 2], stride=[2, 2])
    f = b.op("flatten", p, start_dim=1, end_dim=-1)
    g = b.out(b.linear(f, 5, name="fc"))
    grp, _ = group_of(channel_groups(g), x, 1)
    _, m = group_of([grp], g.params["fc.weight"].value, 1)
    assert grp.size == 3 and list(m.units) == [u for u in range(3) for _ in range(4)]


def test_channel_shuffle_couples_the_same_channel_of_every_group(h):
    b = h.Builder((1, 4, 8, 8))
    p = b.conv(b.x, 4, name="p")
    q = b.conv(b.x, 4, name="q")
    cat = b.op("concat", p, q, dim=1)
    s = b.op("channel_shuffle", cat, groups=2)
    g = b.out(b.conv(s, 4, name="c"))
    grp, m = group_of(channel_groups(g), cat, 1)
    assert grp.size == 4 and list(m.units) == [0, 1, 2, 3, 0, 1, 2, 3]
    _, ms = group_of([grp], s, 1)
    assert list(ms.units) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_reshape_transpose_shuffle_is_the_channel_shuffle(h):
    b = h.Builder((1, 4, 8, 8))
    p = b.conv(b.x, 4, name="p")
    q = b.conv(b.x, 4, name="q")
    cat = b.op("concat", p, q, dim=1)
    r = b.op("reshape", cat, shape=[1, 2, 4, 8, 8])
    t = b.op("permute", r, dims=[0, 2, 1, 3, 4])
    s = b.op("reshape", t, shape=[1, 8, 8, 8])
    g = b.out(b.conv(s, 4, name="c"))
    grp, m = group_of(channel_groups(g), cat, 1)
    assert grp.prunable and grp.size == 4 and list(m.units) == [0, 1, 2, 3, 0, 1, 2, 3]
    _, ms = group_of([grp], s, 1)
    assert list(ms.units) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_layer_scale_param_is_a_member(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    gamma = b.g.add_param(np.ones((8, 1, 1), "f4"), source="layer_scale")
    y = b.op("add", b.op("mul", x, gamma), x)
    g = b.out(b.conv(y, 4, name="c2"))
    grp, _ = group_of(channel_groups(g), x, 1)
    assert ("layer_scale", 0) in members(grp) and grp.prunable


def test_attention_hidden_dims_are_pruned_consistently(h):
    b = h.Builder((1, 6, 8))
    q = b.op("reshape", b.linear(b.x, 8, name="q"), shape=[1, 6, 2, 4])
    k = b.op("reshape", b.linear(b.x, 8, name="k"), shape=[1, 6, 2, 4])
    v = b.op("reshape", b.linear(b.x, 8, name="v"), shape=[1, 6, 2, 4])
    q, k, v = (b.op("permute", t, dims=[0, 2, 1, 3]) for t in (q, k, v))
    a = b.op("scaled_dot_product_attention", q, k, v)
    o = b.op("reshape", b.op("permute", a, dims=[0, 2, 1, 3]), shape=[1, 6, 8])
    g = b.out(b.linear(o, 8, name="o"))
    groups = channel_groups(g)
    qk, mq = group_of(groups, g.params["q.weight"].value, 0)
    assert ("k.weight", 0) in members(qk) and qk.prunable
    # the same hidden index of every head goes at once
    assert qk.size == 4 and list(mq.units) == [0, 1, 2, 3, 0, 1, 2, 3]
    vg, mv = group_of(groups, g.params["v.weight"].value, 0)
    assert vg is not qk
    # two heads are structure: the head merge undoes the split, and the value path prunes the
    # same hidden index of every head too
    assert vg.prunable and vg.size == 4 and list(mv.units) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert ("o.weight", 1) in members(vg)


def test_multi_head_attention_is_frozen_with_a_reason_but_the_mlp_is_not(h):
    b = h.Builder((1, 6, 8))
    ipw, ipb = b.w(24, 8, name="attn.in_proj_weight"), b.w(24, name="attn.in_proj_bias")
    opw, opb = b.w(8, 8, name="attn.out_proj.weight"), b.w(8, name="attn.out_proj.bias")
    pre = b.linear(b.x, 8, name="pre")
    a = b.g.add_node("multi_head_attention", [pre, pre, pre, ipw, ipb, opw, opb],
                     {"num_heads": 2, "batch_first": True}, "attn").output
    m = b.linear(b.op("gelu", b.linear(a, 16, name="mlp.0")), 8, name="mlp.1")
    g = b.out(b.op("add", a, m))
    groups = channel_groups(g)
    att, _ = group_of(groups, pre, 2)
    assert not att.prunable and "multi_head_attention" in att.reason and "attn" in att.frozen_at
    mlp, _ = group_of(groups, g.params["mlp.0.weight"].value, 0)
    assert mlp.prunable and mlp.size == 16


def test_opaque_nodes_freeze_their_channels(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    o = b.g.add_node("opaque", [x], {"source": "torch", "target": "torch.neg", "args": [{"$input": 0}],
                                     "kwargs": {}, "out_types": [str(x.type)]}, "mystery").output
    g = b.out(b.conv(o, 4, name="c2"))
    groups = channel_groups(g)
    grp, _ = group_of(groups, x, 1)
    assert not grp.prunable and "opaque" in grp.reason and "mystery" in grp.frozen_at
    assert "torch.neg" in format_groups(groups)


def test_graph_inputs_and_outputs_are_frozen(h):
    b = h.Builder((1, 4, 8, 8))
    g = b.out(b.conv(b.op("relu", b.conv(b.x, 8, name="c1")), 5, name="c2"))
    groups = channel_groups(g)
    assert group_of(groups, b.x, 1)[0].reason == "graph input"
    assert group_of(groups, g.outputs[0], 1)[0].reason == "graph output"
    assert group_of(groups, g.params["c1.weight"].value, 0)[0].prunable


def test_protect_freezes_the_groups_it_names(h):
    b = h.Builder((1, 4, 8, 8))
    g = b.out(b.conv(b.op("relu", b.conv(b.x, 8, name="block.c1")), 5, name="c2"))
    grp = group_of(channel_groups(g, protect=["block.*"]), g.params["block.c1.weight"].value, 0)[0]
    assert not grp.prunable and grp.reason.startswith("protected")


def test_slice_on_channels_freezes_with_a_reason(h):
    b = h.Builder((1, 4, 8, 8))
    x = b.conv(b.x, 8, name="c1")
    s = b.op("slice", x, dim=1, start=0, end=4, step=1)
    g = b.out(b.conv(s, 4, name="c2"))
    grp = group_of(channel_groups(g), x, 1)[0]
    assert not grp.prunable and "slice" in grp.reason


@pytest.mark.parametrize("blocks", [4, 16])
def test_groups_grow_with_the_graph_not_faster(h, blocks):
    b = h.Builder((1, 4, 8, 8))
    y = b.conv(b.x, 8, name="stem")
    for i in range(blocks):
        y = b.op("add", y, b.conv(b.op("relu", b.conv(y, 6, name=f"b{i}.c1")), 8, name=f"b{i}.c2"))
    g = b.out(b.conv(y, 3, name="head"))
    groups = channel_groups(g)
    # the residual stream is one group, each block's hidden width another
    assert sum(gr.prunable for gr in groups) == blocks + 1
    assert "channel groups" in format_groups(groups).splitlines()[0]
