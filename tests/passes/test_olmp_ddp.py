"""olmp under torchrun: two gloo processes end with the same weights and masks (the search and
the surgery run on every rank with the same seed, batch and weights)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_olmp_under_torchrun_keeps_replicas_equal(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = rng.normal(0, 0.3, (96, 1, 8, 8)).astype(np.float32)
    for c in range(3):
        x[y == c, 0, c * 2:(c * 2) + 2, :] += 2.0
    data = tmp_path / "blobs.npz"
    np.savez(data, x=x, y=y)
    worker = Path(__file__).with_name("olmp_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(data), str(tmp_path / "rank")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r0["steps"]) == 12
    assert set(r0.files) == set(r1.files) and any(k.endswith(".mask") for k in r0.files)
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k])
    assert int(r0["kept"]) < sum(r0[k].size for k in r0.files if k.endswith(".mask"))
