"""Run by torch.distributed.run from test_loop.py: train a tiny model for a few steps with a
projection hook and save this rank's weights."""
import sys

import numpy as np
import torch
from torch import nn

from graphc.training import Projection, train
from graphc.training.loop import distributed_context


def main(data_path: str, out_prefix: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def shrink(m, lr):
        w = m[0].weight
        w.copy_(torch.sign(w) * torch.clamp(w.abs() - 0.01, min=0))

    res = train(model, data_path, epochs=1, lr=0.1, batch_size=8, max_steps=3, hooks=[Projection(shrink)],
                quiet=True)
    d = distributed_context()
    np.savez(f"{out_prefix}{d.rank}.npz", steps=res.steps, world=d.world,
             **{k: v.detach().numpy() for k, v in model.state_dict().items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
