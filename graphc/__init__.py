"""graphc: a graph-rewriting compiler that makes convolutional networks smaller and faster.

Public API (imported lazily so ``import graphc`` stays cheap):

- ``graphc.load(model, example_inputs=None, input_shape=None) -> ir.Graph``
- ``graphc.save(graph, path)``: ``.onnx`` or ``.pt`` by suffix
- ``graphc.optimize(model, passes=..., example_inputs=...) -> (graph, report)``
"""
__version__ = "0.1.0"

_API = {
    "load": "graphc.api",
    "save": "graphc.api",
    "emit_torch": "graphc.api",
    "emit_onnx": "graphc.api",
    "optimize": "graphc.pipeline",
    "compile": "graphc.pipeline",
    "run_pipeline": "graphc.pipeline",
}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")


__all__ = list(_API)
