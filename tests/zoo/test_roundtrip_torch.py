"""Every torchvision classification model: torch.fx import -> verify -> text dump round trip ->
emit torch -> outputs allclose to the model's own (rtol 1e-4, atol 1e-5)."""
import torch

from graphc.backends.torch import emit_torch
from graphc.ir import parse_graph, print_graph


def test_roundtrip_torch(zoo):
    g = zoo.fx_graph()
    g.verify()
    text = print_graph(g)
    assert print_graph(parse_graph(text)) == text
    with torch.no_grad():
        y = emit_torch(g)(zoo.x)
    torch.testing.assert_close(y, zoo.y, rtol=1e-4, atol=1e-5)
