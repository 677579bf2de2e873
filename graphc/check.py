"""Numeric check: N random inputs through the source model and the optimized graph.

The result runs where the source ran: a torch source against the graph emitted as a torch
module, an ONNX source against the graph emitted as ONNX in onnxruntime, an IR source against
the IR interpreter. Errors are measured over every output element: ``max_abs = max|r - s|``,
``max_rel = max|r - s| / max|s|`` per output (error relative to the output's scale, so
elements near zero do not blow it up); the check passes when every element satisfies
``|r - s| <= atol * max(1, max|s|) + rtol * |s|``, the scale taken per output: the rule of
graphc's own tests. A fixed atol would fail exact rewrites of models whose outputs are in the
thousands, where float32 rounding of the reordered sums alone exceeds it.

Invariants: inputs depend only on the graph's input types and the seed; a failed check of an
exact-only pipeline is a :class:`CheckFailed` (exit code 1), a lossy pipeline's is only reported.
"""
from __future__ import annotations

import numpy as np

from graphc.errors import GraphcError, InputError
from graphc.ir.graph import Graph
from graphc.progress import progress
from graphc.report import CheckResult
from graphc.source import GraphSource, Source, to_numpy, execute, ort_session

RTOL, ATOL = 1e-4, 1e-5


class CheckFailed(GraphcError):
    """The optimized model's outputs differ from the source beyond the tolerance."""

    exit_code = 1


# The most memory one random input set and the graph's largest tensor may take: a declared
# 1e9-channel input would otherwise be allocated (and run) before anything could refuse it.
CHECK_MAX_BYTES = 2 * 2**30


