"""Lowering through torch.onnx: for IR nodes the lowering table does not cover (opaque torch
nodes from fx, attention, interpolate...).

The node's own torch semantics (``OpDef.torch`` with its attributes, which for an opaque torch
node calls the recorded callable) run inside a one-node wrapper module that torch.onnx
(TorchScript exporter) exports at the target opset; the exported graph is spliced in with its
inputs and outputs renamed onto the node's tensors and every inner name prefixed by the node
name, so splices never collide. The example inputs are the node's real params where it has them
(index tensors must stay in range) and zeros elsewhere.
"""
from __future__ import annotations

import io
import warnings

from graphc.errors import UnsupportedError


def lower_via_torch(e, node, ins, outs) -> None:
    import onnx
    import torch

    from graphc.ir.types import torch_dtype

    opdef = node.opdef
    if opdef.torch is None:
        raise UnsupportedError(f"{node.op} node {node.name} has neither an ONNX lowering nor torch semantics")
    attrs = dict(node.attrs)

    class _One(torch.nn.Module):
        def forward(self, *xs):
            return opdef.run(list(xs), attrs)

    examples = []
    for v in node.inputs:
        if v.param is not None:
            examples.append(torch.from_numpy(v.param.data.copy()))
        else:
            examples.append(torch.zeros(v.shape, dtype=torch_dtype(v.dtype)))
    in_names = [f"in{i}" for i in range(len(ins))]
    out_names = [f"out{i}" for i in range(len(outs))]
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_One(), tuple(examples), buf, dynamo=False, opset_version=e.opset,
                              input_names=in_names, output_names=out_names, do_constant_folding=True)
    except Exception as err:
        msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UnsupportedError(f"{node.op} node {node.name}: no ONNX lowering and torch.onnx cannot export it "
                               f"({msg})") from None
    sub = onnx.load_from_string(buf.getvalue())
    splice(e, sub, dict(zip(in_names, ins)), outs, node.name)


def splice(e, sub, input_map: dict[str, str], outs: list[str], prefix: str) -> None:
    """Add ``sub``'s nodes and initializers to the emitter: its inputs renamed by
    ``input_map``, its k-th output written to ``outs[k]``, everything else prefixed."""
    from onnx import helper

    for o in sub.opset_import:
        d = o.domain or ""
        if d != "":
            e.opsets[d] = max(e.opsets.get(d, 0), o.version)
    if len(sub.graph.output) != len(outs):
        raise UnsupportedError(f"node {prefix}: torch.onnx gave {len(sub.graph.output)} outputs, "
                               f"expected {len(outs)}")
    produced = {o for n in sub.graph.node for o in n.output}
    rename: dict[str, str] = {"": ""}
    rename.update(input_map)
    passthrough = []
    for o, target in zip(sub.graph.output, outs):
        if o.name in produced and o.name not in rename:
            rename[o.name] = target
        else:
            passthrough.append((o.name, target))

    def new(name: str) -> str:
        if name not in rename:
            rename[name] = e.fresh(f"{prefix}/{name.lstrip('/')}")
        return rename[name]

    for t in sub.graph.initializer:
        t2 = type(t)()
        t2.CopyFrom(t)
        t2.name = new(t.name)
        e.initializers.append(t2)
    for n in sub.graph.node:
        n2 = type(n)()
        n2.CopyFrom(n)
        del n2.input[:]
        del n2.output[:]
        n2.input.extend(new(i) for i in n.input)
        n2.output.extend(new(o) for o in n.output)
        n2.name = e.node_name(f"{prefix}/{n.op_type}")
        e.nodes.append(n2)
    # An output that is an input, an initializer or another output needs its own node.
    for src, target in passthrough:
        e.nodes.append(helper.make_node("Identity", [new(src)], [target], name=e.node_name(f"{prefix}/Identity")))
