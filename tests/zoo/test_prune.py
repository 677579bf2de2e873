"""`prune(ratio=0.5)` on every torchvision model, from both front-ends: the pruned graph
verifies, the emitted model runs (a torch module for the fx graph, onnxruntime for the ONNX
graph), the output shape is the model's own, and MACs are strictly lower."""
import numpy as np

from graphc.backends.cost import totals


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
