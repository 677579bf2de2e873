"""Closed-form type rules for the common ops: shape inference without meta tensors.

Each rule is ``f(types, attrs) -> list[TensorType] | None`` and follows torch's own shape
functions. A rule answers only where the answer is certain (the usual dtypes, well-formed
operands); anything else (``None``) goes to the meta-tensor path, which also gives the error
message for bad operands. ``tests/ir/test_shape_rules.py`` checks every rule against the meta
path.
"""
from __future__ import annotations

from graphc.ir.types import DTYPES, TensorType

FLOATS = frozenset({"f32", "f16", "bf16", "f64"})
INTS = frozenset({"i8", "u8", "i16", "i32", "i64"})


def _ints(v, n: int):
    """``v`` as a list of ``n`` ints (an int is repeated), or None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return [v] * n
    if isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        if len(v) == n:
            return list(v)
        if len(v) == 1:
            return [v[0]] * n
    return None


def broadcast(*shapes):
    """numpy/torch broadcast of ``shapes``, or None when they do not broadcast."""
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for s in shapes:
        off = rank - len(s)
        for i, d in enumerate(s):
            o = out[off + i]
            if o == 1:
                out[off + i] = d
            elif d != 1 and d != o:
                return None
    return tuple(out)


def _same_float(types) -> str | None:
    dt = types[0].dtype
    if dt not in FLOATS or any(t.dtype != dt for t in types):
        return None
    return dt


# -- elementwise --------------------------------------------------------------------------------
def same_float(types, attrs):
    """A float map: the operand's type."""
    if len(types) != 1 or types[0].dtype not in FLOATS:
        return None
    return [types[0]]


