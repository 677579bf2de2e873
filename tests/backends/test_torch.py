"""PyTorch back-end: standard layers named after the source, numerics equal to the op table,
saving and loading without graphc, retraining, and refusals."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import graphc
from graphc.backends.torch import emit_torch, run_graph
from graphc.errors import UnsupportedError
from graphc.ir import Graph, TensorType

RTOL, ATOL = 1e-4, 1e-5


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Hardswish())
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.features(x) + x.mean(1, keepdim=True)
        return self.head(self.drop(self.norm(y.mean((2, 3)))))


@pytest.fixture
def net():
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        for bn in (m.features[1], m.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return m


def test_emitted_module_uses_torch_layers_named_like_the_source(net):
    x = torch.randn(1, 3, 8, 8)
    gm = emit_torch(graphc.load(net, example_inputs=x))
    src = {k: v for k, v in net.state_dict().items()}
    out = gm.state_dict()
    assert set(src) == set(out)
    for k in src:
        torch.testing.assert_close(out[k], src[k])
    assert isinstance(gm.get_submodule("features.0"), nn.Conv2d)
    assert isinstance(gm.get_submodule("features.4"), nn.BatchNorm2d)
    assert isinstance(gm.get_submodule("head"), nn.Linear)
    assert isinstance(gm.get_submodule("norm"), nn.LayerNorm)
    assert not gm.training
    torch.testing.assert_close(gm(x), net(x), rtol=RTOL, atol=ATOL)
    assert "graphc" not in gm.code


def test_emitted_module_trains(net):
    gm = emit_torch(graphc.load(net, example_inputs=torch.randn(1, 3, 8, 8))).train()
    opt = torch.optim.SGD(gm.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    before = gm.features[1].running_mean.clone() if hasattr(gm.features, "__getitem__") else None
    loss = nn.functional.cross_entropy(gm(x), y)
    loss.backward()
    opt.step()
    assert gm.get_submodule("head").weight.grad is not None
    bn = gm.get_submodule("features.1")
    if before is not None:
        assert not torch.equal(bn.running_mean, before), "BN in train mode updates its statistics"


_LOADER = """
import importlib.abc, sys
class NoGraphc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "graphc" or name.startswith("graphc."):
            raise ImportError("graphc is not available here")
