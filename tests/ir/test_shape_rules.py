"""The closed-form type rules (graphc.ir.ops.rules) agree with torch's meta tensors: same
types where a rule answers, and no answer where torch refuses the operands."""
from __future__ import annotations

import itertools
import random

import pytest

from graphc.ir.ops import _OPS, _freeze, _meta_infer
from graphc.ir.types import TensorType

RULES = {n: o.shape for n, o in _OPS.items() if o.shape is not None}


def T(*shape, dtype="f32"):
    return TensorType(tuple(shape), dtype)


def meta(op, types, attrs):
    try:
        return list(_meta_infer(op, tuple(types), _freeze(attrs)))
    except Exception:
        return None


def check(op, types, attrs):
    attrs = _OPS[op].canonical(attrs)  # as on a built node
    got = RULES[op](list(types), attrs)
    want = meta(op, types, attrs)
    if want is None:
        assert got is None, f"{op}{tuple(map(str, types))} {attrs}: rule says {got}, torch refuses"
    elif got is not None:
        assert got == want, f"{op}{tuple(map(str, types))} {attrs}: rule {got}, torch {want}"
    return got is not None


def _conv_cases(rng, nd):
    for _ in range(150):
        groups = rng.choice([1, 1, 2, 3])
        cin = groups * rng.randint(1, 3) * rng.choice([1, groups])
        cout = groups * rng.randint(1, 3)
        k = [rng.randint(1, 4) for _ in range(nd)]
        x = [rng.randint(1, 9) for _ in range(nd)]
        w_in = cin // groups if rng.random() < 0.9 else cin // groups + 1
        types = [T(rng.randint(1, 2), cin, *x), T(cout, w_in, *k)]
        if rng.random() < 0.5:
            types.append(T(cout if rng.random() < 0.9 else cout + 1))
        attrs = {"stride": [rng.randint(1, 3) for _ in range(nd)], "padding": [rng.randint(0, 2) for _ in range(nd)],
                 "dilation": [rng.randint(1, 2) for _ in range(nd)], "groups": groups}
        yield types, attrs


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv(nd):
    rng = random.Random(nd)
    answered = sum(check(f"conv{nd}d", t, a) for t, a in _conv_cases(rng, nd))
    assert answered > 50


@pytest.mark.parametrize("op,nd,dilated", [("max_pool1d", 1, True), ("max_pool2d", 2, True),
                                           ("avg_pool1d", 1, False), ("avg_pool2d", 2, False)])
def test_pools(op, nd, dilated):
    rng = random.Random(op)
    answered = 0
    for _ in range(300):
        k = [rng.randint(1, 4) for _ in range(nd)]
        attrs = {"kernel_size": k, "stride": rng.choice([[], k, [rng.randint(1, 3) for _ in range(nd)]]),
                 "padding": [rng.randint(0, 2) for _ in range(nd)], "ceil_mode": rng.random() < 0.5}
        if dilated:
            attrs["dilation"] = [rng.randint(1, 2) for _ in range(nd)]
        else:
            attrs["count_include_pad"] = rng.random() < 0.5
        answered += check(op, [T(1, 3, *[rng.randint(1, 9) for _ in range(nd)])], attrs)
    assert answered > 50


