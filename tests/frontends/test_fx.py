"""torch.fx front-end: layers, functions and methods map onto IR ops; constants fold; unknown
calls stay opaque; failures name the module; names are deterministic."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import graphc
from graphc.backends.torch import run_graph
from graphc.errors import InputError, UnsupportedError
from graphc.ir import parse_graph, print_graph

RTOL, ATOL = 1e-4, 1e-5


def roundtrip(model, x):
    """Import, verify, and check both the interpreter and the emitted module against the model."""
    model.eval()
    g = graphc.load(model, example_inputs=x)
    g.verify()
    with torch.no_grad():
        ref = model(*x) if isinstance(x, tuple) else model(x)
        inputs = list(x) if isinstance(x, tuple) else [x]
        got = run_graph(g, inputs)
        torch.testing.assert_close(tuple(got) if isinstance(ref, tuple) else got[0], ref, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(graphc.emit_torch(g)(*inputs), ref, rtol=RTOL, atol=ATOL)
    text = print_graph(g)
    assert print_graph(parse_graph(text)) == text
    return g


def ops(g):
    return [n.op for n in g.nodes]


class Functional(nn.Module):
    """Functions and tensor methods a hand-written model uses, with shape arithmetic."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
        self.register_buffer("shift", torch.randn(8))

    def forward(self, x):
        y = F.relu(self.conv(x)) * self.scale + self.shift.view(1, -1, 1, 1)
        a, b = y.chunk(2, dim=1)
        y = torch.cat([b, a], 1).permute(0, 2, 3, 1).contiguous()
        y = y.view(y.size(0), -1, y.shape[-1]).transpose(1, 2)
        y = 1.0 - y.softmax(dim=-1)
        y = y[:, :, None, ::2] + torch.zeros(y.shape[0], 1, 1, 1)
        return y.mean(dim=(2, 3)), y[..., 0].flatten(1)


def test_functions_and_methods_map_to_ir_ops():
    g = roundtrip(Functional(), torch.randn(2, 3, 6, 6))
    assert "opaque" not in ops(g)
    for op in ("conv2d", "relu", "mul", "split", "concat", "permute", "reshape", "softmax", "sub", "slice",
               "unsqueeze", "mean", "select", "flatten"):
        assert op in ops(g), op
    # shape arithmetic became attrs; torch.zeros and the view of the buffer became consts
    reshape = g.find("reshape")[0]
    assert reshape.attrs["shape"] == [2, 36, 8] or reshape.attrs["shape"][0] == 2
    assert len(g.outputs) == 2


def test_params_keep_state_dict_names_and_kinds():
    m = Functional()
    g = graphc.load(m, example_inputs=torch.randn(1, 3, 6, 6))
    by_source = {p.source: p for p in g.params.values()}
    assert by_source["conv.weight"].kind == "weight"
    assert by_source["scale"].kind == "weight"
    assert g.params["conv.weight"].source == "conv.weight"
    derived = [p for p in g.params.values() if p.kind == "const"]
    assert derived, "the reshaped buffer and torch.zeros are folded constants"
    assert g.num_params() == sum(p.numel() for p in m.parameters())


def test_layer_nodes_are_named_after_module_paths():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    g = roundtrip(m, torch.randn(1, 3, 6, 6))
    assert [n.name for n in g.nodes] == ["0", "1", "2", "3", "4"]
    assert ops(g) == ["conv2d", "batch_norm", "relu", "flatten", "linear"]


def test_dump_is_deterministic():
    torch.manual_seed(0)
    m = Functional()
    x = torch.randn(1, 3, 6, 6)
    assert print_graph(graphc.load(m, example_inputs=x)) == print_graph(graphc.load(m, example_inputs=x))


class LayerNorm2d(nn.LayerNorm):
    """A torch.nn subclass with its own forward (as torchvision's ConvNeXt has): traced through."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_subclass_of_a_layer_is_traced_through():
    g = roundtrip(nn.Sequential(nn.Conv2d(3, 8, 1), LayerNorm2d(8)), torch.randn(1, 3, 4, 4))
    assert ops(g) == ["conv2d", "permute", "layer_norm", "permute"]


class Unknown(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1) + torch.flip(x, [2]).sort(dim=-1).values


def test_unknown_calls_become_opaque_nodes_that_still_run():
    g = roundtrip(Unknown(), torch.randn(1, 3, 4, 5))
    targets = {n.attrs["target"] for n in g.find("opaque")}
    assert "torch.cumsum" in targets
    node = next(n for n in g.find("opaque") if n.attrs["target"] == "torch.cumsum")
    assert node.attrs["source"] == "torch" and node.attrs["kwargs"] == {"dim": 1}
    assert node.attrs["out_types"] == ["f32[1,3,4,5]"]


class ShapeBranch(nn.Module):
    """Python control flow on a shape: symbolic tracing fails, torch.export succeeds."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if x.shape[-1] > 4:
            x = self.conv(x)
        return self.fc(torch.relu(self.bn(x)).mean((2, 3)) * 2)


