import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from graphc.data import load_data
from graphc.training import CosineLR, GradMask, Hook, Projection, Regularizer, evaluate, train


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_train_learns_and_is_deterministic(blobs):
    a, b = tiny(), tiny()
    ra = train(a, blobs, epochs=3, lr=0.05, batch_size=16, quiet=True, seed=3)
    rb = train(b, blobs, epochs=3, lr=0.05, batch_size=16, quiet=True, seed=3)
    assert ra.val_acc > 0.9 and ra.steps == 3 * 5
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert evaluate(a, blobs) == ra.val_acc
    assert not a.training


def test_hooks_run_in_order_and_shape_training(blobs):
    model = tiny()
    calls = []

    class Spy(Hook):
        def on_epoch(self, epoch, epochs, opt):
            calls.append(("epoch", epoch))

        def mask_grads(self, m):
            calls.append("mask")

        def after_step(self, m, step, lr):
            calls.append(("step", step))

    frozen = torch.zeros_like(model[0].weight)
    frozen[0] = 1  # only filter 0 may move
    before = model[0].weight.detach().clone()
    zero_bias = Projection(lambda m, lr: m[3].bias.zero_())
    l2 = Regularizer(lambda m: 1e-3 * m[3].weight.pow(2).sum())
    train(model, blobs, epochs=2, lr=0.05, momentum=0.0, batch_size=32, quiet=True,
          hooks=[Spy(), GradMask({model[0].weight: frozen}), zero_bias, l2, CosineLR()])
    assert calls[:4] == [("epoch", 0), "mask", ("step", 1), "mask"]
    assert ("epoch", 1) in calls
    w = model[0].weight.detach()
    assert torch.equal(w[1:], before[1:]) and not torch.equal(w[0], before[0])
    assert torch.count_nonzero(model[3].bias) == 0


def test_max_steps_and_fractional_epochs(blobs):
    assert train(tiny(), blobs, epochs=0.4, batch_size=16, quiet=True).steps == 2
    assert train(tiny(), blobs, epochs=5, batch_size=16, max_steps=4, quiet=True).steps == 4


def test_user_loaders(blobs):
    d = load_data(blobs)
    tl, vl = d.loaders(16)
    res = train(tiny(), (tl, vl), epochs=1, quiet=True)
    assert res.steps == len(tl) and 0 <= res.val_acc <= 1


def test_two_gloo_processes_keep_replicas_equal(blobs, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), blobs, str(tmp_path / "rank")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r0["steps"]) == 3
    single = tiny().state_dict()
    for k in single:
        np.testing.assert_array_equal(r0[k], r1[k])
    # training moved the weights, and the projection reached both replicas
    assert not np.array_equal(r0["0.weight"], single["0.weight"].numpy())
    assert (r0["0.weight"] == 0).sum() == (r1["0.weight"] == 0).sum()
