"""Bad ONNX input is one clear line (InputError / UnsupportedError), never a traceback from
protobuf or onnx internals."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphc.errors import InputError, UnsupportedError
from graphc.frontends.onnx import load_onnx


def _model():
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "fc.weight")
    node = helper.make_node("Gemm", ["x", "fc.weight"], ["y"], name="fc", transB=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _one_line(err):
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        load_onnx(tmp_path / "nope.onnx")
    assert "not found" in _one_line(err)


def test_directory(tmp_path):
    with pytest.raises(InputError):
        load_onnx(tmp_path)


def test_truncated_file(tmp_path):
    data = _model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        load_onnx(p)
    assert "cut.onnx" in _one_line(err)


def test_text_file_named_onnx(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\nreally\n")
    with pytest.raises(InputError) as err:
        load_onnx(p)
    assert "notes.onnx" in _one_line(err)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(InputError):
        load_onnx(p)


def test_truncated_bytes():
    data = _model().SerializeToString()
    with pytest.raises(InputError):
        load_onnx(data[:7])


def test_not_a_model_object():
    with pytest.raises(InputError):
        load_onnx(42)


def test_wrong_input_shapes():
    with pytest.raises(InputError, match="unknown inputs"):
        load_onnx(_model(), input_shapes={"nope": [1, 3]})
    with pytest.raises(InputError, match="2 input shapes"):
        load_onnx(_model(), input_shapes=[[1, 3], [1, 3]])


def test_dangling_reference():
    m = _model()
    m.graph.node[0].input[0] = "ghost"
    with pytest.raises(InputError, match="ghost"):
        load_onnx(m)


def test_unsupported_dtype():
    m = _model()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.COMPLEX64
    with pytest.raises(UnsupportedError, match="element type") as err:
        load_onnx(m)
    _one_line(err)


def test_external_data_loads_from_beside_the_model(tmp_path):
    m = _model()
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data",
                    size_threshold=0)
    g = load_onnx(tmp_path / "ext.onnx")
    np.testing.assert_array_equal(g.params["fc.weight"].data, np.ones((2, 3), np.float32))
    (tmp_path / "ext.data").unlink()
    with pytest.raises(InputError):
        load_onnx(tmp_path / "ext.onnx")
