"""The fold math of the exact passes: conv composition in numpy float64 equals running the two
convs, and a written weight keeps the dtype of the operand it replaces."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphc.ir import Graph, TensorType
from graphc.passes._rewrite import compose_convs, set_param


def _attrs(stride, padding, dilation, groups):
    return {"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [dilation] * 2, "groups": groups}


@pytest.mark.parametrize("g1,g2,c2,s1,d1,s2", [
    (2, 2, 4, 2, 1, 1),   # equal groups, strided first
    (1, 4, 4, 1, 2, 2),   # depthwise second over a dilated first
    (2, 1, 6, 1, 1, 2),   # differing groups: composed through the dense kernels
])
def test_compose_convs_equals_the_pair(g1, g2, c2, s1, d1, s2):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 4 // g1, 3, 3))
    b1 = rng.standard_normal(4)
    w2 = rng.standard_normal((c2, 4 // g2, 2, 2))
    b2 = rng.standard_normal(c2)
    a1, a2 = _attrs(s1, 1, d1, g1), _attrs(s2, 0, 1, g2)
    w, b, a = compose_convs(w1, b1, a1, w2, b2, a2)
    assert isinstance(w, np.ndarray) and w.dtype == np.float64 and b.dtype == np.float64
    x = torch.from_numpy(rng.standard_normal((1, 4, 13, 13)))
    t = torch.from_numpy
    want = F.conv2d(F.conv2d(x, t(w1), t(b1), s1, 1, d1, g1), t(w2), t(b2), s2, 0, 1, g2)
    got = F.conv2d(x, t(w), t(b), a["stride"], a["padding"], a["dilation"], a["groups"])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_set_param_keeps_the_operand_dtype():
    g = Graph("t")
    x = g.add_input("x", TensorType((1, 3), "f32"))
    w = g.add_param(np.ones((2, 3), np.float32), source="fc.weight")
    b = g.add_param(np.ones(2, np.float16), source="fc.bias")
    fc = g.add_node("linear", [x, w, b], {}, "fc")
    w2 = g.add_param(np.ones((2, 2), np.float32), source="fc2.weight")
    fc2 = g.add_node("linear", [fc.output, w2], {}, "fc2")
    set_param(g, fc, 1, np.full((2, 3), 1 / 3))
    set_param(g, fc, 2, np.full(2, 0.1))
    set_param(g, fc2, 2, np.full(2, 0.2))  # appended: takes the weight's dtype
    assert fc.input(1).param.data.dtype == np.float32 and fc.input(1).param.data[0, 0] == np.float32(1 / 3)
    assert fc.input(2).param.data.dtype == np.float16
    assert fc2.input(2).param.data.dtype == np.float32 and len(fc2.inputs) == 3
