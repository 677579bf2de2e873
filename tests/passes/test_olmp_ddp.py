"""olmp under torchrun: two gloo processes end with the same weights and masks (the search and
the surgery run on every rank with the same seed, batch and weights)."""
from pathlib import Path

import numpy as np


def test_olmp_under_torchrun_keeps_replicas_equal(tmp_path, blobs, torchrun):
    torchrun(Path(__file__).with_name("olmp_ddp_worker.py"), blobs, tmp_path / "rank")
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r0["steps"]) == 12
    assert set(r0.files) == set(r1.files) and any(k.endswith(".mask") for k in r0.files)
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k])
    assert int(r0["kept"]) < sum(r0[k].size for k in r0.files if k.endswith(".mask"))
