"""rebirth on digits: stage 1 lowers each merged layer's block-reconstruction error on real data,
the prune-stream preset keeps accuracy within 1 point of the source (from an ONNX file, through
the CLI), and the pass says clearly what it lacks."""
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.check import accuracy, result_runner
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


def test_prune_stream_preset_from_onnx_keeps_accuracy_within_one_point(digits, lenet, tmp_path):
    model, acc0 = lenet
    src = tmp_path / "lenet5.onnx"
    graphc.save(graphc.load(model, example_inputs=digits.sample(1)), str(src))
    out = tmp_path / "slim.onnx"
    assert main(["optimize", str(src), "--passes", "prune-stream", "--data", "digits", "-o", str(out), "-q"]) == 0
    slim = graphc.load(str(out))
    assert len(slim.find("max_pool2d")) == 0 and len(slim.find("conv2d")) == 2
    assert slim.num_params() < 0.3 * graphc.load(str(src)).num_params()
    run, _ = result_runner(slim, "onnx")
    assert accuracy(run, digits, 1) >= 100 * acc0 - 1.0


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


def test_rebirth_under_torchrun_keeps_replicas_equal(tmp_path, blobs, torchrun):
    torchrun(Path(__file__).with_name("rebirth_ddp_worker.py"), blobs, tmp_path / "rank")
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r0["layers"]) == 2 and int(r0["steps1"]) > 0
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k])


@pytest.mark.parametrize("name", ["stream-merge", "rebirth", "finetune", "prune-stream"])
def test_graphc_passes_shows_a_before_after_ir_example(name, capsys):
    assert main(["passes", name]) == 0
    doc = capsys.readouterr().out
    before, _, after = doc.partition("==>")
    assert after, f"{name}: no before/after example"
    assert " = conv2d(%x" in before and " = conv2d(%x" in after  # IR lines on both sides
