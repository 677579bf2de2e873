"""The pass manager: verification after changing passes, per-pass records, analysis caching,
fixpoint groups and their cap, PassError/DataError shapes, IR dumps."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import graphc
from graphc.errors import DataError, PassError
from graphc.ir import parse_graph
from graphc.manager import PassManager
from graphc.registry import Pass, PassContext, PassResult, register_function_pass, unregister_pass


@dataclass(frozen=True)
class DropRelu(Pass):
    """Remove one relu per run (so a fixpoint needs one round per relu). Exact only on x >= 0."""

    name: ClassVar[str] = "t-drop-relu"
    exact: ClassVar[bool] = True

    def run(self, graph, ctx):
        for n in graph.find("relu"):
            n.output.replace_all_uses_with(n.input(0), outputs=True)
            graph.erase(n)
            return PassResult(True, {"dropped": 1})
        return PassResult(False)


@dataclass(frozen=True)
class Breaker(Pass):
    """Corrupts a param's array shape and says it changed."""

    name: ClassVar[str] = "t-breaker"

    def run(self, graph, ctx):
        p = next(iter(graph.params.values()))
        p.data = np.zeros((1,), "f4")
        return PassResult(True)


@dataclass(frozen=True)
class Crasher(Pass):
    """Raises a plain exception while looking at the batch norm."""

    name: ClassVar[str] = "t-crasher"

    def run(self, graph, ctx):
        for node in graph.nodes:
            if node.op == "batch_norm":
                raise ZeroDivisionError("bad variance")
        return PassResult(False)


@dataclass(frozen=True)
class Flipper(Pass):
    """Toggles a relu in and out forever: never reaches a fixed point."""

    name: ClassVar[str] = "t-flipper"

    def run(self, graph, ctx):
        out = graph.outputs[0]
        if out.producer is not None and out.producer.op == "relu" and out.producer.name.startswith("flip"):
            n = out.producer
            graph.set_outputs([n.input(0)])
            graph.erase(n)
        else:
            graph.set_outputs([graph.add_node("relu", [out], {}, "flip").output])
        return PassResult(True)


@dataclass(frozen=True)
class Hungry(Pass):
    """Needs data."""

    name: ClassVar[str] = "t-hungry"
    exact: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    def run(self, graph, ctx):
        return PassResult(False, {"data": str(ctx.data)})


@dataclass(frozen=True)
class Counter(Pass):
    """Asks for an analysis; counts how often it was computed."""

    name: ClassVar[str] = "t-count"
    calls: ClassVar[list] = []

    def run(self, graph, ctx):
        ctx.analysis("nodes", graph, lambda g: Counter.calls.append(len(g)) or len(g))
        return PassResult(False)


@dataclass(frozen=True)
class KeepsAnalysis(DropRelu):
    name: ClassVar[str] = "t-drop-relu-keep"
    preserves: ClassVar[frozenset] = frozenset({"nodes"})


@pytest.fixture(autouse=True)
def passes(temp_pass):
    for cls in (DropRelu, Breaker, Crasher, Flipper, Hungry, Counter, KeepsAnalysis):
        temp_pass(cls)
    Counter.calls.clear()


def test_records_deltas_time_and_changed(build):
    g = build.conv_bn_relu()
    rep = graphc.run_pipeline(g, "fold-bn,t-drop-relu")
    assert rep.changed and [r.name for r in rep.passes] == ["fold-bn", "t-drop-relu"]
    fold, drop = rep.passes
    assert fold.changed and fold.delta["nodes"] == -1 and fold.delta["params"] < 0
    assert drop.delta == {"nodes": -1, "params": 0, "macs": 0} and drop.stats == {"dropped": 1}
    assert all(r.seconds >= 0 for r in rep.passes)
    assert rep.before["nodes"] == 3 and rep.after["nodes"] == 1 and rep.before["macs"] == rep.after["macs"] > 0
    g.verify()
    again = graphc.run_pipeline(g, "fold-bn,t-drop-relu")
    assert not again.changed and all(r.delta["nodes"] == 0 for r in again.passes)


