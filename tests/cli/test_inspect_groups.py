"""graphc inspect --groups: the channel groups of a model, readable (id, members, channels,
prunable or why not), from a torch factory and from its ONNX export."""
import pytest

from graphc.cli.main import main

FACTORY = """
import torch, torch.nn as nn
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
    def forward(self, x):
        a = torch.relu(self.stem(x))
        return self.head(a + self.c2(torch.relu(self.c1(a))))
def make():
    torch.manual_seed(0)
    return Block().eval(), torch.randn(1, 3, 8, 8)
"""


@pytest.fixture
def factory(tmp_path):
    p = tmp_path / "models.py"
    p.write_text(FACTORY)
    return p


def check(out):
    lines = out.splitlines()
    assert lines[0] == "4 channel groups, 2 prunable"
    heads = [ln for ln in lines if ln.startswith("group #")]
    assert len(heads) == 4
    # The residual couples stem, c2 and the head's input: one prunable group of 8 channels,
    # c1's 6 channels another; the input's 3 and the output's 4 channels are frozen with a reason.
    prunable = sorted(h for h in heads if h.endswith(", prunable"))
    assert len(prunable) == 2
    assert any("6 units, 6 channels" in h for h in prunable) and any("8 units, 8 channels" in h for h in prunable)
    assert any("3 channels" in h and "frozen: graph input" in h for h in heads)
    assert any("4 channels" in h and "frozen: graph output" in h for h in heads)
    # Every member is listed under its group, with its axis and size.
    residual = out.split(next(h for h in prunable if "8 units" in h))[1].split("group #")[0]
    for name in ("stem", "c2", "head"):
        assert name in residual
    assert "axis 0 [8]" in residual and "axis 1 [8]" in residual


def test_inspect_groups_of_a_torch_model(factory, capsys):
    assert main(["inspect", f"{factory}:make", "--groups"]) == 0
    check(capsys.readouterr().out)


def test_inspect_groups_of_the_onnx_export(factory, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    assert main(["convert", f"{factory}:make", "-o", str(onnx_path)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(onnx_path), "--groups"]) == 0
    check(capsys.readouterr().out)


def test_inspect_groups_after_prune_shows_the_smaller_groups(factory, capsys):
    assert main(["inspect", f"{factory}:make", "--after", "prune(ratio=0.5)", "--groups"]) == 0
    heads = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("group #")]
    assert any("4 units, 4 channels" in h and h.endswith("prunable") for h in heads)
    assert any("3 units, 3 channels" in h and h.endswith("prunable") for h in heads)
