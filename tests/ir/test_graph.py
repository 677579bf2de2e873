import numpy as np
import pytest

from graphc.errors import IRError, ParseError, VerifyError
from graphc.ir import Graph, TensorType, parse_graph, print_graph
from graphc.ir.serialize import from_json, load_json, save_json, to_dot, to_json


def small_graph(rng):
    g = Graph("block")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    w = g.add_param(rng.standard_normal((4, 3, 3, 3)).astype("f4"), "conv1.weight")
    b = g.add_param(rng.standard_normal(4).astype("f4"), "conv1.bias")
    c = g.add_node("conv2d", [x, w, b], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}, "conv1")
    r = g.add_node("relu", [c.output], name="relu")
    s = g.add_node("split", [r.output], {"dim": 1, "sizes": [2, 2]}, "split")
    a = g.add_node("add", [s.outputs[0], s.outputs[1]], name="add")
    half = g.add_const(np.float32(0.5), "half")
    m = g.add_node("mul", [a.output, half], name="scale")
    g.set_outputs([m.output])
    return g


def test_types_are_inferred_and_verified(rng):
    g = small_graph(rng)
    g.verify()
    assert g.node("conv1").output.shape == (1, 4, 8, 8)
    assert [v.shape for v in g.node("split").outputs] == [(1, 2, 8, 8), (1, 2, 8, 8)]
    assert g.num_params() == 4 * 27 + 4


def test_use_lists_follow_every_edit(rng):
    g = small_graph(rng)
    relu = g.node("relu")
    conv = g.node("conv1")
    assert [(u.node.name, u.index) for u in conv.output.uses()] == [("relu", 0)]
    # Rewire the split to read the conv directly; relu loses its only use.
    g.node("split").set_input(0, conv.output)
    assert relu.output.uses() == []
    assert sorted(u.node.name for u in conv.output.uses()) == ["relu", "split"]
    g.erase(relu)
    g.verify()
    assert [u.node.name for u in conv.output.uses()] == ["split"]


def test_erase_refuses_used_node_and_outputs_are_protected(rng):
    g = small_graph(rng)
    with pytest.raises(IRError, match="still used"):
        g.erase(g.node("conv1"))
    scale = g.node("scale")
    with pytest.raises(IRError, match="graph output"):
        scale.output.replace_all_uses_with(g.node("add").output)
    scale.output.replace_all_uses_with(g.node("add").output, outputs=True)
    g.erase(scale)
    g.verify()
    assert g.outputs[0].name == "add"


def test_uses_snapshot_allows_editing_while_iterating(rng):
    g = small_graph(rng)
    split = g.node("split")
    r = g.node("relu").output
    for use in split.outputs[0].uses():
        use.node.set_input(use.index, r)
    for use in split.outputs[1].uses():
        use.node.set_input(use.index, r)
    g.erase(split)
    for n in g.nodes:
        n.retype()
    g.verify()
    assert g.outputs[0].shape == (1, 4, 8, 8)


def test_verifier_catches_broken_types_and_order(rng):
    g = small_graph(rng)
    g.node("relu").output.type = TensorType((1, 5, 8, 8))
    with pytest.raises(VerifyError, match="output 0 is f32\\[1,5,8,8\\]"):
        g.verify()
    g = small_graph(rng)
    nodes = g.nodes
    nodes.insert(0, nodes.pop(nodes.index(g.node("add"))))
    g._nodes = nodes
    with pytest.raises(VerifyError, match="defined later"):
        g.verify()
    g.toposort()
    g.verify()
    g = small_graph(rng)
    g.params["conv1.weight"].data = np.zeros((4, 3, 1, 1), "f4")
    with pytest.raises(VerifyError, match="array shape"):
        g.verify()


def test_bad_shapes_are_reported_with_the_node(rng):
    g = small_graph(rng)
    x2 = g.add_input("y", TensorType((1, 3, 5, 5)))
    with pytest.raises(IRError, match="add bad: cannot infer"):
        g.add_node("add", [g.node("conv1").output, x2], name="bad")
    # the failed node left nothing behind
    g.verify()
    assert not any(u for u in x2.uses())


def test_print_parse_print_is_identical(rng):
    g = small_graph(rng)
    text = print_graph(g)
    g2 = parse_graph(text, weights={p.source: p.data for p in g.params.values()})
    g2.verify()
    assert print_graph(g2) == text
    np.testing.assert_array_equal(g2.params["conv1.weight"].data, g.params["conv1.weight"].data)
    assert 'weight "conv1.weight"' in text and "const 0.5" in text and "# conv1" in text


def test_parser_errors_name_the_line():
    with pytest.raises(ParseError, match="line 1"):
        parse_graph("graf @x() {\n}")
    text = "graph @g(%x: f32[1,2]) {\n  %y: f32[1,2] = relu(%nope)  # y\n  return %y\n}\n"
    with pytest.raises(ParseError, match="line 2: use of undefined value %nope"):
        parse_graph(text)


def test_json_round_trip_with_weights(tmp_path, rng):
    g = small_graph(rng)
    g2 = from_json(to_json(g), {p.name: p.data for p in g.params.values()})
    assert print_graph(g2) == print_graph(g)
    path, wpath = save_json(g, tmp_path / "g.json")
    assert wpath.exists()
    g3 = load_json(path)
    g3.verify()
    assert print_graph(g3) == print_graph(g)
    np.testing.assert_array_equal(g3.params["conv1.bias"].data, g.params["conv1.bias"].data)


def test_clone_is_deep(rng):
    g = small_graph(rng)
    c = g.clone()
    c.verify()
    assert print_graph(c) == print_graph(g)
    c.params["conv1.weight"].data[...] = 0
    assert np.abs(g.params["conv1.weight"].data).sum() > 0
    assert c.node("conv1") is not g.node("conv1")


def test_dot_and_networkx_views(rng):
    g = small_graph(rng)
    dot = to_dot(g)
    assert dot.startswith('digraph "block"') and '"conv1" -> "relu"' in dot
    G = g.to_networkx()
    assert set(G.nodes) == {"conv1", "relu", "split", "add", "scale"}
    assert G.number_of_edges() == 5  # split -> add twice


def test_names_are_unique_and_deterministic():
    """Names the graph makes (no name given, or one already taken) are the same on every build,
    and so is an import of one model: the dumps are identical."""
    import torch
    from torch import nn

    import graphc

    def build():
        g = Graph("g")
        x = g.add_input("x", TensorType((2,)))
        y = x
        for _ in range(3):
            y = g.add_node("relu", [y]).output
        z = g.add_node("add", [y, x], name="relu").output
        g.set_outputs([z])
        return g

    a, b = build(), build()
    assert [n.name for n in a.nodes] == ["relu", "relu_1", "relu_2", "relu_3"]
    assert print_graph(a) == print_graph(b)
    assert len({v.name for v in a.values()}) == len(a.values())
    # An erased node's name is free again, so a rewrite that replaces a node can keep its name.
    last = a.nodes[-1]
    a.outputs = [last.input(0)]
    a.erase(last)
    assert a.add_node("relu", [a.outputs[0]]).name == "relu_3"

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).eval()
    x = torch.randn(1, 3, 6, 6)
    first, second = print_graph(graphc.load(m, example_inputs=x)), print_graph(graphc.load(m, example_inputs=x))
    assert first == second and "# 0" in first and "# 4" in first
