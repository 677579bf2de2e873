"""Pipeline strings: typed options from the dataclass fields, kebab-case names, presets,
fixpoint groups, and one-line errors that list close names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import pytest
from hypothesis import given, strategies as st

from graphc.errors import ParseError
from graphc.pipeline import FixpointStep, PassStep, parse_pipeline
from graphc.registry import Pass, PassResult


@dataclass(frozen=True)
class Knobs(Pass):
    """A pass with one option of every kind pipeline strings can set."""

    name: ClassVar[str] = "t-knobs"
    exact: ClassVar[bool] = False
    ratio: float = 0.5
    min_channels: int = 8
    flag: bool = False
    label: str = "x"
    importance: Literal["l1", "l2", "taylor"] = "l1"
    layers: tuple[str, ...] = ()
    sizes: tuple[int, ...] = (1,)
    limit: Optional[int] = None

    def __post_init__(self):
        if not 0 <= self.ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")

    def run(self, graph, ctx):
        return PassResult(False)


@dataclass(frozen=True)
class Plain(Pass):
    """No options."""

    name: ClassVar[str] = "t-plain"

    def run(self, graph, ctx):
        return PassResult(False)


@pytest.fixture(autouse=True)
def passes(temp_pass):
    temp_pass(Knobs)
    temp_pass(Plain)
    temp_pass.preset("t-both", "t-plain,t-knobs(ratio=0.25)")
    temp_pass.preset("t-nested", "t-both,fixpoint(t-plain)")
    temp_pass.preset("t-loop", "t-plain,t-loop")


def test_typed_options_from_field_types():
    p = parse_pipeline("t-knobs(ratio=0.25,min-channels=16,flag=true,label=hello,importance=l2,"
                       "layers=[conv1,layer1.0.conv2],sizes=[3,5],limit=4)")
    (step,) = p.steps
    k = step.instance
    assert isinstance(k, Knobs)
    assert (k.ratio, k.min_channels, k.flag, k.label, k.importance) == (0.25, 16, True, "hello", "l2")
    assert k.layers == ("conv1", "layer1.0.conv2") and k.sizes == (3, 5) and k.limit == 4
    assert not p.exact


def test_snake_case_keys_single_list_values_none_and_quotes():
    k = parse_pipeline("t-knobs(min_channels=2, layers=fc, limit=none, label='a,b(c)')").steps[0].instance
    assert k.min_channels == 2 and k.layers == ("fc",) and k.limit is None and k.label == "a,b(c)"


def test_defaults_and_round_trip_text():
    p = parse_pipeline("t-plain , t-knobs(flag=yes,layers=[a,b])")
    assert [s.name for s in p.steps] == ["t-plain", "t-knobs"]
    assert p.steps[1].instance.ratio == 0.5
    assert str(p) == "t-plain,t-knobs(flag=true,layers=[a,b])"
    assert str(parse_pipeline(str(p))) == str(p)


def test_presets_expand_recursively():
    p = parse_pipeline("t-nested")
    assert isinstance(p.steps[-1], FixpointStep)
    assert [s.name for s in p.passes()] == ["t-plain", "t-knobs", "t-plain"]
    assert p.passes()[1].instance.ratio == 0.25


def test_builtin_edp_preset_expands_and_fuse_is_one_exact_pass():
    p = parse_pipeline("edp,fuse")
    assert [s.name for s in p.passes()] == ["fold-bn", "decompose", "edp-train", "prune-merge", "fuse"]
    assert parse_pipeline("fuse").exact and str(parse_pipeline("fuse")) == "fuse"


def test_fixpoint_group_with_cap():
    p = parse_pipeline("t-plain,fixpoint(t-plain,t-knobs(ratio=0.1),max=5)")
    fx = p.steps[1]
    assert isinstance(fx, FixpointStep) and fx.cap == 5
    assert [type(s) for s in fx.steps] == [PassStep, PassStep]
    assert str(p) == "t-plain,fixpoint(t-plain,t-knobs(ratio=0.1),max=5)"


def test_api_accepts_instances_classes_and_lists():
    p = parse_pipeline([Knobs(ratio=0.1), Plain, "t-plain"])
    assert [s.name for s in p.passes()] == ["t-knobs", "t-plain", "t-plain"]
    assert str(p).startswith("t-knobs(ratio=0.1")


@pytest.mark.parametrize("text, needle", [
    ("t-knbos", "unknown pass 't-knbos' (did you mean: t-knobs"),
    ("t-knobs(ratoi=0.1)", "unknown option 'ratoi' for pass 't-knobs' (did you mean: ratio"),
    ("t-plain(x=1)", "unknown option 'x' for pass 't-plain' (it takes no options)"),
    ("t-knobs(min-channels=2.5)", "expected an integer, got '2.5'"),
    ("t-knobs(ratio=half)", "expected a number, got 'half'"),
    ("t-knobs(flag=maybe)", "expected true or false"),
    ("t-knobs(importance=l3)", "expected one of l1, l2, taylor, got 'l3'"),
    ("t-knobs(sizes=[1,x])", "expected an integer, got 'x'"),
    ("t-knobs(ratio=1.5)", "ratio must be in [0, 1)"),
    ("t-knobs(ratio)", "needs a value"),
    ("t-knobs(ratio=0.1,ratio=0.2)", "given twice"),
    ("t-knobs(ratio=0.1", "expected ',' or ')'"),
    ("t-plain,,t-plain", "missing pass name"),
    ("", "empty pipeline"),
    ("t-both(x=1)", "preset 't-both' takes no options"),
    ("t-loop", "expands to itself"),
    ("fixpoint()", "missing pass name"),
    ("fixpoint(t-plain,cap=3)", "fixpoint takes one option, max=N"),
    ("fixpoint(t-plain,max=0)", "at least 1"),
    ("t-plain)", "unexpected ')'"),
])
def test_errors_are_one_line_and_name_the_problem(text, needle):
    with pytest.raises(ParseError) as e:
        parse_pipeline(text)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg and msg.startswith("pipeline ")


names = st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True)


@given(
    ratio=st.floats(0, 0.99, allow_nan=False),
    min_channels=st.integers(-5, 10**6),
    flag=st.booleans(),
    importance=st.sampled_from(["l1", "l2", "taylor"]),
    layers=st.lists(names, max_size=4).map(tuple),
    limit=st.none() | st.integers(0, 99),
)
def test_any_option_values_round_trip_through_text(ratio, min_channels, flag, importance, layers, limit):
    from graphc.pipeline_parse import PassStep

    k = Knobs(ratio=ratio, min_channels=min_channels, flag=flag, importance=importance, layers=layers, limit=limit)
    opts = {f: getattr(k, f) for f in ("ratio", "min_channels", "flag", "importance", "layers", "limit")}
    text = str(PassStep(k, opts))
    assert parse_pipeline(text).steps[0].instance == k
