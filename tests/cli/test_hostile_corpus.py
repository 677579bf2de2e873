"""A generated corpus of hostile model inputs, each run through every command.

Every case is a model spec graphc must refuse, whatever the command: it exits 2 with exactly
one line on stderr (no traceback), writes no file, and leaves its input bytes as they were.
The inputs are built here (ONNX graphs from onnx.helper, IR documents mutated from a valid
dump, ``FILE.py:factory`` modules, raw bytes), so no binary junk lives in the repository.
The CLI runs in-process (``main()`` with stdout/stderr captured); ``bench/bad_input.py``
prints each case's stderr line.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

COMMANDS = {
    "inspect": lambda spec, extra: ["inspect", spec, *extra],
    "convert": lambda spec, extra: ["convert", spec, *extra, "-o", "out.onnx"],
    "fuse": lambda spec, extra: ["optimize", spec, "--passes", "fuse", *extra, "-o", "out.onnx"],
    "prune": lambda spec, extra: ["optimize", spec, "--passes", "prune(ratio=0.5)", *extra,
                                       "-o", "out.onnx"],
    "cost": lambda spec, extra: ["cost", spec, *extra],
}


@dataclass
class Case:
    name: str
    spec: str  # relative to the corpus folder, or a spec that names no file
    files: dict[str, bytes] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)


# -- ONNX ---------------------------------------------------------------------------------------
def _onnx_conv(*, opset=13, in_shape=(1, 3, 8, 8), w_shape=(4, 3, 3, 3), out_shape=None, nodes=None,
               outputs=None, inputs=None, inits=None, domain_opsets=()):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if inits is None:
        inits = [numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "conv.weight")]
    if nodes is None:
        nodes = [helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["y"], name="relu")]
    if inputs is None:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))]
    if outputs is None:
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domain_opsets]
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 8
    return m.SerializeToString() if isinstance(m, onnx.ModelProto) else m


def _onnx_cases() -> list[Case]:
    from onnx import TensorProto, helper, numpy_helper

    good = _onnx_conv()
    rng = np.random.default_rng(1)
    cases = [
        Case("onnx-empty", "m.onnx", {"m.onnx": b""}),
        Case("onnx-text", "m.onnx", {"m.onnx": b"this is not a model\n"}),
        Case("onnx-json", "m.onnx", {"m.onnx": b'{"graph": {}}'}),
        Case("onnx-missing", "absent.onnx"),
        Case("onnx-folder", "dir.onnx", {"dir.onnx/keep": b"x"}),
    ]
    for i in range(6):
        cases.append(Case(f"onnx-random-{i}", "m.onnx", {"m.onnx": rng.bytes(int(rng.integers(1, 4096)))}))
    for frac in (0.05, 0.2, 0.5, 0.8, 0.97):
        cases.append(Case(f"onnx-truncated-{frac}", "m.onnx", {"m.onnx": good[: int(len(good) * frac)]}))
    flipped = bytearray(good)
    flipped[5:25] = rng.bytes(20)
    cases.append(Case("onnx-corrupted-header", "m.onnx", {"m.onnx": bytes(flipped)}))
    for opset in (1, 5, 6, 99, 1000):
        cases.append(Case(f"onnx-opset-{opset}", "m.onnx", {"m.onnx": _onnx_conv(opset=opset)}))
    cases += [
        Case("onnx-no-outputs", "m.onnx", {"m.onnx": _onnx_conv(outputs=[])}),
        Case("onnx-duplicate-producers", "m.onnx", {"m.onnx": _onnx_conv(nodes=[
            helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["x"], ["c"], name="relu0"),
            helper.make_node("Relu", ["c"], ["y"], name="relu")])}),
        Case("onnx-channel-mismatch", "m.onnx", {"m.onnx": _onnx_conv(w_shape=(4, 5, 3, 3))}),
        Case("onnx-kernel-larger-than-input", "m.onnx", {"m.onnx": _onnx_conv(in_shape=(1, 3, 2, 2),
                                                                              w_shape=(4, 3, 7, 7))}),
        Case("onnx-declared-output-shape-contradicts", "m.onnx", {"m.onnx": _onnx_conv(out_shape=[1, 9, 3, 3])}),
        Case("onnx-add-shapes-mismatch", "m.onnx", {"m.onnx": _onnx_conv(
            in_shape=(1, 3), inits=[numpy_helper.from_array(np.ones((1, 4), np.float32), "b")],
            nodes=[helper.make_node("Add", ["x", "b"], ["y"], name="add")])}),
        Case("onnx-zero-dim-input", "m.onnx", {"m.onnx": _onnx_conv(in_shape=(1, 3, 0, 8))}),
        Case("onnx-zero-batch", "m.onnx", {"m.onnx": _onnx_conv(in_shape=(0, 3, 8, 8))}),
        Case("onnx-dangling-name", "m.onnx", {"m.onnx": _onnx_conv(nodes=[
            helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["nowhere"], ["y"], name="relu")])}),
        Case("onnx-cycle", "m.onnx", {"m.onnx": _onnx_conv(nodes=[
            helper.make_node("Add", ["x", "y"], ["c"], name="add"),
            helper.make_node("Relu", ["c"], ["y"], name="relu")], inits=[])}),
        Case("onnx-output-produced-by-nothing", "m.onnx", {"m.onnx": _onnx_conv(
            outputs=[helper.make_tensor_value_info("ghost", TensorProto.FLOAT, None)])}),
        Case("onnx-string-input", "m.onnx", {"m.onnx": _onnx_conv(
            inputs=[helper.make_tensor_value_info("x", TensorProto.STRING, [1, 3])], inits=[],
            nodes=[helper.make_node("Identity", ["x"], ["y"], name="id")])}),
        Case("onnx-sequence-input", "m.onnx", {"m.onnx": _onnx_conv(
            inputs=[helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [1, 3])], inits=[],
            nodes=[helper.make_node("SequenceLength", ["x"], ["y"], name="len")])}),
        Case("onnx-custom-op-untyped", "m.onnx", {"m.onnx": _onnx_conv(domain_opsets=[("com.example", 1)], nodes=[
            helper.make_node("Mystery", ["x"], ["y"], name="mystery", domain="com.example")], inits=[])}),
        Case("onnx-unknown-standard-op", "m.onnx", {"m.onnx": _onnx_conv(nodes=[
            helper.make_node("NoSuchOp", ["x"], ["y"], name="nosuch")], inits=[])}),
        Case("onnx-reshape-wrong-size", "m.onnx", {"m.onnx": _onnx_conv(
            inits=[numpy_helper.from_array(np.array([1, 7], np.int64), "shape")],
            nodes=[helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")])}),
        Case("onnx-bad-initializer-bytes", "m.onnx", {"m.onnx": _onnx_conv(inits=[_short_raw()])}),
        Case("onnx-external-data-outside", "m.onnx", {"m.onnx": _external_outside()}),
        Case("onnx-external-data-missing", "m.onnx", {"m.onnx": _external_missing()}),
    ]
    shape_cases = {
        "wrong-channels": "1,5,8,8", "rank": "1,3,8", "zero": "1,3,0,8", "negative": "1,3,-8,8",
        "past-int64": "1,3,99999999999999999999,8", "letters": "1,3,a,8", "empty": "", "two-shapes": None,
        "float": "1,3,8.5,8", "spaces-only": " , ",
    }
    for name, shape in shape_cases.items():
        extra = ["--input-shape", "1,3,8,8", "--input-shape", "1,3,8,8"] if shape is None else ["--input-shape", shape]
        cases.append(Case(f"onnx-input-shape-{name}", "m.onnx", {"m.onnx": good}, extra))
    return cases


def _short_raw():
    from onnx import numpy_helper

    t = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv.weight")
    t.raw_data = t.raw_data[:10]
    return t


def _external_outside():
    from onnx import TensorProto

    t = TensorProto(name="conv.weight", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../etc/passwd"), ("offset", "0"), ("length", "432")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return _onnx_conv(inits=[t])


def _external_missing():
    from onnx import TensorProto

    t = TensorProto(name="conv.weight", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "weights.bin"
    return _onnx_conv(inits=[t])


# -- graphc IR (.json + .npz) -------------------------------------------------------------------
def _valid_ir() -> tuple[dict, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    doc = {
        "format": "graphc-ir", "version": 1, "name": "tiny",
        "inputs": [{"name": "x", "type": "f32[1,3,8,8]"}],
        "params": [{"name": "w", "type": "f32[4,3,3,3]", "source": "conv.weight", "kind": "weight"},
                   {"name": "b", "type": "f32[4]", "source": "conv.bias", "kind": "weight"}],
        "nodes": [{"name": "conv", "op": "conv2d", "inputs": ["x", "w", "b"],
                   "outputs": [{"name": "c", "type": "f32[1,4,8,8]"}],
                   "attrs": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}},
                  {"name": "relu", "op": "relu", "inputs": ["c"], "outputs": [{"name": "y", "type": "f32[1,4,8,8]"}],
                   "attrs": {}}],
        "outputs": ["y"],
    }
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "b": rng.standard_normal(4).astype(np.float32)}
    return doc, weights


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _ir(name: str, doc=None, weights=None, *, raw_json: bytes | None = None, raw_npz: bytes | None = None) -> Case:
    files = {"g.json": raw_json if raw_json is not None else json.dumps(doc).encode()}
    if raw_npz is not None:
        files["g.npz"] = raw_npz
    elif weights is not None:
        files["g.npz"] = _npz(weights)
    return Case(name, "g.json", files)


def _mutated(mutate):
    import copy

    doc, weights = _valid_ir()
    doc, weights = copy.deepcopy(doc), dict(weights)
    mutate(doc, weights)
    return doc, weights


def _ir_cases() -> list[Case]:
    rng = np.random.default_rng(2)
    doc, weights = _valid_ir()
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_obj = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    cases = [
        _ir("ir-empty", raw_json=b""),
        _ir("ir-binary", raw_json=rng.bytes(512)),
        _ir("ir-latin1", raw_json=b'{"format": "graphc-ir", "name": "\xff\xfe"}'),
        _ir("ir-top-level-list", raw_json=b"[1, 2, 3]"),
        _ir("ir-top-level-string", raw_json=b'"graphc-ir"'),
        _ir("ir-top-level-number", raw_json=b"42"),
        _ir("ir-top-level-null", raw_json=b"null"),
        _ir("ir-deep-list", raw_json=deep),
        _ir("ir-deep-object", raw_json=deep_obj),
        _ir("ir-truncated-json", raw_json=json.dumps(doc).encode()[:100], weights=weights),
        _ir("ir-nan-literal", raw_json=json.dumps(doc).replace('"version": 1', '"version": NaN').encode(),
            weights=weights),
        _ir("ir-wrong-format", *_mutated(lambda d, w: d.update(format="onnx"))),
        _ir("ir-version-99", *_mutated(lambda d, w: d.update(version=99))),
        _ir("ir-version-string", *_mutated(lambda d, w: d.update(version="1"))),
    ]
    for key in ("name", "inputs", "params", "nodes", "outputs", "format"):
        cases.append(_ir(f"ir-missing-{key}", *_mutated(lambda d, w, k=key: d.pop(k))))
    wrong_values = {"str": "x", "int": 7, "null": None, "dict": {"a": 1}, "list-of-int": [1, 2]}
    for key in ("inputs", "params", "nodes", "outputs"):
        for label, bad in wrong_values.items():
            if key == "outputs" and label == "list-of-int":
                bad = [7]
            cases.append(_ir(f"ir-{key}-is-{label}", *_mutated(lambda d, w, k=key, b=bad: d.update({k: b}))))
    cases.append(_ir("ir-name-is-list", *_mutated(lambda d, w: d.update(name=[1]))))
    # Field-level mutations of each entry kind.
    entries = {
        "input": lambda d: d["inputs"][0], "param": lambda d: d["params"][0],
        "node": lambda d: d["nodes"][0], "node-output": lambda d: d["nodes"][0]["outputs"][0],
    }
    for where, get in entries.items():
        for fld in list(get(_valid_ir()[0])):
            cases.append(_ir(f"ir-{where}-missing-{fld}", *_mutated(lambda d, w, g=get, f=fld: g(d).pop(f))))
            if fld not in ("source",):
                cases.append(_ir(f"ir-{where}-{fld}-is-int", *_mutated(lambda d, w, g=get, f=fld: g(d).update({f: 3}))))
    bad_types = ["f99[1,3,8,8]", "f32[1,3,a,8]", "f32[-1,3,8,8]", "f32", "", "f32[1,3,8,8", "f32[1.5,3,8,8]",
                 "f32[99999999999999999999999,3,8,8]", "F32[1,3,8,8]", "f32[1,,8,8]"]
    for i, t in enumerate(bad_types):
        cases.append(_ir(f"ir-bad-input-type-{i}", *_mutated(lambda d, w, t=t: d["inputs"][0].update(type=t))))
        cases.append(_ir(f"ir-bad-param-type-{i}", *_mutated(lambda d, w, t=t: d["params"][0].update(type=t))))
    cases += [
        _ir("ir-output-type-wrong-rank", *_mutated(lambda d, w: d["nodes"][0]["outputs"][0].update(type="f32[1,4,8]"))),
        _ir("ir-output-type-wrong-channels",
            *_mutated(lambda d, w: d["nodes"][0]["outputs"][0].update(type="f32[1,5,8,8]"))),
        _ir("ir-dangling-node-input", *_mutated(lambda d, w: d["nodes"][1].update(inputs=["ghost"]))),
        _ir("ir-dangling-graph-output", *_mutated(lambda d, w: d.update(outputs=["ghost"]))),
        _ir("ir-use-before-definition", *_mutated(lambda d, w: d["nodes"].reverse())),
        _ir("ir-self-loop", *_mutated(lambda d, w: d["nodes"][1].update(inputs=["y"]))),
        _ir("ir-no-outputs", *_mutated(lambda d, w: d.update(outputs=[]))),
        _ir("ir-duplicate-value", *_mutated(lambda d, w: d["nodes"][1]["outputs"][0].update(name="c"))),
        _ir("ir-output-shadows-input", *_mutated(lambda d, w: d["nodes"][1]["outputs"][0].update(name="x"))),
        _ir("ir-duplicate-node-name", *_mutated(lambda d, w: d["nodes"][1].update(name="conv"))),
        _ir("ir-unknown-op", *_mutated(lambda d, w: d["nodes"][1].update(op="no_such_op"))),
        _ir("ir-too-few-operands", *_mutated(lambda d, w: d["nodes"][0].update(inputs=["x"]))),
        _ir("ir-too-many-outputs", *_mutated(lambda d, w: d["nodes"][1]["outputs"].append(
            {"name": "z", "type": "f32[1,4,8,8]"}))),
        _ir("ir-attrs-is-list", *_mutated(lambda d, w: d["nodes"][0].update(attrs=[1, 2]))),
        _ir("ir-attr-stride-string", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(stride="x"))),
        _ir("ir-attr-stride-negative", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(stride=[-1, -1]))),
        _ir("ir-attr-stride-zero", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(stride=[0, 0]))),
        _ir("ir-attr-groups-float", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(groups=1.5))),
        _ir("ir-attr-groups-zero", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(groups=0))),
        _ir("ir-attr-padding-null", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(padding=None))),
        _ir("ir-attr-unknown", *_mutated(lambda d, w: d["nodes"][0]["attrs"].update(frobnicate=3))),
        _ir("ir-param-kind-bad", *_mutated(lambda d, w: d["params"][0].update(kind="magic"))),
        _ir("ir-terabyte-param", *_mutated(lambda d, w: (d["params"][0].update(type="f32[1000000,1000000,3,3]"),
                                                        w.pop("w")))),
        _ir("ir-param-missing-from-npz", *_mutated(lambda d, w: w.pop("w"))),
        _ir("ir-no-npz", doc),
        _ir("ir-npz-wrong-shape", *_mutated(lambda d, w: w.update(w=np.ones((4, 3, 5, 5), np.float32)))),
        _ir("ir-npz-wrong-dtype", *_mutated(lambda d, w: w.update(w=w["w"].astype(np.float64)))),
        _ir("ir-npz-int-weights", *_mutated(lambda d, w: w.update(w=np.ones((4, 3, 3, 3), np.int64)))),
        _ir("ir-npz-scalar", *_mutated(lambda d, w: w.update(b=np.float32(1.0)))),
        _ir("ir-npz-text", doc, raw_npz=b"weights go here\n"),
        _ir("ir-npz-empty", doc, raw_npz=b""),
        _ir("ir-npz-truncated", doc, raw_npz=_npz(weights)[:300]),
        _ir("ir-npz-random", doc, raw_npz=rng.bytes(2048)),
        _ir("ir-npz-pickled", doc, raw_npz=_npz({"w": np.array([{"a": 1}], dtype=object), "b": weights["b"]})),
        _ir("ir-npz-is-pickle", doc, raw_npz=pickle.dumps(weights)),
        _ir("ir-npz-zip-of-junk", doc, raw_npz=_zip({"w.npy": b"not an npy file", "b.npy": b"\x93NUMPY"})),
        _ir("ir-npz-strings", *_mutated(lambda d, w: w.update(w=np.array(["a"] * 108).reshape(4, 3, 3, 3)))),
    ]
    return cases


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


# -- FILE.py:factory and other specs ----------------------------------------------------------
FACTORIES = {
    "exit-0": "import sys\ndef make():\n    sys.exit(0)\n",
    "exit-3": "import sys\ndef make():\n    sys.exit(3)\n",
    "exit-message": "import sys\ndef make():\n    sys.exit('bye')\n",
    "exit-on-import": "import sys\nsys.exit(0)\ndef make():\n    pass\n",
    "raises": "def make():\n    raise RuntimeError('no weights here')\n",
    "raises-multiline": "def make():\n    raise ValueError('first line\\nsecond line\\nthird')\n",
    "returns-none": "def make():\n    return None\n",
    "returns-string": "def make():\n    return 'resnet'\n",
    "returns-triple": "import torch\ndef make():\n    return torch.nn.ReLU(), torch.zeros(1), 3\n",
    "syntax-error": "def make(:\n    pass\n",
    "import-error": "import no_such_module_graphc\ndef make():\n    pass\n",
    "not-callable": "make = 3\n",
    "no-example": "import torch\ndef make():\n    return torch.nn.Linear(3, 2)\n",
    "trace-fails": ("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                    "        if x.sum() > 0:\n            return x\n        return -x\n"
                    "def make():\n    return M(), torch.randn(1, 3)\n"),
    "forward-raises": ("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                       "        raise RuntimeError('forward is broken')\n"
                       "def make():\n    return M(), torch.randn(1, 3)\n"),
    "wrong-example-shape": "import torch\ndef make():\n    return torch.nn.Conv2d(3, 4, 3), torch.randn(1, 5, 8, 8)\n",
    "example-not-tensor": "import torch\ndef make():\n    return torch.nn.ReLU(), 'x'\n",
    "recursion": "def make():\n    return make()\n",
    "keyword-only": "def make(*, size):\n    pass\n",
    "generator": "def make():\n    yield 1\n",
}


def _other_cases() -> list[Case]:
    cases = [Case(f"py-{k}", "f.py:make", {"f.py": v.encode()}) for k, v in FACTORIES.items()]
    cases += [
        Case("py-missing-file", "absent.py:make"),
        Case("py-missing-function", "f.py:absent", {"f.py": b"def make():\n    pass\n"}),
        Case("py-empty-function-name", "f.py:", {"f.py": b"def make():\n    pass\n"}),
        Case("py-binary-file", "f.py:make", {"f.py": bytes(range(256))}),
        Case("torchvision-unknown", "torchvision:resnet1800"),
        Case("torchvision-empty", "torchvision:"),
        Case("spec-empty", ""),
        Case("spec-colon", ":"),
        Case("spec-pt-file", "m.pt", {"m.pt": pickle.dumps({"state_dict": 1})}),
        Case("spec-pickle-file", "m.pkl", {"m.pkl": pickle.dumps([1, 2])}),
        Case("spec-no-suffix", "model", {"model": b"\x08\x07"}),
        Case("spec-txt", "m.txt", {"m.txt": b"hello"}),
        Case("spec-folder", "models", {"models/readme": b"x"}),
        Case("spec-newline-in-name", "a\nb.onnx"),
    ]
    return cases


def corpus() -> list[Case]:
    cases = _onnx_cases() + _ir_cases() + _other_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# -- running ------------------------------------------------------------------------------------
def materialise(case: Case, root: Path) -> None:
    for rel, data in case.files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(root.rglob("*"))}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``graphc ARGV`` in this process: (exit code, stdout, stderr)."""
    from graphc.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return rc, out.getvalue(), err.getvalue()