def test_torch_export_fallback_maps_aten_ops():
    g = roundtrip(ShapeBranch(), torch.randn(1, 3, 8, 8))
    assert "opaque" not in ops(g)
    assert {"conv2d", "batch_norm", "relu", "mean", "linear"} <= set(ops(g))
    assert g.find("conv2d")[0].name == "conv"


class DataBranch(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.gate = DataBranch()

    def forward(self, x):
        return self.gate(self.stem(x))


def test_untraceable_model_names_the_module():
    with pytest.raises(UnsupportedError, match=r"module 'gate' \(DataBranch\)"):
        graphc.load(Outer(), example_inputs=torch.randn(1, 3, 4, 4))


def test_input_shape_instead_of_example():
    g = graphc.load(nn.Conv2d(3, 4, 3), input_shape=(1, 3, 9, 9))
    assert g.inputs[0].shape == (1, 3, 9, 9) and g.outputs[0].shape == (1, 4, 7, 7)
    with pytest.raises(InputError):
        graphc.load(nn.Conv2d(3, 4, 3))


def test_model_that_fails_on_the_input_is_an_input_error():
    with pytest.raises(InputError, match="failed on inputs of shape"):
        graphc.load(nn.Conv2d(3, 4, 3), example_inputs=torch.randn(1, 5, 8, 8))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, q, kv):
        out, _ = self.mha(q, kv, kv, need_weights=False)
        return F.gelu(out) + F.scaled_dot_product_attention(q, kv, kv)


def test_attention_and_several_inputs():
    g = roundtrip(TwoInputs(), (torch.randn(1, 5, 16), torch.randn(1, 7, 16)))
    assert len(g.inputs) == 2
    assert {"multi_head_attention", "scaled_dot_product_attention", "gelu"} <= set(ops(g))


@pytest.mark.parametrize("layer", [
    nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False),
    nn.Conv2d(4, 4, 3, padding="same", padding_mode="reflect"),
    nn.Conv2d(4, 4, 4, padding="same"),
    nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
    nn.Sequential(nn.Flatten(2), nn.Conv1d(4, 2, 3)),
    nn.BatchNorm2d(4, affine=False),
    nn.GroupNorm(2, 4), nn.InstanceNorm2d(4), nn.LocalResponseNorm(3),
    nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.AvgPool2d(2, count_include_pad=False), nn.AdaptiveAvgPool2d((2, 3)),
    nn.AdaptiveMaxPool2d(1), nn.Hardswish(), nn.SiLU(), nn.GELU("tanh"), nn.LeakyReLU(0.2), nn.ReLU6(), nn.Mish(),
    nn.Hardsigmoid(), nn.ELU(), nn.Softsign(), nn.Softmax(1), nn.Dropout(0.3), nn.Identity(), nn.PixelShuffle(2), nn.ZeroPad2d((1, 2, 0, 1)),
])
def test_layer(layer):
    g = roundtrip(layer, torch.randn(1, 4, 8, 8))
    assert "opaque" not in ops(g)


def test_import_traces_in_eval_mode_and_gives_each_module_its_mode_back():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.BatchNorm2d(4))
    model.train()
    model[1].eval()  # a frozen BN inside a training model
    before = [m.training for m in model.modules()]
    x = torch.randn(1, 3, 6, 6)
    g = graphc.load(model, example_inputs=x)
    assert [m.training for m in model.modules()] == before == [True, True, False, True, True]
    model.eval()  # the graph computes what the model computes in eval mode
    with torch.no_grad():
        torch.testing.assert_close(run_graph(g, [x])[0], model(x), rtol=RTOL, atol=ATOL)
    graphc.load(model, example_inputs=x)
    assert not any(m.training for m in model.modules())
