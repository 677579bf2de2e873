"""graphc on the timm zoo: import, exact fusion, pruning, and ONNX latency, one process per model.

For each model (``timm:NAME``: random seeded weights, eval mode, the model's default input size)
a child process, limited to ``--limit`` wall seconds, measures:

- **import**: ``graphc.load`` through torch.fx; CPU seconds;
- **fuse exact**: the ``fuse`` preset, its torch module and its ONNX (onnxruntime) against the
  timm model's output (rtol 1e-4, atol 1e-5 scaled by the output's magnitude);
- **channel groups**: how many, how many prunable;
- **prune 50%**: ``prune(ratio=0.5)``; its emitted torch module runs and keeps the output shape;
  MACs relative to the unpruned model (one counter, ``torch.utils.flop_counter``);
- **graphc vs Torch-Pruning time**: graphc load + groups + prune + emit against Torch-Pruning's
  ``MagnitudePruner`` + ``step()`` (the helpers of bench/vs_torch_pruning.py), CPU seconds;
- **ONNX latency**: graphc's fused ONNX against ``torch.onnx.export`` of the same model
  (TorchScript exporter, opset 17, its constant folding on; the dynamo exporter where that
  fails), onnxruntime on one thread, timed round-robin; the medians are compared.

Rows go to ``--save`` (JSON lines) as each model finishes; a model already there is skipped, so
an interrupted run continues. The table goes to the ``timm`` section of docs/zoo.md.

    python bench/timm_zoo.py --save timm_rows.jsonl          # the default sample, writes docs/zoo.md
    python bench/timm_zoo.py --models convnext_atto,fastvit_t8 --no-write
    python bench/timm_zoo.py --save timm_rows.jsonl --no-run  # tabulate what is saved
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DOC = HERE.parent / "docs" / "zoo.md"

# Small variants across families: CNNs, re-parameterisable nets, hybrids and transformers.
MODELS = """
convnext_atto convnextv2_atto fastvit_t8 vit_tiny_patch16_224 efficientformer_l1 levit_128s xcit_nano_12_p16_224
efficientvit_b0 efficientvit_m0 tiny_vit_5m_224 swin_tiny_patch4_window7_224 poolformer_s12 poolformerv2_s12
resnest14d tf_efficientnet_lite0 mobileone_s0 efficientnet_b0 repvgg_a0 repghostnet_050 repvit_m0_9
resnet18 resnet26d resnext26ts seresnext26d_32x4d skresnet18 ecaresnet26t efficientnetv2_rw_t mobilenetv2_100
mobilenetv3_small_100 mobilenetv3_large_100 mobilenetv4_conv_small mnasnet_100 fbnetc_100 semnasnet_100
spnasnet_100 mixnet_s tinynet_a lcnet_050 hardcorenas_a ghostnet_100 ghostnetv2_100 rexnet_100 regnetx_002
regnety_002 densenet121 dla34 dpn68 hrnet_w18_small darknet17 ese_vovnet19b_dw selecsls42b deit_tiny_patch16_224
efficientformerv2_s0 mobilevit_xxs mobilevitv2_050 edgenext_xx_small cait_xxs24_224 convit_tiny pit_ti_224
crossvit_tiny_240 gmlp_ti16_224 resmlp_12_224 gcvit_xxtiny maxvit_nano_rw_256 coatnet_nano_rw_224
eva02_tiny_patch14_224 botnet26t_256 halonet26t lambda_resnet26t hgnetv2_b0 starnet_s1 mambaout_femto
nf_resnet26 coat_lite_tiny pvt_v2_b0 visformer_tiny
""".split()


def _err(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0][:140] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}".replace("|", "/")


def _close(a, b) -> tuple[bool, float]:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a - b).max())
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale)), err


def _export(model, x, path: Path) -> str:
    import torch

    try:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
        return "torchscript"
    except Exception:  # models the TorchScript exporter cannot take: torch's own other exporter
        torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"])
        return "dynamo"


def one(name: str, repeats: int) -> dict:
    """Every measurement of one model (run in a child process)."""
    import numpy as np
    import onnx
    import torch

    import graphc
    from graphc.backends.cost import totals
    from graphc.frontends.spec import resolve
    from graphc.passes.channel_groups import channel_groups
    from graphc.passes.prune import prune_graph
    from fuse import latencies, ort_session
    from vs_torch_pruning import clock, run_counted, run_tp, since

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    row: dict = {"model": name}
    ms = resolve(f"timm:{name}")
    model, (x,) = ms.module, ms.example_inputs
    row["side"] = int(x.shape[-1])
    with torch.no_grad():
        y = model(x)
    y = (y[0] if isinstance(y, (tuple, list)) else y).numpy()

    t0 = clock()
    try:
        g = graphc.load(model, example_inputs=x)
    except Exception as e:
        row["import"] = {"error": _err(e)}
        return row
    row["import"] = since(t0)
    row["import"]["nodes"] = len(g.nodes)
    base = totals(g)

    try:
        graphc.run_pipeline(g, "fuse")
        with torch.no_grad():
            yt = graphc.emit_torch(g)(x)
        ok_t, err_t = _close((yt[0] if isinstance(yt, (tuple, list)) else yt).numpy(), y)
        fused = graphc.emit_onnx(g)
        sess = ort_session(fused.SerializeToString(), 1)
        yo = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        ok_o, err_o = _close(yo, y)
        row["fuse"] = {"exact_torch": ok_t, "err_torch": err_t, "exact_onnx": ok_o, "err_onnx": err_o,
                       "nodes": len(g.nodes), "onnx_nodes": len(fused.graph.node)}
    except Exception as e:
        row["fuse"] = {"error": _err(e)}
        fused = None

    if fused is not None:
        try:
            with tempfile.TemporaryDirectory(prefix="graphc-timm-") as d:
                path = Path(d) / "export.onnx"
                exporter = _export(model, x, path)
                ref = onnx.load(str(path))
            sessions = [ort_session(ref.SerializeToString(), 1), ort_session(fused.SerializeToString(), 1)]
            samples = latencies(sessions, x.numpy(), repeats)
            m_ref, m_g = statistics.median(samples[0]), statistics.median(samples[1])
            # Noise: the spread of each side's own runs (interquartile range), relative.
            q_ref, q_g = statistics.quantiles(samples[0], n=4), statistics.quantiles(samples[1], n=4)
            noise = max(q_ref[2] - q_ref[0], q_g[2] - q_g[0]) / 2
            row["onnx"] = {"exporter": exporter, "ref_nodes": len(ref.graph.node), "ms_export": m_ref,
                           "ms_graphc": m_g, "noise_ms": noise}
        except Exception as e:
            row["onnx"] = {"error": _err(e)}

    base_macs, _ = run_counted(model, x)
    t0 = clock()
    try:
        g = graphc.load(model, example_inputs=x)
        groups = channel_groups(g)
        row["groups"] = {"total": len(groups), "prunable": sum(gr.prunable for gr in groups)}
        prune_graph(g, ratio=0.5, groups=groups)
        pruned = graphc.emit_torch(g)
        t = since(t0)
        macs, yp = run_counted(pruned, x)
        if tuple(yp.shape) != tuple(y.shape):
            raise RuntimeError(f"output {tuple(yp.shape)} != {tuple(y.shape)}")
        row["prune"] = {**t, "macs": macs / base_macs, "graph_macs": totals(g)["macs"] / max(1, base["macs"])}
    except Exception as e:
        row["prune"] = {"error": _err(e)}
    # graphc's part of the row, in case Torch-Pruning runs past the time limit.
    print(json.dumps({**row, "tp": {"error": "not reached"}}), flush=True)
    try:
        t, pruned = run_tp(model, x)  # prunes the model in place: last
        macs, yp = run_counted(pruned, x)
        if tuple(yp.shape) != tuple(y.shape):
            raise RuntimeError(f"output {tuple(yp.shape)} != {tuple(y.shape)}")
        row["tp"] = {**t, "macs": macs / base_macs}
    except Exception as e:
        row["tp"] = {"error": _err(e)}
    return row


def run_child(name: str, limit: float, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--repeats", str(repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rows = [line for line in out.splitlines() if line.startswith("{")]
        if not rows:
            return {"model": name, "error": f"over the {limit:.0f} s limit"}
        row = json.loads(rows[-1])  # graphc's measurements: Torch-Pruning ran past the limit
        row["tp"] = {"error": f"over the {limit:.0f} s limit"}
        row["wall"] = time.perf_counter() - t0
        return row
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            row = json.loads(line)
            row["wall"] = time.perf_counter() - t0
            return row
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1][:160]
    return {"model": name, "error": f"the process died (exit {p.returncode}): {tail}"}


def load_rows(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    return {r["model"]: r for r in map(json.loads, filter(str.strip, path.read_text().splitlines()))}


def _ok(r: dict, key: str) -> bool:
    return key in r and "error" not in r[key]


def table(rows: list[dict]) -> str:
    lines = ["| model | input | import CPU s | fuse exact torch / ORT | groups prunable | prune 50%: MACs "
             "| graphc / TP CPU s | ratio | TP MACs | ONNX ms graphc / export | |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | fail: {r['error']} | | | | | | | | |")
            continue
        imp = f"{r['import']['time']:.2f}" if _ok(r, "import") else f"fail: {r['import']['error']}"
        fu = r.get("fuse", {})
        fus = ("yes / yes" if fu.get("exact_torch") and fu.get("exact_onnx") else
               f"{fu.get('err_torch', 0):.1e} / {fu.get('err_onnx', 0):.1e}") if _ok(r, "fuse") else \
            (f"fail: {fu['error']}" if fu else "")
        gr = r.get("groups", {})
        grs = f"{gr['prunable']}/{gr['total']}" if _ok(r, "groups") else ""
        pr, tp = r.get("prune", {}), r.get("tp", {})
        prs = f"{pr['macs']:.2f}" if _ok(r, "prune") else (f"fail: {pr['error']}" if pr else "")
        times = (f"{pr['time']:.2f} / " if _ok(r, "prune") else "- / ") + (f"{tp['time']:.2f}" if _ok(r, "tp") else "-")
        ratio = f"{pr['time'] / tp['time']:.2f}x" if _ok(r, "prune") and _ok(r, "tp") else "-"
        tps = f"{tp['macs']:.2f}" if _ok(r, "tp") else "fail"
        on = r.get("onnx", {})
        if _ok(r, "onnx"):
            ons = f"{on['ms_graphc']:.2f} / {on['ms_export']:.2f}"
            slower = on["ms_graphc"] > on["ms_export"] + on["noise_ms"]
            verdict = "SLOWER" if slower else ""
        else:
            ons, verdict = (f"fail: {on['error']}" if on else "-"), ""
        lines.append(f"| {r['model']} | {r.get('side', '')} | {imp} | {fus} | {grs} | {prs} | {times} | {ratio} "
                     f"| {tps} | {ons} | {verdict} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    n = len(rows)
    imported = [r for r in rows if "error" not in r and _ok(r, "import")]
    exact = [r for r in imported if _ok(r, "fuse") and r["fuse"]["exact_torch"] and r["fuse"]["exact_onnx"]]
    pruned = [r for r in rows if "error" not in r and _ok(r, "prune")]
    tp_ok = [r for r in rows if "error" not in r and _ok(r, "tp")]
    both = [r for r in pruned if _ok(r, "tp")]
    ratios = {r["model"]: r["prune"]["time"] / r["tp"]["time"] for r in both}
    lat = [r for r in rows if "error" not in r and _ok(r, "onnx")]
    slower = [r["model"] for r in lat if r["onnx"]["ms_graphc"] > r["onnx"]["ms_export"] + r["onnx"]["noise_ms"]]
    rel = [r["onnx"]["ms_graphc"] / r["onnx"]["ms_export"] for r in lat]
    fails = lambda rs, key: ", ".join(r["model"] for r in rows if r not in rs) or "none"  # noqa: E731
    out = [f"{n} models. Imported {len(imported)}/{n} (failed: {fails(imported, 'import')}); "
           f"`fuse` exact in torch and onnxruntime on {len(exact)}/{len(imported)} imported "
           f"(not: {', '.join(r['model'] for r in imported if r not in exact) or 'none'}); "
           f"pruned at ratio 0.5 by graphc {len(pruned)}/{n} (failed: {fails(pruned, 'prune')}), "
           f"by Torch-Pruning {len(tp_ok)}/{n}."]
    if ratios:
        worst = max(ratios, key=ratios.get)
        within = sum(v <= 1.0 for v in ratios.values())
        out.append(f"Time graphc / Torch-Pruning over the {len(ratios)} models both prune: median "
                   f"{statistics.median(ratios.values()):.2f}x, worst {ratios[worst]:.2f}x ({worst}); "
                   f"graphc no slower on {within}/{len(ratios)}.")
    if lat:
        out.append(f"ONNX latency graphc / torch.onnx.export over {len(lat)} models: median "
                   f"{statistics.median(rel):.3f}x, worst {max(rel):.3f}x; slower beyond noise: "
                   f"{', '.join(slower) or 'none'}.")
    return " ".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated timm model names (default: the sample above)")
    ap.add_argument("--limit", type=float, default=900, help="wall seconds per model process (default 900)")
    ap.add_argument("--repeats", type=int, default=20, help="timed onnxruntime runs per variant (default 20)")
    ap.add_argument("--save", type=Path, metavar="FILE", help="append rows to FILE (JSON lines); skip models there")
    ap.add_argument("--redo", action="store_true", help="re-measure the named models even when saved")
    ap.add_argument("--no-run", action="store_true", help="tabulate the rows in --save; run nothing")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/zoo.md alone")
    ap.add_argument("--note", default="", help="a sentence about this run for the docs section")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one(args.child, args.repeats)), flush=True)
        return 0
    if args.no_run and not args.save:
        ap.error("--no-run needs --save FILE")
    names = args.models.split(",") if args.models else MODELS
    done = load_rows(args.save)
    todo = [] if args.no_run else [n for n in names if args.redo or n not in done]
    for name in todo:
        row = run_child(name, args.limit, args.repeats)
        done[name] = row
        print(json.dumps(row), flush=True)
        if args.save:
            with args.save.open("a") as f:
                f.write(json.dumps(row) + "\n")
    rows = [done[n] for n in names if n in done]
    text, head = table(rows), summary(rows)
    missing = [n for n in names if n not in done]
    if missing:
        head += f" Not measured ({len(missing)}): {', '.join(missing)}."
    print(text)
    print(head)
    if not args.no_write:
        from scaling import write_section

        import timm
        import torch

        body = ("## timm models\n\n"
                f"`python bench/timm_zoo.py`: timm {timm.__version__}, torch {torch.__version__}, "
                f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs; one process per model, "
                f"{args.limit:.0f} s wall each. Random seeded weights, each model's default input size. "
                "Times are CPU seconds of the process (OMP_NUM_THREADS=1). MACs are relative to the unpruned "
                "model (torch.utils.flop_counter). ONNX latency: onnxruntime CPU, one thread, median of "
                f"{args.repeats} runs per variant timed round-robin, graphc's `fuse` output against "
                "`torch.onnx.export` (TorchScript exporter, opset 17; dynamo where that fails); SLOWER marks "
                "graphc beyond half the larger interquartile range."
                + (f" {args.note.strip()}" if args.note.strip() else "") + "\n\n" + head + "\n\n" + text)
        print(f"wrote {write_section('timm', body, DOC)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