sys.meta_path.insert(0, NoGraphc())
import torch
m = torch.load(sys.argv[1], weights_only=False)
d = torch.load(sys.argv[2])
y = m(d["x"])
assert not any(k == "graphc" or k.startswith("graphc.") for k in sys.modules)
torch.testing.assert_close(y, d["y"], rtol=1e-4, atol=1e-5)
print("OK", type(m).__name__)
"""


def _load_elsewhere(tmp_path, model, x):
    """Save with graphc.save, load and run in a python that cannot import graphc."""
    g = graphc.load(model, example_inputs=x)
    out = graphc.save(g, tmp_path / "m.pt")
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, tmp_path / "xy.pt")
    script = tmp_path / "load.py"
    script.write_text(_LOADER)
    r = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "xy.pt")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("OK")


def test_saved_module_loads_without_graphc(tmp_path, net):
    _load_elsewhere(tmp_path, net, torch.randn(1, 3, 8, 8))


def test_saved_module_with_opaque_library_calls(tmp_path):
    """Opaque calls of a torch builtin and of a torch.fx-wrapped library function: torch.load
    re-traces the saved code and must keep the library call whole."""
    st = pytest.importorskip("torchvision.models.swin_transformer")

    class M(nn.Module):
        def forward(self, x):
            return st._patch_merging_pad(torch.cumsum(x, 1))

    x = torch.randn(1, 5, 5, 4)
    g = graphc.load(M(), example_inputs=x)
    targets = {n.attrs["target"] for n in g.find("opaque")}
    assert targets == {"torch.cumsum", "torchvision.models.swin_transformer._patch_merging_pad"}
    _load_elsewhere(tmp_path, M(), x)


def test_opaque_onnx_node_is_refused():
    g = Graph("g")
    x = g.add_input("x", TensorType((1, 4)))
    n = g.add_node("opaque", [x], {"source": "onnx", "op_type": "Foo", "domain": "x", "attributes": {},
                                   "out_types": ["f32[1,4]"]}, "foo")
    g.set_outputs([n.output])
    with pytest.raises(UnsupportedError, match="Foo"):
        emit_torch(g)




# (op, input shapes, attrs, params: indices of inputs that are params)
CASES = [
    ("conv2d", [(1, 4, 6, 6), (6, 2, 3, 3), (6,)], {"stride": [2, 1], "padding": [1, 0], "dilation": [1, 1], "groups": 2}, {1, 2}),
    ("conv2d", [(1, 4, 6, 6), (6, 4, 3, 3)], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}, set()),
    ("conv1d", [(1, 4, 9), (3, 4, 3)], {"stride": [2], "padding": [1], "dilation": [1], "groups": 1}, {1}),
    ("conv_transpose2d", [(1, 4, 5, 5), (4, 3, 3, 3), (3,)], {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1],
                                                              "dilation": [1, 1], "groups": 1}, {1, 2}),
    ("linear", [(2, 3, 5), (4, 5), (4,)], {}, {1, 2}),
    ("linear", [(2, 5), (4, 5)], {}, set()),
    ("batch_norm", [(2, 3, 4), (3,), (3,), (3,), (3,)], {"eps": 1e-3}, {1, 2, 3, 4}),
    ("group_norm", [(1, 4, 3, 3), (4,), (4,)], {"num_groups": 2, "eps": 1e-5}, {1, 2}),
    ("layer_norm", [(1, 5, 8), (8,)], {"normalized_shape": [8], "eps": 1e-5}, {1}),
    ("instance_norm", [(1, 3, 4, 4)], {"eps": 1e-5}, set()),
    ("lrn", [(1, 6, 4, 4)], {"size": 3, "alpha": 1e-3, "beta": 0.75, "k": 2.0}, set()),
    ("max_pool2d", [(1, 2, 7, 7)], {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "ceil_mode": True}, set()),
    ("avg_pool2d", [(1, 2, 7, 7)], {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "ceil_mode": False,
                                    "count_include_pad": False, "divisor_override": None}, set()),
    ("adaptive_avg_pool2d", [(1, 2, 7, 5)], {"output_size": [2, 3]}, set()),
    ("multi_head_attention", [(1, 5, 8), (1, 5, 8), (1, 5, 8), (24, 8), (24,), (8, 8), (8,)],
     {"num_heads": 2, "batch_first": True}, {3, 4, 5, 6}),
    ("scaled_dot_product_attention", [(1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4)], {"scale": None, "is_causal": True}, set()),
    ("dropout", [(2, 3)], {"p": 0.5}, set()),
    ("gelu", [(2, 3)], {"approximate": "tanh"}, set()),
    ("hardtanh", [(2, 3)], {"min_val": -0.5, "max_val": 0.5}, set()),
    ("clamp", [(2, 3)], {"min": 0.0, "max": None}, set()),
    ("sub", [(2, 3), (3,)], {}, {1}),
    ("prelu", [(1, 3, 2, 2), (3, 1, 1)], {}, {1}),
    ("where", [(2, 3), (2, 3), (2, 3)], {}, set()),
    ("sum_n", [(2, 3), (2, 3), (3,)], {}, set()),
    ("reshape", [(2, 3, 4)], {"shape": [6, -1]}, set()),
    ("flatten", [(2, 3, 4, 5)], {"start_dim": 1, "end_dim": 2}, set()),
    ("permute", [(2, 3, 4)], {"dims": [2, 0, 1]}, set()),
    ("squeeze", [(2, 1, 4, 1)], {"dims": [1, -1]}, set()),
    ("unsqueeze", [(2, 4)], {"dims": [0, -1]}, set()),
    ("expand", [(2, 1, 4)], {"shape": [2, 3, 4]}, set()),
    ("concat", [(2, 3), (2, 5)], {"dim": 1}, set()),
    ("split", [(2, 7)], {"dim": 1, "sizes": [3, 4]}, set()),
    ("slice", [(2, 9, 3)], {"dim": 1, "start": 1, "end": 8, "step": 3}, set()),
    ("select", [(2, 9, 3)], {"dim": 1, "index": 4}, set()),
    ("roll", [(2, 5)], {"shifts": [2], "dims": [1]}, set()),
    ("pad", [(1, 2, 3, 3)], {"pad": [1, 0, 2, 1], "mode": "reflect", "value": 0.0}, set()),
    ("pad", [(1, 2, 3, 3)], {"pad": [1, 0, 2, 1], "mode": "constant", "value": 0.5}, set()),
    ("channel_shuffle", [(1, 6, 2, 2)], {"groups": 3}, set()),
    ("pixel_shuffle", [(1, 8, 2, 2)], {"upscale_factor": 2}, set()),
    ("interpolate", [(1, 2, 3, 3)], {"size": [6, 5], "mode": "bilinear", "align_corners": False}, set()),
    ("mean", [(2, 3, 4)], {"dims": [1, 2], "keepdim": True}, set()),
    ("amax", [(2, 3, 4)], {"dims": [0], "keepdim": False}, set()),
    ("einsum", [(2, 3), (3, 4)], {"equation": "ij,jk->ik"}, set()),
    ("softmax", [(2, 3)], {"dim": 1}, set()),
    ("cast", [(2, 3)], {"dtype": "f16"}, set()),
]


@pytest.mark.parametrize("op,shapes,attrs,params", CASES, ids=[c[0] for c in CASES])
def test_emitted_op_matches_the_op_table(op, shapes, attrs, params):
    rng = np.random.default_rng(0)
    g = Graph("g")
    ins = []
    for i, s in enumerate(shapes):
        arr = rng.standard_normal(s).astype(np.float32)
        if op == "batch_norm" and i == 4:
            arr = np.abs(arr) + 0.5
        if op == "where" and i == 0:
            ins.append(g.add_param(arr > 0, name="cond", kind="const"))
        elif i in params:
            ins.append(g.add_param(arr, source=f"layer.p{i}", kind="weight"))
        else:
            ins.append(g.add_input(f"x{i}", TensorType(s)))
    n = g.add_node(op, ins, attrs, "layer")
    g.set_outputs(list(n.outputs))
    g.verify()
    xs = [torch.from_numpy(rng.standard_normal(v.shape).astype(np.float32)) for v in g.inputs]
    want = run_graph(g, xs)
    got = emit_torch(g)(*xs)
    got = list(got) if isinstance(got, tuple) else [got]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
