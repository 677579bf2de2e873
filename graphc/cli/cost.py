"""``graphc cost MODEL``: MACs, FLOPs, params, memory and latency of a model.

MODEL is a model spec as ``graphc optimize`` takes it (an ``.onnx`` file, an IR ``.json``,
``FILE.py:factory``) or
``torchvision:NAME`` (built with random weights at 224x224, 299 for inception_v3). Static
figures come from :mod:`graphc.backends.cost`; predicted latency from the calibrated roofline;
``--measure`` runs the emitted ONNX in onnxruntime and the emitted torch module.
"""
from __future__ import annotations

import json
import os
import sys

from graphc.errors import InputError, UnsupportedError


def register(subparsers) -> None:
    p = subparsers.add_parser("cost", help="MACs, FLOPs, params, memory and latency of a model",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model spec: torchvision:NAME, a .onnx file, ...")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--size", type=int, default=None, help="input side for torchvision models (default 224)")
    p.add_argument("--input-shape", action="append", metavar="1,3,224,224",
                   help="input shape (repeat for several inputs): for FILE.py:factory and .onnx models")
    p.add_argument("--measure", action="store_true", help="also measure latency (onnxruntime and torch)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: CPU time of one thread (with --threads 1), steady on a busy machine")
    p.add_argument("--per-layer", action="store_true", help="list every layer, not just the top ones")
    p.add_argument("--top", type=int, default=10, help="layers in each top list (default 10)")
    p.add_argument("--passes", default=None, metavar="PIPELINE",
                   help="also cost the model after this pipeline and show before -> after")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="plot per-layer MACs and latency")
    p.set_defaults(func=run)


def load_model(spec: str, batch: int = 1, size: int | None = None, input_shape=None):
    """An IR graph for ``spec`` at batch ``batch``, with the torch module behind it when there is one."""
    import graphc

    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    if size is not None and size < 1:
        raise InputError(f"--size must be >= 1, got {size}")
    if size is not None and not spec.startswith("torchvision:"):
        raise InputError("--size applies to torchvision:NAME models; give --input-shape for others")
    if spec.startswith("torchvision:"):
        import torch

        try:
            import torchvision
        except ImportError:
            raise UnsupportedError("torchvision is not installed (pip install graphc[zoo])") from None
        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise InputError(f"unknown torchvision classification model {name!r}")
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
        side = size or (299 if name == "inception_v3" else 224)
        _bound_example((batch, 3, side, side))
        x = torch.randn(batch, 3, side, side)
        return graphc.load(model, example_inputs=x), model, x
    if not os.path.exists(spec) and ":" not in spec:
        raise InputError(f"no such model file: {spec}")
    from graphc.source import load_source

    graph = load_source(spec, input_shape=input_shape)[0]
    if graph.inputs and graph.inputs[0].shape and graph.inputs[0].shape[0] != batch:
        raise InputError(f"{spec} has a fixed batch of {graph.inputs[0].shape[0]}; --batch {batch} cannot change it")
    return graph, None, None


def _bound_example(shape) -> None:
    from graphc.check import CHECK_MAX_BYTES, _size
    from graphc.ir.types import TensorType

    t = TensorType(shape)
    if t.nbytes > CHECK_MAX_BYTES:
        raise InputError(f"an example input of {t} takes {_size(t.nbytes)}, over the {_size(CHECK_MAX_BYTES)} "
                         "graphc traces with; lower --batch or --size")


