"""Every op definition is complete and agrees with the other sources of truth: its schema
(attribute types and defaults, operand counts) is well-formed and enforced by the verifier;
its torch hook runs eagerly (the reference interpreter) and as emitted torch.fx code with the
same result; its shape rule agrees with torch's meta tensors; its channel and cost rules
answer; and each trait it declares holds on its example (ONNX lowerings are checked against
the same examples in tests/backends/test_onnx_emit.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from op_cases import CASES, POSITIVE, UNARY
from graphc.backends.torch import emit_torch, run_graph
from graphc.errors import VerifyError
from graphc.ir import Graph, TensorType
from graphc.ir.channel_rules import ChannelRule, Ties
from graphc.ir.cost_rules import OpCost, node_cost
from graphc.ir.ops import _CHECKS, TRAITS, _freeze, _meta_infer, all_ops, get_op, ops_with
from graphc.passes.channel_groups import channel_groups

ALL = [(op, [(2, 3, 4)], {}, []) for op in UNARY + POSITIVE] + CASES
IDS = [f"{c[0]}-{i}" for i, c in enumerate(ALL)]
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "i64": torch.int64, "bool": torch.bool}


def build(op, shapes, attrs, params):
    g = Graph("one")
    ins = []
    for i, s in enumerate(shapes):
        dtype, shape = s if isinstance(s[0], str) else ("f32", s)
        ins.append(g.add_input(f"x{i}", TensorType(tuple(shape), dtype)))
    ps = [g.add_param(np.asarray(p), source=f"layer.p{i}", kind="weight" if np.asarray(p).dtype.kind == "f" else "const")
          for i, p in enumerate(params)]
    n = g.add_node(op, ins + ps, attrs, name="layer")
    g.set_outputs(n.outputs)
    return g, n


def inputs(g, op, zero=False):
    gen = torch.Generator().manual_seed(0)
    xs = []
    for v in g.inputs:
        if v.dtype == "bool":
            xs.append(torch.rand(v.shape, generator=gen) > 0.5)
        elif v.dtype.startswith("i"):
            xs.append(torch.randint(-3, 4, v.shape, generator=gen).to(TORCH_DTYPES[v.dtype]))
        elif zero:
            xs.append(torch.zeros(v.shape))
        else:
            x = torch.randn(v.shape, generator=gen)
            xs.append(x.abs() + 0.5 if op in POSITIVE else x)
    return xs


def test_every_op_is_fully_declared():
    for name, op in all_ops().items():
        assert op.doc.strip(), f"{name}: no doc"
        assert callable(op.torch), f"{name}: no torch hook"
        assert isinstance(op.channels, ChannelRule), f"{name}: no channel rule"
        assert callable(op.cost), f"{name}: no cost rule"
        assert op.shape is None or callable(op.shape)
        assert op.module is None or callable(op.module)
        assert set(op.traits) <= set(TRAITS)
        assert op.operands and all(o.isidentifier() for o in (o.strip("*+?") for o in op.operands)), name
        for k, a in op.attrs.items():
            assert set(a.type.rstrip("?").split("|")) <= set(_CHECKS), f"{name}.{k}: type {a.type}"
            assert a.required or a.accepts(a.default), f"{name}.{k}: default {a.default!r} is not {a.type}"


def test_every_op_has_an_example():
    assert {c[0] for c in ALL} == set(all_ops()) - {"opaque"}


def test_trait_queries():
    assert ops_with("conv") == {"conv1d", "conv2d", "conv3d"}
    assert "relu" in ops_with("keeps_zero", "fusable") and "sigmoid" not in ops_with("keeps_zero")
    with pytest.raises(ValueError, match="unknown traits"):
        ops_with("keeps-zero")


def test_schema_is_enforced_by_the_verifier():
    g, n = build("conv2d", [(1, 2, 5, 5)], {}, [np.zeros((3, 2, 3, 3), np.float32)])
    assert n.attrs == {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}  # canonical
    g.verify()
    n.attrs["strides"] = [1, 1]
    with pytest.raises(VerifyError, match="no attribute 'strides'"):
        g.verify()
    del n.attrs["strides"]
    n.attrs["groups"] = 1.0
    with pytest.raises(VerifyError, match="groups=1.0 is not int"):
        g.verify()
    n.attrs["groups"] = 1
    del n.attrs["stride"]
    with pytest.raises(VerifyError, match="missing attribute"):
        g.verify()
    assert "takes 2 to 3 operands" in get_op("conv2d").check(1, {})
    assert "takes 1 or more operands" in get_op("concat").check(0, {"dim": 0})


@pytest.mark.parametrize("op,shapes,attrs,params", ALL, ids=IDS)
def test_definition_agrees_with_itself(op, shapes, attrs, params):
    g, n = build(op, shapes, attrs, params)
    opdef = n.opdef
    assert set(n.attrs) == set(opdef.attrs)  # canonical: every declared attribute present
    g.verify()

    # shape rule == torch's meta tensors, where the rule answers
    types = [v.type for v in n.inputs]
    if opdef.shape is not None:
        got = opdef.shape(types, n.attrs)
        meta = list(_meta_infer(op, tuple(types), _freeze(n.attrs)))
        assert got is None or got == meta

    # the torch hook, eager and emitted, give the same outputs of the declared types
    xs = inputs(g, op)
    ref = run_graph(g, xs)
    assert [(tuple(r.shape), r.dtype) for r in ref] == [(v.shape, TORCH_DTYPES[v.dtype]) for v in n.outputs]
    with torch.no_grad():
        out = emit_torch(g)(*xs)
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    for r, o in zip(ref, out):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-5, equal_nan=True)

    # channel and cost rules answer
    opdef.channels.ties(n, Ties())
    channel_groups(g)
    cost = node_cost(n)
    assert isinstance(cost, OpCost) and cost.counted

    # the traits hold on this example
    x0 = n.input(0)
    if opdef.has("unary"):
        assert n.output.shape == x0.shape
    if opdef.has("view"):
        assert cost.traffic_bytes == 0 and n.output.type.numel == x0.type.numel
    if opdef.has("reshape"):
        torch.testing.assert_close(ref[0].flatten(), xs[0].flatten())
    if opdef.has("identity_at_inference"):
        torch.testing.assert_close(ref[0], xs[0])
    if opdef.has("conv") or opdef.has("conv_transpose") or opdef.has("linear"):
        assert opdef.operands == ("x", "weight", "bias?")
    if opdef.has("weight") or opdef.has("scale"):
        assert cost.flops > 0
    if opdef.has("keeps_zero") and all(v.dtype.startswith("f") for v in g.inputs):
        zeros = run_graph(g, inputs(g, op, zero=True))
        assert all(not z.any() for z in zeros), f"{op}: zero in, nonzero out"
