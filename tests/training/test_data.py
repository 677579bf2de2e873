import gzip

import numpy as np
import pytest
import torch

from graphc.data import Data, load_data, resolve_data
from graphc.errors import DataError
from graphc.registry import PassContext


def test_digits_split_is_deterministic():
    a, b = load_data("digits"), load_data("digits")
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_val.shape == (360, 1, 8, 8)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert float(a.x_train.max()) == 1.0 and a.num_classes == 10
    assert "1,437 train / 360 val" in a.split


def _idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_idx_cuts_test_split(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (50, 28, 28)))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(50) % 10)
    d = load_data(f"mnist-idx:{tmp_path}?train=40")
    assert d.x_train.shape == (40, 1, 28, 28) and d.x_val.shape == (10, 1, 28, 28)
    assert d.y_val.tolist() == list(range(10)) and "first 40 train / last 10 val" in d.split
    with pytest.raises(DataError, match="train=N"):
        load_data(f"mnist-idx:{tmp_path}")  # the default cut (8,000) does not fit 50 images


def test_npz_with_and_without_val(tmp_path):
    x = np.zeros((10, 1, 4, 4), np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(10))
    np.savez(tmp_path / "b.npz", x=x, y=np.arange(10), x_val=x[:3], y_val=np.arange(3))
    a, b = load_data(str(tmp_path / "a.npz")), load_data(str(tmp_path / "b.npz"))
    assert len(a.y_train) == 8 and len(a.y_val) == 2
    assert len(b.y_train) == 10 and len(b.y_val) == 3


def test_module_function(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def loaders():\n"
        "    b = [(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))]\n"
        "    return b, b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d = load_data("mydata:loaders")
    assert not d.tensors and d.input_shape == (1, 4, 4)


@pytest.mark.parametrize("spec, msg", [
    ("nope", "unknown data spec"),
    ("missing.npz", "does not exist"),
    ("mnist-idx:/no/such/dir", "not a folder"),
    ("no_such_module_xyz:f", "cannot import"),
    ("", "empty data spec"),
])
def test_bad_specs_raise_data_error(spec, msg):
    with pytest.raises(DataError, match=msg):
        load_data(spec)


def test_npz_without_arrays(tmp_path):
    np.savez(tmp_path / "c.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_data(str(tmp_path / "c.npz"))


def test_resolve_data_names_the_pass():
    with pytest.raises(DataError, match="pass 'edp-train' trains and needs data"):
        resolve_data(PassContext(), "edp-train")
    ctx = PassContext(data="digits")
    assert isinstance(resolve_data(ctx, "x"), Data) and resolve_data(ctx, "x") is ctx.data
