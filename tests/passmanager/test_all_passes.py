"""Every registered pass, automatically (passes that land later are covered without edits):

- an exact pass run twice on small fx-imported models reports no change the second time,
  leaves a graph that verifies, and keeps outputs allclose (rtol 1e-4, atol 1e-5) to the model;
- a lossy pass given no data either raises a one-line DataError or runs in its data-free mode
  and leaves a graph that verifies and still runs;
- every exact preset is idempotent the same way.

Nothing is skipped silently: SKIP names a pass and why.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import graphc
from graphc.errors import DataError
from graphc.pipeline import parse_pipeline
from graphc.registry import PassContext, all_passes, all_presets, default_contract

RTOL, ATOL = 1e-4, 1e-5
SKIP: dict[str, str] = {}


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.shortcut = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = torch.relu(y + self.shortcut(x))
        return self.fc(x.mean((2, 3)))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.project = nn.Conv2d(12, 6, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        x = nn.functional.hardswish(self.bn0(self.expand(x)))
        x = nn.functional.relu6(self.bn1(self.dw(x)))
        x = self.bn2(self.project(x))
        x = nn.functional.avg_pool2d(x, 2)
        return self.head(self.drop(torch.flatten(x, 1)))


def _randomize_bn(m: nn.Module) -> nn.Module:
    """Non-trivial BN statistics so a wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return m.eval()


MODELS = {"convbn": ConvBN, "residual": Residual, "depthwise": Depthwise}


@pytest.fixture(scope="module")
def models():
    """name -> (module, input, reference output, imported graph); clone the graph before use."""
    out = {}
    with torch.no_grad():
        for name, cls in MODELS.items():
            torch.manual_seed(0)
            m = _randomize_bn(cls())
            x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
            out[name] = (m, x, m(x), graphc.load(m, example_inputs=x))
    return out


def _run(graph, x):
    from graphc.backends.torch import run_graph

    y = run_graph(graph, x)
    return y[0] if isinstance(y, (list, tuple)) else y


def _param(name):
    if name in SKIP:
        return pytest.param(name, marks=pytest.mark.skip(reason=f"{name}: {SKIP[name]}"))
    return name


PASSES = sorted(all_passes())
EXACT = [_param(n) for n in PASSES if default_contract(all_passes()[n])[0]]
LOSSY = [_param(n) for n in PASSES if not default_contract(all_passes()[n])[0]]


def test_every_registered_pass_is_covered():
    assert set(PASSES) == {getattr(p, "values", [p])[0] for p in EXACT + LOSSY}
    assert "fold-bn" in PASSES and "dce" in PASSES


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("name", EXACT)
def test_exact_pass_is_idempotent_and_keeps_outputs(name, model, models):
    m, x, ref, imported = models[model]
    g = imported.clone()
    first = graphc.run_pipeline(g, name)
    g.verify()
    second = graphc.run_pipeline(g, name)
    assert not second.changed, f"{name} changed {model} again: {second.passes[0].stats}"
    g.verify()
    torch.testing.assert_close(_run(g, x), ref, rtol=RTOL, atol=ATOL)
    if first.changed:
        assert first.passes[0].delta["nodes"] is not None


# What a lossy pass needs run before it for there to be something to lose (EDP pairs).
PREPARE = {"svd-truncate": "decompose", "edp-train": "decompose"}


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_pass_changes_the_model_and_keeps_its_interface(name, models):
    m, x, ref, imported = models["convbn"]
    g = imported.clone()
    pipeline = ",".join(p for p in (PREPARE.get(name), name) if p)
    try:
        rep = graphc.run_pipeline(g, pipeline, PassContext(quiet=True))
    except DataError as e:
        assert "\n" not in str(e) and name in str(e) and "data" in str(e)
        return
    last = rep.passes[-1]
    assert last.name == name and last.changed, f"{name} did nothing on a graph prepared for it: {last.stats}"
    assert not last.exact and not rep.exact
    g.verify()
    sig = lambda vs: [(v.name, v.shape, v.dtype) for v in vs]  # noqa: E731
    assert sig(g.inputs) == sig(imported.inputs) and sig(g.outputs) == sig(imported.outputs)
    y = _run(g, x)
    assert y.shape == ref.shape and bool(torch.isfinite(y).all())


def test_contract_is_the_configured_instances():
    from graphc.passes.prune_merge import PruneMerge

    assert PruneMerge().exact and not PruneMerge(threshold=0.1).exact
    assert parse_pipeline("decompose,prune-merge").exact
    assert not parse_pipeline("decompose,prune-merge(threshold=0.1)").exact
    g = _prepared_pairs()
    rep = graphc.run_pipeline(g, "decompose,prune-merge(threshold=0.1)")
    assert [r.exact for r in rep.passes] == [True, False] and not rep.exact


def _prepared_pairs():
    from graphc.ir import Graph, TensorType

    rng = np.random.default_rng(0)
    g = Graph("pairs")
    x = g.add_input("x", TensorType((1, 3, 6, 6), "f32"))
    w = g.add_param(rng.standard_normal((4, 3, 3, 3)).astype("f4"), source="c.weight")
    c = g.add_node("conv2d", [x, w], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}, "c")
    g.set_outputs([c.output])
    return g


@pytest.mark.parametrize("preset", [p for p in sorted(all_presets()) if parse_pipeline(p).exact])
def test_exact_preset_is_idempotent(preset, models):
    for model, (m, x, ref, imported) in models.items():
        g = imported.clone()
        graphc.run_pipeline(g, preset)
        assert not graphc.run_pipeline(g, preset).changed, f"{preset} on {model}"
        torch.testing.assert_close(_run(g, x), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("preset", [p for p in sorted(all_presets()) if not parse_pipeline(p).exact])
def test_lossy_preset_without_data_refuses_or_runs_data_free(preset, models):
    m, x, ref, imported = models["residual"]
    g = imported.clone()
    try:
        graphc.run_pipeline(g, preset, PassContext(quiet=True))
    except DataError as e:
        assert "\n" not in str(e) and "data" in str(e)
        return
    g.verify()
    assert _run(g, x).shape == ref.shape
