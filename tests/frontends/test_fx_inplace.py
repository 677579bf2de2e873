"""In-place writes in a traced module: the import makes them pure or refuses them by name.

Each case is a small ``forward`` that writes in place (methods, functions, operators, layers,
setitem, views and aliases); the imported graph, emitted back to torch and to ONNX, must equal
eager PyTorch on random inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import graphc
from graphc.errors import UnsupportedError

SHAPE = (2, 4, 5, 5)


class Case(nn.Module):
    """A module whose forward is ``fn(self, x)``, with two convs and a linear to write around."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 1)
        self.act = nn.ReLU(inplace=True)
        self.act6 = nn.ReLU6(inplace=True)
        self.hs = nn.Hardswish(inplace=True)
        self.drop = nn.Dropout(0.5, inplace=True)
        self.lin = nn.Linear(4, 4)
        self.register_buffer("table", torch.randn(1, 3, 3, 4))

    def forward(self, x):
        return self.fn(self, x)


def _issue_example(m, x):
    y = m.c(x)
    y.relu_()
    z = m.d(y)
    z += y
    return z


def _view_then_write(m, x):
    y = m.c(x)
    v = y.view(2, -1)
    v.add_(1.0)
    return m.d(y)


def _write_then_view_used(m, x):
    y = m.c(x)
    v = y.view(-1)
    y.mul_(2.0)
    return v.sum(0, keepdim=True) + v[:3]


def _slice_write(m, x):
    y = m.c(x)
    y[:, 1:3] = 0.0
    return m.d(y)


def _slice_write_tensor(m, x):
    y = m.c(x)
    y[:, 0] = x[:, 1] * 2
    return y


def _strided_slice_write(m, x):
    y = m.c(x)
    y[:, ::2, 1:4:2] += 1.5
    return y


def _select_view_method(m, x):
    y = m.c(x)
    y[0].sigmoid_()
    return y


def _transpose_view_write(m, x):
    y = m.c(x)
    t = y.transpose(1, 3)
    t[..., 0].mul_(-1.0)
    return m.d(y) + y


def _permute_view_clamp(m, x):
    y = m.c(x)
    p = y.permute(0, 2, 3, 1)
    p.clamp_(-0.1, 0.1)
    return y * 3


def _chunk_write(m, x):
    y = m.c(x)
    a, b = y.chunk(2, dim=1)
    a.mul_(0.0)
    return torch.cat([b, y], 1)


def _alias_by_name(m, x):
    y = m.c(x)
    w = y
    y += 1.0
    return w - x


def _returned_self(m, x):
    y = m.c(x)
    z = y.add_(x)
    z.mul_(2.0)
    return y + z


def _masked_fill(m, x):
    y = m.c(x)
    y.masked_fill_(x > 0.5, -1.0)
    return y


def _mask_setitem(m, x):
    y = m.c(x)
    y[y < 0] = 0.0
    return m.d(y)


def _copy_into_slice(m, x):
    y = m.c(x)
    y[:, :2].copy_(x[:, 2:])
    return y


def _copy_broadcast(m, x):
    y = torch.zeros_like(m.c(x))
    y.copy_(x[:, :1])
    return y + x


def _zero_fill(m, x):
    y = m.c(x)
    y[:, 3].zero_()
    y[:, 0].fill_(2.5)
    return y


def _functional_inplace(m, x):
    y = m.c(x)
    F.relu(y, inplace=True)
    return m.d(y) + y


def _functional_inplace_positional(m, x):
    y = m.c(x)
    F.leaky_relu(y, 0.2, True)
    F.hardtanh(y, -0.5, 0.5, True)
    return y + 1


def _layer_inplace(m, x):
    y = m.c(x)
    z = m.act(y)
    return z + y


def _layer_inplace_chain(m, x):
    y = m.c(x)
    m.act6(y)
    m.hs(y)
    m.drop(y)
    return m.d(y) - y


def _torch_function_inplace(m, x):
    y = m.c(x)
    torch.relu_(y)
    torch.sigmoid_(y)
    return y


