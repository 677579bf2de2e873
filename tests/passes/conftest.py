"""Shared fixtures of the fusion-pass tests: an IR interpreter that runs each node with its
op's torch semantics (the op table is the reference), a small graph builder, and the `fuse`
preset runner."""
import numpy as np
import pytest
import torch

from graphc.ir import Graph, TensorType
from graphc.ir.interpret import run_graph
from graphc.registry import PassContext, all_passes

RTOL, ATOL = 1e-4, 1e-5


def execute(graph, *xs):
    return run_graph(graph, list(xs))


def run_pass(graph, name, **options):
    """Run one pass; verify the graph after it changed it."""
    res = all_passes()[name](**options).run(graph, PassContext())
    if res.changed:
        graph.verify()
    return res


def fuse(graph):
    """Run the `fuse` preset through the pass manager."""
    from graphc.pipeline import run_pipeline

    return run_pipeline(graph, "fuse")


class Builder:
    """Tiny graph construction helper with seeded random weights."""

    def __init__(self, shape=(1, 4, 8, 8), seed=0, name="t"):
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)
        self.x = self.g.add_input("x", TensorType(tuple(shape), "f32"))

    def w(self, *shape, scale=0.5, name="w"):
        return self.g.add_param((self.rng.standard_normal(shape) * scale).astype("f4"), source=name)

    def conv(self, x, cout, k=3, stride=1, padding=None, groups=1, dilation=1, bias=True, name="conv"):
        cin = x.shape[1]
        nd = len(x.shape) - 2
        k = [k] * nd if isinstance(k, int) else list(k)
        pad = [d // 2 * dilation for d in k] if padding is None else ([padding] * nd if isinstance(padding, int) else padding)
        ins = [x, self.w(cout, cin // groups, *k, name=name + ".weight")]
        if bias:
            ins.append(self.w(cout, name=name + ".bias"))
        op = f"conv{nd}d"
        return self.g.add_node(op, ins, {"stride": [stride] * nd, "padding": pad, "dilation": [dilation] * nd,
                                         "groups": groups}, name).output

    def bn(self, x, name="bn"):
        c = x.shape[1]
        r = self.rng
        ps = [self.g.add_param((r.random(c) * 0.5 + 0.75).astype("f4"), source=name + ".weight"),
              self.g.add_param((r.standard_normal(c) * 0.1).astype("f4"), source=name + ".bias"),
              self.g.add_param((r.standard_normal(c) * 0.1).astype("f4"), source=name + ".running_mean", kind="buffer"),
              self.g.add_param((r.random(c) * 0.5 + 0.75).astype("f4"), source=name + ".running_var", kind="buffer")]
        return self.g.add_node("batch_norm", [x] + ps, {"eps": 1e-5}, name).output

    def linear(self, x, out, bias=True, name="fc"):
        ins = [x, self.w(out, x.shape[-1], name=name + ".weight")]
        if bias:
            ins.append(self.w(out, name=name + ".bias"))
        return self.g.add_node("linear", ins, {}, name).output

    def op(self, op, *ins, name=None, **attrs):
        return self.g.add_node(op, list(ins), attrs, name or op).output

    def const(self, arr, name="c"):
        return self.g.add_const(np.asarray(arr, dtype="f4"), name)

    def out(self, *vs):
        self.g.set_outputs(list(vs))
        self.g.verify()
        return self.g


def check_same(before, after, seed=0):
    """Outputs of two graphs agree on a random input; returns the largest abs error."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(v.shape, generator=g) for v in before.inputs]
    ya, yb = execute(before, *xs), execute(after, *xs)
    err = 0.0
    for a, b in zip(ya, yb):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL)
        err = max(err, float((a - b).abs().max()))
    return err


@pytest.fixture(scope="session")
def h():
    """The helpers above, for test modules (conftest is not importable by name)."""
    import types

    return types.SimpleNamespace(Builder=Builder, execute=execute, run_pass=run_pass, fuse=fuse,
                                 check_same=check_same, RTOL=RTOL, ATOL=ATOL)


def lenet_ir(model, size: int = 8, batch: int = 1):
    """The IR of a graphc.models.LeNet5 built by hand with the IR API (no front-end involved), so
    the EDP pass tests depend on the IR and op table alone."""
    g = Graph("lenet5")
    x = g.add_input("x", TensorType((batch, 1, size, size), "f32"))
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def conv(h, name, pad):
        w, b = g.add_param(sd[f"{name}.weight"], f"{name}.weight"), g.add_param(sd[f"{name}.bias"], f"{name}.bias")
        attrs = {"stride": [1, 1], "padding": [pad, pad], "dilation": [1, 1], "groups": 1}
        return g.add_node("conv2d", [h, w, b], attrs, name).output

    def pool(h, name):
        return g.add_node("max_pool2d", [h], {"kernel_size": [2, 2], "stride": [2, 2]}, name).output

    def fc(h, name):
        w, b = g.add_param(sd[f"{name}.weight"], f"{name}.weight"), g.add_param(sd[f"{name}.bias"], f"{name}.bias")
        return g.add_node("linear", [h, w, b], {}, name).output

    pad = model.conv1.padding[0]
    h = pool(conv(x, "conv1", pad), "pool1")
    h = pool(conv(h, "conv2", pad), "pool2")
    h = g.add_node("flatten", [h], {"start_dim": 1, "end_dim": -1}, "flatten").output
    h = g.add_node("relu", [fc(h, "fc1")], {}, "relu").output
    g.set_outputs([fc(h, "fc2")])
    g.verify()
    return g


@pytest.fixture
def lenet_graph():
    return lenet_ir


@pytest.fixture
def ir_execute():
    return execute


@pytest.fixture
def torchrun():
    """Run a worker script on two gloo processes; returns the finished process (asserted ok)."""
    import os
    import subprocess
    import sys

    def launch(worker, *args):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
               *map(str, args)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    return launch