def test_adaptive_pools_norms_dense_softmax():
    cases = [
        ("adaptive_avg_pool2d", [T(2, 3, 7, 5)], {"output_size": [1, 1]}),
        ("adaptive_avg_pool2d", [T(2, 3, 7, 5)], {"output_size": [3, 2]}),
        ("adaptive_max_pool2d", [T(2, 3, 7, 5)], {"output_size": [2, 9]}),
        ("adaptive_avg_pool1d", [T(2, 3, 7)], {"output_size": [4]}),
        ("batch_norm", [T(2, 4, 3, 3), T(4), T(4), T(4), T(4)], {"eps": 1e-5}),
        ("batch_norm", [T(2, 4), T(4), T(4), T(4), T(4)], {"eps": 1e-5}),
        ("batch_norm", [T(2, 4, 3, 3), T(4), T(4), T(5), T(4)], {"eps": 1e-5}),
        ("batch_norm", [T(2, 4, 3, 3), T(4), T(4), T(4), T(4, dtype="f64")], {"eps": 1e-5}),
        ("layer_norm", [T(2, 5, 8), T(8), T(8)], {"normalized_shape": [8], "eps": 1e-6}),
        ("layer_norm", [T(2, 5, 8), T(5, 8)], {"normalized_shape": [5, 8]}),
        ("layer_norm", [T(2, 5, 8)], {"normalized_shape": [5]}),
        ("group_norm", [T(2, 6, 3, 3), T(6), T(6)], {"num_groups": 3}),
        ("group_norm", [T(2, 6, 3, 3), T(6), T(6)], {"num_groups": 4}),
        ("linear", [T(2, 7, 5), T(3, 5), T(3)], {}),
        ("linear", [T(5), T(3, 5)], {}),
        ("linear", [T(2, 4), T(3, 5)], {}),
        ("linear", [T(2, 5), T(3, 5), T(4)], {}),
        ("softmax", [T(2, 5)], {"dim": -1}),
        ("softmax", [T(2, 5)], {"dim": 2}),
        ("log_softmax", [T(2, 5, 3)], {"dim": 1}),
    ]
    assert sum(check(op, t, a) for op, t, a in cases) > 10


def test_elementwise_and_broadcast():
    shapes = [(), (3,), (4, 1), (2, 4, 3), (2, 1, 1), (5,)]
    dtypes = ["f32", "f16", "f64", "i64", "i32", "bool"]
    answered = 0
    for op in ("add", "sub", "mul", "div", "maximum", "minimum", "eq", "lt", "gt", "le", "ge"):
        for a, b in itertools.product(shapes, repeat=2):
            for da, db in [("f32", "f32"), ("i64", "i64"), ("f32", "f64"), ("bool", "bool")]:
                answered += check(op, [T(*a, dtype=da), T(*b, dtype=db)], {})
    for op, rule in RULES.items():
        if rule.__name__ in ("same_float", "same_any", "gelu"):
            for dt in dtypes:
                answered += check(op, [T(2, 3, dtype=dt)], {})
    answered += check("gelu", [T(2, 3)], {"approximate": "tanh"})
    answered += check("leaky_relu", [T(2, 3)], {"negative_slope": 0.2})
    for dt in dtypes:
        answered += check("cast", [T(2, 3)], {"dtype": dt})
    answered += check("where", [T(2, 1, dtype="bool"), T(3), T(2, 3)], {})
    answered += check("where", [T(2, 1, dtype="bool"), T(4), T(2, 3)], {})
    answered += check("sum_n", [T(2, 3), T(3), T(1, 1)], {})
    answered += check("sum_n", [T(2, 3), T(4)], {})
    assert answered > 200


def test_shape_ops():
    x = T(2, 6, 4, 3)
    cases = [("reshape", [x], {"shape": s}) for s in ([2, -1], [-1], [2, 6, 12], [4, 36], [-1, 5], [-1, -1], [0, -1], [2, 6, 4, 3, 1])]
    cases += [("flatten", [x], {"start_dim": s, "end_dim": e}) for s in range(-4, 4) for e in range(-4, 4)]
    cases += [("permute", [x], {"dims": d}) for d in ([0, 2, 3, 1], [3, 2, 1, 0], [0, 1, 2], [0, 0, 1, 2], [0, 1, -1, 2])]
    cases += [("concat", [x, T(2, 2, 4, 3)], {"dim": 1}), ("concat", [x, T(2, 2, 4, 3)], {"dim": 0}),
              ("concat", [x, T(2, 6, 4, 3, dtype="f64")], {"dim": 0}), ("concat", [x, x, x], {"dim": -1}),
              ("concat", [x, T(6, 4, 3)], {"dim": 0})]
    cases += [("split", [x], {"dim": 1, "sizes": s}) for s in ([2, 4], [6], [1, 1, 4], [3, 4], [0, 6])]
    cases += [("mean", [x], {"dims": d, "keepdim": k}) for d in ([2, 3], [-1, -2], [1], [0, 1, 2, 3], [4], [1, 1])
              for k in (False, True)]
    assert sum(check(op, t, a) for op, t, a in cases) > 40
