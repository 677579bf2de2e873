"""The text-test runner itself: each kind of check can fail, and every check file's checks
fail on its input, so a pass that did nothing could not pass its text test."""
from pathlib import Path

import pytest

OUT = """graph @g(%x: f32[1,4]) {
  %a: f32[1,4] = relu(%x)  # a
  %b: f32[1,4] = sigmoid(%a)  # b
  return %b
}
"""


@pytest.mark.parametrize("checks", [
    [("CHECK", "relu(%x)"), ("CHECK-NEXT", "sigmoid(%a)"), ("CHECK-SAME", "# b"), ("CHECK-NOT", "tanh")],
    [("CHECK", "= {{[a-z]+}}(%x)"), ("CHECK-NOT", "relu"), ("CHECK", "return %b")],
])
def test_checks_that_hold(lit, checks):
    lit.filecheck(OUT, checks)


@pytest.mark.parametrize("checks, message", [
    ([("CHECK", "tanh")], "CHECK: 'tanh' not found"),
    ([("CHECK", "sigmoid"), ("CHECK", "relu")], "CHECK: 'relu' not found"),  # order matters
    ([("CHECK", "graph @g"), ("CHECK-NEXT", "sigmoid")], "CHECK-NEXT: 'sigmoid' not found"),
    ([("CHECK", "relu"), ("CHECK-SAME", "sigmoid")], "CHECK-SAME: 'sigmoid' not found"),
    ([("CHECK", "graph"), ("CHECK-NOT", "relu"), ("CHECK", "sigmoid")], "CHECK-NOT: 'relu' found"),
    ([("CHECK", "relu"), ("CHECK-NOT", "return")], "CHECK-NOT: 'return' found"),
    ([("CHECK-NEXT", "relu")], "no previous match"),
])
def test_checks_that_fail(lit, checks, message):
    with pytest.raises(lit.CheckFailure, match=message.replace("(", r"\(")):
        lit.filecheck(OUT, checks)


def _all_cases(lit):
    for path in sorted(Path(__file__).parent.glob("*.ir")):
        for name, text, defaults, _ in lit.cases(path):
            yield f"{path.name}::{name}", text, defaults


def test_every_check_file_fails_on_its_unrewritten_input(lit):
    """A positive case's checks fail on its input (the rewrite is what they see); a negative
    case of a pass that records refusals checks the refusal, which the input lacks. Only the
    negative cases of passes without refusals (dce, drop-identity, resconv-wrap) may hold on their input."""
    held = []
    for where, text, defaults in _all_cases(lit):
        checks = lit.directives(text)["checks"]
        assert checks, f"{where} checks nothing"
        try:
            lit.filecheck(lit.unrun_output(text, defaults), checks)
            held.append(where)
        except lit.CheckFailure:
            pass
    assert held == ["dce.ir::case1", "drop_identity.ir::case1", "resconv_wrap.ir::case2"]


def test_every_exact_pass_has_a_positive_and_a_negative_text_test(lit):
    runs = {}
    for where, text, defaults in _all_cases(lit):
        run = lit.directives(text)["RUN"] or defaults["RUN"]
        negative = any("// refused" in p or "Negative" in text for _, p in lit.directives(text)["checks"])
        runs.setdefault(run, set()).add("negative" if negative else "positive")
    for name in ("fold-bn", "fuse-resconv", "merge-linear", "absorb-pool", "drop-identity", "fold-constants",
                 "dce", "fuse"):
        assert runs.get(name) == {"positive", "negative"}, f"{name}: {runs.get(name)}"
    assert "prune-merge" in runs


def test_parser_accepts_line_comments():
    from graphc.ir.printer import parse_graph, print_graph

    text = """// a model
graph @g(%x: f32[1,4]) {  // header
  // the only node
  %w: f32[4,4] = weight "fc//weight"  // a quoted // is text
  %y: f32[1,4] = linear(%x, %w)  # fc  // the node name stops before the comment
  return %y
}
"""
    g = parse_graph(text)
    assert g.node("fc").op == "linear" and g.params["w"].source == "fc//weight"
    assert "//" not in print_graph(g).replace("fc//weight", "")
