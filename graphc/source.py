"""The source model behind a graph, kept so the result can be checked against it.

A :class:`Source` runs the model the graph came from on numpy inputs: the torch module itself
(``torch``), the original ONNX file in onnxruntime (``onnx``), or, for an IR file, the input
graph interpreted op by op with each op's torch semantics (``ir``, the op table is the reference).
``load_source`` turns a CLI model spec into ``(graph, source)``.

Invariants: a Source never sees the optimized graph (it holds its own module, file or clone);
running it does not change it; outputs come back as float64-comparable numpy arrays in the
order of the graph's outputs.
"""
from __future__ import annotations

import os

import numpy as np

from graphc.errors import InputError
from graphc.ir.graph import Graph



def execute(graph: Graph, inputs) -> list:
    """Interpret ``graph`` on torch tensors with each op's torch semantics."""
    from graphc.ir.interpret import run_graph

    return run_graph(graph, inputs)


def to_numpy(outs) -> list[np.ndarray]:
    import torch

    if isinstance(outs, (torch.Tensor, np.ndarray)):
        outs = [outs]
    flat = []
    for o in outs:
        if isinstance(o, (list, tuple)):
            flat.extend(to_numpy(o))
        elif isinstance(o, dict):
            flat.extend(to_numpy(list(o.values())))
        else:
            flat.append(o.detach().cpu().numpy() if isinstance(o, torch.Tensor) else np.asarray(o))
    return flat


class Source:
    kind = ""

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __str__(self) -> str:
        return self.kind


class TorchSource(Source):
    kind = "torch"

    def __init__(self, module):
        self.module = module

    def run(self, inputs):
        import torch

        # Copies: a module that writes to its input in place must not change the inputs the
        # other side of a check then reads.
        with torch.no_grad():
            return to_numpy(self.module(*[torch.from_numpy(np.array(x, copy=True)) for x in inputs]))


class OnnxSource(Source):
    kind = "onnx"

    def __init__(self, model):
        self.model = model  # a path or a ModelProto
        self._sess = None

    def run(self, inputs):
        # onnxruntime is stricter than the importer (a custom-domain op it has no kernel for,
        # a fixed input dim overridden by --input-shape): say so, and how to go on without it.
        try:
            if self._sess is None:
                self._sess = ort_session(self.model)
            names = [i.name for i in self._sess.get_inputs()]
            return [np.asarray(o) for o in self._sess.run(None, dict(zip(names, inputs)))]
        except Exception as e:
            if not _is_ort_error(e):
                raise
            raise InputError(f"the source model does not run in onnxruntime, which the numeric check needs "
                             f"({_ort_reason(e)}); --check 0 skips the check") from None

    def __str__(self) -> str:
        return "onnxruntime"


class GraphSource(Source):
    kind = "ir"

    def __init__(self, graph: Graph):
        self.graph = graph.clone()

    def run(self, inputs):
        return to_numpy(execute(self.graph, inputs))

    def __str__(self) -> str:
        return "IR interpreter"


def _is_ort_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("onnxruntime") or "ONNXRuntimeError" in str(e)


def _ort_reason(e: BaseException) -> str:
    """onnxruntime's message without its source-file prefixes, on one line."""
    import re

    text = " ".join(str(e).split())
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"/\S+\.(?:cc|h):\d+ [^:]*?\) ?", "", text)
    return text[:300]


def ort_session(model, consume: bool = False):
    """An onnxruntime session on a path or an ``onnx.ModelProto``; a proto over protobuf's 2 GB
    limit is written (weights as external data) to a temporary folder and loaded from there
    (``consume``: the caller drops the proto, so its weights may move to the file uncopied)."""
    import tempfile

    import onnxruntime as ort

    # Fatal only: a failing session raises, and graphc words that error itself on one line;
    # onnxruntime's own error log would add coloured lines to stderr before it.
    ort.set_default_logger_severity(4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    # A check runs a few inputs: no second, repacked copy of every weight, no memory arena.
    opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.enable_cpu_mem_arena = False
    if isinstance(model, (str, os.PathLike)):
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    from graphc.backends.onnx import needs_external_data, save_external

    if not needs_external_data(model):
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="graphc-ort-") as d:
        path = os.path.join(d, "model.onnx")
        save_external(model, path, "model.onnx.data", keep=not consume)
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def parse_shapes(specs) -> list[tuple[int, ...]] | None:
    """``["1,3,32,32", "1x10"]`` -> shapes, None for none; InputError on anything else."""
    from graphc.frontends.spec import parse_input_shape

    return parse_input_shape([str(s) for s in specs], what="--input-shape") if specs else None


def load_source(spec, input_shape=None, example_inputs=None, weights=None) -> tuple[Graph, Source]:
    """The IR graph of a model spec and the source it came from.

    Specs: any spec string :mod:`graphc.frontends.spec` resolves (an ``.onnx`` or IR ``.json``
    file, ``torchvision:NAME``, ``timm:NAME``, ``file.py:factory``; ``weights``: a weights file
    for a torch spec), an ``nn.Module`` (with ``example_inputs``
    or ``input_shape``), an ONNX ModelProto, or a Graph.
    """
    import graphc

    shapes = parse_shapes(input_shape) if input_shape and isinstance(input_shape[0], str) else input_shape
    if isinstance(spec, Graph):
        return spec, GraphSource(spec)
    if isinstance(spec, (str, os.PathLike)):
        from graphc.frontends.spec import resolve

        ms = resolve(str(spec), shapes, weights)
        graph = ms.load()
        if ms.kind == "torch":
            return graph, TorchSource(ms.module)
        if ms.kind == "onnx":
            return graph, OnnxSource(str(ms.path))
        return graph, GraphSource(graph)
    import torch

    if isinstance(spec, torch.nn.Module):
        x = _example(shapes, example_inputs)
        if not x:
            raise InputError("a torch module needs example_inputs (or input_shape) to trace")
        spec.eval()
        return graphc.load(spec, example_inputs=tuple(x) if len(x) > 1 else x[0]), TorchSource(spec)
    try:
        import onnx

        if isinstance(spec, onnx.ModelProto):
            from graphc.frontends.onnx import load_onnx

            return load_onnx(spec, input_shapes=shapes), OnnxSource(spec)
    except ImportError:
        pass
    raise InputError(f"cannot optimize a {type(spec).__name__}: give a graph, a module, an ONNX model or a model spec")


def _example(shapes, example_inputs):
    import torch

    if example_inputs is not None:
        return list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    if shapes:
        g = torch.Generator().manual_seed(0)
        return [torch.randn(s, generator=g) for s in shapes]
    return None
