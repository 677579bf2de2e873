"""Fresh names: the graph resumes each base name's suffix search where the last one stopped
(linear time for thousands of nodes of one base name) and still gives exactly the name a
search from suffix 1 would, however names are taken and freed."""
import random

from graphc.ir import Graph, TensorType


def _naive(base: str, taken: set) -> str:
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def test_fresh_names_equal_a_search_from_one():
    rng = random.Random(0)
    g = Graph("g")
    x = g.add_input("x", TensorType((2,)))
    live = []
    for _ in range(600):
        if live and rng.random() < 0.35:
            node = live.pop(rng.randrange(len(live)))
            g.erase(node)
        else:
            base = rng.choice(["relu", "relu_1", "add", "x"])
            want = _naive(base, g._node_names)
            node = g.add_node("relu", [x], name=base)
            assert node.name == want
            live.append(node)
    assert len({n.name for n in g.nodes}) == len(g.nodes)