def gelu(types, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        return None
    return same_float(types, attrs)


def same_any(types, attrs):
    if len(types) != 1:
        return None
    return [types[0]]


def cast(types, attrs):
    if len(types) != 1 or attrs.get("dtype") not in DTYPES:
        return None
    return [TensorType(types[0].shape, attrs["dtype"])]


def binary(out_dtype=None, ints=False):
    def rule(types, attrs):
        if len(types) != 2:
            return None
        dt = types[0].dtype
        if types[1].dtype != dt or not (dt in FLOATS or (ints and dt in INTS)):
            return None
        shape = broadcast(types[0].shape, types[1].shape)
        if shape is None:
            return None
        return [TensorType(shape, out_dtype or dt)]
    return rule


def sum_n(types, attrs):
    if not types or _same_float(types) is None:
        return None
    shape = broadcast(*(t.shape for t in types))
    return None if shape is None else [TensorType(shape, types[0].dtype)]


def where(types, attrs):
    if len(types) != 3 or types[0].dtype != "bool" or types[1].dtype != types[2].dtype or types[1].dtype not in FLOATS:
        return None
    shape = broadcast(*(t.shape for t in types))
    return None if shape is None else [TensorType(shape, types[1].dtype)]


# -- layers -------------------------------------------------------------------------------------
def conv(nd: int):
    def rule(types, attrs):
        if len(types) not in (2, 3) or _same_float(types) is None:
            return None
        x, w = types[0].shape, types[1].shape
        if len(x) != nd + 2 or len(w) != nd + 2:
            return None
        groups = attrs["groups"]
        stride = _ints(attrs["stride"], nd)
        padding = _ints(attrs["padding"], nd)
        dilation = _ints(attrs["dilation"], nd)
        if (not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or stride is None
                or padding is None or dilation is None):
            return None
        if (x[1] != w[1] * groups or w[0] % groups or w[0] == 0 or x[0] == 0 or any(d == 0 for d in w[1:])
                or min(stride) < 1 or min(dilation) < 1 or min(padding) < 0):
            return None
        if len(types) == 3 and types[2].shape != (w[0],):
            return None
        out = [x[0], w[0]]
        for i in range(nd):
            size = (x[i + 2] + 2 * padding[i] - dilation[i] * (w[i + 2] - 1) - 1) // stride[i] + 1
            if size < 1 or x[i + 2] + 2 * padding[i] < dilation[i] * (w[i + 2] - 1) + 1:
                return None
            out.append(size)
        return [TensorType(tuple(out), types[0].dtype)]
    return rule


def linear(types, attrs):
    if len(types) not in (2, 3) or _same_float(types) is None:
        return None
    x, w = types[0].shape, types[1].shape
    if len(w) != 2 or len(x) < 1 or x[-1] != w[1]:
        return None
    if len(types) == 3 and types[2].shape != (w[0],):
        return None
    return [TensorType(x[:-1] + (w[0],), types[0].dtype)]


def batch_norm(types, attrs):
    if len(types) != 5 or _same_float(types) is None:
        return None
    x = types[0].shape
    if len(x) < 2 or any(t.shape != (x[1],) for t in types[1:]):
        return None
    return [types[0]]


def layer_norm(types, attrs):
    if len(types) not in (1, 2, 3) or _same_float(types) is None:
        return None
    ns = attrs.get("normalized_shape")
    ns = list(ns) if isinstance(ns, (list, tuple)) else None
    x = types[0].shape
    if not ns or len(ns) > len(x) or list(x[len(x) - len(ns):]) != ns:
        return None
    if any(list(t.shape) != ns for t in types[1:]):
        return None
    return [types[0]]


def group_norm(types, attrs):
    if len(types) not in (1, 2, 3) or _same_float(types) is None:
        return None
    x = types[0].shape
    g = attrs.get("num_groups")
    if len(x) < 2 or not isinstance(g, int) or g < 1 or x[1] % g or any(t.shape != (x[1],) for t in types[1:]):
        return None
    return [types[0]]


def _pool_size(size, k, s, p, d, ceil_mode):
    """torch's pooling_output_shape."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool(nd: int, dilated: bool):
    def rule(types, attrs):
        if len(types) != 1 or types[0].dtype not in FLOATS:
            return None
        x = types[0].shape
        if len(x) != nd + 2 or any(d == 0 for d in x):
            return None
        k = _ints(attrs.get("kernel_size"), nd)
        s = attrs.get("stride")
        s = k if s is None or s == [] or s == () else _ints(s, nd)
        p = _ints(attrs["padding"], nd)
        d = _ints(attrs["dilation"], nd) if dilated else [1] * nd
        ceil_mode = attrs["ceil_mode"]
        if k is None or s is None or p is None or d is None or not isinstance(ceil_mode, bool):
            return None
        if attrs.get("divisor_override") not in (None,) or min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
            return None
        out = list(x[:2])
        for i in range(nd):
            if p[i] * 2 > k[i] or (dilated and p[i] > ((k[i] - 1) * d[i] + 1) // 2):
                return None
            o = _pool_size(x[i + 2], k[i], s[i], p[i], d[i], ceil_mode)
            if o < 1:
                return None
            out.append(o)
        return [TensorType(tuple(out), types[0].dtype)]
    return rule


def adaptive_pool(nd: int):
    def rule(types, attrs):
        if len(types) != 1 or types[0].dtype not in FLOATS:
            return None
        x = types[0].shape
        o = _ints(attrs.get("output_size"), nd)
        if len(x) != nd + 2 or o is None or min(o) < 1 or any(d == 0 for d in x):
            return None
        return [TensorType(tuple(x[:2]) + tuple(o), types[0].dtype)]
    return rule


def softmax(types, attrs):
    if len(types) != 1 or types[0].dtype not in FLOATS:
        return None
    dim = attrs.get("dim")
    r = max(len(types[0].shape), 1)
    if not isinstance(dim, int) or not -r <= dim < r:
        return None
    return [types[0]]


# -- shape ops ----------------------------------------------------------------------------------
def reshape(types, attrs):
    if len(types) != 1:
        return None
    shape = attrs.get("shape")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        return None
    n = types[0].numel
    known = 1
    free = [i for i, d in enumerate(shape) if d == -1]
    if len(free) > 1 or any(d < -1 for d in shape):
        return None
    for d in shape:
        if d != -1:
            known *= d
    out = list(shape)
    if free:
        if known == 0 or n % known:
            return None
        out[free[0]] = n // known
    elif known != n:
        return None
    return [TensorType(tuple(out), types[0].dtype)]


def flatten(types, attrs):
    if len(types) != 1:
        return None
    x = types[0].shape
    r = len(x)
    s, e = attrs["start_dim"], attrs["end_dim"]
    if r == 0 or not isinstance(s, int) or not isinstance(e, int) or not (-r <= s < r and -r <= e < r):
        return None
    s, e = s % r, e % r
    if s > e:
        return None
    n = 1
    for d in x[s:e + 1]:
        n *= d
    return [TensorType(x[:s] + (n,) + x[e + 1:], types[0].dtype)]


def permute(types, attrs):
    if len(types) != 1:
        return None
    x = types[0].shape
    r = len(x)
    dims = attrs.get("dims")
    if not isinstance(dims, (list, tuple)) or len(dims) != r or not all(isinstance(d, int) and -r <= d < r for d in dims):
        return None
    dims = [d % r for d in dims]
    if len(set(dims)) != r:
        return None
    return [TensorType(tuple(x[d] for d in dims), types[0].dtype)]


def concat(types, attrs):
    if not types or any(t.dtype != types[0].dtype for t in types):
        return None
    r = len(types[0].shape)
    dim = attrs.get("dim")
    if r == 0 or not isinstance(dim, int) or not -r <= dim < r or any(len(t.shape) != r for t in types):
        return None
    dim %= r
    first = types[0].shape
    total = 0
    for t in types:
        if any(t.shape[i] != first[i] for i in range(r) if i != dim):
            return None
        total += t.shape[dim]
    return [TensorType(first[:dim] + (total,) + first[dim + 1:], types[0].dtype)]


def split(types, attrs):
    if len(types) != 1:
        return None
    x = types[0].shape
    r = len(x)
    dim, sizes = attrs.get("dim"), attrs.get("sizes")
    if (r == 0 or not isinstance(dim, int) or not -r <= dim < r or not isinstance(sizes, (list, tuple))
            or not all(isinstance(s, int) and s >= 0 for s in sizes) or sum(sizes) != x[dim % r]):
        return None
    dim %= r
    return [TensorType(x[:dim] + (s,) + x[dim + 1:], types[0].dtype) for s in sizes]


def mean(types, attrs):
    if len(types) != 1 or types[0].dtype not in FLOATS:
        return None
    x = types[0].shape
    r = len(x)
    dims, keep = attrs.get("dims"), attrs["keepdim"]
    if (r == 0 or not isinstance(dims, (list, tuple)) or not dims or not isinstance(keep, bool)
            or not all(isinstance(d, int) and -r <= d < r for d in dims)):
        return None
    ds = {d % r for d in dims}
    if len(ds) != len(dims):
        return None
    out = tuple(1 if i in ds else n for i, n in enumerate(x)) if keep else tuple(n for i, n in enumerate(x) if i not in ds)
    return [TensorType(out, types[0].dtype)]

