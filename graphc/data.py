"""Data specs: where a pass that trains gets its examples.

A spec is one string:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), pixels scaled to [0, 1] as
  ``1x8x8`` float tensors; split deterministically (a stratified shuffle with seed 0) into
  1,437 train / 360 validation images.
- ``mnist-idx:DIR``: a folder with MNIST idx files (``*images-idx3-ubyte[.gz]`` and
  ``*labels-idx1-ubyte[.gz]``), pixels scaled to [0, 1] as ``1x28x28`` tensors. Without a
  training split beside the test split, the first 8,000 images train and the last 2,000
  validate (``mnist-idx:DIR?train=N`` moves the cut).
- ``FILE.npz``: arrays ``x`` and ``y`` (and optionally ``x_val``/``y_val``; without them the
  last 20% of ``x``/``y`` validate).
- ``module:function``: ``function()`` returns ``(train_loader, val_loader)``, any iterables of
  ``(inputs, labels)`` batches.

Invariants: loading a spec twice gives the same tensors in the same order; every :class:`Data`
names its split in ``split`` so any reported figure can say what it was measured on; a bad
spec raises :class:`~graphc.errors.DataError` with one line that says what was wrong.
"""
from __future__ import annotations

import gzip
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from graphc.errors import DataError

__all__ = ["Data", "load_data", "resolve_data", "SPEC_HELP"]

SPEC_HELP = "digits | mnist-idx:DIR | FILE.npz | module:function"


@dataclass
class Data:
    """A train/validation pair. Tensor-backed data (every built-in spec) keeps the tensors so
    the training loop can shard them under ``torchrun``; ``module:function`` data keeps the
    user's loaders as they are."""

    name: str
    split: str
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    train_loader: Iterable | None = None
    val_loader: Iterable | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tensors(self) -> bool:
        return self.x_train is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (no batch dimension)."""
        if self.tensors:
            return tuple(self.x_train.shape[1:])
        x, _ = next(iter(self.train_loader))
        return tuple(x.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.tensors:
            return int(max(self.y_train.max(), self.y_val.max())) + 1
        return int(self.meta.get("num_classes", 10))

    def loaders(self, batch_size: int = 64, *, seed: int = 0, rank: int = 0, world: int = 1,
                shuffle: bool = True):
        """(train, val) loaders. With ``world > 1`` each rank reads its own shard of the
        training set (a DistributedSampler); validation is not sharded."""
        if not self.tensors:
            return self.train_loader, self.val_loader
        from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

        train = TensorDataset(self.x_train, self.y_train)
        val = TensorDataset(self.x_val, self.y_val)
        gen = torch.Generator().manual_seed(seed)
        if world > 1:
            sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
            tl = DataLoader(train, batch_size=batch_size, sampler=sampler)
        else:
            tl = DataLoader(train, batch_size=batch_size, shuffle=shuffle, generator=gen)
        return tl, DataLoader(val, batch_size=max(batch_size, 256))

    def sample(self, n: int = 1) -> torch.Tensor:
        """The first ``n`` validation inputs (example inputs for tracing and latency)."""
        if self.tensors:
            return self.x_val[:n].clone()
        x, _ = next(iter(self.val_loader))
        return x[:n].clone()

    def __str__(self) -> str:
        return f"{self.name} ({self.split})"


def load_data(spec) -> Data:
    """Load a data spec (a string as above, a :class:`Data`, or a (train, val) loader pair)."""
    if isinstance(spec, Data):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        return Data(name="loaders", split="user-supplied train/val loaders",
                    train_loader=spec[0], val_loader=spec[1])
    if not isinstance(spec, (str, os.PathLike)):
        raise DataError(f"bad data spec {spec!r}: expected {SPEC_HELP}")
    s = str(spec).strip()
    if not s:
        raise DataError(f"empty data spec: expected {SPEC_HELP}")
    if s == "digits":
        return _digits()
    if s.startswith("mnist-idx:"):
        return _mnist_idx(s[len("mnist-idx:"):])
    if s.endswith(".npz"):
        return _npz(Path(s))
    if ":" in s and not os.path.exists(s):
        return _module_function(s)
    raise DataError(f"unknown data spec {s!r}: expected {SPEC_HELP}")


def resolve_data(ctx, pass_name: str) -> Data:
    """The context's data, loaded once and cached; DataError naming the pass when absent."""
    if ctx is None or ctx.data is None:
        raise DataError(f"pass '{pass_name}' trains and needs data: give --data {SPEC_HELP}")
    if not isinstance(ctx.data, Data):
        ctx.data = load_data(ctx.data)
    return ctx.data