def test_fixpoint_reruns_until_a_round_changes_nothing(build):
    g = build.relu_chain(3)
    rep = graphc.run_pipeline(g, "fixpoint(t-drop-relu,dce)")
    assert len(g.nodes) == 0
    assert [r.round for r in rep.passes if r.name == "t-drop-relu"] == [1, 2, 3, 4]
    assert not rep.passes[-1].changed and rep.passes[-1].group == "fixpoint(t-drop-relu,dce)"
    table = rep.table()
    assert "t-drop-relu (fixpoint, 4 rounds)" in table and "-3" in table


def test_fixpoint_cap_is_an_error_naming_the_culprit(build):
    g = build.relu_chain(1)
    with pytest.raises(PassError) as e:
        graphc.run_pipeline(g, "fixpoint(t-flipper,max=4)")
    assert "still changed the graph after 4 rounds" in str(e.value) and "t-flipper" in str(e.value)
    with pytest.raises(PassError, match="after 20 rounds"):
        graphc.run_pipeline(build.relu_chain(1), "fixpoint(t-flipper)")


def test_verify_failure_names_pass_and_the_ones_before(build):
    g = build.conv_bn_relu()
    with pytest.raises(PassError) as e:
        graphc.run_pipeline(g, "fold-bn,t-drop-relu,t-breaker")
    msg = str(e.value)
    assert msg.startswith("pass 't-breaker' left a broken graph (after: fold-bn, t-drop-relu)")
    assert "array shape (1,)" in msg


def test_crash_shows_the_failing_node_with_ir_around_it(build):
    g = build.conv_bn_relu()
    with pytest.raises(PassError) as e:
        graphc.run_pipeline(g, "t-drop-relu,t-crasher")
    err = e.value
    first = str(err).splitlines()[0]
    assert first == "pass 't-crasher' failed (after: t-drop-relu): ZeroDivisionError: bad variance at node 'bn'"
    assert "= batch_norm(" in err.context and "^^^" in err.context and "= conv2d(" in err.context
    assert isinstance(err.__cause__, ZeroDivisionError)


def test_needs_data_without_data_is_one_line_data_error(build):
    with pytest.raises(DataError) as e:
        graphc.run_pipeline(build.conv_bn_relu(), "fold-bn,t-hungry")
    assert "t-hungry" in str(e.value) and "--data" in str(e.value) and "\n" not in str(e.value)
    rep = graphc.run_pipeline(build.conv_bn_relu(), "t-hungry", PassContext(data="digits"))
    assert rep.passes[0].stats["data"] == "digits"  # the spec passes through untouched: loading is lazy


def test_analyses_cached_and_invalidated_unless_preserved(build):
    g = build.relu_chain(3)
    ctx = PassContext()
    graphc.run_pipeline(g, "t-count,t-count", ctx)
    assert Counter.calls == [3]  # cached across passes that changed nothing
    graphc.run_pipeline(g, "t-drop-relu,t-count", ctx)
    assert Counter.calls == [3, 2]  # a change dropped it
    graphc.run_pipeline(g, "t-drop-relu-keep,t-count", ctx)
    assert Counter.calls == [3, 2]  # the pass preserves it


def test_function_passes_register_and_run(build):
    @register_function_pass
    def t_strip_relus(graph, ctx):
        """Remove every relu."""
        n = 0
        for node in graph.find("relu"):
            node.output.replace_all_uses_with(node.input(0), outputs=True)
            graph.erase(node)
            n += 1
        return n > 0

    try:
        g = build.relu_chain(2)
        assert graphc.run_pipeline(g, "t-strip-relus").changed and len(g.nodes) == 0
        assert not graphc.run_pipeline(g, "t-strip-relus").changed
    finally:
        unregister_pass("t-strip-relus")


