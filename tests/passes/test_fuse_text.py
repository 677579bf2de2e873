"""Text tests of the fusion passes: parse a dump, run one pass, compare the dump after it
(positive: the rewritten graph; negative: unchanged, with the reason in the stats)."""
import numpy as np
import pytest

from graphc.ir import parse_graph, print_graph

CASES = {
    'fold-bn': (
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,4,3,3] = weight "conv.weight"
  %g: f32[4] = weight "bn.weight"
  %b: f32[4] = weight "bn.bias"
  %m: f32[4] = buffer "bn.running_mean"
  %v: f32[4] = buffer "bn.running_var"
  %conv: f32[1,4,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  %bn: f32[1,4,8,8] = batch_norm(%conv, %g, %b, %m, %v) {eps=1e-05}  # bn
  return %bn
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,4,3,3] = weight "conv.weight"
  %conv.bias: f32[4] = weight "conv.bias"
  %bn: f32[1,4,8,8] = conv2d(%x, %w, %conv.bias) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  return %bn
}
""",
        None),
    'fold-bn/refused': (
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,4,3,3] = weight "conv.weight"
  %g: f32[4] = weight "bn.weight"
  %b: f32[4] = weight "bn.bias"
  %m: f32[4] = buffer "bn.running_mean"
  %v: f32[4] = buffer "bn.running_var"
  %bn: f32[1,4,8,8] = batch_norm(%x, %g, %b, %m, %v) {eps=1e-05}  # bn
  %conv: f32[1,4,8,8] = conv2d(%bn, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  return %conv
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,4,3,3] = weight "conv.weight"
  %g: f32[4] = weight "bn.weight"
  %b: f32[4] = weight "bn.bias"
  %m: f32[4] = buffer "bn.running_mean"
  %v: f32[4] = buffer "bn.running_var"
  %bn: f32[1,4,8,8] = batch_norm(%x, %g, %b, %m, %v) {eps=1e-05}  # bn
  %conv: f32[1,4,8,8] = conv2d(%bn, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  return %conv
}
""",
        'not after a conv or linear; conv pads with zeros and the BN does not map zero to zero'),
    'merge-linear': (
        """graph @t(%x: f32[1,4,8,8]) {
  %wa: f32[8,4,1,1] = weight "a.weight"
  %wb: f32[2,8,3,3] = weight "b.weight"
  %bb: f32[2] = weight "b.bias"
  %a: f32[1,8,8,8] = conv2d(%x, %wa) {stride=[1,1], padding=[0,0], dilation=[1,1], groups=1}  # a
  %b: f32[1,2,8,8] = conv2d(%a, %wb, %bb) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # b
  return %b
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %wb: f32[2,4,3,3] = weight "b.weight"
  %bb: f32[2] = weight "b.bias"
  %b: f32[1,2,8,8] = conv2d(%x, %wb, %bb) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # b
  return %b
}
""",
        None),
    'merge-linear/refused': (
        """graph @t(%x: f32[1,4,8,8]) {
  %wa: f32[8,4,3,3] = weight "a.weight"
  %wb: f32[8,8,3,3] = weight "b.weight"
  %a: f32[1,8,8,8] = conv2d(%x, %wa) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # a
  %b: f32[1,8,8,8] = conv2d(%a, %wb) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # b
  return %b
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %wa: f32[8,4,3,3] = weight "a.weight"
  %wb: f32[8,8,3,3] = weight "b.weight"
  %a: f32[1,8,8,8] = conv2d(%x, %wa) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # a
  %b: f32[1,8,8,8] = conv2d(%a, %wb) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # b
  return %b
}
""",
        'b pads its input (and a is not a bias-free 1x1 conv)'),
    'fuse-resconv': (
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,1,3,3] = weight "dw.weight"
  %k: f32[] = const 0.5
  %dw: f32[1,4,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=4}  # dw
  %s: f32[1,4,8,8] = mul(%x, %k)  # s
  %y: f32[1,4,8,8] = add(%dw, %s)  # y
  return %y
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,1,3,3] = weight "dw.weight"
  %y: f32[1,4,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=4}  # dw
  return %y
}
""",
        None),
    'fuse-resconv/refused': (
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,4,3,3] = weight "conv.weight"
  %c: f32[1,4,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # c
  %r: f32[1,4,8,8] = relu(%x)  # r
  %y: f32[1,4,8,8] = add(%c, %r)  # y
  return %y
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[4,4,3,3] = weight "conv.weight"
  %c: f32[1,4,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # c
  %r: f32[1,4,8,8] = relu(%x)  # r
  %y: f32[1,4,8,8] = add(%c, %r)  # y
  return %y
}
""",
        "the other branch is not the conv's input"),
    'absorb-pool': (
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[6,4,3,3] = weight "conv.weight"
  %c: f32[1,6,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  %p: f32[1,6,4,4] = avg_pool2d(%c) {kernel_size=[2,2], stride=[2,2]}  # pool
  return %p
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[6,4,4,4] = weight "conv.weight"
  %p: f32[1,6,4,4] = conv2d(%x, %w) {stride=[2,2], padding=[1,1], dilation=[1,1], groups=1}  # conv
  return %p
}
""",
        None),
    'absorb-pool/refused': (
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[6,4,1,1] = weight "conv.weight"
  %c: f32[1,6,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[0,0], dilation=[1,1], groups=1}  # conv
  %p: f32[1,6,4,4] = avg_pool2d(%c) {kernel_size=[3,3], stride=[2,2], padding=[1,1]}  # pool
  return %p
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w: f32[6,4,1,1] = weight "conv.weight"
  %c: f32[1,6,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[0,0], dilation=[1,1], groups=1}  # conv
  %p: f32[1,6,4,4] = avg_pool2d(%c) {kernel_size=[3,3], stride=[2,2], padding=[1,1], ceil_mode=false, count_include_pad=true, divisor_override=null}  # pool
  return %p
}
""",
        'the pool pads its input'),
    'drop-identity': (
        """graph @t(%x: f32[1,4,8,8]) {
  %f: f32[1,256] = flatten(%x) {start_dim=1, end_dim=-1}  # f
  %r: f32[1,4,8,8] = reshape(%f) {shape=[1,4,8,8]}  # r
  %d: f32[1,4,8,8] = dropout(%r) {p=0.2}  # d
  %s: f32[1,4,8,8] = sigmoid(%d)  # s
  return %s
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %s: f32[1,4,8,8] = sigmoid(%x)  # s
  return %s
}
""",
        None),
    'fold-constants': (
        """graph @t(%x: f32[1,4,8,8]) {
  %wt: f32[3,3,4,4] = weight "conv.weight_t"
  %w: f32[4,4,3,3] = permute(%wt) {dims=[3,2,1,0]}  # w
  %c: f32[1,4,8,8] = conv2d(%x, %w) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  return %c
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %w.folded: f32[4,4,3,3] = weight "conv.weight_t"
  %c: f32[1,4,8,8] = conv2d(%x, %w.folded) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}  # conv
  return %c
}
""",
        None),
    'dce': (
        """graph @t(%x: f32[1,4,8,8]) {
  %a: f32[1,4,8,8] = relu(%x)  # a
  %b: f32[1,4,8,8] = sigmoid(%a)  # b
  %c: f32[1,4,8,8] = tanh(%x)  # c
  return %c
}
""",
        """graph @t(%x: f32[1,4,8,8]) {
  %c: f32[1,4,8,8] = tanh(%x)  # c
  return %c
}
""",
        None),
}


def _weights(text):
    rng = np.random.default_rng(0)
    g = parse_graph(text)
    return {p.name: (rng.random(p.data.shape) + 0.5).astype(p.data.dtype) for p in g.params.values() if p.kind != "const"}


@pytest.mark.parametrize("key", list(CASES))
def test_dump_after_pass(h, key):
    before, after, reason = CASES[key]
    g = parse_graph(before, _weights(before))
    ref = g.clone()
    res = h.run_pass(g, key.split("/")[0])
    assert print_graph(g) == after
    assert res.changed == (reason is None and before != after)
    if reason is not None:
        assert reason in res.stats["refused"].values()
    h.check_same(ref, g)
    assert not h.run_pass(g, key.split("/")[0]).changed