# -- built-in specs ------------------------------------------------------------------------------
def _digits() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    xt, xv, yt, yv = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return Data(
        name="digits",
        split=f"sklearn digits, stratified split seed 0: {len(yt):,} train / {len(yv):,} val",
        x_train=torch.from_numpy(xt), y_train=torch.from_numpy(yt),
        x_val=torch.from_numpy(xv), y_val=torch.from_numpy(yv),
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read idx file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _find(folder: Path, prefix: str, kind: str) -> Path | None:
    for name in sorted(os.listdir(folder)):
        if name.startswith(prefix) and kind in name:
            return folder / name
    return None


def _mnist_idx(arg: str) -> Data:
    arg, _, query = arg.partition("?")
    cut = 8000
    if query:
        key, _, val = query.partition("=")
        if key != "train" or not val.isdigit():
            raise DataError(f"bad mnist-idx option {query!r}: expected train=N")
        cut = int(val)
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        raise DataError(f"mnist-idx: {folder} is not a folder")
    tr_x, tr_y = _find(folder, "train", "images-idx3"), _find(folder, "train", "labels-idx1")
    te_x, te_y = _find(folder, "t10k", "images-idx3"), _find(folder, "t10k", "labels-idx1")
    if te_x is None or te_y is None:
        te_x, te_y = _find(folder, "", "images-idx3"), _find(folder, "", "labels-idx1")
    if te_x is None or te_y is None:
        raise DataError(f"mnist-idx: no *images-idx3-ubyte / *labels-idx1-ubyte files in {folder}")

    def xy(px, py):
        x = _read_idx(px).astype(np.float32)[:, None, :, :] / 255.0
        y = _read_idx(py).astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"mnist-idx: {px.name} has {len(x)} images but {py.name} {len(y)} labels")
        return torch.from_numpy(x), torch.from_numpy(y)

    if tr_x is not None and tr_y is not None:
        xt, yt = xy(tr_x, tr_y)
        xv, yv = xy(te_x, te_y)
        split = f"MNIST idx: {len(yt):,} train ({tr_x.name}) / {len(yv):,} val ({te_x.name})"
    else:
        x, y = xy(te_x, te_y)
        if not 0 < cut < len(y):
            raise DataError(f"mnist-idx: train=N must be in 1..{len(y) - 1}")
        xt, yt, xv, yv = x[:cut], y[:cut], x[cut:], y[cut:]
        split = (f"{te_x.name.split('-')[0]} ({len(y):,} images): first {cut:,} train / "
                 f"last {len(y) - cut:,} val")
    return Data(name=f"mnist-idx:{folder.name}", split=split, x_train=xt, y_train=yt, x_val=xv, y_val=yv)


def _npz(path: Path) -> Data:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for corrupt archives
        raise DataError(f"cannot read {path}: {e}") from None
    if "x" not in z or "y" not in z:
        raise DataError(f"{path} must hold arrays 'x' and 'y' (found {', '.join(z.files) or 'none'})")
    x = np.asarray(z["x"], dtype=np.float32)
    y = np.asarray(z["y"]).astype(np.int64)
    if len(x) != len(y) or len(x) < 2:
        raise DataError(f"{path}: 'x' has {len(x)} rows, 'y' {len(y)}: need equal counts >= 2")
    if "x_val" in z and "y_val" in z:
        xv = np.asarray(z["x_val"], dtype=np.float32)
        yv = np.asarray(z["y_val"]).astype(np.int64)
        xt, yt = x, y
        split = f"{path.name}: {len(yt):,} train (x/y) / {len(yv):,} val (x_val/y_val)"
    else:
        cut = len(x) - max(1, len(x) // 5)
        xt, yt, xv, yv = x[:cut], y[:cut], x[cut:], y[cut:]
        split = f"{path.name}: first {cut:,} train / last {len(x) - cut:,} val"
    return Data(name=path.name, split=split, x_train=torch.from_numpy(xt), y_train=torch.from_numpy(yt),
                x_val=torch.from_numpy(xv), y_val=torch.from_numpy(yv))


def _module_function(spec: str) -> Data:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise DataError(f"bad data spec {spec!r}: expected module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise DataError(f"data spec {spec!r}: cannot import {mod_name}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise DataError(f"data spec {spec!r}: {mod_name} has no function {fn_name}")
    out = fn()
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise DataError(f"data spec {spec!r}: {fn_name}() must return (train_loader, val_loader)")
    return Data(name=spec, split=f"{spec}() train/val loaders", train_loader=out[0], val_loader=out[1])


def check_fits(data: Data, graph) -> None:
    """DataError unless ``graph`` has one input whose shape past the batch is the data's
    example shape: a pass that trains must fail here, not deep inside the first conv."""
    want = tuple(data.input_shape)
    if len(graph.inputs) != 1:
        raise DataError(f"data {data.name} feeds one input, but the model has {len(graph.inputs)}")
    x = graph.inputs[0]
    if tuple(x.shape[1:]) != want:
        raise DataError(f"data {data.name} has examples of shape {list(want)}, but the model's input "
                        f"{x.name} is {x.type} (examples of shape {list(x.shape[1:])}); give data that fits "
                        "the model, or --input-shape for a model that accepts other sizes")
