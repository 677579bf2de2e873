"""drop-identity, fold-constants and dce on small graphs."""
import numpy as np
import pytest


@pytest.mark.parametrize("op,attrs", [
    ("dropout", {"p": 0.5}), ("identity", {}), ("reshape", {"shape": [1, 4, 8, 8]}),
    ("permute", {"dims": [0, 1, 2, 3]}), ("cast", {"dtype": "f32"}), ("pad", {"pad": [0, 0, 0, 0]}),
    ("avg_pool2d", {"kernel_size": [1, 1], "stride": [1, 1]}), ("adaptive_avg_pool2d", {"output_size": [8, 8]}),
    ("slice", {"dim": 2, "start": 0, "end": 8}), ("flatten", {"start_dim": 0, "end_dim": 0}),
])
def test_noops_are_dropped(h, op, attrs):
    b = h.Builder()
    g = b.out(b.op("relu", b.op(op, b.op("relu", b.x, name="r0"), **attrs)))
    ref = g.clone()
    res = h.run_pass(g, "drop-identity")
    assert res.changed and [n.op for n in g.nodes] == ["relu", "relu"]
    h.check_same(ref, g)
    assert not h.run_pass(g, "drop-identity").changed


@pytest.mark.parametrize("op,attrs", [
    ("permute", {"dims": [0, 1, 3, 2]}), ("pad", {"pad": [1, -1, 0, 0]}), ("slice", {"dim": 3, "start": 1, "end": 8}),
    ("avg_pool2d", {"kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1]}), ("cast", {"dtype": "f16"}),
])
def test_ops_that_move_data_stay(h, op, attrs):
    b = h.Builder()
    g = b.out(b.op(op, b.op("relu", b.x), **attrs))
    assert not h.run_pass(g, "drop-identity").changed


def test_neutral_constants_are_dropped_but_not_broadcasting_ones(h):
    b = h.Builder()
    r = b.op("relu", b.x)
    y = b.op("add", b.op("mul", r, b.const(np.ones((4, 1, 1)))), b.const(0.0))
    z = b.op("mul", b.op("relu", b.x, name="r2"), b.const(np.ones((2, 4, 8, 8))))
    g = b.out(b.op("sigmoid", y), z)
    res = h.run_pass(g, "drop-identity")
    assert res.stats["by_op"] == {"mul": 1, "add": 1}
    assert len(g.find("mul")) == 1 and g.outputs[1].shape == (2, 4, 8, 8)


def test_inverse_reshape_and_permute_pairs_vanish(h):
    b = h.Builder()
    r = b.op("relu", b.x)
    f = b.op("reshape", b.op("flatten", r, start_dim=1), shape=[1, 4, 8, 8])
    p = b.op("permute", b.op("permute", f, dims=[0, 2, 3, 1]), dims=[0, 3, 1, 2])
    g = b.out(b.op("sigmoid", p))
    ref = g.clone()
    assert h.run_pass(g, "drop-identity").changed
    h.run_pass(g, "dce")
    assert [n.op for n in g.nodes] == ["relu", "sigmoid"]
    h.check_same(ref, g)


def test_reshape_chain_collapses_to_one(h):
    b = h.Builder()
    r = b.op("relu", b.x)
    u = b.op("unsqueeze", b.op("flatten", r, start_dim=1), dims=[0])
    g = b.out(b.op("sigmoid", u))
    ref = g.clone()
    res = h.run_pass(g, "drop-identity")
    assert res.stats["collapsed"] == 1
    h.run_pass(g, "dce")
    assert [n.op for n in g.nodes] == ["relu", "reshape", "sigmoid"]
    h.check_same(ref, g)


def test_identity_output_keeps_its_node_when_it_would_expose_the_input(h):
    b = h.Builder()
    g = b.out(b.op("dropout", b.x, p=0.1))
    assert not h.run_pass(g, "drop-identity").changed


def test_dropped_output_node_gives_its_name_to_the_source(h):
    b = h.Builder()
    g = b.out(b.op("dropout", b.op("relu", b.x), p=0.1, name="y"))
    assert h.run_pass(g, "drop-identity").changed
    assert g.outputs[0].name == "y" and g.nodes[0].op == "relu"


def test_constant_subgraph_folds_into_a_weight(h):
    b = h.Builder(shape=(2, 6))
    wt = b.w(6, 5, name="fc.weight_t")
    w = b.op("permute", wt, dims=[1, 0])
    w2 = b.op("mul", w, b.const(2.0))
    g = b.out(b.g.add_node("linear", [b.x, w2], {}, "fc").output)
    ref = g.clone()
    res = h.run_pass(g, "fold-constants")
    assert res.changed and res.stats["folded"] == 2
    assert [n.op for n in g.nodes] == ["linear"]
    p = g.nodes[0].input(1).param
    assert p.kind == "weight" and p.source == "fc.weight_t" and g.num_params() == 30
    h.check_same(ref, g)
    assert not h.run_pass(g, "fold-constants").changed


def test_large_expansions_are_not_folded(h):
    b = h.Builder(shape=(1, 4, 64, 64))
    e = b.op("expand", b.const(np.ones((1, 4, 1, 1))), shape=[1, 4, 64, 64])
    g = b.out(b.op("add", e, b.x))
    res = h.run_pass(g, "fold-constants")
    assert res.stats["refused"]["expand"] == "result much larger than its operands"


def test_dce_removes_dead_chains_and_params(h):
    b = h.Builder()
    dead = b.op("relu", b.conv(b.x, 4, name="dead"))
    live = b.op("sigmoid", b.x)
    g = b.out(live)
    assert dead.producer is not None
    res = h.run_pass(g, "dce")
    assert res.stats == {"nodes": 2, "params": 2}
    assert [n.op for n in g.nodes] == ["sigmoid"] and not g.params
    assert not h.run_pass(g, "dce").changed
