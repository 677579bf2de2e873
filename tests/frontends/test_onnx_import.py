"""ONNX front-end: opset-9 era and hand-built graphs import, fold their constant subgraphs,
keep unknown ops opaque, and come back out of the ONNX back-end computing the same outputs as
onnxruntime on the original model (rtol 1e-4, atol 1e-5)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

RTOL, ATOL = 1e-4, 1e-5
def ort_run(model, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def roundtrip(model, feeds: dict, **load_kw):
    """Import ``model``, emit it, and check both the emitted model (onnxruntime) and the IR
    (torch interpreter, when it has no opaque ONNX node) against onnxruntime on the original."""
    from graphc.backends.onnx import emit_onnx
    from graphc.frontends.onnx import load_onnx

    ref = ort_run(model, feeds)
    graph = load_onnx(model, **load_kw)
    graph.verify()
    emitted = emit_onnx(graph)
    # Inputs in graph order (the IR cleans names such as tf2onnx's ``input:0``).
    inits = {t.name for t in model.graph.initializer}
    arrays = [feeds[i.name] for i in model.graph.input if i.name not in inits]
    got = ort_run(emitted, dict(zip([i.name for i in emitted.graph.input], arrays)))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL)
    if not any(n.op == "opaque" for n in graph.nodes):
        import torch

        from graphc.backends.torch import run_graph

        outs = run_graph(graph, [torch.from_numpy(a) for a in arrays])
        for g, r in zip(outs, ref):
            np.testing.assert_allclose(g.numpy(), r, rtol=RTOL, atol=ATOL)
    return graph, emitted


def make(nodes, inputs, outputs, inits=(), opset=13, ir_version=None, name="g", input_inits=False):
    """A model from helper parts. ``input_inits`` also lists every initializer as a graph input,
    as exporters of the opset-9 era did."""
    inits = list(inits)
    graph_inputs = list(inputs)
    if input_inits:
        graph_inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    g = helper.make_graph(nodes, name, graph_inputs, outputs, initializer=inits)
    kw = {"opset_imports": [helper.make_opsetid("", opset)]}
    if ir_version is not None:
        kw["ir_version"] = ir_version
    else:
        kw["ir_version"] = max(3, helper.find_min_ir_version_for(kw["opset_imports"]))
    model = helper.make_model(g, **kw)
    onnx.checker.check_model(model)
    return model


def tensor(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- opset-9 era graphs ----------------------------------------------------------------------
def _old_convnet(rng, opset=9):
    """Conv+BN+Relu+MaxPool+Flatten+Gemm(transB) with weights listed as graph inputs too."""
    inits = [tensor("conv1.weight", rand(rng, 4, 3, 3, 3)), tensor("conv1.bias", rand(rng, 4)),
             tensor("bn1.weight", rng.uniform(0.5, 1.5, 4).astype(np.float32)), tensor("bn1.bias", rand(rng, 4)),
             tensor("bn1.running_mean", rand(rng, 4) * 0.1),
             tensor("bn1.running_var", rng.uniform(0.5, 1.5, 4).astype(np.float32)),
             tensor("fc.weight", rand(rng, 5, 4 * 4 * 4)), tensor("fc.bias", rand(rng, 5))]
    nodes = [helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c"], name="conv1",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                     "bn1.running_var"], ["b"], name="bn1", epsilon=1e-3),
             helper.make_node("Relu", ["b"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1)]
    return make(nodes, [vi("x", ["N", 3, 8, 8])], [vi("y", ["N", 5])], inits, opset=opset, ir_version=3,
                input_inits=True)


def test_opset9_weights_as_inputs_become_params(rng):
    model = _old_convnet(rng)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 3, 8, 8)})
    assert [v.name for v in graph.inputs] == ["x"]
    assert graph.inputs[0].shape == (1, 3, 8, 8)  # the symbolic batch became 1
    assert [n.op for n in graph.nodes] == ["conv2d", "batch_norm", "relu", "max_pool2d", "flatten", "linear"]
    assert graph.params["conv1.weight"].kind == "weight"
    assert graph.params["bn1.running_var"].kind == "buffer"
    assert graph.node("fc").inputs[1].param.source == "fc.weight"


@pytest.mark.parametrize("opset", [7, 8, 10, 11, 12])
def test_older_and_newer_opsets_import(rng, opset):
    roundtrip(_old_convnet(rng, opset), {"x": rand(rng, 1, 3, 8, 8)})


def test_input_shapes_override_symbolic_dims(rng):
    graph, _ = roundtrip(_old_convnet(rng), {"x": rand(rng, 2, 3, 8, 8)}, input_shapes={"x": [2, 3, 8, 8]})
    assert graph.inputs[0].shape == (2, 3, 8, 8)
    assert graph.outputs[0].shape == (2, 5)


def test_constant_subgraph_weights_are_folded(rng):
    """Weights built by ConstantOfShape / Unsqueeze / Reshape / Concat of constants."""
    w_flat = rand(rng, 4 * 3 * 1 * 1)
    nodes = [
        helper.make_node("Constant", [], ["wshape"], value=tensor("ws", np.array([4, 3, 1, 1], np.int64))),
        helper.make_node("Reshape", ["w_flat", "wshape"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Constant", [], ["cs"], value=tensor("cs_", np.array([4], np.int64))),
        helper.make_node("ConstantOfShape", ["cs"], ["ones"], value=tensor("v", np.array([0.5], np.float32))),
        helper.make_node("Unsqueeze", ["ones", "axes"], ["scale"]),
        helper.make_node("Mul", ["c", "scale"], ["y"], name="scale"),
    ]
    inits = [tensor("w_flat", w_flat), tensor("axes", np.array([1, 2], np.int64))]
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5])], inits, opset=13)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 3, 5, 5)})
    assert [n.op for n in graph.nodes] == ["conv2d", "mul"]
    assert graph.node("conv").inputs[1].shape == (4, 3, 1, 1)
    assert graph.node("scale").inputs[1].shape == (4, 1, 1)


def test_opset9_unsqueeze_attr_and_reshape_from_shape_tensor(rng):
    """Reshape whose target is computed from Shape(x): Shape -> Gather -> Unsqueeze -> Concat."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"], name="flat"),
    ]
    inits = [tensor("zero", np.array(0, np.int64)), tensor("minus1", np.array([-1], np.int64))]
    model = make(nodes, [vi("x", ["batch", 2, 3, 4])], [vi("y", ["batch", 24])], inits, opset=9, ir_version=4)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 2, 3, 4)})
    assert [n.op for n in graph.nodes] == ["relu", "reshape"]
    assert graph.node("flat").attrs["shape"] == [1, -1]


