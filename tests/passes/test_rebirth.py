"""rebirth on digits: stage 1 lowers each merged layer's block-reconstruction error on real data,
the prune-stream preset keeps accuracy within 1 point of the source (from an ONNX file, through
the CLI), and the pass says clearly what it lacks."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

import graphc
from graphc.cli.main import main
from graphc.data import load_data
from graphc.errors import DataError, PassError
from graphc.models.examples import train_example
from graphc.registry import PassContext


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def lenet(digits):
    model, res = train_example("lenet5", digits)
    return model, res.val_acc


def test_stage1_lowers_block_reconstruction_error(digits, lenet):
    model, _ = lenet
    g = graphc.load(model, example_inputs=digits.sample(1))
    rep = graphc.run_pipeline(g, "stream-merge(kinds=[pool]),rebirth(stage1-epochs=2,epochs=0)",
                              PassContext(data=digits, quiet=True))
    st = rep.passes[-1].stats
    assert st["layers"] == 2 and not st["skipped"]
    for layer in ("conv1", "conv2"):
        assert st["recon_after"][layer] < 0.7 * st["recon_before"][layer], st
    assert st["steps_stage2"] == 0 and st["acc_stage1"] > st["acc_merged"]
    assert st["split"].startswith("sklearn digits")


def ort_accuracy(path, data):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x, y = data.x_val.numpy(), data.y_val.numpy()
    pred = [int(np.argmax(sess.run(None, {name: x[i:i + 1]})[0])) for i in range(len(y))]
    return float(np.mean(np.array(pred) == y))


def test_prune_stream_preset_from_onnx_keeps_accuracy_within_one_point(digits, lenet, tmp_path):
    model, acc0 = lenet
    src = tmp_path / "lenet5.onnx"
    graphc.save(graphc.load(model, example_inputs=digits.sample(1)), str(src))
    out = tmp_path / "slim.onnx"
    assert main(["optimize", str(src), "--passes", "prune-stream", "--data", "digits", "-o", str(out), "-q"]) == 0
    slim = graphc.load(str(out))
    assert len(slim.find("max_pool2d")) == 0 and len(slim.find("conv2d")) == 2
    assert slim.num_params() < 0.3 * graphc.load(str(src)).num_params()
    assert ort_accuracy(out, digits) >= acc0 - 0.01


def test_rebirth_needs_the_merge_in_the_same_run_and_data(digits, lenet):
    model, _ = lenet
    g = graphc.load(model, example_inputs=digits.sample(1))
    graphc.run_pipeline(g, "stream-merge(kinds=[pool])")
    with pytest.raises(PassError, match="run stream-merge before rebirth"):
        graphc.run_pipeline(g, "rebirth", PassContext(data=digits, quiet=True))
    with pytest.raises(DataError, match="rebirth"):
        graphc.run_pipeline(g, "rebirth")
    with pytest.raises(PassError, match="lr"):
        graphc.run_pipeline(g, "rebirth(lr=0)", PassContext(data=digits, quiet=True))


def test_rebirth_under_torchrun_keeps_replicas_equal(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = rng.normal(0, 0.3, (96, 1, 8, 8)).astype(np.float32)
    for c in range(3):
        x[y == c, 0, c * 2:(c * 2) + 2, :] += 2.0
    data = tmp_path / "blobs.npz"
    np.savez(data, x=x, y=y)
    worker = Path(__file__).with_name("rebirth_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(data), str(tmp_path / "rank")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r0["layers"]) == 2 and int(r0["steps1"]) > 0
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k])