def _input_written(m, x):
    x.mul_(2.0)
    return m.c(x)


def _input_view_written(m, x):
    x[:, 0] = 1.0
    return m.c(x) + x


def _several_ops(m, x):
    y = m.c(x)
    y.add_(x).mul_(0.5).sub_(0.1).div_(2.0)
    y.exp_()
    y.tanh_()
    return y


def _pow_abs_neg(m, x):
    y = m.c(x)
    y.abs_()
    y.pow_(2)
    y.neg_()
    return y


def _imul_itruediv(m, x):
    y = m.c(x)
    y *= x
    y /= 3.0
    y -= x
    return y


def _dtype_kept(m, x):
    y = m.c(x)
    y += torch.ones((), dtype=torch.float64)
    return y


def _broadcast_operand(m, x):
    y = m.c(x)
    y += x.mean(1, keepdim=True)
    return y


def _view_of_view(m, x):
    y = m.c(x)
    v = y.view(2, 4, 25)[:, 1:3]
    v.add_(10.0)
    return y


def _write_base_read_views(m, x):
    y = m.c(x)
    a = y[:, 0]
    b = y.flatten(1)
    y.sigmoid_()
    return a * 2 + b[:, :25].reshape(a.shape)


def _two_writes_same_storage(m, x):
    y = m.c(x)
    y[:, 0].add_(1.0)
    y[:, 1].mul_(y[:, 0])
    return y


def _static_tensor_written(m, x):
    buf = torch.zeros(SHAPE)
    buf[:, 1] = 1.0
    return x * buf


def _static_written_by_input(m, x):
    buf = torch.zeros(SHAPE)
    buf[:, 2:] = x[:, :2]
    return m.c(buf)


def _constant_iadd(m, x):
    buf = torch.ones(SHAPE)
    buf += x
    buf *= 2.0
    return m.c(buf) + buf


def _unsqueeze_chain(m, x):
    y = m.c(x)
    u = y.unsqueeze(0)
    u[0, :, 1] = 3.0
    return y


def _clamp_min(m, x):
    y = m.c(x)
    y.clamp_min_(0.0)
    return y


def _inplace_after_output_use(m, x):
    y = m.c(x)
    out = y * 1.0
    y.zero_()
    return out + y


def _linear_4d_then_inplace(m, x):
    # nn.Linear on a 4-D tensor returns a view of a 2-D product it never exposes; an in-place
    # layer then writes into that hidden storage (Swin V2's continuous position bias MLP, on a
    # buffer; here on a buffer and on the input).
    bias = m.act(m.lin(m.table))
    y = m.act(m.lin(x.permute(0, 2, 3, 1)))
    return y.permute(0, 3, 1, 2) + bias.sum()


def _residual_relu_inplace(m, x):
    identity = x
    out = m.c(x)
    out = m.act(out)
    out = m.d(out)
    out += identity
    out = m.act(out)
    return out


def _write_then_split(m, x):
    """timm's selective kernel: a block's output is written in place (residual add, ReLU),
    then the next block splits it and reads the parts: the writes came before the split."""
    out = m.c(x)
    out += x
    out = m.act(out)
    a, b = torch.split(out, 2, 1)
    return torch.cat([m.act(a * 2.0), b], 1)


def _loop_over_batch(m, x):
    """``range(x.shape[0])`` defeats symbolic tracing: this one comes through torch.export,
    whose graph writes with ATen overloads (``aten.sigmoid_``, ``aten.fill_``, ``aten.add_``)."""
    y = m.c(x)
    v = y.view(-1)
    for i in range(x.shape[0]):
        y[i].sigmoid_()
        y[i, 0] = 2.0
    v.add_(1.0)
    x.mul_(2.0)
    return y + x


