import os

import pytest


def pytest_configure(config):
    # Under xdist each worker gets one core's worth of threads; two workers on a 2-core box
    # each spinning two threads would only fight.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture
def blobs(tmp_path):
    """A separable 3-class problem of 1x8x8 images (96 of them), as an .npz data spec."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = rng.normal(0, 0.3, (96, 1, 8, 8)).astype(np.float32)
    for c in range(3):
        x[y == c, 0, c * 2:(c * 2) + 2, :] += 2.0
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x, y=y)
    return str(path)
