"""resconv-wrap is exact on torchvision models (plain convs, residual blocks, depthwise and
inverted residuals), is idempotent, and ``fuse`` folds every block back: the graph then holds
no ResConv structure and still computes the source's function."""
import pytest
import torch

from zoo import case, model_names

from graphc.pipeline import run_pipeline

MODELS = ["resnet18", "mobilenet_v2"]


@pytest.mark.zoo
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(n))
                                  for n in MODELS if n in model_names()])
def test_resconv_wrap_is_exact_and_fuses_back(name):
    from graphc.backends.torch import run_graph

    zoo = case(name)
    g = zoo.fx_graph()
    ops = {n.op for n in g.nodes}
    counts = {op: len(g.find(op)) for op in ("mul", "add")}
    rep = run_pipeline(g, "resconv-wrap")
    stats = rep.passes[0].stats
    assert rep.changed and stats["layers"] + stats["residual"] > 0
    assert not run_pipeline(g, "resconv-wrap").changed
    scale = max(1.0, float(zoo.y.abs().max()))

    def same():
        out = run_graph(g, zoo.x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        torch.testing.assert_close(out, zoo.y, rtol=1e-4, atol=1e-5 * scale * 10)

    same()
    run_pipeline(g, "fuse")
    assert not [n.name for n in g.nodes if n.meta.get("resconv")]
    assert {n.op for n in g.nodes} <= ops
    assert all(len(g.find(op)) <= k for op, k in counts.items())
    same()
