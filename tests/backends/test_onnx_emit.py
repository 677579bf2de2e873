"""ONNX back-end: every IR op, on the shared examples of tests/op_cases.py, lowers to a
checker-valid model (full_check) that onnxruntime runs to the op's torch semantics (rtol 1e-4,
atol 1e-5); ops without a lowering and opaque torch nodes go through torch.onnx; save_onnx is
atomic and uses external data for big models."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from graphc.backends.onnx import emit_onnx, save_onnx
from graphc.backends.torch import run_graph
from graphc.ir import Graph, TensorType
from op_cases import CASES, POSITIVE, UNARY

RTOL, ATOL = 1e-4, 1e-5


def _ort(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def check(graph: Graph, seed: int = 0):
    """Emit ``graph`` and compare onnxruntime with the IR's torch semantics."""
    graph.verify()
    before = str(graph)
    model = emit_onnx(graph)
    assert str(graph) == before  # emission never mutates the graph
    g = torch.Generator().manual_seed(seed)
    xs = []
    for v in graph.inputs:
        if v.dtype.startswith("f"):
            xs.append(torch.randn(v.shape, generator=g))
        else:
            xs.append(torch.randint(0, 3, v.shape, generator=g).to(getattr(torch, {"i64": "int64", "i32": "int32",
                                                                                   "bool": "bool"}[v.dtype])))
    ref = run_graph(graph, xs)
    got = _ort(model, {model.graph.input[i].name: x.numpy() for i, x in enumerate(xs)})
    for r, o in zip(ref, got):
        np.testing.assert_allclose(o, r.numpy(), rtol=RTOL, atol=ATOL)
    return model


def one(op, shapes, attrs=None, params=(), dtype="f32"):
    """A graph computing one ``op`` on inputs of ``shapes`` and param arrays ``params``."""
    rng = np.random.default_rng(1)
    g = Graph("one")
    ins = [g.add_input(f"x{i}", TensorType(s[1], s[0]) if isinstance(s[0], str) else TensorType(s, dtype))
           for i, s in enumerate(shapes)]
    ps = []
    for i, p in enumerate(params):
        p = np.asarray(p)
        if p.dtype == np.float64:
            p = p.astype(np.float32)
        ps.append(g.add_param(p, source=f"layer.p{i}", kind="weight" if p.dtype.kind == "f" else "const"))
    n = g.add_node(op, ins + ps, attrs or {}, name="layer")
    g.set_outputs(n.outputs)
    return g


R = np.random.default_rng(0)
W = lambda *s: R.standard_normal(s).astype(np.float32)  # noqa: E731


@pytest.mark.parametrize("op,shapes,attrs,params", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_op_lowers_and_matches_torch(op, shapes, attrs, params):
    check(one(op, shapes, attrs, params))


@pytest.mark.parametrize("op", UNARY)
def test_unary_ops(op):
    check(one(op, [(2, 3, 4)]))


@pytest.mark.parametrize("op", POSITIVE)
def test_unary_ops_on_positive_inputs(op):
    g = Graph("pos")
    x = g.add_input("x", TensorType((2, 3)))
    a = g.add_node("abs", [x], name="abs").output
    shift = g.add_const(np.asarray(0.5, np.float32), "half")
    p = g.add_node("add", [a, shift], name="shift").output
    g.set_outputs([g.add_node(op, [p], name="f").output])
    check(g)


def test_comparisons_and_mixed_dtypes():
    g = Graph("cmp")
    x = g.add_input("x", TensorType((2, 3)))
    i = g.add_input("i", TensorType((2, 3), "i64"))
    lt = g.add_node("lt", [x, i], name="lt").output
    ge = g.add_node("ge", [x, g.add_const(np.asarray(0.0, np.float32), "zero")], name="ge").output
    both = g.add_node("and", [lt, ge], name="both").output
    s = g.add_node("add", [x, i], name="mixed").output  # f32 + i64 -> f32
    m = g.add_node("mod", [i, g.add_const(np.asarray(2, np.int64), "two")], name="mod").output
    w = g.add_node("where", [both, x, s], name="where").output
    g.set_outputs([both, s, m, w])
    check(g)


def test_opaque_torch_node_is_exported_through_torch():
    g = Graph("opq")
    x = g.add_input("x", TensorType((1, 3, 4, 4)))
    n = g.add_node("opaque", [x], {"source": "torch", "target": "torch.nn.functional.pixel_unshuffle",
                                   "args": [{"$input": 0}, 2], "kwargs": {}, "out_types": ["f32[1,12,2,2]"]},
                   name="unshuffle")
    y = g.add_node("relu", [n.output], name="relu").output
    g.set_outputs([y])
    model = check(g)
    assert any(node.name.startswith("unshuffle/") for node in model.graph.node)
    assert model.graph.output[0].name == y.name


def test_multi_output_and_repeated_outputs():
    g = Graph("multi")
    x = g.add_input("x", TensorType((2, 6)))
    a, b = g.add_node("split", [x], {"dim": 1, "sizes": [2, 4]}, name="split").outputs
    g.set_outputs([b, a, b, x])
    model = check(g)
    assert len(model.graph.output) == 4


def test_initializers_keep_source_names():
    g = one("conv2d", [(1, 2, 5, 5)], {"padding": [1, 1]}, [W(3, 2, 3, 3), W(3)])
    model = emit_onnx(g)
    assert {t.name for t in model.graph.initializer} == {"layer.p0", "layer.p1"}
    assert model.graph.node[0].name == "layer"


def test_emit_rejects_old_opsets():
    from graphc.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="opset"):
        emit_onnx(one("relu", [(2, 2)]), opset=9)


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_target_opsets(opset):
    g = Graph("ops")
    x = g.add_input("x", TensorType((1, 4, 6, 6)))
    y = g.add_node("mean", [x], {"dims": [2, 3], "keepdim": True}, name="mean").output
    z = g.add_node("squeeze", [y], {"dims": [2, 3]}, name="squeeze").output
    s0, s1 = g.add_node("split", [z], {"dim": 1, "sizes": [1, 3]}, name="split").outputs
    w = g.add_node("gelu", [s1], {"approximate": "none"}, name="gelu").output
    g.set_outputs([s0, w])
    model = emit_onnx(g, opset=opset)
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    ref = run_graph(g, [torch.ones(1, 4, 6, 6) * torch.arange(4.0).view(1, 4, 1, 1)])
    got = _ort(model, {"x": (torch.ones(1, 4, 6, 6) * torch.arange(4.0).view(1, 4, 1, 1)).numpy()})
    for r, o in zip(ref, got):
        np.testing.assert_allclose(o, r.numpy(), rtol=RTOL, atol=ATOL)


