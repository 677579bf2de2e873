"""Instruments around passes (verify, per-pass numeric check, cost deltas, dumps, your own),
contracts decided per configured instance, and the analysis cache with its invalidation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import graphc
from graphc.errors import PassError
from graphc.instruments import PassInstrument
from graphc.manager import PassManager
from graphc.registry import Pass, PassContext, PassResult


@dataclass(frozen=True)
class ScaleWeight(Pass):
    """Claims to be exact and doubles the conv weight (what --check-each exists to catch)."""

    name: ClassVar[str] = "t-scale-weight"
    exact: ClassVar[bool] = True

    def run(self, graph, ctx):
        p = graph.node("conv").input(1).param
        p.set_data(p.data * 2)
        return PassResult(changed=True)


def test_check_each_names_the_exact_pass_that_moved_the_outputs(cbr, temp_pass):
    temp_pass(ScaleWeight)
    with pytest.raises(PassError, match=r"pass 't-scale-weight' is exact but changed output 0 by up to .*after: fold-bn"):
        graphc.run_pipeline(cbr, "fold-bn,t-scale-weight,dce", check_each=2)


def test_check_each_passes_exact_passes_and_records_their_error(cbr):
    rep = graphc.run_pipeline(cbr, "fold-bn,fuse", check_each=2)
    first = rep.passes[0]
    assert first.changed and 0 <= first.stats["check_each.max_rel"] < 1e-5
    assert "check_each.max_rel" not in rep.passes[1].stats  # fuse changed nothing more: not rechecked


def test_a_lossy_instance_moves_the_reference_instead_of_failing(build, temp_pass):
    @dataclass(frozen=True)
    class Lossy(ScaleWeight):
        name: ClassVar[str] = "t-lossy-scale"
        exact: ClassVar[bool] = False

    temp_pass(Lossy)
    rep = graphc.run_pipeline(build.conv_bn_relu(), "t-lossy-scale,fold-bn", check_each=1)
    assert [r.changed for r in rep.passes] == [True, True] and not rep.exact
    assert "check_each.max_rel" in rep.passes[1].stats


def test_custom_instrument_sees_every_pass_in_order(cbr):
    seen = []

    class Spy(PassInstrument):
        def enter_pipeline(self, graph, ctx, report):
            seen.append(("enter", len(graph)))

        def before_pass(self, p, graph, ctx):
            seen.append(("before", p.name))

        def after_pass(self, p, graph, ctx, record):
            # Built-in instruments ran first: the cost delta is already there.
            seen.append(("after", p.name, record.changed, record.delta["nodes"]))

        def exit_pipeline(self, graph, ctx, report):
            seen.append(("exit", len(graph)))

    PassManager("fold-bn,dce", instruments=[Spy()]).run(cbr)
    assert seen == [("enter", 3), ("before", "fold-bn"), ("after", "fold-bn", True, -1),
                    ("before", "dce"), ("after", "dce", False, 0), ("exit", 2)]


@dataclass(frozen=True)
class UsesShapes(Pass):
    """Reads a cached analysis and changes nothing."""

    name: ClassVar[str] = "t-uses-shapes"
    exact: ClassVar[bool] = True
    preserves: ClassVar[frozenset] = frozenset({"t-shapes"})

    def run(self, graph, ctx):
        ctx.analysis("t-shapes", graph, lambda g: {v.name: v.shape for v in g.values()})
        return PassResult(changed=False)


@dataclass(frozen=True)
class Renames(Pass):
    """Changes the graph; ``keep`` says whether it declares the analysis preserved."""

    name: ClassVar[str] = "t-renames"
    exact: ClassVar[bool] = True
    keep: bool = False

    @property
    def preserves(self):
        return frozenset({"t-shapes"}) if self.keep else frozenset()

    def run(self, graph, ctx):
        # A change the verifier accepts and that leaves the shapes alone: a renamed node.
        relu = next(n for n in graph.nodes if n.op == "relu")
        graph.rename_value(relu.output, relu.output.name + "_")
        return PassResult(changed=True)


def test_analyses_are_cached_until_a_change_that_does_not_preserve_them(cbr, temp_pass):
    temp_pass(UsesShapes)
    temp_pass(Renames)
    ctx = PassContext()
    graphc.run_pipeline(cbr, "t-uses-shapes,t-uses-shapes,t-renames(keep=true),t-uses-shapes", ctx)
    assert ctx.analysis_runs == {"t-shapes": 1}
    graphc.run_pipeline(cbr, "t-uses-shapes,t-renames,t-uses-shapes,t-uses-shapes", ctx)
    assert ctx.analysis_runs == {"t-shapes": 2}


def test_prune_target_macs_search_reuses_one_channel_group_analysis(monkeypatch):
    import graphc.passes.prune as prune

    calls = []
    real = prune.channel_groups
    monkeypatch.setattr(prune, "channel_groups", lambda g, **kw: calls.append(1) or real(g, **kw))
    g = _cnn()
    macs = graphc.pipeline.measure(g)["macs"]
    ctx = PassContext()
    rep = graphc.run_pipeline(g, "prune(target-macs=0.5)", ctx)
    stats = rep.passes[0].stats
    assert len(calls) == 1 and ctx.analysis_runs == {"channel-groups": 1}
    # The search planned many ratios on those groups and still lands on the target.
    assert 0 < stats["prune.ratio"] < 0.99 and stats["prune.macs"] <= 0.5 * macs
    assert graphc.pipeline.measure(g)["macs"] == stats["prune.macs"]


def _cnn():
    from graphc.ir import Graph, TensorType

    rng = np.random.default_rng(0)
    g = Graph("cnn")
    h = g.add_input("x", TensorType((1, 3, 8, 8), "f32"))
    for i, c in enumerate((16, 16, 8)):
        w = g.add_param(rng.standard_normal((c, h.shape[1], 3, 3)).astype("f4"), source=f"c{i}.weight")
        h = g.add_node("conv2d", [h, w], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1},
                       f"c{i}").output
        h = g.add_node("relu", [h], {}, f"r{i}").output
    g.set_outputs([h])
    return g


def test_explain_lists_refusals_per_pass(tmp_path, capsys):
    from graphc.cli.main import main
    from graphc.ir.serialize import save_json
    from graphc.ir import Graph, TensorType

    g = Graph("refuse")
    x = g.add_input("x", TensorType((1, 3, 6, 6), "f32"))
    w = g.add_input("w", TensorType((4, 3, 3, 3), "f32"))  # a weight that is no constant
    c = g.add_node("conv2d", [x, w], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}, "conv")
    r = np.random.default_rng(0)
    bn = [g.add_param((r.random(4) + 0.5).astype("f4"), source=f"bn.{s}") for s in ("w", "b", "m", "v")]
    y = g.add_node("batch_norm", [c.output] + bn, {"eps": 1e-5}, "bn")
    g.set_outputs([y.output])
    path = tmp_path / "g.json"
    save_json(g, path)
    rc = main(["optimize", str(path), "--passes", "fuse", "--explain", "--check", "0", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "fuse: 1 node not rewritten\n  bn: conv weights are not constants" in out
