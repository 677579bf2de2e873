"""Public load/save API: models in (``nn.Module``, ``.onnx``, model specs), models out
(``.pt``, ``.onnx``).

``save`` never leaves a half-written file: it writes a temporary file beside the target and
moves it into place with ``os.replace``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from graphc.errors import InputError
from graphc.ir import Graph


def load(model, example_inputs=None, input_shape=None, *, input_shapes=None, weights=None) -> Graph:
    """Import a model as a graphc Graph.

    ``model`` is an ``nn.Module`` (traced with torch.fx at the shape of ``example_inputs``,
    or of a random input of ``input_shape``), a path to an ``.onnx`` file, or a model spec
    string (``torchvision:resnet18``, ``timm:convnext_atto``, ``path/to/file.py:factory``).
    ``weights``: a ``.safetensors`` file or a weights-only state dict for a torch spec.
    """
    import torch

    if isinstance(model, torch.nn.Module):
        from graphc.frontends.fx import load_module

        return load_module(model, example_inputs, input_shape)
    if isinstance(model, Graph):
        return model
    if isinstance(model, (str, os.PathLike)):
        from graphc.frontends.spec import load_spec

        return load_spec(str(model), input_shape=input_shape, input_shapes=input_shapes, weights=weights)
    raise InputError(f"cannot load a {type(model).__name__}: expected an nn.Module, an .onnx path or a model spec")


def emit_torch(graph: Graph):
    """The graph as a ``torch.fx.GraphModule`` of standard torch.nn layers (eval mode)."""
    from graphc.backends.torch import emit_torch as _emit

    return _emit(graph)


def emit_onnx(graph: Graph, **kwargs):
    """The graph as an ``onnx.ModelProto``."""
    from graphc.backends.onnx import emit_onnx as _emit

    return _emit(graph, **kwargs)


def save(graph: Graph, path, **kwargs) -> Path:
    """Write ``graph`` to ``path``; the suffix picks the back-end (``.pt`` or ``.onnx``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".pth", ".onnx"):
        raise InputError(f"{path}: output must end in .pt or .onnx")
    if not path.parent.exists():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    if suffix == ".onnx":
        from graphc.backends.onnx import save_onnx

        # save_onnx writes atomically itself; it must see the final name, which names the
        # external-data file (PATH.data) that models over 2 GB reference.
        return save_onnx(graph, path, **kwargs)
    import torch

    from graphc.files import publish

    module = emit_torch(graph)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(module, tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