@pytest.mark.parametrize("alpha,beta,trans_b,const_b", [(1.0, 1.0, 0, True), (0.5, 2.0, 1, True),
                                                        (1.0, 1.0, 1, False), (0.25, 3.0, 0, False)])
def test_gemm_forms(rng, alpha, beta, trans_b, const_b):
    b = rand(rng, 5, 6) if trans_b else rand(rng, 6, 5)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], name="fc", alpha=alpha, beta=beta, transB=trans_b)
    inputs = [vi("a", [2, 6])]
    feeds = {"a": rand(rng, 2, 6)}
    inits = [tensor("c", rand(rng, 5))]
    if const_b:
        inits.append(tensor("b", b))
    else:
        inputs.append(vi("b", list(b.shape)))
        feeds["b"] = b
    graph, _ = roundtrip(make([node], inputs, [vi("y", [2, 5])], inits, opset=11), feeds)
    if const_b:
        assert [n.op for n in graph.nodes] == ["linear"]
        assert graph.nodes[0].inputs[1].shape == (5, 6)


def test_sum_mean_max_and_variadic_ops(rng):
    nodes = [helper.make_node("Sum", ["a", "b", "c"], ["s"], name="sum"),
             helper.make_node("Mean", ["a", "b"], ["m"], name="mean"),
             helper.make_node("Max", ["s", "m", "c"], ["y"], name="max")]
    shapes = {"a": [1, 3, 4], "b": [1, 1, 4], "c": [3, 1]}
    model = make(nodes, [vi(k, v) for k, v in shapes.items()], [vi("y", [1, 3, 4])], opset=9, ir_version=4)
    graph, _ = roundtrip(model, {k: rand(rng, *v) for k, v in shapes.items()})
    assert graph.node("sum").op == "sum_n"