def test_save_onnx_is_atomic_and_loads(tmp_path):
    g = one("linear", [(2, 4)], {}, [W(3, 4), W(3)])
    path = save_onnx(g, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    onnx.checker.check_model(str(path), full_check=True)
    from graphc.frontends.onnx import load_onnx

    assert str(load_onnx(path)).replace("@one", "@x") == str(g).replace("@one", "@x")


def test_save_onnx_leaves_nothing_when_emission_fails(tmp_path):
    from graphc.errors import GraphcError

    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 2)))
    n = g.add_node("opaque", [x], {"source": "torch", "target": "graphc.no_such_function", "args": [{"$input": 0}],
                                   "kwargs": {}, "out_types": ["f32[2,2]"]}, name="bad")
    g.set_outputs([n.output])
    with pytest.raises(GraphcError):
        save_onnx(g, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_external_data_beyond_the_protobuf_limit(tmp_path, monkeypatch):
    """Models over 2 GB keep weights in a .data file; the limit is lowered to test it cheaply."""
    import graphc.backends.onnx as backend
    from graphc.frontends.onnx import load_onnx

    monkeypatch.setattr(backend, "_PROTO_LIMIT", 1024)
    g = one("linear", [(2, 64)], {}, [W(32, 64), W(32)])
    model = emit_onnx(g)  # checked from a temporary file with external data
    path = save_onnx(model, tmp_path / "big.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx").stat().st_size < 32 * 64 * 4
    back = load_onnx(path)
    np.testing.assert_array_equal(back.params["layer.p0"].data, g.params["layer.p0"].data)


def test_external_data_through_save_and_the_cli(tmp_path, monkeypatch):
    """graphc.save, `graphc convert` and `graphc optimize` of a model over the limit (lowered
    here) write OUT.onnx + OUT.onnx.data and nothing else; each loads back and runs in
    onnxruntime."""
    import onnxruntime as ort

    import graphc
    import graphc.backends.onnx as backend
    from graphc.cli.main import main

    monkeypatch.setattr(backend, "_PROTO_LIMIT", 1024)
    g = one("linear", [(2, 64)], {}, [W(32, 64), W(32)])
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    ref = run_graph(g, [torch.from_numpy(x)])[0].numpy()
    src = graphc.save(g, tmp_path / "src.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.onnx", "src.onnx.data"]
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    assert main(["convert", str(src), "-o", str(out)]) == 0
    assert main(["optimize", str(src), "-o", str(out.parent / "o.onnx"), "--quiet"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data", "o.onnx", "o.onnx.data"]
    for path in (src, out, out.parent / "o.onnx"):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], ref, rtol=RTOL, atol=ATOL)
        back = graphc.load(str(path))
        np.testing.assert_array_equal(back.params["layer.p0"].data, g.params["layer.p0"].data)


@pytest.mark.parametrize("n_affine", [0, 1, 2])
def test_group_norm_has_its_own_lowering(n_affine):
    g = one("group_norm", [(2, 6, 3, 3)], {"num_groups": 3, "eps": 1e-3}, [W(6), W(6)][:n_affine])
    model = check(g)
    assert {n.op_type for n in model.graph.node} <= {"Reshape", "InstanceNormalization", "Mul", "Add"}
