"""The pattern rewriter: the greedy worklist driver revisits only what a rewrite touched,
never offers an erased node, records refusals, stops a pattern set that never converges,
and does work linear in the graph."""
import numpy as np
import pytest

from graphc.errors import IRError
from graphc.ir import Graph, TensorType
from graphc.ir.rewrite import RewritePattern, apply_patterns


def relu_chain(n):
    g = Graph("chain")
    y = g.add_input("x", TensorType((1, 4), "f32"))
    for i in range(n):
        y = g.add_node("relu", [y], name=f"r{i}").output
    g.set_outputs([y])
    return g


class FoldReluPair(RewritePattern):
    """relu(relu(x)) -> relu(x): the outer relu goes."""

    ops = ("relu",)

    def match_and_rewrite(self, node, rw):
        prod = node.input(0).producer
        if prod is None or prod.op != "relu":
            return rw.refuse(node, "not after a relu")
        rw.replace(node, node.input(0))
        rw.count("folded")
        return True


def test_driver_reaches_the_fixed_point_and_keeps_output_names():
    g = relu_chain(6)
    res = apply_patterns(g, [FoldReluPair()])
    assert [n.name for n in g.nodes] == ["r0"] and g.outputs[0].name == "r5"
    assert res.changed and res.counts == {"folded": 5} and res.applied == {"FoldReluPair": 5}
    # The surviving relu refused (its input is the graph input): a refusal of a live node.
    assert res.refused == {"r0": "not after a relu"}
    g.verify()
    again = apply_patterns(g, [FoldReluPair()])
    assert not again.changed and again.visits == 1


def test_erased_nodes_are_never_offered_and_refusals_of_erased_nodes_are_dropped():
    offered = []

    class EraseNextToo(RewritePattern):
        ops = ("relu",)

        def match_and_rewrite(self, node, rw):
            offered.append(node.name)
            users = node.output.users()
            if node.name == "r1" and users:
                # Erase the reader too (it was already queued), then this node.
                nxt = users[0]
                nxt.output.replace_all_uses_with(node.input(0), outputs=True)
                rw.graph.erase(nxt)
                node.output.replace_all_uses_with(node.input(0), outputs=True)
                rw.graph.erase(node)
                return True
            return rw.refuse(node, "kept")

    g = relu_chain(4)
    res = apply_patterns(g, [EraseNextToo()])
    assert "r2" not in offered and res.applied == {"EraseNextToo": 1}
    assert sorted(res.refused) == ["r0", "r3"]


def test_a_pattern_that_edits_without_saying_so_still_counts_as_a_change():
    class SilentEdit(RewritePattern):
        ops = ("relu",)

        def match_and_rewrite(self, node, rw):
            if node.name == "r1" and node.output.users():
                user = node.output.users()[0]
                user.set_input(0, node.input(0))
            return False

    g = relu_chain(3)
    res = apply_patterns(g, [SilentEdit()])
    assert res.changed and g.node("r2").input(0) is g.node("r0").output


def test_a_pattern_set_that_never_converges_is_an_error():
    class Flip(RewritePattern):
        ops = ("relu", "sigmoid")

        def match_and_rewrite(self, node, rw):
            new = rw.graph.add_node("sigmoid" if node.op == "relu" else "relu", [node.input(0)], before=node)
            rw.replace(node, new.output)
            return True

    with pytest.raises(IRError, match="did not converge"):
        apply_patterns(relu_chain(3), [Flip()])


def test_visits_grow_linearly_with_the_graph():
    """A chain of foldable pairs: every rewrite revisits a bounded neighbourhood, so visits per
    node stay flat as the graph grows (no whole-graph rescans)."""
    per_node = []
    for n in (100, 400, 1600):
        g = relu_chain(n)
        res = apply_patterns(g, [FoldReluPair()])
        per_node.append(res.visits / n)
        assert len(g) == 1
    assert max(per_node) <= 4 and per_node[-1] <= per_node[0] * 1.05


def test_node_list_edits_are_constant_time_operations_on_a_linked_list():
    g = relu_chain(5)
    r2 = g.node("r2")
    new = g.add_node("sigmoid", [r2.output], name="s", after=r2)
    g.node("r3").set_input(0, new.output)
    assert [n.name for n in g.nodes] == ["r0", "r1", "r2", "s", "r3", "r4"] and len(g) == 6
    g.verify()
    first = g.add_node("relu", [g.inputs[0]], name="first", before=g.node("r0"))
    assert g.nodes[0] is first and first.alive
    g.erase(first)
    assert not first.alive and len(g) == 6 and g.nodes[0].name == "r0"
