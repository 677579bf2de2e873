"""The loop reads hook status (a reduction over weights, a host sync) only when a drawn bar
refreshes: never when no bar draws, and far fewer times than steps when one does."""
import numpy as np
import pytest
import torch
from torch import nn

from graphc.training import Hook, train


class CountingStatus(Hook):
    def __init__(self):
        self.calls = 0

    def status(self):
        self.calls += 1
        return {"n": self.calls}


@pytest.fixture
def blobs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 256)
    x = rng.normal(0, 0.3, (256, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def test_status_is_not_read_without_a_bar(blobs):
    hook = CountingStatus()
    res = train(tiny(), blobs, epochs=2, batch_size=8, hooks=[hook], quiet=True)
    assert res.steps > 20 and hook.calls == 0
    assert np.isfinite(res.train_loss) and 0 <= res.train_acc <= 1
    assert len(res.history) == 2 and all(isinstance(h["loss"], float) for h in res.history)


def test_status_is_read_when_the_bar_refreshes_not_every_step(blobs, monkeypatch):
    import graphc.training.loop as loop

    monkeypatch.setenv("GRAPHC_PROGRESS", "always")
    monkeypatch.setattr(loop, "REFRESH_S", 1e9)  # no second refresh within the test, however slow
    hook = CountingStatus()
    res = train(tiny(), blobs, epochs=2, batch_size=8, hooks=[hook])
    assert res.steps > 20 and hook.calls == 1
