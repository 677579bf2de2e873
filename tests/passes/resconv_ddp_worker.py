"""Run by torch.distributed.run from test_resconv.py: resconv-wrap and resconv-train on a small
plain20; each rank saves its weights and what the proximal step zeroed."""
import sys

import numpy as np
import torch

import graphc
from graphc.data import load_data
from graphc.models import build
from graphc.registry import PassContext
from graphc.training.loop import distributed_context


def main(data_path: str, out_prefix: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_data(data_path)
    g = graphc.load(build("plain20", size=8, classes=3).eval(), example_inputs=data.sample(2))
    rep = graphc.run_pipeline(g, "resconv-wrap,resconv-train(lambda=200,epochs=8,lr=0.01,device=cpu)",
                              PassContext(data=data, quiet=True))
    st = rep.passes[-1].stats
    d = distributed_context()
    np.savez(f"{out_prefix}{d.rank}.npz", world=d.world, steps=st["steps"], zero=st["zero_scales"],
             **{k: p.data for k, p in g.params.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
