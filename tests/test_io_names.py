"""Graph inputs and outputs keep their exact names, order, dtypes and shapes through import,
every pass and both back-ends, whatever characters the names hold.

The models are Caffe2-era ONNX graphs built with onnx.helper: tensors named like
``gpu_0/data_0``, weights as initializers, opset 9, and output names that collide with names
graphc gives values internally (the sanitised form of an input name, an op type).
"""
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from graphc.frontends.onnx import load_onnx
from graphc.backends.onnx import emit_onnx
from graphc.backends.torch import emit_torch
from graphc.cli.main import main
from graphc.errors import PassError
from graphc.ir.serialize import load_json
from graphc.manager import run_pipeline
from graphc.source import ort_session

RTOL, ATOL = 1e-4, 1e-5

IN_IMAGE, IN_AUX = "gpu_0/data_0", "1:aux.ü/x"
OUT_PROB, OUT_FEAT, OUT_POOL, OUT_CLASS = "gpu_0/softmax_1", "gpu_0_data_0", "0", "Relu"


def caffe2_model(seed: int = 0) -> onnx.ModelProto:
    """conv -> BN -> relu, + a second input, -> (features, pooled, FC softmax, argmax)."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, positive=False):
        a = rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(np.abs(a) + 0.5 if positive else a, name)

    inits = [init("gpu_0/conv1_w", 8, 3, 3, 3), init("gpu_0/res_conv1_bn_s", 8, positive=True),
             init("gpu_0/res_conv1_bn_b", 8), init("gpu_0/res_conv1_bn_rm", 8),
             init("gpu_0/res_conv1_bn_riv", 8, positive=True), init("gpu_0/conv2_w", 8, 8, 1, 1),
             init("gpu_0/pred_w", 10, 8), init("gpu_0/pred_b", 10)]
    nodes = [
        helper.make_node("Conv", [IN_IMAGE, "gpu_0/conv1_w"], ["gpu_0/conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["gpu_0/conv1", "gpu_0/res_conv1_bn_s", "gpu_0/res_conv1_bn_b",
                                                "gpu_0/res_conv1_bn_rm", "gpu_0/res_conv1_bn_riv"],
                         ["gpu_0/res_conv1_bn_1"], epsilon=1e-5),
        helper.make_node("Relu", ["gpu_0/res_conv1_bn_1"], ["gpu_0/res_conv1_bn_2"]),
        helper.make_node("Sum", ["gpu_0/res_conv1_bn_2", IN_AUX], ["gpu_0/res2_sum"]),
        helper.make_node("Conv", ["gpu_0/res2_sum", "gpu_0/conv2_w"], [OUT_FEAT]),
        helper.make_node("GlobalAveragePool", [OUT_FEAT], ["gpu_0/pool5"]),
        helper.make_node("Flatten", ["gpu_0/pool5"], [OUT_POOL]),
        helper.make_node("Gemm", [OUT_POOL, "gpu_0/pred_w", "gpu_0/pred_b"], ["gpu_0/pred_1"], transB=1),
        helper.make_node("Softmax", ["gpu_0/pred_1"], [OUT_PROB]),
        helper.make_node("ArgMax", ["gpu_0/pred_1"], [OUT_CLASS], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "resnet_caffe2",
        [helper.make_tensor_value_info(IN_IMAGE, TensorProto.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info(IN_AUX, TensorProto.FLOAT, [1, 8, 8, 8])],
        # Order differs from the order the nodes produce them.
        [helper.make_tensor_value_info(OUT_PROB, TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info(OUT_FEAT, TensorProto.FLOAT, [1, 8, 8, 8]),
         helper.make_tensor_value_info(OUT_CLASS, TensorProto.INT64, [1]),
         helper.make_tensor_value_info(OUT_POOL, TensorProto.FLOAT, [1, 8])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    onnx.checker.check_model(model)
    return model


def signature(model: onnx.ModelProto):
    """[(name, elem type, dims)] of the inputs (initializers left out) and of the outputs."""
    inits = {t.name for t in model.graph.initializer}

    def sig(vis):
        return [(vi.name, vi.type.tensor_type.elem_type, [d.dim_value for d in vi.type.tensor_type.shape.dim])
                for vi in vis if vi.name not in inits]

    return sig(model.graph.input), sig(model.graph.output)


def feeds(seed: int = 1):
    rng = np.random.default_rng(seed)
    return {IN_IMAGE: rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
            IN_AUX: rng.standard_normal((1, 8, 8, 8)).astype(np.float32)}


def run_onnx(model, x):
    sess = ort_session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, x)))


def assert_close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale)


@pytest.fixture(scope="module")
def source():
    return caffe2_model()


@pytest.fixture(scope="module")
def reference(source):
    return run_onnx(source, feeds())


def check_onnx(model, source, reference, exact=True):
    assert signature(model) == signature(source)
    got = run_onnx(model, feeds())
    assert list(got) == [o.name for o in source.graph.output]
    for name, want in reference.items():
        if exact:
            assert_close(got[name], want)
        else:
            assert got[name].dtype == want.dtype and got[name].shape == want.shape


def check_torch(module, source, reference):
    ins, outs = signature(source)
    assert module.graphc_input_names == [n for n, _, _ in ins]
    assert module.graphc_output_names == [n for n, _, _ in outs]
    x = feeds()
    with torch.no_grad():
        got = module(*[torch.from_numpy(x[n]) for n in module.graphc_input_names])
    for name, t in zip(module.graphc_output_names, got):
        assert_close(t.numpy(), reference[name])


def test_import_records_the_names_and_sanitises_only_value_names(source):
    g = load_onnx(source)
    assert g.input_names == [IN_IMAGE, IN_AUX]
    assert g.output_names == [OUT_PROB, OUT_FEAT, OUT_CLASS, OUT_POOL]
    # Value names stay the printer's kind of names (the text dump parses back).
    assert all(re.fullmatch(r"[A-Za-z0-9_.]+", v.name) for v in g.inputs + g.outputs)
    assert [v.dtype for v in g.outputs] == ["f32", "f32", "i64", "f32"]


@pytest.mark.parametrize("pipeline", [None, "fold-bn", "fuse", "prune(ratio=0.5)", "decompose,fuse"])
def test_api_pipelines_keep_the_signature_in_both_back_ends(source, reference, pipeline):
    g = load_onnx(source)
    before = len(g.nodes)
    if pipeline:
        run_pipeline(g, pipeline)
    if pipeline in ("fold-bn", "fuse"):
        assert len(g.nodes) < before  # the BN went: the output's producer chain was rewritten
    exact = pipeline is None or "prune" not in pipeline
    check_onnx(emit_onnx(g), source, reference, exact)
    if exact:
        check_torch(emit_torch(g), source, reference)


def test_a_pass_replacing_an_output_value_keeps_its_name(source, reference):
    g = load_onnx(source)
    feat = g.outputs[1]
    # An identity inserted in front of the output: dropping it gives the output a new value.
    ident = g.add_node("identity", [feat], name="extra")
    feat.replace_all_uses_with(ident.output, outputs=True)
    ident.set_input(0, feat)
    assert g.outputs[1] is ident.output
    report = run_pipeline(g, "drop-identity")
    assert report.passes[0].changed and g.outputs[1] is feat
    assert g.output_names[1] == OUT_FEAT
    check_onnx(emit_onnx(g), source, reference)


def test_value_names_given_when_none_were_recorded_are_pinned_by_the_manager(source):
    g = load_onnx(source)
    g._input_names = g._output_names = None  # as a graph built in code
    names = g.output_names
    run_pipeline(g, "fuse")
    assert g.output_names == names
    assert [o.name for o in emit_onnx(g).graph.output] == names


def test_a_pass_changing_an_output_dtype_is_refused(source):
    from graphc.registry import register_function_pass, unregister_pass

    g = load_onnx(source)

    @register_function_pass("test-io-cast-output")
    def cast_output(graph, ctx):
        c = graph.add_node("cast", [graph.outputs[0]], {"dtype": "f64"}, name="to_f64")
        graph.set_outputs([c.output] + graph.outputs[1:])
        return True

    try:
        with pytest.raises(PassError, match=r"graph output 'gpu_0/softmax_1' from f32\[1,10\] to f64\[1,10\]"):
            run_pipeline(g, "test-io-cast-output")
    finally:
        unregister_pass("test-io-cast-output")


def test_an_output_passing_an_input_through_keeps_both_names():
    x = helper.make_tensor_value_info("in/0", TensorProto.FLOAT, [1, 2])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["in/0"], ["relu:0"])], "passthrough", [x],
        [helper.make_tensor_value_info("relu:0", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("in/0", TensorProto.FLOAT, [1, 2])]),
        opset_imports=[helper.make_opsetid("", 13)])
    g = load_onnx(model)
    run_pipeline(g, "fuse")
    out = emit_onnx(g)
    assert signature(out) == signature(model)
    x = {"in/0": np.array([[-1.0, 2.0]], np.float32)}
    np.testing.assert_array_equal(run_onnx(out, x)["relu:0"], [[0.0, 2.0]])
    np.testing.assert_array_equal(run_onnx(out, x)["in/0"], x["in/0"])


@pytest.fixture
def model_file(tmp_path, source):
    path = tmp_path / "c2.onnx"
    onnx.save(source, path)
    return path


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
@pytest.mark.parametrize("command", [["convert"], ["optimize", "--passes", "fuse", "-q"],
                                     ["optimize", "--passes", "prune(ratio=0.5)", "-q"]])
def test_cli_writes_the_original_names(model_file, source, reference, tmp_path, command, suffix, capsys):
    out = tmp_path / f"out{suffix}"
    assert main([command[0], str(model_file), *command[1:], "-o", str(out)]) == 0
    capsys.readouterr()
    exact = "prune(ratio=0.5)" not in command
    if suffix == ".onnx":
        check_onnx(onnx.load(out), source, reference, exact)
    elif exact:
        check_torch(torch.load(out, weights_only=False), source, reference)
    else:
        module = torch.load(out, weights_only=False)
        assert module.graphc_output_names == [OUT_PROB, OUT_FEAT, OUT_CLASS, OUT_POOL]


def test_cli_ir_json_round_trip_keeps_the_names(model_file, source, reference, tmp_path, capsys):
    ir = tmp_path / "fused.json"
    assert main(["optimize", str(model_file), "--passes", "fuse", "-q", "-o", str(ir)]) == 0
    g = load_json(ir)
    assert g.input_names == [IN_IMAGE, IN_AUX] and g.output_names == [OUT_PROB, OUT_FEAT, OUT_CLASS, OUT_POOL]
    out = tmp_path / "again.onnx"
    assert main(["optimize", str(ir), "--passes", "fuse", "-q", "-o", str(out)]) == 0
    capsys.readouterr()
    check_onnx(onnx.load(out), source, reference)


@pytest.mark.parametrize("name", ["torch", "self", "class", "0", "x.y/z:0"])
def test_input_names_that_are_not_free_python_names_run_in_torch(name):
    """forward's parameters must be identifiers that shadow nothing the generated code reads."""
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", [name], ["r"]), helper.make_node("Sigmoid", ["r"], ["out"])], "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])]), opset_imports=[helper.make_opsetid("", 13)])
    g = load_onnx(model)
    module = emit_torch(g)
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    want = run_onnx(model, {name: x})["out"]
    with torch.no_grad():
        assert_close(module(torch.from_numpy(x)).numpy(), want)
    assert module.graphc_input_names == [name]
    assert_close(run_onnx(emit_onnx(g), {name: x})["out"], want)


@pytest.mark.parametrize("bad", [[OUT_PROB] * 4, [1, 2, 3, 4], [OUT_PROB], "abcd", 7])
def test_ir_json_with_bad_output_names_is_refused(source, bad):
    from graphc.errors import InputError
    from graphc.ir.serialize import from_json, to_json

    g = load_onnx(source)
    doc = to_json(g)
    assert doc["output_names"] == [OUT_PROB, OUT_FEAT, OUT_CLASS, OUT_POOL]
    doc["output_names"] = bad
    with pytest.raises(InputError, match="input_names/output_names"):
        from_json(doc, {p.name: p.data for p in g.params.values()})
