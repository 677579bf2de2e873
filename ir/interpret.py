"""The reference interpreter: a graph run node by node with each op's ``OpDef.torch`` hook.

This is the one place graphc executes a graph itself; the numeric checks (graphc.check), the
IR-file source (graphc.source), the trainable view (graphc.training.graph_module) and the tests
all run through :func:`run_graph`. Weights are read through :meth:`Param.tensor`, a torch view
of the param's numpy array, so a run copies no weight.

Invariants: the graph is never changed; an output that is a param comes back as a copy, so
writing to a result cannot reach the graph's weights.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from graphc.ir.graph import Graph, Node


def run_graph(graph: Graph, inputs, *, params: Mapping[str, torch.Tensor] | None = None,
              attrs: Callable[[Node], dict] | None = None, grad: bool = False) -> list[torch.Tensor]:
    """The graph's outputs on ``inputs`` (tensors or arrays, in graph-input order).

    ``params`` replaces some params by tensors (a training module's parameters); ``attrs``
    gives the attributes a node runs with (default: its own); ``grad`` keeps autograd on.
    """
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    env = {id(v): torch.as_tensor(x) for v, x in zip(graph.inputs, inputs)}
    for name, p in graph.params.items():
        env[id(p.value)] = params[name] if params is not None and name in params else p.tensor()
    with torch.set_grad_enabled(grad):
        for n in graph.nodes:
            out = n.opdef.run([env[id(v)] for v in n.inputs], attrs(n) if attrs is not None else n.attrs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for v, t in zip(n.outputs, outs):
                env[id(v)] = t
    return [env[id(v)].clone() if v.param is not None else env[id(v)] for v in graph.outputs]