def run_case(case: Case, command: str) -> tuple[int, str, str]:
    """Run one case from inside its corpus folder (specs and outputs are relative to it)."""
    return run_cli(COMMANDS[command](case.spec, case.extra))


CASES = corpus()


def test_corpus_is_large():
    assert len(CASES) >= 150


def assert_refused(rc: int, out: str, err: str, what) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err + out, (what, rc, err[-2000:])
    assert lines[0].startswith("graphc: error:"), (what, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_by_every_command(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    materialise(case, tmp_path)
    before = snapshot(tmp_path)
    for command in COMMANDS:
        assert_refused(*run_case(case, command), (case.name, command))
        assert snapshot(tmp_path) == before, (case.name, command, "files changed")


# -- bad options and inputs one command refuses -------------------------------------------------
@dataclass
class OptionCase:
    name: str
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    needle: str = ""  # a word the error line must hold


def _custom_op_typed() -> bytes:
    """A custom-domain op onnx has no schema for, typed by the model's own value_info: graphc
    imports it (opaque), onnxruntime has no kernel for it."""
    from onnx import TensorProto, helper

    return _onnx_conv(domain_opsets=[("com.example", 1)], inits=[], nodes=[
        helper.make_node("Mystery", ["x"], ["y"], name="mystery", domain="com.example")],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])


def _relu(shape) -> bytes:
    from onnx import helper

    return _onnx_conv(in_shape=shape, inits=[], nodes=[helper.make_node("Relu", ["x"], ["y"], name="relu")])


NESTED = "fixpoint(" * 1000 + "dce" + ")" * 1000
DIGITS_MISFIT = "import torch, torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), " \
                "nn.Linear(2 * 26 * 26, 10)), torch.randn(1, 1, 28, 28)\n"


def option_cases() -> list[OptionCase]:
    good = {"m.onnx": _onnx_conv()}
    fuse = ["optimize", "m.onnx", "--passes", "fuse"]
    return [
        OptionCase("cost-size-negative", ["cost", "torchvision:resnet18", "--size", "-5"], needle="--size"),
        OptionCase("cost-size-zero", ["cost", "torchvision:resnet18", "--size", "0"], needle="--size"),
        OptionCase("cost-size-for-onnx", ["cost", "m.onnx", "--size", "64"], good, "--size"),
        OptionCase("cost-size-terabytes", ["cost", "torchvision:resnet18", "--size", "1000000"], needle="--size"),
        OptionCase("cost-batch-zero", ["cost", "m.onnx", "--batch", "0"], good, "--batch"),
        OptionCase("cost-plot-missing-folder", ["cost", "m.onnx", "--plot", "nowhere/p.png"], good, "nowhere"),
        OptionCase("cost-plot-folder", ["cost", "m.onnx", "--plot", "d.png"], {**good, "d.png/keep": b""}, "folder"),
        OptionCase("cost-plot-suffix", ["cost", "m.onnx", "--plot", "p.txt"], good, "--plot"),
        OptionCase("cost-input-shape-past-int64", ["cost", "m.onnx", "--input-shape", "1,3,99999999999999999999,8"],
                   good, "int64"),
        OptionCase("cost-bad-passes", ["cost", "m.onnx", "--passes", "fusee"], good, "fusee"),
        OptionCase("convert-o-folder", ["convert", "m.onnx", "-o", "out.onnx"], {**good, "out.onnx/keep": b""}, "folder"),
        OptionCase("convert-o-empty", ["convert", "m.onnx", "-o", ""], good, "empty"),
        OptionCase("convert-o-missing-folder", ["convert", "m.onnx", "-o", "nowhere/o.onnx"], good, "nowhere"),
        OptionCase("inspect-o-folder", ["inspect", "m.onnx", "-o", "d"], {**good, "d/keep": b""}, "folder"),
        OptionCase("inspect-o-the-model", ["inspect", "m.onnx", "-o", "m.onnx"], good, "model file"),
        OptionCase("inspect-o-other-model", ["inspect", "m.onnx", "-o", "other.pt"], good, "model file"),
        OptionCase("inspect-o-empty", ["inspect", "m.onnx", "-o", ""], good, "empty"),
        OptionCase("optimize-o-empty", [*fuse, "-o", ""], good, "empty"),
        OptionCase("optimize-o-folder", [*fuse, "-o", "d.onnx"], {**good, "d.onnx/keep": b""}, "folder"),
        OptionCase("optimize-report-empty", [*fuse, "--report", ""], good, "empty"),
        OptionCase("optimize-nested-pipeline", ["optimize", "m.onnx", "--passes", NESTED], good, "nested"),
        OptionCase("optimize-prune-round-to-0", ["optimize", "m.onnx", "--passes", "prune(round-to=0)"], good, "round-to"),
        OptionCase("optimize-prune-round-to-negative", ["optimize", "m.onnx", "--passes", "prune(round-to=-3)"], good,
                   "round-to"),
        OptionCase("optimize-prune-min-channels-negative", ["optimize", "m.onnx", "--passes", "prune(min-channels=-5)"],
                   good, "min-channels"),
        OptionCase("inspect-after-nested-pipeline", ["inspect", "m.onnx", "--after", NESTED], good, "nested"),
        OptionCase("check-custom-domain-op", ["optimize", "c.onnx", "--passes", "fuse", "-o", "o.onnx"],
                   {"c.onnx": _custom_op_typed()}, "--check 0"),
        OptionCase("check-input-shape-against-fixed-dims", [*fuse, "--input-shape", "1,3,16,16", "-o", "o.onnx"],
                   good, "--check 0"),
        OptionCase("check-1e9-channels", ["optimize", "big.onnx", "--passes", "fuse", "-o", "o.onnx"],
                   {"big.onnx": _relu((1, 10**9))}, "--check 0"),
        OptionCase("check-1e5-by-1e5", ["optimize", "big.onnx", "--passes", "fuse", "-o", "o.onnx"],
                   {"big.onnx": _relu((1, 1, 10**5, 10**5))}, "--check 0"),
        OptionCase("cost-measure-1e9-channels", ["cost", "big.onnx", "--measure"], {"big.onnx": _relu((1, 10**9))},
                   "--measure"),
        OptionCase("data-does-not-fit", ["optimize", "f.py:make", "--passes", "edp", "--data", "digits", "-o", "o.onnx"],
                   {"f.py": DIGITS_MISFIT.encode()}, "[1, 28, 28]"),
    ]


OPTION_CASES = option_cases()


@pytest.mark.parametrize("case", OPTION_CASES, ids=[c.name for c in OPTION_CASES])
def test_bad_option_is_refused(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    materialise(case, tmp_path)
    before = snapshot(tmp_path)
    line = assert_refused(*run_cli(case.argv), case.name)
    assert case.needle in line, line
    assert snapshot(tmp_path) == before


# -- behaviours that need their own process or a closer look ------------------------------------
def _graphc(args, cwd, env_extra=None):
    import subprocess
    import sys

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "graphc", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_ctrl_c_during_the_first_onnxruntime_import_is_interrupted_130(tmp_path):
    # onnxruntime's package wraps a failed native import in an ImportError; a stand-in package
    # first on the path does the same with the KeyboardInterrupt that Ctrl-C raises there.
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("try:\n    raise KeyboardInterrupt\n"
                                      "except KeyboardInterrupt:\n    raise ImportError('initialization failed')\n")
    (tmp_path / "m.onnx").write_bytes(_onnx_conv())
    r = _graphc(["optimize", "m.onnx", "--passes", "fuse", "-o", "o.onnx"], tmp_path,
                {"PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 130 and r.stderr.strip() == "graphc: interrupted", r.stderr[-2000:]
    assert not (tmp_path / "o.onnx").exists()


def test_a_factory_calling_sys_exit_0_is_an_error_not_graphcs_exit(tmp_path):
    (tmp_path / "f.py").write_text(FACTORIES["exit-0"])
    r = _graphc(["convert", "f.py:make", "-o", "o.onnx"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "graphc: error: f.py:make: the factory called sys.exit(0)"
    assert not (tmp_path / "o.onnx").exists()


def test_a_failed_trace_prints_graphcs_line_only(tmp_path):
    # torch.export prints the graph it failed on and logs a warning, on the process's stderr.
    (tmp_path / "f.py").write_text(FACTORIES["trace-fails"])
    r = _graphc(["inspect", "f.py:make"], tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("graphc: error: cannot trace"), r.stderr



def test_debug_raises_instead_of_one_line(tmp_path, monkeypatch):
    from graphc.cli.main import main
    from graphc.errors import InputError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.py").write_text(FACTORIES["exit-0"])
    with pytest.raises(InputError, match="sys.exit"):
        main(["--debug", "inspect", "f.py:make"])


def test_cost_of_a_graph_with_no_macs(tmp_path, monkeypatch):
    from onnx import helper

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(_onnx_conv(in_shape=(1, 3, 8, 8), inits=[], nodes=[
        helper.make_node("Relu", ["x"], ["y"], name="relu")], outputs=None))
    rc, out, err = run_cli(["cost", "m.onnx"])
    assert rc == 0, err
    row = next(ln.split() for ln in out.splitlines() if ln.split()[:2] == ["relu", "relu"])
    assert row[2:4] == ["0", "-"], row  # no MACs, and no share of a zero total


@pytest.mark.parametrize("argv, outputs", [
    (["convert", "m.onnx", "-o", "o.pt"], ["o.pt"]),
    (["convert", "m.onnx", "-o", "o.onnx"], ["o.onnx"]),
    (["optimize", "m.onnx", "--passes", "fuse", "-o", "o.json", "--report", "r.json"], ["o.json", "o.npz", "r.json"]),
    (["inspect", "m.onnx", "-o", "o.txt"], ["o.txt"]),
])
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, monkeypatch, argv, outputs, umask):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(_onnx_conv())
    for name in outputs:  # an overwrite in place takes the umask's mode too
        (tmp_path / name).write_bytes(b"old")
        os.chmod(tmp_path / name, 0o640)
    old = os.umask(umask)
    try:
        rc, _, err = run_cli(argv)
    finally:
        os.umask(old)
    assert rc == 0, err
    for name in outputs:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
