"""Models over protobuf's 2 GB limit through ``convert``, ``fuse`` and ``prune``.

Generates an ONNX model just over 2 GiB (a chain of Gemm + Relu layers, 4096 wide, fp32,
weights as external data in ``big.onnx.data``), then runs each command in its own process:

    graphc convert big.onnx -o converted.onnx
    graphc optimize big.onnx --passes fuse -o fused.onnx
    graphc optimize big.onnx --passes 'prune(ratio=0.02)' -o pruned.onnx

and prints, per command, its exit code, wall time, peak resident memory, the last line of its
output, and the files it wrote with their sizes. Each written model is then loaded by
onnxruntime and compared with the source model on one random input.

    python bench/big_model.py                 # in a temporary folder, removed afterwards
    python bench/big_model.py --dir /scratch  # keep the files there
    python bench/big_model.py --layers 4      # a small model (the same commands, under the limit)
    python bench/big_model.py --dir /scratch --commands prune   # reuse /scratch/big.onnx, one command

The prune ratio is small so that the pruned model, too, stays over the limit.

Needs about 14 GB of memory and 10 GB of disk at the default size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH = 4096
LAYERS = 33  # 33 x 64 MiB of weights: 2.06 GiB, past protobuf's 2 GiB


def generate(path: Path, layers: int, width: int = WIDTH, seed: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) * np.float32(1.0 / np.sqrt(width)))
        b = rng.standard_normal(width, dtype=np.float32) * np.float32(0.01)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        del w
        y = f"fc{i}"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], name=f"fc{i}", transB=1))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}"], name=f"relu{i}"))
            y = f"relu{i}"
        x = y
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def generate_single(path: Path, rows: int = 33000, cols: int = 16384, seed: int = 0) -> None:
    """One Gemm whose weight alone is over 2 GiB (rows x cols fp32), written straight to the
    data file in slices, so the generator never holds it (or a proto of it) whole."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.external_data_helper import set_external_data

    rng = np.random.default_rng(seed)
    data = path.with_name(path.name + ".data")
    with open(data, "wb") as f:
        for start in range(0, rows, 1024):
            n = min(1024, rows - start)
            f.write((rng.standard_normal((n, cols), dtype=np.float32) / np.float32(np.sqrt(cols))).tobytes())
    w = TensorProto(name="fc.weight", data_type=TensorProto.FLOAT, dims=[rows, cols])
    w.raw_data = b"\0"  # set_external_data wants the field; the bytes live in the file
    set_external_data(w, data.name, 0, rows * cols * 4)
    w.ClearField("raw_data")
    node = helper.make_node("Gemm", ["x", "fc.weight"], ["y"], name="fc", transB=1)
    graph = helper.make_graph([node], "big1", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cols])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows])], initializer=[w])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def run(cmd: list[str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "seconds": time.perf_counter() - t0, "peak_gib": usage.ru_maxrss / 1024 ** 2,
            "last": (out.strip().splitlines() or [""])[-1]}


def compare(source: Path, result: Path) -> float:
    """Max abs difference of the two models' outputs on one random input, in onnxruntime."""
    import onnxruntime as ort

    outs, x = [], None
    for path in (source, result):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        if x is None:
            x = np.random.default_rng(1).standard_normal(sess.get_inputs()[0].shape, dtype=np.float32)
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
        del sess
    return float(np.abs(outs[0] - outs[1]).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="work in this folder and keep the files (default: a temporary folder)")
    ap.add_argument("--layers", type=int, default=LAYERS, help=f"Gemm layers of {WIDTH}x{WIDTH} (default {LAYERS})")
    ap.add_argument("--commands", default="convert,fuse,prune", help="which commands to run (default: all three)")
    ap.add_argument("--single-tensor", action="store_true",
                    help="instead: one Gemm whose one weight is over 2 GiB (33000 x 16384 fp32)")
    args = ap.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="graphc-big-"))
    work.mkdir(parents=True, exist_ok=True)
    graphc = [sys.executable, "-m", "graphc"]
    try:
        src = work / ("big1.onnx" if args.single_tensor else "big.onnx")
        t0 = time.perf_counter()
        want = 33000 * 16384 * 4 if args.single_tensor else args.layers * (WIDTH * WIDTH + WIDTH) * 4
        data = work / (src.name + ".data")
        if not (data.exists() and want <= data.stat().st_size < want + 4096 * 2 * args.layers):
            generate_single(src) if args.single_tensor else generate(src, args.layers)
        size = src.stat().st_size + data.stat().st_size
        print(f"{src.name} + {src.name}.data: {size / 1024 ** 3:.3f} GiB ({size:,} bytes), "
              f"ready in {time.perf_counter() - t0:.1f}s", flush=True)
        commands = {
            "convert": graphc + ["convert", src.name, "-o", "converted.onnx"],
            "fuse": graphc + ["optimize", src.name, "--passes", "fuse", "-q", "-o", "fused.onnx"],
            "prune": graphc + ["optimize", src.name, "--passes", "prune(ratio=0.02)", "-q", "-o", "pruned.onnx"],
        }
        commands = {k: v for k, v in commands.items() if k in args.commands.split(",")}
        print(f"{'command':8} {'rc':>3} {'time':>8} {'peak RSS':>9}  files written; max |out - source| (onnxruntime)",
              flush=True)
        for name, cmd in commands.items():
            before = set(os.listdir(work))
            r = run(cmd, work)
            new = sorted(set(os.listdir(work)) - before)
            files = ", ".join(f"{f} {(work / f).stat().st_size / 1024 ** 3:.3f} GiB" for f in new) or "none"
            err = ""
            if r["rc"] == 0 and name != "prune" and new:
                err = f"; max err {compare(src, work / new[0]):.3g}"
            print(f"{name:8} {r['rc']:>3} {r['seconds']:7.1f}s {r['peak_gib']:7.2f} GiB  {files}{err}")
            print(f"{'':8}     last line: {r['last'][:160]}", flush=True)
            for f in new:
                if not f.startswith("big") and not args.dir:
                    (work / f).unlink()
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
