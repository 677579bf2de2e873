"""The numeric check: random inputs through source and result, allclose's rule, enforced only
for exact-only pipelines; and the progress helpers it uses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

import graphc
from graphc.check import CheckFailed, compare, numeric_check, random_inputs
from graphc.progress import bar, enabled, progress
from graphc.registry import Pass, PassResult
from graphc.source import GraphSource, TorchSource, execute


@dataclass(frozen=True)
class Nudge(Pass):
    """Scales the first weight by (1 + eps): claims exactness it does not have."""

    name: ClassVar[str] = "t-nudge"
    exact: ClassVar[bool] = True
    eps: float = 1e-2

    def run(self, graph, ctx):
        p = next(p for p in graph.params.values() if p.kind == "weight")
        p.set_data((p.data * (1 + self.eps)).astype(p.data.dtype))
        return PassResult(True)


@dataclass(frozen=True)
class LossyNudge(Nudge):
    name: ClassVar[str] = "t-lossy-nudge"
    exact: ClassVar[bool] = False


@pytest.fixture(autouse=True)
def passes(temp_pass):
    temp_pass(Nudge)
    temp_pass(LossyNudge)


def test_compare_follows_allclose():
    ref = [np.array([1.0, -2.0, 0.0])]
    a, r, ok = compare(ref, [np.array([1.0 + 5e-5, -2.0, 5e-6])])
    assert ok and a == pytest.approx(5e-5) and r == pytest.approx(2.5e-5)  # relative to max |ref|
    assert not compare(ref, [np.array([1.0, -2.0, 1e-4])])[2]
    assert compare(ref, [np.zeros(4)]) == (float("inf"), float("inf"), False)
    assert not compare(ref, [np.array([np.nan, -2.0, 0.0])])[2]
    assert compare([np.array([np.nan])], [np.array([np.nan])])[2]


def test_random_inputs_are_seeded_and_typed(build):
    g = build.conv_bn_relu()
    a, b = random_inputs(g, 2, seed=3), random_inputs(g, 2, seed=3)
    assert len(a) == 2 and a[0][0].shape == (1, 3, 8, 8) and a[0][0].dtype == np.float32
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert not np.array_equal(a[0][0], a[1][0])


def test_exact_pipeline_passes_and_a_wrong_exact_pass_fails(build):
    g = build.conv_bn_relu()
    src = GraphSource(g)
    graphc.run_pipeline(g, "fuse")
    res = numeric_check(src, g, 3)
    assert res.ok and res.enforced and res.inputs == 3 and 0 < res.max_abs < 1e-5
    graphc.run_pipeline(g, "t-nudge")
    bad = numeric_check(src, g, 2)
    assert not bad.ok and bad.max_rel > 1e-3
    assert "FAILED" in bad.line()


def test_optimize_raises_for_exact_and_reports_for_lossy(build):
    g = build.conv_bn_relu()
    with pytest.raises(CheckFailed) as e:
        graphc.optimize(g, "fold-bn,t-nudge")
    assert e.value.exit_code == 1 and e.value.report.check is not None and not e.value.report.check.ok
    out, rep = graphc.optimize(g, "fold-bn,t-lossy-nudge", check=2)
    assert not rep.exact and rep.check is not None and not rep.check.ok and not rep.check.enforced
    assert "reported only" in rep.check.line()
    out, rep = graphc.optimize(g, "t-lossy-nudge")
    assert rep.check is None  # lossy pipelines are not checked unless asked
    assert [n.op for n in g.nodes] == ["conv2d", "batch_norm", "relu"]  # the given graph is left alone


def test_optimize_torch_module_against_the_module():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 8, 8)
    g, rep = graphc.optimize(m, "fuse", example_inputs=x)
    assert rep.check.ok and rep.check.reference == "torch" and "batch_norm" not in [n.op for n in g.nodes]
    torch.testing.assert_close(execute(g, [x])[0], m(x), rtol=1e-4, atol=1e-5)
    assert TorchSource(m).run([x.numpy()])[0].shape == (1, 4, 8, 8)


def test_progress_is_silent_unless_a_terminal_or_forced(monkeypatch):
    items = [1, 2, 3]
    monkeypatch.delenv("GRAPHC_PROGRESS", raising=False)
    assert progress(items, total=3) is items  # pytest captures stderr: not a TTY
    assert not enabled()
    with bar(total=3) as b:
        b.update(2)
        b.set_postfix(loss=1.0)
    assert b.n == 2
    monkeypatch.setenv("GRAPHC_PROGRESS", "always")
    assert enabled() and not enabled(quiet=True)
    wrapped = progress(items, total=3, desc="t")
    assert wrapped is not items and list(wrapped) == items
    assert progress(items, quiet=True) is items
    monkeypatch.setenv("GRAPHC_PROGRESS", "never")
    assert not enabled()


def test_compile_returns_a_slim_module_with_its_report():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    slim = graphc.compile(m, passes="fold-bn,dce", example_inputs=x)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in slim.modules())
    assert slim.graphc_report.changed and slim.graphc_report.check.ok
    torch.testing.assert_close(slim(x), m(x), rtol=1e-4, atol=1e-5)
    proto, rep = graphc.compile(m, passes="fuse", example_inputs=x, target="onnx", return_report=True)
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node} and rep.exact
