"""`prune(ratio=0.5)` on every torchvision model, from both front-ends: the pruned graph
verifies, the emitted model runs (a torch module for the fx graph, onnxruntime for the ONNX
graph), the output shape is the model's own, and MACs are strictly lower; and removing channels
made dead beforehand leaves the outputs unchanged (the bookkeeping is exact)."""
import numpy as np
import pytest

from graphc.backends.cost import totals
from zoo import kill_units


def _prune(graph):
    import graphc

    macs = totals(graph)["macs"]
    report = graphc.run_pipeline(graph, "prune(ratio=0.5)")
    assert report.changed
    graph.verify()
    after = totals(graph)["macs"]
    assert after < macs
    return macs, after


def test_prune_fx(zoo):
    import graphc

    g = zoo.fx_graph()
    before, after = _prune(g)
    y = graphc.emit_torch(g)(zoo.x)
    y = y[0] if isinstance(y, (tuple, list)) else y
    assert tuple(y.shape) == tuple(zoo.y.shape)
    assert np.isfinite(y.detach().numpy()).all()
    print(f"\n{zoo.name} fx: MACs {before:.4g} -> {after:.4g} ({after / before:.2f}x)")


def test_prune_onnx(zoo):
    import onnxruntime as ort

    from graphc.backends.onnx import emit_onnx

    g = zoo.onnx_graph()
    before, after = _prune(g)
    model = emit_onnx(g)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: zoo.x.numpy()})[0]
    assert tuple(y.shape) == tuple(zoo.y.shape)
    assert np.isfinite(y).all()
    print(f"\n{zoo.name} onnx: MACs {before:.4g} -> {after:.4g} ({after / before:.2f}x)")


# A GroupNorm/LayerNorm's statistics span the channels of one group, so removing a channel, dead
# or not, changes them: the dead-channel check is exact only on graphs without them.
SPANNING_NORMS = {"layer_norm", "group_norm", "instance_norm"}


@pytest.mark.parametrize("frontend", ["fx", "onnx"])
def test_pruning_dead_channels_is_exact(zoo, frontend):
    """Zero every param slice of every other unit of each prunable group (BN variance 1), then
    remove exactly those units: the outputs must not move. Any misaligned slice (a concat
    offset, a split, a grouped conv, a flattened block) removes live weights and shows."""
    import graphc
    import torch

    from graphc.passes.channel_groups import channel_groups, prune_groups

    g = zoo.fx_graph() if frontend == "fx" else zoo.onnx_graph()
    if any(n.op in SPANNING_NORMS for n in g.nodes):
        pytest.skip("channel-spanning normalisation: removing a dead channel changes its statistics")
    plan = []
    for gr in channel_groups(g):
        if not gr.prunable:
            continue
        dead = np.arange(gr.size)[1::2]
        kill_units(gr, dead)
        plan.append((gr, np.setdiff1d(np.arange(gr.size), dead)))
    assert plan
    with torch.no_grad():
        y_dead = graphc.emit_torch(g)(zoo.x)
        assert prune_groups(g, plan) > 0
        g.verify()
        y = graphc.emit_torch(g)(zoo.x)
    # Float sums over fewer channels round differently (the zoo's randomised BN makes some
    # outputs huge); a misaligned slice moves the outputs by about their own size.
    assert y.shape == y_dead.shape
    err = float(torch.linalg.vector_norm(y - y_dead) / torch.linalg.vector_norm(y_dead).clamp_min(1e-12))
    assert err < 1e-5, f"pruning dead channels moved the outputs by {err:.3g} (relative)"