def test_lrn_and_dropout(rng):
    nodes = [helper.make_node("LRN", ["x"], ["l"], name="norm1", size=3, alpha=2e-4, beta=0.75, bias=2.0),
             helper.make_node("Dropout", ["l"], ["y"], name="drop", ratio=0.3)]
    model = make(nodes, [vi("x", [1, 6, 4, 4])], [vi("y", [1, 6, 4, 4])], opset=9, ir_version=4)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 6, 4, 4)})
    assert [n.op for n in graph.nodes] == ["lrn", "dropout"]
    assert graph.node("drop").attrs["p"] == pytest.approx(0.3)


def test_dropout_opset12_ratio_input(rng):
    nodes = [helper.make_node("Dropout", ["x", "ratio"], ["y"], name="drop")]
    model = make(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [tensor("ratio", np.array(0.2, np.float32))], opset=12)
    graph, _ = roundtrip(model, {"x": rand(rng, 2, 3)})
    assert graph.node("drop").attrs["p"] == pytest.approx(0.2)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 2), (11, -1), (13, 1), (9, 0)])
def test_softmax_axis_semantics(rng, op, opset, axis):
    """Before opset 13 Softmax coerces its input to 2-d at ``axis``: not a softmax over one axis."""
    node = helper.make_node(op, ["x"], ["y"], name="sm", axis=axis)
    model = make([node], [vi("x", [2, 3, 4])], [vi("y", [2, 3, 4])], opset=opset, ir_version=6)
    roundtrip(model, {"x": rand(rng, 2, 3, 4)})


def test_asymmetric_and_auto_pads_become_a_pad_node(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[0, 1, 1, 0]),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="SAME_UPPER"),
             helper.make_node("AveragePool", ["p"], ["y"], name="avg", kernel_shape=[2, 2], auto_pad="SAME_LOWER",
                              count_include_pad=1)]
    model = make(nodes, [vi("x", [1, 2, 7, 7])], [vi("y", [1, 3, 4, 4])], [tensor("w", rand(rng, 3, 2, 2, 2))], opset=13)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 2, 7, 7)})
    assert [n.op for n in graph.nodes] == ["pad", "conv2d", "max_pool2d", "pad", "avg_pool2d"]


