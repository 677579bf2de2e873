"""A trainable view of an IR graph: an ``nn.Module`` whose forward runs each node with its op's
torch semantics (the op table is the single source of truth) and whose parameters are the
graph's float ``weight`` params, so a training pass can train the graph and write the weights
back.

Invariants:

- Parameter ``i`` of the module is the graph param ``names[i]``; ``write_back`` copies every one
  into the graph in its param's own dtype and touches nothing else.
- Dim 0 of the graph's inputs is the batch: shapes fixed into ``reshape``/``expand`` attributes
  at trace time follow the batch of the tensors actually fed, so training can use any batch.
- Buffers and constants (BN statistics, folded constants) are held fixed; ``batch_norm``
  computes with its running statistics, as in inference.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from graphc.ir.graph import Graph, Param
from graphc.ir.interpret import run_graph

_BATCH_SHAPED = ("reshape", "expand")


def _default_trainable(p: Param) -> bool:
    return p.kind == "weight" and np.issubdtype(p.data.dtype, np.floating)


class GraphModule(nn.Module):
    def __init__(self, graph: Graph, trainable: Callable[[Param], bool] = _default_trainable):
        super().__init__()
        self.graph = graph
        self.names: list[str] = []
        self.weights = nn.ParameterList()
        self._fixed: dict[str, torch.Tensor] = {}
        for name, p in graph.params.items():
            t = torch.from_numpy(np.array(p.data, copy=True))
            if trainable(p):
                self.names.append(name)
                self.weights.append(nn.Parameter(t))
            else:
                self._fixed[name] = t
        self._index = {n: i for i, n in enumerate(self.names)}
        self._batch = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None

    def _apply(self, fn, recurse=True):
        # The fixed (non-trained) tensors are not buffers (they stay out of state_dict), so
        # .to(device) / .double() reach them here.
        super()._apply(fn, recurse)
        self._fixed = {k: fn(v) for k, v in self._fixed.items()}
        return self

    def param(self, name: str) -> nn.Parameter:
        """The module parameter behind graph param ``name``."""
        return self.weights[self._index[name]]

    def _attrs(self, node, batch: int) -> dict:
        if node.op in _BATCH_SHAPED and self._batch is not None and batch != self._batch:
            shape = list(node.attrs.get("shape", []))
            if shape and shape[0] == self._batch:
                return {**node.attrs, "shape": [batch] + shape[1:]}
        return node.attrs

    def feeds(self) -> dict[str, torch.Tensor]:
        """The tensor the forward feeds for each graph param: the trainable parameters and the
        fixed tensors (a subclass may put a function of a parameter in its place, e.g. a
        masked weight, keeping the parameter itself what the optimiser updates)."""
        params = dict(zip(self.names, self.weights))
        params.update(self._fixed)
        return params

    def forward(self, *xs):
        params = self.feeds()
        batch = xs[0].shape[0] if xs and xs[0].dim() else 1
        res = run_graph(self.graph, list(xs), params=params, attrs=lambda n: self._attrs(n, batch),
                        grad=torch.is_grad_enabled())
        return res[0] if len(res) == 1 else tuple(res)

    @torch.no_grad()
    def write_back(self, graph: Graph | None = None) -> None:
        """Copy the trained weights into the graph's params (same names, same dtypes)."""
        graph = graph or self.graph
        for name, w in zip(self.names, self.weights):
            p = graph.params[name]
            p.set_data(w.detach().cpu().numpy().astype(p.data.dtype, copy=True))


def device_for(requested: str = "auto") -> torch.device:
    """The torch device a training pass runs on: ``auto`` is CUDA when present, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def graph_module_on(graph: Graph, device: str | torch.device = "auto") -> "GraphModule":
    """A trainable :class:`GraphModule` of ``graph`` with its weights and fixed tensors on
    ``device`` (a name as :func:`device_for` reads it, or a torch device)."""
    dev = device if isinstance(device, torch.device) else device_for(device)
    return GraphModule(graph).to(dev)
