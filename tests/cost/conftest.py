"""Shared builders of the cost tests."""
import numpy as np
import pytest

from graphc.ir import Graph, TensorType


def residual_block(batch=1, c=4, hw=8, bn=True):
    """x -> conv a -> relu -> conv b -> (+x) -> relu -> gap -> flatten -> linear."""
    rng = np.random.default_rng(0)
    g = Graph("block")
    x = g.add_input("x", TensorType((batch, c, hw, hw)))
    wa = g.add_param(rng.standard_normal((c, c, 3, 3)).astype(np.float32), "a.weight")
    a = g.add_node("conv2d", [x, wa], {"padding": [1, 1]}, "a")
    h = a.output
    if bn:
        stats = [g.add_param(np.ones(c, np.float32), f"bn.{k}", kind="weight" if k in ("weight", "bias") else "buffer")
                 for k in ("weight", "bias", "running_mean", "running_var")]
        h = g.add_node("batch_norm", [h, *stats], {"eps": 1e-5}, "bn").output
    r = g.add_node("relu", [h], {}, "r")
    wb = g.add_param(rng.standard_normal((c, c, 3, 3)).astype(np.float32), "b.weight")
    bb = g.add_param(np.zeros(c, np.float32), "b.bias")
    b = g.add_node("conv2d", [r.output, wb, bb], {"padding": [1, 1]}, "b")
    s = g.add_node("add", [b.output, x], {}, "add")
    r2 = g.add_node("relu", [s.output], {}, "r2")
    p = g.add_node("adaptive_avg_pool2d", [r2.output], {"output_size": [1, 1]}, "gap")
    f = g.add_node("flatten", [p.output], {"start_dim": 1}, "flat")
    wf = g.add_param(rng.standard_normal((10, c)).astype(np.float32), "fc.weight")
    fc = g.add_node("linear", [f.output, wf], {}, "fc")
    g.set_outputs([fc.output])
    return g


@pytest.fixture(name="residual_block")
def residual_block_fixture():
    return residual_block
