"""Milliseconds per DNS/OLMP training step and per OLMP candidate evaluation, beside the same
architecture trained as a plain torch module and as a torch module masked by
``torch.nn.utils.prune`` (the peer a PyTorch user would write), in one run.

Rows per model:
- ``dns step, surgery phase``: a training step of DNS while every layer undergoes surgery
  (the first steps of a run, where (1 + gamma i)^-1 is close to 1);
- ``dns step, masks frozen``: a step after ``prune_until`` (forward/backward through the masks);
- ``olmp candidate``: one fitness evaluation of the search (surgery proposal for every layer
  plus the accuracy of the search batch), averaged over a short search;
- ``torch nn.Module step`` / ``torch prune-masked step``: the same SGD step on the model built
  directly in torch, without and with ``torch.nn.utils.prune`` masks (the floor to compare to).

Times are CPU seconds of the process on a CPU (torch on one thread), so other work on a shared
machine does not inflate them; wall seconds with a CUDA sync on a GPU.

    OMP_NUM_THREADS=1 python bench/olmp_step.py --data mnist-idx:../shared/datasets/mnist-t10k
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def clock() -> float:
    """CPU seconds of this process on a CPU (one thread: a shared machine's load does not
    count), wall seconds after a sync on CUDA."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def timed(fn, steps: int) -> float:
    """ms per step of ``fn(steps)`` (after a short warm-up run)."""
    fn(5)
    t = clock()
    fn(steps)
    return (clock() - t) / steps * 1e3


def rows_for(name: str, data, steps: int, evaluations: int, device: str) -> list[list[str]]:
    import graphc
    from graphc.models import build
    from graphc.passes.dns import MaskedModel, SurgeryHook, device_for, prunable_layers
    from graphc.passes.olmp import OLMP, SearchSurgery, search_batch
    from graphc.registry import PassContext
    from graphc.training import train

    dev = device_for(device)
    torch.manual_seed(0)
    src = graphc.load(build(name).eval(), example_inputs=data.sample(2))
    out = []

    def dns(stop: int):
        mm = MaskedModel(src.clone(), prunable_layers(src), dev)
        hook = SurgeryHook(mm, [1.0] * len(mm.layers), 0.0, 0.0, stop, 0)

        def go(n):
            train(mm.module, data, epochs=n, max_steps=n, lr=0.01, momentum=0.9, weight_decay=5e-4,
                  batch_size=64, hooks=[hook], quiet=True)
        return go

    out.append([name, "dns step, surgery phase", f"{timed(dns(10 ** 9), steps):.2f}"])
    out.append([name, "dns step, masks frozen", f"{timed(dns(0), steps):.2f}"])

    mm = MaskedModel(src.clone(), prunable_layers(src), dev)
    opts = OLMP(evaluations=evaluations, popsize=10)
    ctx = PassContext(data=data, seed=0, quiet=True)
    hook = SearchSurgery(mm, opts, search_batch(data, opts.search_batch, dev), ctx, 10 ** 9)
    every = list(range(len(mm.layers)))
    hook.search(every, 1)  # warm-up
    t = clock()
    hook.search(every, 1)
    out.append([name, f"olmp candidate ({opts.search_batch} images)", f"{(clock() - t) / evaluations * 1e3:.2f}"])

    def plain(masked: bool):
        from torch.nn.utils import prune

        torch.manual_seed(0)
        m = build(name).to(dev)
        if masked:
            for mod in m.modules():
                if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                    prune.random_unstructured(mod, "weight", amount=0.9)

        def go(n):
            train(m, data, epochs=n, max_steps=n, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64,
                  quiet=True)
        return go

    out.append([name, "torch nn.Module step", f"{timed(plain(False), steps):.2f}"])
    out.append([name, "torch prune-masked step", f"{timed(plain(True), steps):.2f}"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mnist-idx:../shared/datasets/mnist-t10k")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    from graphc.data import load_data

    data = load_data(args.data)
    rows = [r for name in args.models.split(",") if name
            for r in rows_for(name, data, args.steps, args.evaluations, args.device)]
    print("| model | what | ms |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
