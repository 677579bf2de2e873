"""Pipelines, the public way: parse a pipeline string, run it, optimize or compile a model.

    report = graphc.run_pipeline(graph, "fold-bn,prune(ratio=0.5),fuse")   # in place
    graph, report = graphc.optimize(model, passes="fuse", example_inputs=x)
    slim = graphc.compile(model, passes="fuse", example_inputs=x)          # an nn.Module

The grammar lives in :mod:`graphc.pipeline_parse`, the manager in :mod:`graphc.manager`.

Invariants: ``optimize`` never changes the model it is given (a Graph is cloned); when the
pipeline is exact-only it checks 3 random inputs against the source by default and raises
:class:`~graphc.check.CheckFailed` (with ``.report``) beyond rtol 1e-4 / atol 1e-5.
"""
from __future__ import annotations

from graphc.check import CheckFailed, check_or_raise, numeric_check
from graphc.ir.graph import Graph
from graphc.manager import PassManager, measure, run_pipeline
from graphc.pipeline_parse import (DEFAULT_FIXPOINT_CAP, FixpointStep, PassStep, Pipeline, describe_type,
                                   option_types, parse_pipeline)
from graphc.registry import PassContext
from graphc.report import Report

DEFAULT_CHECK = 3


def default_check(pipeline: Pipeline, check: int | None) -> int:
    """Inputs to check: as asked, else 3 for an exact-only pipeline and none for a lossy one."""
    if check is not None:
        return max(0, int(check))
    return DEFAULT_CHECK if pipeline.exact else 0


def predicted_latency(graph: Graph) -> float | None:
    """The cost model's predicted onnxruntime latency (ms) when this machine is calibrated
    (``graphc calibrate``); None otherwise, never a calibration run as a side effect."""
    from graphc.backends.calibration import load_calibration
    from graphc.backends.latency import predict

    calib = load_calibration()
    return predict(graph, calib).total_ms if calib is not None else None


def add_predicted_latency(report: Report, before: float | None, graph: Graph) -> None:
    if before is not None:
        report.add_metric("predicted latency", before, predicted_latency(graph), "ms")


def optimize(model, passes="fuse", *, example_inputs=None, input_shape=None, data=None, check: int | None = None,
             seed: int = 0, quiet: bool = True, dump_ir=None, ctx: PassContext | None = None, evaluate: bool = True):
    """Load ``model`` (a module with ``example_inputs``, an ONNX path or model, a model spec, or
    a Graph), run ``passes`` on it and return ``(graph, report)``.

    ``data`` is a data spec (``digits``, ``FILE.npz``, ...) for passes that train; it is loaded
    only when a pass asks for it, and (with ``evaluate``) for top-1 accuracy before and after
    on its validation split when the model's input fits. ``check``: random inputs compared against the source model
    (default 3 for exact-only pipelines, 0 otherwise)."""
    import torch

    from graphc.source import load_source

    pipeline = parse_pipeline(passes)
    graph, source = load_source(model, input_shape=input_shape, example_inputs=example_inputs)
    if isinstance(model, Graph):
        graph = graph.clone()
    torch.manual_seed(seed)
    if data is not None and pipeline.uses_data:
        from graphc.data import check_fits, load_data

        data = load_data(data)
        check_fits(data, graph)  # before any pass trains on it
    if ctx is None:
        ctx = PassContext(data=data, seed=seed, quiet=quiet, example_inputs=example_inputs)
    predicted = predicted_latency(graph)
    report = PassManager(pipeline, dump_dir=dump_ir).run(graph, ctx)
    add_predicted_latency(report, predicted, graph)
    n = default_check(pipeline, check)
    if data is not None and evaluate:
        from graphc.check import add_accuracy

        add_accuracy(report, source, graph, ctx.data if ctx.data is not None else data, quiet=quiet)
    if n:
        report.check = numeric_check(source, graph, n, seed=seed, enforced=pipeline.exact, quiet=quiet)
        try:
            check_or_raise(report.check)
        except CheckFailed as e:
            e.report = report
            raise
    return graph, report


def compile(model, passes="fuse", *, target: str = "torch", **kwargs):
    """``optimize`` then emit: an ``nn.Module`` (``target="torch"``) or an ONNX ModelProto
    (``target="onnx"``). The report is attached as ``graphc_report`` (module) or returned in
    ``(model, report)`` form with ``return_report=True``."""
    from graphc.errors import InputError

    return_report = kwargs.pop("return_report", False)
    graph, report = optimize(model, passes, **kwargs)
    if target == "torch":
        from graphc.backends.torch import emit_torch

        out = emit_torch(graph)
        out.graphc_report = report
    elif target == "onnx":
        from graphc.backends.onnx import emit_onnx

        out = emit_onnx(graph)
    else:
        raise InputError(f"unknown compile target {target!r}: expected torch or onnx")
    return (out, report) if return_report else out


__all__ = ["optimize", "compile", "run_pipeline", "parse_pipeline", "Pipeline", "PassStep", "FixpointStep",
           "PassManager", "Report", "PassContext", "CheckFailed", "measure", "option_types", "describe_type",
           "DEFAULT_FIXPOINT_CAP", "default_check", "predicted_latency"]
