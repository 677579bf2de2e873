"""`fuse` on every torchvision model, from both front-ends: outputs stay within rtol 1e-4 /
atol 1e-5 of the model's own output, and the node count never grows.

The atol is in units of the output's scale (max |y| when above 1): with random weights and
non-trivial BN statistics a deep model's logits reach ~100, and the float32 model itself is
then ~5e-5 away from its float64 value (resnet50), so any exact rewrite that reorders float
sums (a BN fold does) moves near-zero logits by that much.
"""
import numpy as np
import torch

RTOL, ATOL = 1e-4, 1e-5
LARGEST = {"err": 0.0, "where": "", "scaled": 0.0, "scaled_where": ""}


def _run(graph, x):
    """Run a graph: with the torch back-end, or in onnxruntime when it holds ONNX-only ops."""
    if any(n.op == "opaque" and n.attrs.get("source") == "onnx" for n in graph.nodes):
        import onnxruntime as ort

        from graphc.backends.onnx import emit_onnx

        model = emit_onnx(graph)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return torch.from_numpy(np.asarray(sess.run(None, feed)[0]))
    from graphc.backends.torch import run_graph

    out = run_graph(graph, x)
    return out[0] if isinstance(out, (list, tuple)) else out


def _check(zoo, graph, frontend):
    import graphc

    nodes_before = len(graph.nodes)
    report = graphc.run_pipeline(graph, "fuse")
    graph.verify()
    assert len(graph.nodes) <= nodes_before
    y = _run(graph, zoo.x)
    scale = max(1.0, float(zoo.y.abs().max()))
    err = float((y - zoo.y).abs().max())
    if err > LARGEST["err"]:
        LARGEST.update(err=err, where=f"{zoo.name} ({frontend})")
    if err / scale > LARGEST["scaled"]:
        LARGEST.update(scaled=err / scale, scaled_where=f"{zoo.name} ({frontend})")
    print(f"\n{zoo.name} {frontend}: nodes {nodes_before} -> {len(graph.nodes)}, max err {err:.3g} "
          f"(output scale {scale:.3g}); largest so far {LARGEST['err']:.3g} in {LARGEST['where']}, "
          f"relative to scale {LARGEST['scaled']:.3g} in {LARGEST['scaled_where']}")
    torch.testing.assert_close(y, zoo.y, rtol=RTOL, atol=ATOL * scale)
    assert not graphc.run_pipeline(graph, "fuse").changed
    return report


def test_fuse_fx(zoo):
    _check(zoo, zoo.fx_graph(), "fx")


def test_fuse_onnx(zoo):
    _check(zoo, zoo.onnx_graph(), "onnx")