def test_shape_ops_map_to_ir(rng):
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="t", perm=[0, 2, 1, 3]),
        helper.make_node("Split", ["t", "split"], ["s0", "s1"], name="split", axis=1),
        helper.make_node("Slice", ["s1", "st", "en", "ax", "sp"], ["sl"], name="slice"),
        helper.make_node("Gather", ["sl", "idx"], ["g"], name="gather", axis=3),
        helper.make_node("Gather", ["g", "zero"], ["sel"], name="select", axis=1),
        helper.make_node("Squeeze", ["s0", "one"], ["sq"], name="squeeze"),
        helper.make_node("ReduceMean", ["sq"], ["rm"], name="mean", axes=[-1], keepdims=1),
        helper.make_node("Concat", ["rm", "sel"], ["cat"], name="cat", axis=-1),
        helper.make_node("Pad", ["cat", "pads", "pv"], ["y"], name="pad", mode="constant"),
    ]
    inits = [tensor("split", np.array([1, 4], np.int64)), tensor("st", np.array([0, 1], np.int64)),
             tensor("en", np.array([100, -1], np.int64)), tensor("ax", np.array([1, 3], np.int64)),
             tensor("sp", np.array([2, 1], np.int64)), tensor("idx", np.array([2, 0, -1], np.int64)),
             tensor("zero", np.array(0, np.int64)), tensor("one", np.array([1], np.int64)),
             tensor("pads", np.array([0, 1, 2, 0, 0, 1], np.int64)), tensor("pv", np.array(1.5, np.float32))]
    model = make(nodes, [vi("x", [1, 3, 5, 6])], [vi("y", [1, 4, 7])], inits, opset=13)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 3, 5, 6)})
    ops = {n.name: n.op for n in graph.nodes}
    assert ops["t"] == "permute" and ops["split"] == "split" and ops["select"] == "select"
    assert ops["gather"] == "index_select" and ops["squeeze"] == "squeeze" and ops["pad"] == "pad"
    assert not graph.find("opaque")


def test_activations_and_clip_forms(rng):
    nodes = [helper.make_node("Clip", ["x"], ["a"], name="relu6", min=0.0, max=6.0),
             helper.make_node("HardSigmoid", ["a"], ["b"], name="hsig", alpha=0.3, beta=0.4),
             helper.make_node("LeakyRelu", ["b"], ["c"], name="lrelu", alpha=0.2),
             helper.make_node("PRelu", ["c", "slope"], ["d"], name="prelu"),
             helper.make_node("Elu", ["d"], ["e"], name="elu", alpha=0.7),
             helper.make_node("Softplus", ["e"], ["f"], name="softplus"),
             helper.make_node("Softsign", ["f"], ["y"], name="softsign")]
    model = make(nodes, [vi("x", [1, 3, 2, 2])], [vi("y", [1, 3, 2, 2])],
                 [tensor("slope", rand(rng, 3, 1, 1))], opset=9, ir_version=4)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 3, 2, 2) * 4})
    assert graph.node("relu6").op == "relu6"
    assert graph.node("softsign").op == "softsign"
    assert not graph.find("opaque")


# -- opaque nodes ---------------------------------------------------------------------------
def test_unknown_op_is_kept_opaque_and_round_trips(rng):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Hardmax", ["r"], ["h"], name="hardmax", axis=-1),
             helper.make_node("Resize", ["h", "", "scales"], ["y"], name="resize", mode="nearest")]
    model = make(nodes, [vi("x", [1, 2, 3, 4])], [vi("y", [1, 2, 6, 8])],
                 [tensor("scales", np.array([1, 1, 2, 2], np.float32))], opset=13)
    graph, emitted = roundtrip(model, {"x": rand(rng, 1, 2, 3, 4)})
    hard, resize = graph.node("hardmax"), graph.node("resize")
    assert hard.op == "opaque" and hard.attrs["op_type"] == "Hardmax" and hard.attrs["attributes"] == {"axis": -1}
    assert resize.attrs["input_slots"] == [0, 2]
    assert resize.outputs[0].shape == (1, 2, 6, 8)
    assert [n.op_type for n in emitted.graph.node] == ["Relu", "Hardmax", "Resize"]