def test_dump_ir_writes_numbered_parseable_dumps_and_dot(build, tmp_path):
    g = build.conv_bn_relu()
    rep = PassManager("fold-bn,t-drop-relu", dump_dir=tmp_path / "d").run(g)
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert files == ["000_input.gir", "001_fold-bn.gir", "002_t-drop-relu.gir", "final.dot"]
    g0 = parse_graph((tmp_path / "d" / "000_input.gir").read_text())
    assert [n.op for n in g0.nodes] == ["conv2d", "batch_norm", "relu"]
    assert [n.op for n in parse_graph((tmp_path / "d" / "002_t-drop-relu.gir").read_text()).nodes] == ["conv2d"]
    assert (tmp_path / "d" / "final.dot").read_text().startswith("digraph")
    assert rep.changed


def test_report_json_round_trips(build):
    rep = graphc.run_pipeline(build.conv_bn_relu(), "fuse")
    d = json.loads(rep.to_json())
    assert d["changed"] and d["exact"] and d["pipeline"] == "fuse"
    assert d["passes"][0]["stats"]["applied"] == {"BNAfterConv": 1}
    assert {"nodes", "params", "macs"} <= set(d["before"]) and d["after"]["nodes"] == 2
    assert all({"name", "changed", "seconds", "delta", "round", "group"} <= set(p) for p in d["passes"])


def test_dump_ir_keeps_the_graph_a_failing_pass_left(build, tmp_path):
    with pytest.raises(PassError):
        PassManager("t-drop-relu,t-crasher", dump_dir=tmp_path).run(build.conv_bn_relu())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["000_input.gir", "001_t-drop-relu.gir", "002_t-crasher.failed.gir"]


def test_a_pass_returning_a_bool_or_garbage(build, temp_pass):
    @dataclass(frozen=True)
    class Boolish(Pass):
        name: ClassVar[str] = "t-boolish"

        def run(self, graph, ctx):
            return False

    @dataclass(frozen=True)
    class Garbage(Pass):
        name: ClassVar[str] = "t-garbage"

        def run(self, graph, ctx):
            return "yes"

    temp_pass(Boolish)
    temp_pass(Garbage)
    assert not graphc.run_pipeline(build.relu_chain(1), "t-boolish").changed
    with pytest.raises(PassError, match="returned str, expected PassResult"):
        graphc.run_pipeline(build.relu_chain(1), "t-garbage")


def test_dump_dir_shows_only_the_latest_run(build, tmp_path):
    PassManager("fold-bn,t-drop-relu,dce", dump_dir=tmp_path).run(build.conv_bn_relu())
    (tmp_path / "notes.txt").write_text("mine")
    PassManager("dce", dump_dir=tmp_path).run(build.conv_bn_relu())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000_input.gir", "001_dce.gir", "final.dot", "notes.txt"]


def test_the_same_group_twice_gets_its_own_rows(build):
    rep = graphc.run_pipeline(build.relu_chain(2), "fixpoint(t-drop-relu),dce,fixpoint(t-drop-relu)")
    assert [(r.group_index, r.round) for r in rep.passes if r.name == "t-drop-relu"] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    rows = [ln.split()[0:4] for ln in rep.table().splitlines() if ln.startswith("t-drop-relu")]
    assert rows == [["t-drop-relu", "(fixpoint,", "3", "rounds)"], ["t-drop-relu", "(fixpoint,", "1", "round)"]]


def test_a_change_reported_as_none_is_caught(build, temp_pass):
    @dataclass(frozen=True)
    class Sneaky(Pass):
        name: ClassVar[str] = "t-sneaky"

        def run(self, graph, ctx):
            n = graph.find("relu")[0]
            n.output.replace_all_uses_with(n.input(0), outputs=True)
            graph.erase(n)
            return PassResult(False)

    temp_pass(Sneaky)
    with pytest.raises(PassError, match="reported no change but nodes/params went from 2/0 to 1/0"):
        graphc.run_pipeline(build.relu_chain(2), "t-sneaky")
