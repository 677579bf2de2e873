"""BN recalibration: the running statistics a recalibration writes are the data's per-channel
statistics at each BN's input (checked against plain torch on the same batch), and after a
lossy prune it gives the accuracy back that stale statistics cost."""
import numpy as np
import pytest
import torch

import graphc
from graphc.data import load_data
from graphc.ir.interpret import run_graph
from graphc.models import build
from graphc.pipeline import run_pipeline
from graphc.registry import PassContext
from graphc.training import evaluate, recalibrate_bn, train
from graphc.training.graph_module import GraphModule


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.c2, self.b2 = torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.BatchNorm2d(6)

    def forward(self, x):
        return self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))


def test_statistics_equal_the_data_batch_statistics():
    torch.manual_seed(0)
    data = load_data("digits")
    n = len(data.x_train)
    net = _Net().eval()
    g = graphc.load(net, example_inputs=data.x_train[:1])
    module = GraphModule(g)
    # One batch holding the whole training split: the running statistics must be that split's
    # per-channel mean and unbiased variance, at b2 computed with b1 normalising by batch stats.
    r = recalibrate_bn(module, data, 1, batch_size=n)
    assert r == {"bn": 2, "bn_skipped": 0, "batches": 1}
    ref = _Net()
    ref.load_state_dict(net.state_dict())
    for b in (ref.b1, ref.b2):
        b.momentum = None
        b.reset_running_stats()
    ref.train()
    with torch.no_grad():
        ref(data.x_train)
    bns = g.find("batch_norm")
    # tolerance: torch's train-mode BN sums ~10^5 elements per channel in float32
    for node, bn in zip(bns, (ref.b1, ref.b2)):
        np.testing.assert_allclose(node.input(3).param.data, bn.running_mean.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(node.input(4).param.data, bn.running_var.numpy(), rtol=1e-3, atol=1e-4)
        assert not np.allclose(node.input(4).param.data, 1.0, atol=1e-2)  # not the init statistics
    # the module runs with what was written
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(data.x_val[:8]), ref(data.x_val[:8]), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(run_graph(g, [data.x_val[:8]])[0], ref(data.x_val[:8]), rtol=1e-3, atol=1e-3)


class _Deep(torch.nn.Module):
    """A small plain conv-BN-ReLU stack: deep enough for stale statistics to compound."""

    def __init__(self, w=16, n=4):
        super().__init__()
        layers, c = [], 1
        for _ in range(n):
            layers += [torch.nn.Conv2d(c, w, 3, padding=1, bias=False), torch.nn.BatchNorm2d(w), torch.nn.ReLU()]
            c = w
        self.features = torch.nn.Sequential(*layers)
        self.fc = torch.nn.Linear(w, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_recalibration_recovers_a_channel_pruned_plain_net():
    torch.manual_seed(0)
    data = load_data("digits")
    model = _Deep()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):  # torch training, BN in train mode: statistics match the weights
        for xb, yb in data.loaders(64, seed=0)[0]:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    g = graphc.load(model.eval(), example_inputs=data.x_train[:1])
    acc_src = evaluate(GraphModule(g), data)
    assert acc_src > 0.8
    run_pipeline(g, "prune(ratio=0.5)", PassContext(quiet=True))
    stale = evaluate(GraphModule(g), data)
    rep = run_pipeline(g, "finetune(epochs=1,max-steps=1,lr=0.000001,recalibrate=20)",
                       PassContext(data="digits", quiet=True))
    st = rep.passes[0].stats
    assert st["recalibrated_bn"] == 4 and st["acc_before"] == pytest.approx(stale, abs=1e-4)
    # measured: 98.9% source, 10.6% pruned with stale statistics, 36.9% recalibrated
    assert st["acc_recalibrated"] > stale + 0.15
