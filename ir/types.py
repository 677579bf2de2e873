"""Tensor types of the IR: a static shape and a dtype, nothing symbolic.

Invariant: every Value in a verified graph has a TensorType whose shape is a tuple of
non-negative ints. Dtypes are short names (``f32``, ``i64``...) that print compactly and map
one-to-one onto numpy, torch and ONNX element types.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# short name -> (numpy dtype, torch dtype name, onnx TensorProto enum)
_DTYPES = {
    "f32": ("float32", "float32", 1),
    "f16": ("float16", "float16", 10),
    "bf16": (None, "bfloat16", 16),
    "f64": ("float64", "float64", 11),
    "i8": ("int8", "int8", 3),
    "u8": ("uint8", "uint8", 2),
    "i16": ("int16", "int16", 5),
    "i32": ("int32", "int32", 6),
    "i64": ("int64", "int64", 7),
    "bool": ("bool", "bool", 9),
}
DTYPES = tuple(_DTYPES)
MAX_DIM = 2**63 - 1
_TYPE_RE = re.compile(r"([A-Za-z0-9]+)\[\s*((?:\d+\s*(?:,\s*\d+\s*)*)?)\]")

_NP_TO_SHORT = {v[0]: k for k, v in _DTYPES.items() if v[0]}
_TORCH_TO_SHORT = {v[1]: k for k, v in _DTYPES.items()}
_ONNX_TO_SHORT = {v[2]: k for k, v in _DTYPES.items()}


_NP_SEEN: dict = {}


def dtype_from_numpy(dt) -> str:
    short = _NP_SEEN.get(dt) if isinstance(dt, np.dtype) else None
    if short is not None:
        return short
    name = np.dtype(dt).name
    if name not in _NP_TO_SHORT:
        raise TypeError(f"unsupported numpy dtype {name}")
    if isinstance(dt, np.dtype):
        _NP_SEEN[dt] = _NP_TO_SHORT[name]
    return _NP_TO_SHORT[name]


def dtype_from_torch(dt) -> str:
    name = str(dt).replace("torch.", "")
    if name not in _TORCH_TO_SHORT:
        raise TypeError(f"unsupported torch dtype {name}")
    return _TORCH_TO_SHORT[name]


def dtype_from_onnx(elem_type: int) -> str:
    if elem_type not in _ONNX_TO_SHORT:
        raise TypeError(f"unsupported ONNX element type {elem_type}")
    return _ONNX_TO_SHORT[elem_type]


def numpy_dtype(short: str):
    return np.dtype(_DTYPES[short][0])


def torch_dtype(short: str):
    import torch

    return getattr(torch, _DTYPES[short][1])


def onnx_dtype(short: str) -> int:
    return _DTYPES[short][2]


_ITEMSIZE: dict[str, int] = {}


def dtype_bytes(short: str) -> int:
    n = _ITEMSIZE.get(short)
    if n is None:
        n = _ITEMSIZE[short] = 2 if short == "bf16" else numpy_dtype(short).itemsize
    return n


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self):
        shape = self.shape
        if type(shape) is not tuple or not all(type(d) is int for d in shape):
            object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if self.dtype not in _DTYPES:
            raise TypeError(f"unknown dtype {self.dtype!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_bytes(self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def parse(text: str) -> "TensorType":
        """``f32[1,3,224,224]`` -> TensorType; ValueError naming the problem otherwise."""
        m = _TYPE_RE.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"bad type {text!r}: expected a dtype and a shape like f32[1,3,224,224]")
        dt, body = m.group(1), m.group(2).strip()
        if dt not in _DTYPES:
            raise ValueError(f"unknown dtype {dt!r} in {text!r} (known: {', '.join(_DTYPES)})")
        shape = tuple(int(s) for s in body.split(",")) if body else ()
        if any(d > MAX_DIM for d in shape):
            raise ValueError(f"a dimension of {text!r} is past int64")
        return TensorType(shape, dt)

    @staticmethod
    def of(array) -> "TensorType":
        """Type of a numpy array or torch tensor."""
        if hasattr(array, "detach"):
            return TensorType(tuple(array.shape), dtype_from_torch(array.dtype))
        array = np.asarray(array)
        return TensorType(array.shape, dtype_from_numpy(array.dtype))
