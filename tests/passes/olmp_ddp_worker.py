"""Run by torch.distributed.run from test_olmp_ddp.py: olmp on a small LeNet-300 with a tiny
budget; each rank saves its pruned weights and masks."""
import sys

import numpy as np
import torch

import graphc
from graphc.data import load_data
from graphc.models import build
from graphc.registry import PassContext, get_pass
from graphc.training.loop import distributed_context


def main(data_path: str, out_prefix: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_data(data_path)
    g = graphc.load(build("lenet300", size=8, classes=3).eval(), example_inputs=data.sample(2))
    res = get_pass("olmp")(iterations=12, search_every=4, evaluations=20, search_batch=40, lr=0.05,
                           device="cpu").run(g, PassContext(data=data, quiet=True))
    d = distributed_context()
    arrays = {k: p.data for k, p in g.params.items()}
    arrays.update({f"{k}.mask": p.mask for k, p in g.params.items() if p.mask is not None})
    np.savez(f"{out_prefix}{d.rank}.npz", world=d.world, steps=res.stats["steps"], kept=res.stats["kept"], **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