CASES = {f.__name__.lstrip("_"): f for f in [
    _issue_example, _view_then_write, _write_then_view_used, _slice_write, _slice_write_tensor,
    _strided_slice_write, _select_view_method, _transpose_view_write, _permute_view_clamp, _chunk_write,
    _alias_by_name, _returned_self, _masked_fill, _mask_setitem, _copy_into_slice, _copy_broadcast,
    _zero_fill, _functional_inplace, _functional_inplace_positional, _layer_inplace, _layer_inplace_chain,
    _torch_function_inplace, _input_written, _input_view_written, _several_ops, _pow_abs_neg, _imul_itruediv,
    _dtype_kept, _broadcast_operand, _view_of_view, _write_base_read_views, _two_writes_same_storage,
    _static_tensor_written, _static_written_by_input, _constant_iadd, _unsqueeze_chain, _clamp_min,
    _inplace_after_output_use,
    _residual_relu_inplace, _write_then_split, _loop_over_batch, _linear_4d_then_inplace,
]}


def _close(got, want):
    want = want.detach().numpy().astype(np.float64)
    got = np.asarray(got, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_inplace_import_equals_eager(name):
    torch.manual_seed(0)
    m = Case(CASES[name]).eval()
    example = torch.randn(SHAPE)
    kept = example.clone()
    g = graphc.load(m, example_inputs=example)
    assert torch.equal(example, kept), "the import wrote to the caller's example input"
    emitted = graphc.emit_torch(g)
    import onnxruntime as ort

    sess = ort.InferenceSession(graphc.emit_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in range(3):
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = m(x.clone())
            got = emitted(x.clone())
        _close(got.numpy(), want)
        _close(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], want)


def test_issue_example_keeps_the_relu():
    torch.manual_seed(0)
    g = graphc.load(Case(_issue_example).eval(), example_inputs=torch.randn(SHAPE))
    assert [n.op for n in g.nodes] == ["conv2d", "relu", "conv2d", "add"]


def test_plain_inplace_needs_no_gather():
    """A write to a tensor nobody else sees is a rename: no positions, no masks."""
    g = graphc.load(Case(_several_ops).eval(), example_inputs=torch.randn(SHAPE))
    assert not {"index_select", "where"} & {n.op for n in g.nodes}


def bump(t):
    """A call fx keeps whole (wrapped below) that writes its argument under a plain name."""
    t.add_(1.0)
    return t * 2


torch.fx.wrap("bump")


def _unknown_writer(m, x):
    y = m.c(x)
    z = bump(y)
    return y + z


def _writes_param(m, x):
    m.c.weight.mul_(1.0)
    return m.c(x)


def _shape_changing(m, x):
    y = m.c(x)
    y.unsqueeze_(0)
    return y


def _dynamic_index(m, x):
    y = m.c(x)
    idx = x[0, 0, 0].long().clamp(0, 3)
    y[:, idx] = 0.0
    return y


def _out_argument(m, x):
    y = m.c(x)
    torch.add(x, 1.0, out=y)
    return y


def _stale_tuple(m, x):
    y = m.c(x)
    parts = y.chunk(2, 1)
    y.add_(1.0)
    return parts[0]


@pytest.mark.parametrize("fn, what", [
    (_writes_param, "parameter or buffer"),
    (_shape_changing, "Tensor.unsqueeze_"),
    (_dynamic_index, "computed from the input"),
    (_out_argument, "out="),
    (_unknown_writer, "bump"),
    (_stale_tuple, "tuple of views"),
])
def test_unprovable_writes_are_refused_by_name(fn, what):
    m = Case(fn).eval()
    with pytest.raises(UnsupportedError, match="^in-place") as e:
        graphc.load(m, example_inputs=torch.randn(SHAPE))
    assert what in str(e.value)
    assert "\n" not in str(e.value).strip()


class _Deep(nn.Module):
    """A chain deeper than Python's recursion limit, then an in-place write at its end."""

    def forward(self, x):
        for _ in range(1500):
            x = x * 1.0001
        x.relu_()
        return x


def test_a_write_after_a_deep_chain_imports():
    m, x = _Deep().eval(), torch.randn(2, 3)
    g = graphc.load(m, example_inputs=x)
    torch.testing.assert_close(graphc.emit_torch(g)(x), m(x.clone()), rtol=1e-4, atol=1e-5)
