import numpy as np
import pytest
import torch

from graphc.ir import Graph, TensorType
from graphc.models import build
from graphc.passes.decompose import find_pairs, split_weight
from graphc.registry import PassContext, all_passes

RTOL, ATOL = 1e-4, 1e-5


def run(graph, name, **opts):
    res = all_passes()[name](**opts).run(graph, PassContext())
    if res.changed:
        graph.verify()
    return res


@pytest.mark.parametrize("init", ["svd", "balanced", "identity", "random"])
def test_split_weight_reproduces_w(init, rng):
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    a, b = split_weight(w, init)
    assert a.shape[2:] == (1, 1) and a.shape[1] == b.shape[0]
    m = a.shape[1]
    assert m == (6 if init in ("identity", "random") else min(6, 27))
    np.testing.assert_allclose(a.reshape(6, m) @ b.reshape(m, -1), w.reshape(6, -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init", ["svd", "identity", "random"])
def test_decompose_lenet_is_exact_and_idempotent(init, lenet_graph, ir_execute):
    torch.manual_seed(0)
    model = build("lenet5", 8).eval()
    g = lenet_graph(model)
    x = torch.randn(1, 1, 8, 8)
    res = run(g, "decompose", init=init)
    assert res.stats["layers"] == ["conv1", "conv2", "fc1", "fc2"]
    pairs = find_pairs(g)
    assert [p.name for p in pairs] == ["conv1", "conv2", "fc1", "fc2"]
    basis = g.node("conv2.basis")
    assert basis.attrs["padding"] == [2, 2] and basis.input(1).shape == (50 if init == "svd" else 50, 20, 5, 5)
    assert g.node("conv2").input(1).shape[2:] == (1, 1) and len(g.node("conv2").inputs) == 3
    torch.testing.assert_close(ir_execute(g, x)[0], model(x), rtol=RTOL, atol=ATOL)
    assert not run(g, "decompose").changed


def test_decompose_layer_filter_and_grouped_conv_skipped():
    g = Graph("g")
    x = g.add_input("x", TensorType((1, 4, 6, 6), "f32"))
    rng = np.random.default_rng(0)
    attrs = {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1]}
    h = g.add_node("conv2d", [x, g.add_param(rng.standard_normal((4, 2, 3, 3)).astype("f4"), "dw.weight")],
                   {**attrs, "groups": 2}, "dw").output
    y = g.add_node("conv2d", [h, g.add_param(rng.standard_normal((8, 4, 3, 3)).astype("f4"), "pw.weight")],
                   {**attrs, "groups": 1}, "pw").output
    g.set_outputs([y])
    assert not run(g, "decompose", layers=("nomatch*",)).changed
    res = run(g, "decompose", init="balanced")
    assert res.stats["layers"] == ["pw"] and "grouped conv" in res.stats["skipped"]["dw"]
    assert g.node("pw.basis").attrs["stride"] == [2, 2] and g.node("pw").attrs["stride"] == [1, 1]


def test_min_kernel_and_linear_options(lenet_graph):
    g = lenet_graph(build("lenet5", 8).eval())
    res = run(g, "decompose", linear=False, min_kernel=9)
    assert res.stats["layers"] == ["conv1", "conv2"]


def test_pairs_are_found_by_metadata_not_by_name(h):
    from graphc.ir.printer import parse_graph, print_graph
    from graphc.ir.serialize import from_json, to_json
    from graphc.passes.decompose import find_pairs

    b = h.Builder(shape=(1, 3, 8, 8))
    g = b.out(b.conv(b.x, 6, name="c1"))
    assert h.run_pass(g, "decompose").changed
    basis = [n for n in g.nodes if n.meta.get("edp") == "basis"]
    assert len(basis) == 1 and g.node("c1").meta == {"edp": "coef"}
    text = print_graph(g)
    assert '[edp="basis"]' in text and '[edp="coef"]' in text
    # Renamed nodes are still a pair; the same nodes without metadata are not.
    g.rename_value(basis[0].output, "t")
    basis[0].name = "anything"
    assert [p.coef.name for p in find_pairs(g)] == ["c1"]
    assert [p.coef.name for p in find_pairs(parse_graph(print_graph(g)))] == ["c1"]
    weights = {p.name: p.data for p in g.params.values()}
    assert [p.coef.name for p in find_pairs(from_json(to_json(g), weights))] == ["c1"]
    assert find_pairs(parse_graph(text.replace(' [edp="basis"]', "").replace(' [edp="coef"]', ""))) == []


def test_verifier_checks_node_metadata(h):
    import pytest

    from graphc.errors import VerifyError

    b = h.Builder(shape=(1, 3, 8, 8))
    g = b.out(b.op("relu", b.conv(b.x, 6, name="c1")))
    g.node("relu").meta["edp"] = "basis"
    with pytest.raises(VerifyError, match="metadata edp on a relu"):
        g.verify()
    g.node("relu").meta.clear()
    g.node("c1").meta["edp"] = "left"
    with pytest.raises(VerifyError, match="is not one of"):
        g.verify()
    g.node("c1").meta = {"stream": 1}
    with pytest.raises(VerifyError, match="unknown metadata 'stream'"):
        g.verify()
