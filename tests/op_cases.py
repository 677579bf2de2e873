"""One or more small cases per op of the table, shared by the op-definition tests and the ONNX
back-end tests: ``(op, input shapes, attrs, params)``; inputs are f32 graph inputs unless the
shape is written ``(dtype, shape)``, params are arrays. Every op but ``opaque`` has a case
(tests/ir/test_opdefs.py checks it)."""
from __future__ import annotations

import numpy as np

R = np.random.default_rng(0)


def W(*s):
    return R.standard_normal(s).astype(np.float32)


def POS(*s):
    """Positive weights (variances, divisors)."""
    return (np.abs(R.standard_normal(s)) + 0.5).astype(np.float32)


CASES = [
    ("conv2d", [(1, 4, 9, 9)], {"stride": [2, 1], "padding": [1, 2], "dilation": [1, 2], "groups": 2}, [W(6, 2, 3, 3), W(6)]),
    ("conv1d", [(1, 3, 10)], {"stride": [2], "padding": [1]}, [W(5, 3, 3)]),
    ("conv3d", [(1, 2, 4, 5, 5)], {"padding": [1, 0, 1]}, [W(3, 2, 3, 3, 3)]),
    ("conv_transpose2d", [(1, 4, 5, 5)], {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}, [W(4, 3, 3, 3), W(3)]),
    ("conv_transpose1d", [(1, 4, 6)], {"stride": [2], "padding": [1]}, [W(4, 3, 3)]),
    ("linear", [(2, 7)], {}, [W(5, 7), W(5)]),
    ("linear", [(2, 3, 7)], {}, [W(5, 7), W(5)]),
    ("linear", [(2, 3, 7)], {}, [W(5, 7)]),
    ("matmul", [(2, 3, 4), (4, 5)], {}, []),
    ("einsum", [(2, 3, 4), (2, 4, 5)], {"equation": "bij,bjk->bik"}, []),
    ("batch_norm", [(1, 3, 4, 4)], {"eps": 1e-3}, [W(3), W(3), W(3), POS(3)]),
    ("layer_norm", [(2, 5, 6)], {"normalized_shape": [6], "eps": 1e-6}, [W(6), W(6)]),
    ("layer_norm", [(2, 5, 6)], {"normalized_shape": [5, 6]}, []),
    ("group_norm", [(1, 6, 3, 3)], {"num_groups": 3}, [W(6), W(6)]),
    ("group_norm", [(2, 4, 5)], {"num_groups": 2, "eps": 1e-3}, []),
    ("group_norm", [(2, 6)], {"num_groups": 3}, [W(6)]),
    ("instance_norm", [(1, 3, 4, 4)], {}, [W(3), W(3)]),
    ("lrn", [(1, 7, 3, 3)], {"size": 5, "alpha": 1e-3, "beta": 0.7, "k": 2.0}, []),
    ("max_pool2d", [(1, 2, 9, 9)], {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "ceil_mode": True}, []),
    ("max_pool1d", [(1, 2, 9)], {"kernel_size": [2], "stride": [2]}, []),
    ("avg_pool2d", [(1, 2, 8, 8)], {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "count_include_pad": False}, []),
    ("avg_pool2d", [(1, 2, 8, 8)], {"kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1]}, []),
    ("avg_pool1d", [(1, 2, 8)], {"kernel_size": [3], "stride": [2], "padding": [1]}, []),
    ("adaptive_avg_pool2d", [(1, 2, 5, 7)], {"output_size": [1, 1]}, []),
    ("adaptive_avg_pool2d", [(1, 2, 6, 8)], {"output_size": [3, 2]}, []),
    ("adaptive_avg_pool2d", [(1, 2, 2, 3)], {"output_size": [7, 7]}, []),
    ("adaptive_avg_pool1d", [(1, 2, 5)], {"output_size": 3}, []),
    ("adaptive_max_pool2d", [(1, 2, 6, 6)], {"output_size": [3, 3]}, []),
    ("softmax", [(2, 3, 4)], {"dim": 1}, []),
    ("log_softmax", [(2, 3, 4)], {"dim": -1}, []),
    ("dropout", [(2, 3)], {"p": 0.5}, []),
    ("gelu", [(2, 5)], {"approximate": "none"}, []),
    ("gelu", [(2, 5)], {"approximate": "tanh"}, []),
    ("leaky_relu", [(2, 5)], {"negative_slope": 0.2}, []),
    ("elu", [(2, 5)], {"alpha": 0.5}, []),
    ("celu", [(2, 5)], {"alpha": 1.5}, []),
    ("softplus", [(2, 5)], {"beta": 2.0}, []),
    ("hardtanh", [(2, 5)], {"min_val": -0.5, "max_val": 0.5}, []),
    ("clamp", [(2, 5)], {"min": -0.2}, []),
    ("prelu", [(1, 3, 2, 2)], {}, [W(3, 1, 1)]),
    ("add", [(2, 3), (3,)], {}, []),
    ("sub", [(2, 3), (2, 1)], {}, []),
    ("mul", [(2, 3)], {}, [np.asarray(1.5, np.float32)]),
    ("div", [(2, 3)], {}, [POS(2, 3)]),
    ("pow", [(2, 3)], {}, [np.asarray(2.0, np.float32)]),
    ("maximum", [(2, 3), (1, 3)], {}, []),
    ("minimum", [(2, 3), (1, 3)], {}, []),
    ("sum_n", [(2, 3), (3,), (2, 1)], {}, []),
    ("floor_divide", [(2, 3)], {}, [np.asarray(0.7, np.float32)]),
    ("mod", [("i64", (2, 3))], {}, [np.asarray(2, np.int64)]),
    ("eq", [("i64", (2, 3)), ("i64", (3,))], {}, []),
    ("lt", [(2, 3), (2, 3)], {}, []),
    ("gt", [(2, 3), (3,)], {}, []),
    ("le", [(2, 3), (2, 3)], {}, []),
    ("ge", [(2, 3)], {}, [np.asarray(0.0, np.float32)]),
    ("and", [("bool", (2, 3)), ("bool", (2, 3))], {}, []),
    ("or", [("bool", (2, 3)), ("bool", (1, 3))], {}, []),
    ("not", [("bool", (2, 3))], {}, []),
    ("where", [("bool", (2, 3)), (2, 3), (3,)], {}, []),
    ("reshape", [(2, 3, 4)], {"shape": [2, -1]}, []),
    ("flatten", [(2, 3, 4, 5)], {"start_dim": 1, "end_dim": -1}, []),
    ("flatten", [(2, 3, 4, 5)], {"start_dim": 1, "end_dim": 2}, []),
    ("permute", [(2, 3, 4)], {"dims": [2, 0, 1]}, []),
    ("squeeze", [(2, 1, 4, 1)], {"dims": [1, -1]}, []),
    ("unsqueeze", [(2, 4)], {"dims": [0, -1]}, []),
    ("expand", [(3, 1)], {"shape": [2, 3, 4]}, []),
    ("tile", [(2, 3)], {"repeats": [2, 1, 2]}, []),
    ("concat", [(2, 3), (2, 5)], {"dim": -1}, []),
    ("split", [(2, 7)], {"dim": 1, "sizes": [3, 4]}, []),
    ("slice", [(2, 9)], {"dim": 1, "start": 1, "end": -2, "step": 2}, []),
    ("select", [(2, 5, 3)], {"dim": 1, "index": -1}, []),
    ("index_select", [(4, 5)], {"dim": 1}, [np.array([4, 0, 2], np.int64)]),
    ("gather", [(3, 4)], {"dim": 1}, [np.array([[0, 3], [1, 1], [2, 0]], np.int64)]),
    ("roll", [(2, 5, 6)], {"shifts": [2, -1], "dims": [1, 2]}, []),
    ("pad", [(1, 2, 4, 4)], {"pad": [1, 2, 0, 1], "mode": "constant", "value": 0.5}, []),
    ("pad", [(1, 2, 4, 4)], {"pad": [1, 2, 2, 1], "mode": "reflect"}, []),
    ("pad", [(1, 2, 4, 4)], {"pad": [1, 1, 2, 1], "mode": "replicate"}, []),
    ("pixel_shuffle", [(1, 8, 3, 3)], {"upscale_factor": 2}, []),
    ("channel_shuffle", [(1, 6, 2, 2)], {"groups": 3}, []),
    ("interpolate", [(1, 2, 3, 4)], {"scale_factor": 2.0, "mode": "nearest"}, []),
    ("interpolate", [(1, 2, 3, 4)], {"size": [5, 7], "mode": "bilinear", "align_corners": False}, []),
    ("mean", [(2, 3, 4)], {"dims": [1, 2], "keepdim": True}, []),
    ("sum", [(2, 3, 4)], {"dims": [0]}, []),
    ("amax", [(2, 3, 4)], {"dims": [-1]}, []),
    ("amin", [(2, 3, 4)], {"dims": [0, 2]}, []),
    ("prod", [(2, 3, 4)], {"dim": 1}, []),
    ("var", [(2, 3, 4)], {"dims": [2], "keepdim": True}, []),
    ("norm", [(2, 3, 4)], {"dims": [1]}, []),
    ("argmax", [(2, 3, 4)], {"dim": 2}, []),
    ("cast", [(2, 3)], {"dtype": "f16"}, []),
    ("scaled_dot_product_attention", [(1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4)], {}, []),
    ("multi_head_attention", [(5, 1, 8), (5, 1, 8), (5, 1, 8)], {"num_heads": 2},
     [W(24, 8), W(24), W(8, 8), W(8)]),
    ("multi_head_attention", [(1, 5, 8), (1, 5, 8), (1, 5, 8)], {"num_heads": 4, "batch_first": True},
     [W(24, 8), W(24), W(8, 8), W(8)]),
]

# Unary maps on any input, and on positive inputs only (their domain).
UNARY = ["relu", "relu6", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid", "mish", "selu", "exp", "neg",
         "abs", "erf", "floor", "ceil", "round", "sign", "sin", "cos", "identity", "softsign"]
POSITIVE = ["sqrt", "rsqrt", "log", "reciprocal"]
