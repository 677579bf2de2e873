"""graphc inspect / convert: dumps, outputs by suffix, and bad input as one line with exit 2."""
import subprocess
import sys

import pytest

from graphc.cli.main import main
from graphc.ir import parse_graph, print_graph

FACTORY = """
import torch, torch.nn as nn
def make():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(1, 3, 8, 8)
def bare():
    return nn.Linear(4, 2)
def broken():
    raise RuntimeError("no weights here")
"""


@pytest.fixture
def factory(tmp_path):
    p = tmp_path / "models.py"
    p.write_text(FACTORY)
    return p


def test_inspect_text_parses_back(factory, capsys):
    assert main(["inspect", f"{factory}:make"]) == 0
    out = capsys.readouterr().out
    assert "conv2d(%input_1, %0.weight, %0.bias)" in out and "# 0" in out
    assert print_graph(parse_graph(out)) == out


@pytest.mark.parametrize("fmt,needle", [("json", '"format": "graphc-ir"'), ("dot", "digraph")])
def test_inspect_formats(factory, capsys, fmt, needle):
    assert main(["inspect", f"{factory}:make", "--format", fmt]) == 0
    assert needle in capsys.readouterr().out


def test_input_shape_for_a_bare_factory(factory, capsys):
    assert main(["inspect", f"{factory}:bare", "--input-shape", "3,4"]) == 0
    assert "f32[3,2]" in capsys.readouterr().out


def test_convert_pt_and_onnx(factory, tmp_path):
    import torch

    assert main(["convert", f"{factory}:make", "-o", str(tmp_path / "m.pt")]) == 0
    m = torch.load(tmp_path / "m.pt", weights_only=False)
    assert m(torch.randn(1, 3, 8, 8)).shape == (1, 4, 6, 6)
    assert main(["convert", f"{factory}:make", "-o", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def _bad_cases(tmp_path, factory):
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    good = tmp_path / "good.onnx"
    assert main(["convert", f"{factory}:make", "-o", str(good)]) == 0
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good.read_bytes()[:60])
    return {
        "missing": (str(tmp_path / "nope.onnx"), "no such model file"),
        "text": (str(text), "text file"),
        "truncated": (str(trunc), "not"),
        "torchvision": ("torchvision:resnet1800", "unknown torchvision"),
        "factory": (f"{factory}:broken", "no weights here"),
    }


@pytest.mark.parametrize("command", ["inspect", "convert", "optimize"])
@pytest.mark.parametrize("case", ["missing", "text", "truncated", "torchvision", "factory", "no-factory"])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, factory, capsys, case, command):
    cases = _bad_cases(tmp_path, factory)
    cases["no-factory"] = (f"{factory}:absent", "absent")
    spec, words = cases[case]
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    out = tmp_path / ("out.onnx" if command == "optimize" else "out.pt")
    args = {"inspect": ["inspect", spec],
            "convert": ["convert", spec, "-o", str(out)],
            "optimize": ["optimize", spec, "-o", str(out), "--report", str(tmp_path / "report.json")]}[command]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("graphc: error:") and words in err, err
    assert "Traceback" not in captured.out + captured.err
    assert set(tmp_path.iterdir()) == before  # no output, report or temporary file left


def test_cli_process_prints_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "graphc", "inspect", str(tmp_path / "missing.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "no such model file" in r.stderr
