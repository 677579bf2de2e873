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
