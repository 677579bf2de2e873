"""Model specs: ``timm:NAME`` and ``--weights FILE`` (safetensors or a weights-only state dict)."""
import subprocess
import sys

import pytest
import torch

import graphc
from graphc.errors import InputError
from graphc.frontends.spec import resolve

FACTORY = """
import torch
def make():
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    return m, torch.randn(1, 3, 8, 8)
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return f"{path}:make"


def _trained():
    torch.manual_seed(7)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
    return m


def test_state_dict_weights_replace_the_factory_weights(factory, tmp_path):
    trained = _trained().eval()
    path = tmp_path / "w.pt"
    torch.save({"state_dict": trained.state_dict()}, path)  # a training script's wrapper
    ms = resolve(factory, weights=path)
    x = ms.example_inputs[0]
    with torch.no_grad():
        torch.testing.assert_close(ms.module(x), trained(x))
        torch.testing.assert_close(graphc.emit_torch(ms.load())(x), trained(x), rtol=1e-4, atol=1e-5)


def test_safetensors_weights(factory, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    trained = _trained().eval()
    path = tmp_path / "w.safetensors"
    safetensors.save_file(trained.state_dict(), str(path))
    g = graphc.load(factory, weights=path)
    x = resolve(factory).example_inputs[0]
    with torch.no_grad():
        torch.testing.assert_close(graphc.emit_torch(g)(x), trained(x), rtol=1e-4, atol=1e-5)


class Payload:
    """Unpickling this would run code: a weights file must never be read that way."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_pickled_object_is_refused_unrun(factory, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(InputError, match="not a weights-only state dict"):
        resolve(factory, weights=path)


def test_weights_that_do_not_fit_name_the_keys(factory, tmp_path):
    path = tmp_path / "w.pt"
    sd = _trained().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["0.bias"]
    torch.save(sd, path)
    with pytest.raises(InputError, match=r"missing \(e.g. 0.bias\).*unexpected \(e.g. extra.weight\)"):
        resolve(factory, weights=path)
    sd = _trained().state_dict()
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(sd, path)
    with pytest.raises(InputError, match=r"0.weight is \(5, 3, 3, 3\) in the file"):
        resolve(factory, weights=path)


def test_weights_for_an_onnx_model_are_refused(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    m = torch.nn.Conv2d(3, 4, 1).eval()
    torch.onnx.export(m, (torch.randn(1, 3, 4, 4),), str(onnx_path), dynamo=False)
    with pytest.raises(InputError, match="applies to torch model specs"):
        resolve(str(onnx_path), weights=tmp_path / "w.pt")


def test_cli_bad_weights_file_is_one_line_and_exit_2(factory, tmp_path):
    path = tmp_path / "w.pt"
    path.write_text("not a checkpoint")
    p = subprocess.run([sys.executable, "-m", "graphc", "inspect", factory, "--weights", str(path)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "w.pt" in p.stderr


def test_timm_spec():
    pytest.importorskip("timm")
    ms = resolve("timm:lcnet_050")
    assert ms.kind == "torch" and not ms.module.training
    assert ms.input_shapes == [(1, 3, 224, 224)]
    with pytest.raises(InputError, match="did you mean .*lcnet_050"):
        resolve("timm:lcnet_05")
