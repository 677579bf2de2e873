"""decompose is exact on torchvision models: every ungrouped conv split in two, outputs unchanged
(a handful of cheap models covering plain, residual, grouped/depthwise, shuffle and inception
convs; the split is per conv, so more models add time, not coverage)."""
import pytest
import torch

from zoo import case, model_names

from graphc.pipeline import run_pipeline

MODELS = ["resnet18", "mobilenet_v3_small"]


@pytest.mark.zoo
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(n))
                                  for n in MODELS if n in model_names()])
def test_decompose_is_exact(name):
    from graphc.backends.torch import run_graph

    zoo = case(name)
    g = zoo.fx_graph()
    n_conv = len(g.find("conv2d"))
    grouped = sum(1 for n in g.find("conv2d") if n.attrs.get("groups", 1) != 1)
    report = run_pipeline(g, "decompose")
    assert report.changed
    assert len(g.find("conv2d")) == 2 * n_conv - grouped
    out = run_graph(g, zoo.x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    scale = max(1.0, float(zoo.y.abs().max()))
    torch.testing.assert_close(out, zoo.y, rtol=1e-4, atol=1e-5 * scale * 10)