def check_memory(graph: Graph, limit: int = CHECK_MAX_BYTES, *, who: str = "the numeric check",
                 hint: str = "--check 0 skips the check") -> None:
    """InputError when running ``graph`` on random inputs would need more than ``limit`` bytes
    for its inputs or for any one tensor (a lower bound on what onnxruntime or torch would take)."""
    inputs = sum(v.type.nbytes for v in graph.inputs)
    biggest = max(graph.values(), key=lambda v: v.type.nbytes, default=None)
    if inputs > limit:
        what = f"its inputs take {_size(inputs)} (" + ", ".join(f"{v.name}: {v.type}" for v in graph.inputs[:3]) + ")"
    elif biggest is not None and biggest.type.nbytes > limit:
        what = f"tensor %{biggest.name} ({biggest.type}) takes {_size(biggest.type.nbytes)}"
    else:
        return
    raise InputError(f"{who} would run the model on random inputs, but {what}, over the "
                     f"{_size(limit)} it may use; {hint}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.3g} EiB"


def random_inputs(graph: Graph, n: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``n`` input sets matching the graph inputs: standard normal floats, small integers."""
    check_memory(graph)
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        xs = []
        for v in graph.inputs:
            dt = np.dtype(_np_dtype(v.dtype))
            if dt.kind == "f":
                xs.append(rng.standard_normal(v.shape).astype(dt))
            elif dt.kind == "b":
                xs.append(rng.integers(0, 2, v.shape).astype(dt))
            else:
                xs.append(rng.integers(0, 8, v.shape).astype(dt))
        sets.append(xs)
    return sets


def _np_dtype(dtype: str):
    from graphc.ir.types import numpy_dtype

    return numpy_dtype(dtype)


def result_runner(graph: Graph, kind: str):
    """(callable on numpy inputs, description) running ``graph`` on the back-end matching ``kind``."""
    if kind == "onnx":
        from graphc.backends.onnx import emit_onnx

        # Unchecked: the checker runs when the model is written; a session validates it too.
        return onnx_runner(emit_onnx(graph, check=False), consume=True)
    if kind == "torch":
        import torch

        from graphc.backends.torch import emit_torch

        module = emit_torch(graph).eval()

        def run(xs):
            with torch.no_grad():
                return to_numpy(module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in xs]))

        return run, "torch (emit_torch)"
    frozen = graph.clone()
    return (lambda xs: to_numpy(execute(frozen, xs))), "IR interpreter"


def onnx_runner(model, consume: bool = False):
    """(callable on numpy inputs, description) running an ``onnx.ModelProto`` or an ONNX file
    in onnxruntime (``consume``: the proto is the caller's to drop, see ``ort_session``)."""
    sess = ort_session(model, consume=consume)
    names = [i.name for i in sess.get_inputs()]
    desc = "onnxruntime (emit_onnx)" if hasattr(model, "graph") else "onnxruntime (the written file)"
    return (lambda xs: [np.asarray(o) for o in sess.run(None, dict(zip(names, xs)))]), desc


def compare(ref: list[np.ndarray], out: list[np.ndarray], rtol: float = RTOL, atol: float = ATOL):
    """(max_abs, max_rel, ok) over all outputs; a shape or count mismatch is never ok."""
    if len(ref) != len(out):
        return float("inf"), float("inf"), False
    max_abs = max_rel = 0.0
    ok = True
    for r, o in zip(ref, out):
        r = np.asarray(r, dtype=np.float64)
        o = np.asarray(o, dtype=np.float64)
        if r.shape != o.shape:
            return float("inf"), float("inf"), False
        if r.size == 0:
            continue
        # Equal values (infinities included) and NaN where the source has NaN are matches.
        same = (o == r) | (np.isnan(o) & np.isnan(r))
        with np.errstate(invalid="ignore"):
            err = np.where(same, 0.0, np.abs(o - r))
        if not np.isfinite(err).all():
            return float("inf"), float("inf"), False
        mag = np.abs(np.where(np.isfinite(r), r, 0.0))
        max_abs = max(max_abs, float(err.max()))
        max_rel = max(max_rel, float(err.max()) / max(float(mag.max()), atol))
        ok &= bool((err <= atol * max(1.0, float(mag.max())) + rtol * mag).all())
    return max_abs, max_rel, ok


def numeric_check(source: Source, graph: Graph, n: int = 3, *, seed: int = 0, enforced: bool = True,
                  rtol: float = RTOL, atol: float = ATOL, quiet: bool = True, inputs_from: Graph | None = None,
                  runner=None) -> CheckResult:
    """Run ``n`` random inputs (shaped like ``inputs_from`` or ``graph``) through both sides.

    ``enforced``: raise :class:`CheckFailed` when out of tolerance (exact-only pipelines).
    ``runner``: a (run, description) pair for the result side, when the caller already holds
    the model it will write (default: ``graph`` on the back-end matching the source)."""
    kind = source.kind if source.kind in ("torch", "onnx") else "ir"
    if kind == "torch" and any(nd.op == "opaque" and nd.attrs.get("source") == "onnx" for nd in graph.nodes):
        kind = "ir"
    check_memory(graph)
    sets = random_inputs(inputs_from or graph, n, seed)
    first = source.run(sets[0]) if sets else None  # a source that cannot run is blamed before the result
    run, desc = runner or result_runner(graph, kind)
    max_abs = max_rel = 0.0
    ok = True
    for i, xs in enumerate(progress(sets, total=n, desc="numeric check", quiet=quiet)):
        a, r, good = compare(first if i == 0 else source.run(xs), run(xs), rtol, atol)
        max_abs, max_rel, ok = max(max_abs, a), max(max_rel, r), ok and good
    res = CheckResult(inputs=n, max_abs=max_abs, max_rel=max_rel, rtol=rtol, atol=atol, ok=ok,
                      enforced=enforced, reference=str(source), result=desc)
    return res


def check_or_raise(res: CheckResult) -> CheckResult:
    if res.enforced and not res.ok:
        raise CheckFailed(res.line())
    return res


__all__ = ["CheckFailed", "numeric_check", "check_or_raise", "random_inputs", "compare", "onnx_runner", "GraphSource",
           "RTOL", "ATOL"]


def accuracy(run, data, batch: int, *, quiet: bool = True, desc: str = "accuracy") -> float:
    """Top-1 accuracy (%) of ``run`` (numpy inputs -> outputs) on ``data``'s validation split,
    fed ``batch`` examples at a time (a last short batch is zero-padded: graphs have static shapes)."""
    if data.tensors:
        batches = [(data.x_val[i:i + batch], data.y_val[i:i + batch]) for i in range(0, len(data.x_val), batch)]
    else:
        batches = [(xb[j:j + batch], yb[j:j + batch]) for xb, yb in data.val_loader for j in range(0, len(xb), batch)]
    correct = total = 0
    for xb, yb in progress(batches, total=len(batches), desc=desc, quiet=quiet):
        xs = np.asarray(xb, dtype=np.float32)
        k = len(xs)
        if k < batch:
            xs = np.concatenate([xs, np.zeros((batch - k,) + xs.shape[1:], xs.dtype)])
        logits = np.asarray(run([xs])[0])[:k]
        correct += int((logits.reshape(k, -1).argmax(1) == np.asarray(yb).reshape(-1)).sum())
        total += k
    return 100.0 * correct / max(total, 1)


def add_accuracy(report, source: Source, graph: Graph, data_spec, *, quiet: bool = True) -> None:
    """Accuracy before -> after on the data's validation split, as a report metric; a note
    instead when the model's input does not fit the data."""
    from graphc.data import load_data

    data = load_data(data_spec)
    want = tuple(graph.inputs[0].shape[1:]) if graph.inputs else ()
    if len(graph.inputs) != 1 or want != tuple(data.input_shape):
        report.notes.append(f"accuracy not measured: model input {list(want)} does not match the data's "
                            f"examples {list(data.input_shape)}")
        return
    batch = graph.inputs[0].shape[0]
    kind = source.kind if source.kind in ("torch", "onnx") else "ir"
    run, _ = result_runner(graph, kind)
    before = accuracy(source.run, data, batch, quiet=quiet, desc="accuracy (source)")
    after = accuracy(run, data, batch, quiet=quiet, desc="accuracy (result)")
    report.add_metric("accuracy", before, after, "%")
    report.notes.append(f"accuracy: top-1 on the validation part of {data.name} ({data.split})")