def report(graph, *, module=None, example=None, measure=False, repeats=20, warmup=5, threads=None,
           clock="wall") -> dict:
    """Totals, per-layer rows, predicted latency, and measured latency when asked."""
    from graphc.backends.cost import per_node, totals
    from graphc.backends.latency import load_calibration, predict

    rows = per_node(graph)
    t = totals(graph)
    calib = load_calibration(threads=threads, clock=clock)
    if calib is None and measure:
        from graphc.backends.calibration import calibrate

        calib = calibrate(quick=True, threads=threads, clock=clock)  # a measuring run can afford it
    pred = predict(graph, calib) if calib is not None else None
    out = {"model": graph.name, "totals": t, "rows": rows, "predicted": pred, "calibrated": calib is not None}
    if measure:
        import graphc
        from graphc.backends.latency import attribute_to_heads, measure_onnx, measure_torch, profile_onnx

        onnx_model = graphc.emit_onnx(graph)
        out["onnx"] = measure_onnx(onnx_model, warmup=warmup, repeats=repeats, threads=threads, clock=clock)
        out["onnx_per_node"] = attribute_to_heads(graph, profile_onnx(onnx_model, repeats=max(3, repeats // 4), threads=threads))
        try:
            tm = graphc.emit_torch(graph)
            import torch

            x = example if example is not None else torch.randn(graph.inputs[0].shape)
            out["torch"] = measure_torch(tm, x, warmup=warmup, repeats=repeats, threads=threads, clock=clock)
        except UnsupportedError as e:
            out["torch_error"] = str(e)
    return out


def _latency_lines(r: dict) -> list[tuple[str, str, str]]:
    lines = []
    if r["predicted"] is not None:
        lines.append(("predicted latency", f"{r['predicted'].total_ms:.2f} ms", "onnxruntime, calibrated roofline"))
    else:
        lines.append(("predicted latency", "-", "run `graphc calibrate` first"))
    for key, label in (("onnx", "measured onnxruntime"), ("torch", "measured torch")):
        if key in r:
            tm = r[key]
            lines.append((label, f"{tm.median:.2f} ms", f"median of {len(tm.samples)}; min {tm.min:.2f}, "
                          f"max {tm.max:.2f}, IQR {tm.iqr:.2f} ms"))
    if "torch_error" in r:
        lines.append(("measured torch", "-", r["torch_error"]))
    return lines


def _layer_latency(r: dict) -> tuple[dict[str, float], str]:
    if "onnx_per_node" in r:
        return r["onnx_per_node"], "ort ms"
    if r["predicted"] is not None:
        return r["predicted"].per_node, "pred ms"
    return {}, "ms"


def _text(r: dict, top: int, per_layer: bool) -> str:
    from graphc.backends.cost_report import layers_table, totals_table

    t = r["totals"]
    out = [f"cost of {r['model']} (batch {t['batch']}, input "
           + ", ".join(f"{v.name}: {v.type}" for v in r["inputs"]) + ")",
           totals_table(t, {"lines": _latency_lines(r)})]
    lat, label = _layer_latency(r)
    rows = r["rows"]
    if per_layer:
        out.append(layers_table(rows, "\nall layers (topological order)", latency=lat or None, latency_label=label,
                                total_macs=t["macs"], limit=None))
    else:
        by_macs = sorted(rows, key=lambda x: -x.macs)
        out.append(layers_table(by_macs, f"\ntop {top} layers by MACs", latency=lat or None, latency_label=label,
                                total_macs=t["macs"], limit=top))
        if lat:
            by_lat = sorted(rows, key=lambda x: -lat.get(x.name, 0.0))
            out.append(layers_table(by_lat, f"\ntop {top} layers by latency ({label})", latency=lat,
                                    latency_label=label, total_macs=t["macs"], limit=top))
    return "\n".join(out)


def _json(r: dict, per_layer: bool, top: int) -> dict:
    d = {"model": r["model"], "totals": r["totals"], "calibrated": r["calibrated"]}
    if r["predicted"] is not None:
        d["predicted_ms"] = r["predicted"].total_ms
    for key in ("onnx", "torch"):
        if key in r:
            d[f"measured_{key}"] = r[key].as_dict()
    lat, _ = _layer_latency(r)
    rows = r["rows"] if per_layer else sorted(r["rows"], key=lambda x: -x.macs)[:top]
    d["layers"] = [dict(x.as_dict(), latency_ms=lat.get(x.name)) for x in rows]
    return d


def run(args) -> int:
    if args.plot is not None:
        from pathlib import Path

        plot = Path(args.plot)
        if not args.plot.lower().endswith((".png", ".pdf", ".svg")):
            raise InputError(f"--plot wants a .png, .pdf or .svg file, got {args.plot!r}")
        if not (plot.parent if str(plot.parent) else Path(".")).is_dir():
            raise InputError(f"--plot folder does not exist: {plot.parent}")
        if plot.is_dir():
            raise InputError(f"--plot {args.plot} is a folder")
    if args.top < 1:
        raise InputError(f"--top must be >= 1, got {args.top}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.input_shape:
        from graphc.source import parse_shapes

        parse_shapes(args.input_shape)
    if args.repeats < 1 or args.warmup < 0:
        raise InputError("--repeats must be >= 1 and --warmup >= 0")
    from graphc.backends.latency import check_clock

    check_clock(args.clock, args.threads)
    if args.passes:
        from graphc.pipeline_parse import parse_pipeline

        parse_pipeline(args.passes)  # a bad pipeline fails before the model loads
    graph, module, x = load_model(args.model, args.batch, args.size, args.input_shape)
    if args.measure:
        from graphc.check import check_memory

        check_memory(graph, who="--measure", hint="cost without --measure needs no inputs")
    opts = dict(measure=args.measure, repeats=args.repeats, warmup=args.warmup, threads=args.threads, clock=args.clock)
    r = report(graph, module=module, example=x, **opts)
    r["inputs"] = list(graph.inputs)
    r["model"] = args.model
    after = None
    if args.passes:
        from graphc.pipeline import run_pipeline

        g2 = graph.clone()
        run_pipeline(g2, args.passes)
        after = report(g2, **opts)
        after["inputs"] = list(g2.inputs)
    if args.json:
        d = _json(r, args.per_layer, args.top)
        if after is not None:
            from graphc.backends.cost import compare

            d["after"] = _json(after, args.per_layer, args.top)
            d["compare"] = compare(r["totals"], after["totals"])
        json.dump(d, sys.stdout, indent=2, default=str)
        print()
    else:
        print(_text(r, args.top, args.per_layer))
        if after is not None:
            from graphc.backends.cost_report import compare_table

            print(f"\nafter {args.passes}:")
            print(compare_table(r["totals"], after["totals"]))
            if after["predicted"] is not None and r["predicted"] is not None:
                print(f"  predicted latency: {r['predicted'].total_ms:.2f} ms -> {after['predicted'].total_ms:.2f} ms")
            if "onnx" in after:
                print(f"  measured onnxruntime: {r['onnx'].median:.2f} ms -> {after['onnx'].median:.2f} ms")
    if args.plot:
        from graphc.backends.cost_report import plot_layers

        lat, label = _layer_latency(r)
        alat = _layer_latency(after)[0] if after else None
        plot_layers(args.plot, r["rows"], lat, after_rows=after["rows"] if after else None, after_latency=alat,
                    title=f"{r['model']}" + (f" before/after {args.passes}" if after else ""), latency_label=label)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