def test_custom_op_without_shape_inference_is_one_clear_error():
    from graphc.errors import UnsupportedError
    from graphc.frontends.onnx import load_onnx

    node = helper.make_node("Frobnicate", ["x"], ["y"], name="mystery", domain="com.example")
    g = helper.make_graph([node], "g", [vi("x", [1, 3])], [vi("y", None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedError, match="mystery") as err:
        load_onnx(model)
    assert "\n" not in str(err.value)


# -- names ------------------------------------------------------------------------------------
def test_exporter_scopes_become_module_paths():
    from graphc.frontends.onnx import node_names

    names = ["/layer1/layer1.0/conv1/Conv", "/features/features.1/block/block.0/block.0.0/Conv",
             "/layer1/layer1.0/Add", "/layer1/layer1.0/relu/Relu", "/Flatten", "fc"]
    nodes = [helper.make_node(n.rsplit("/", 1)[-1].split("_")[0] or "Gemm", [], [], name=n) for n in names]
    assert node_names(nodes) == ["layer1.0.conv1", "features.1.block.0.0", "layer1.0", "layer1.0.relu",
                                 "flatten", "fc"]


def test_import_is_deterministic(rng):
    from graphc.frontends.onnx import load_onnx

    model = _old_convnet(rng)
    assert str(load_onnx(model)) == str(load_onnx(model.SerializeToString()))


def test_torch_export_keeps_state_dict_names(tmp_path):
    import torch

    from graphc.frontends.onnx import load_onnx

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.relu = torch.nn.ReLU()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.relu(self.conv1(x)).mean((2, 3)))

    m = torch.nn.Sequential()
    m.add_module("layer1", Block())
    path = tmp_path / "m.onnx"
    torch.onnx.export(m.eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=13,
                      input_names=["x"])
    graph, _ = roundtrip(onnx.load(str(path)), {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8),
                                                                                                dtype=np.float32)})
    assert {"layer1.conv1.weight", "layer1.conv1.bias", "layer1.fc.weight", "layer1.fc.bias"} <= {
        p.source for p in graph.params.values()}
    assert "layer1.conv1" in {n.name for n in graph.nodes}


def test_gather_nd_with_constant_indices(rng):
    """The dynamo exporter lowers a non-dividing adaptive pool (alexnet, vgg) to GatherND."""
    idx = np.array([[[0, 1], [2, -1]], [[1, 0], [0, 0]]], np.int64)
    nodes = [helper.make_node("GatherND", ["x", "idx"], ["y"], name="gnd")]
    model = make(nodes, [vi("x", [3, 4, 5])], [vi("y", [2, 2, 5])], [tensor("idx", idx)], opset=13)
    graph, _ = roundtrip(model, {"x": rand(rng, 3, 4, 5)})
    assert "index_select" in [n.op for n in graph.nodes]


# -- graphs from other tools -----------------------------------------------------------------
# Rebuilt with onnx.helper in the style of their writers: a Caffe2-era SqueezeNet/AlexNet-like
# net (opset 7, weights also graph inputs, Caffe2 tensor names, LRN, Dropout with its mask
# output, Reshape to a constant shape, Gemm with transB, old Softmax) and a tf2onnx/Keras-style
# NHWC net (Transposes around NCHW convs, depthwise conv, Clip as ReLU6, a shape-computed
# Reshape, MatMul + Add for the dense layer, ``name:0`` tensor names).
def _conv(name, x, w, b, out, **attrs):
    return helper.make_node("Conv", [x, w, b], [out], name=name, **attrs)


def _caffe2_net(rng):
    inits = []

    def w(name, *shape, positive=False):
        a = rng.uniform(0.5, 1.5, shape).astype(np.float32) if positive else rand(rng, *shape) * 0.3
        inits.append(tensor(name, a))
        return name

    nodes = [
        _conv("conv1", "data_0", w("conv1_w_0", 16, 3, 3, 3), w("conv1_b_0", 16), "conv1_1", kernel_shape=[3, 3],
              strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1_1"], ["conv1_2"], name="relu1"),
        helper.make_node("LRN", ["conv1_2"], ["norm1_1"], name="norm1", size=5, alpha=1e-4, beta=0.75, bias=1.0),
        helper.make_node("MaxPool", ["norm1_1"], ["pool1_1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2]),
        # a Fire module: squeeze 1x1, expand 1x1 and 3x3, concatenated
        _conv("fire2/squeeze1x1", "pool1_1", w("fire2/squeeze1x1_w_0", 4, 16, 1, 1), w("fire2/squeeze1x1_b_0", 4),
              "fire2/squeeze1x1_1", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["fire2/squeeze1x1_1"], ["fire2/squeeze1x1_2"]),
        _conv("fire2/expand1x1", "fire2/squeeze1x1_2", w("fire2/expand1x1_w_0", 8, 4, 1, 1),
              w("fire2/expand1x1_b_0", 8), "fire2/expand1x1_1", kernel_shape=[1, 1]),
        _conv("fire2/expand3x3", "fire2/squeeze1x1_2", w("fire2/expand3x3_w_0", 8, 4, 3, 3),
              w("fire2/expand3x3_b_0", 8), "fire2/expand3x3_1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["fire2/expand1x1_1", "fire2/expand3x3_1"], ["fire2/concat_1"], axis=1),
        # a residual Sum of three tensors, as Caffe2 wrote elementwise adds
        helper.make_node("Sum", ["fire2/concat_1", "pool1_1", "fire2/concat_1"], ["sum_1"], name="sum"),
        helper.make_node("Relu", ["sum_1"], ["sum_2"]),
        helper.make_node("Dropout", ["sum_2"], ["drop_1", "_mask_0"], name="drop", ratio=0.5),
        helper.make_node("AveragePool", ["drop_1"], ["pool2_1"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pool2_1", "OC2_DUMMY_1"], ["flat_1"], name="flat"),
        helper.make_node("Gemm", ["flat_1", w("fc_w_0", 10, 16 * 2 * 2), w("fc_b_0", 10)], ["fc_1"], name="fc",
                         transB=1),
        helper.make_node("Softmax", ["fc_1"], ["prob_1"], name="prob"),
    ]
    inits.append(tensor("OC2_DUMMY_1", np.array([1, -1], np.int64)))
    return make(nodes, [vi("data_0", [1, 3, 17, 17])], [vi("prob_1", [1, 10])], inits, opset=7, ir_version=3,
                input_inits=True)


def test_caffe2_era_net(rng):
    model = _caffe2_net(rng)
    graph, emitted = roundtrip(model, {"data_0": rand(rng, 1, 3, 17, 17)})
    assert [v.name for v in graph.inputs] == ["data_0"]
    assert not graph.find("opaque")
    ops = [n.op for n in graph.nodes]
    assert ops.count("conv2d") == 4 and {"lrn", "sum_n", "dropout", "linear", "softmax"} <= set(ops)
    assert graph.params["conv1_w_0"].kind == "weight"
    assert graph.node("fc").inputs[1].shape == (10, 64)


def test_dropout_mask_output_is_used(rng):
    """An inference-mode Dropout's mask is all true (opset 12+ defines it so); a graph that
    reads it still imports."""
    nodes = [helper.make_node("Dropout", ["x", "ratio"], ["d", "mask"], name="drop"),
             helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["d", "m"], ["y"], name="mul")]
    model = make(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [tensor("ratio", np.array(0.25, np.float32))],
                 opset=12)
    graph, _ = roundtrip(model, {"x": rand(rng, 2, 3)})
    assert not graph.find("opaque")


def _tf2onnx_net(rng):
    """Keras-style NHWC model as tf2onnx writes it: NHWC graph input and output, Transposes
    around each NCHW conv, BatchNormalization, Clip(0, 6), a depthwise conv, a residual Add,
    ReduceMean over H and W, a Reshape whose target comes from Shape, MatMul + Add."""
    inits = [tensor("conv/kernel", rand(rng, 8, 3, 3, 3) * 0.3), tensor("conv/bias", rand(rng, 8) * 0.1),
             tensor("bn/gamma", rng.uniform(0.5, 1.5, 8).astype(np.float32)), tensor("bn/beta", rand(rng, 8) * 0.1),
             tensor("bn/mean", rand(rng, 8) * 0.1), tensor("bn/var", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
             tensor("dw/kernel", rand(rng, 8, 1, 3, 3) * 0.3), tensor("dw/bias", rand(rng, 8) * 0.1),
             tensor("clip_min", np.array(0.0, np.float32)), tensor("clip_max", np.array(6.0, np.float32)),
             tensor("dense/kernel", rand(rng, 8, 5) * 0.3), tensor("dense/bias", rand(rng, 5) * 0.1),
             tensor("const_axes", np.array([0], np.int64)), tensor("minus_one", np.array([-1], np.int64))]
    nodes = [
        helper.make_node("Transpose", ["input_1:0"], ["conv__1:0"], name="conv__1", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["conv__1:0", "conv/kernel", "conv/bias"], ["conv:0"], name="model/conv/Conv2D",
                         kernel_shape=[3, 3], strides=[1, 1], auto_pad="SAME_UPPER", dilations=[1, 1]),
        helper.make_node("BatchNormalization", ["conv:0", "bn/gamma", "bn/beta", "bn/mean", "bn/var"], ["bn:0"],
                         name="model/bn/FusedBatchNormV3", epsilon=1e-3),
        helper.make_node("Clip", ["bn:0", "clip_min", "clip_max"], ["relu6:0"], name="model/re_lu/Relu6"),
        helper.make_node("Conv", ["relu6:0", "dw/kernel", "dw/bias"], ["dw:0"], name="model/dw/depthwise",
                         kernel_shape=[3, 3], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["dw:0", "relu6:0"], ["add:0"], name="model/add/add"),
        helper.make_node("Transpose", ["add:0"], ["nhwc:0"], name="model/add/add__7", perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean", ["nhwc:0"], ["gap:0"], name="model/gap/Mean", axes=[1, 2], keepdims=1),
        helper.make_node("Shape", ["gap:0"], ["shape:0"], name="model/flatten/Shape"),
        helper.make_node("Gather", ["shape:0", "const_axes"], ["batch:0"], name="model/flatten/strided_slice", axis=0),
        helper.make_node("Concat", ["batch:0", "minus_one"], ["target:0"], name="model/flatten/concat", axis=0),
        helper.make_node("Reshape", ["gap:0", "target:0"], ["flat:0"], name="model/flatten/Reshape"),
        helper.make_node("MatMul", ["flat:0", "dense/kernel"], ["mm:0"], name="model/dense/MatMul"),
        helper.make_node("Add", ["mm:0", "dense/bias"], ["logits:0"], name="model/dense/BiasAdd"),
        helper.make_node("Softmax", ["logits:0"], ["dense/Softmax:0"], name="model/dense/Softmax", axis=-1),
    ]
    return make(nodes, [vi("input_1:0", ["unk__12", 6, 6, 3])], [vi("dense/Softmax:0", ["unk__13", 5])], inits,
                opset=13)


def test_tf2onnx_nhwc_net(rng):
    model = _tf2onnx_net(rng)
    graph, _ = roundtrip(model, {"input_1:0": rand(rng, 1, 6, 6, 3)})
    assert not graph.find("opaque")
    ops = [n.op for n in graph.nodes]
    assert ops.count("permute") == 2 and ops.count("conv2d") == 2
    dw = [n for n in graph.nodes if n.op == "conv2d"][1]
    assert dw.attrs["groups"] == 8


def test_unknown_ops_in_a_foreign_graph_stay_opaque(rng):
    """Standard ops graphc has no mapping for, and a custom-domain op whose output type the
    model annotates (value_info), become opaque nodes; the graph still emits and runs."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="t", perm=[0, 3, 1, 2]),
             helper.make_node("Hardmax", ["t"], ["h"], name="hardmax", axis=1),
             helper.make_node("Shrink", ["h"], ["s"], name="shrink", lambd=0.5, bias=0.1),
             helper.make_node("ReverseSequence", ["s", "lens"], ["y"], name="reverse", batch_axis=1, time_axis=0)]
    model = make(nodes, [vi("x", [2, 3, 4, 5])], [vi("y", [2, 5, 3, 4])],
                 [tensor("lens", np.array([1, 2, 1, 2, 2], np.int64))], opset=13)
    graph, emitted = roundtrip(model, {"x": rand(rng, 2, 3, 4, 5)})
    assert [n.attrs["op_type"] for n in graph.find("opaque")] == ["Hardmax", "Shrink", "ReverseSequence"]


def test_custom_domain_op_typed_by_value_info():
    from graphc.frontends.onnx import load_onnx

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("FusedThing", ["r"], ["f"], name="fused", domain="com.example", alpha=2.0),
             helper.make_node("Relu", ["f"], ["y"], name="relu2")]
    g = helper.make_graph(nodes, "g", [vi("x", [1, 3, 4])], [vi("y", [1, 3, 2])], value_info=[vi("f", [1, 3, 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    graph = load_onnx(model)
    graph.verify()
    fused = graph.node("fused")
    assert fused.op == "opaque" and fused.attrs["domain"] == "com.example"
    assert fused.output.shape == (1, 3, 2)
    assert graph.outputs[0].shape == (1, 3, 2)


def test_opaque_nodes_from_old_opsets_are_brought_to_the_emitted_opset(rng):
    """Upsample (opset 9) and Hardmax (opset 11, which still coerced its input to 2-d) have no
    graphc mapping; emitted at opset 17 they must be converted, not copied (a verbatim Hardmax
    would silently change meaning, a verbatim Upsample would fail the checker)."""
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["u"], name="up", mode="nearest"),
             helper.make_node("Hardmax", ["u"], ["y"], name="hardmax", axis=1)]
    model = make(nodes, [vi("x", [1, 2, 3, 2])], [vi("y", [1, 2, 6, 4])],
                 [tensor("scales", np.array([1, 1, 2, 2], np.float32))], opset=9, ir_version=4)
    graph, emitted = roundtrip(model, {"x": rand(rng, 1, 2, 3, 2)})
    assert [n.attrs["op_type"] for n in graph.find("opaque")] == ["Resize", "Hardmax"]
    assert "Upsample" not in [n.op_type for n in emitted.graph.node]


def test_static_sequences_from_the_unoptimised_dynamo_exporter(rng):
    """SplitToSequence (scalar split, split list, per-item without keepdims) read back by
    SequenceAt, ConcatFromSequence and SequenceLength become split/select/concat ops."""
    nodes = [helper.make_node("SplitToSequence", ["x", "two"], ["seq"], name="chunk", axis=1),
             helper.make_node("SequenceAt", ["seq", "zero"], ["a"], name="first"),
             helper.make_node("SequenceAt", ["seq", "minus1"], ["b"], name="last"),
             helper.make_node("SequenceLength", ["seq"], ["n"], name="len"),
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["b", "nf"], ["b2"], name="scale"),
             helper.make_node("Concat", ["b2", "a"], ["c"], name="cat", axis=1),
             helper.make_node("SplitToSequence", ["c"], ["items"], name="unbind", axis=2, keepdims=0),
             helper.make_node("ConcatFromSequence", ["items"], ["y"], name="stack", axis=1, new_axis=1)]
    inits = [tensor("two", np.array(2, np.int64)), tensor("zero", np.array(0, np.int64)),
             tensor("minus1", np.array(-1, np.int64))]
    model = make(nodes, [vi("x", [1, 5, 3])], [vi("y", [1, 3, 3])], inits, opset=18)
    graph, _ = roundtrip(model, {"x": rand(rng, 1, 5, 3)})
    assert not graph.find("opaque")
    assert {"split", "select", "concat", "unsqueeze"} <= {n.op for n in graph.nodes}
