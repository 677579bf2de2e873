"""fx front-end: parameters that reach the computation only through a view or a fixed-index
gather made before the input arrives (ViT's class token expanded to the batch, Swin's
relative position bias table) stay params of kind "weight" with their state_dict names, so
the param count equals sum(p.numel()) and passes see them."""
import torch
from torch import nn

import graphc
from graphc.backends.torch import emit_torch


class ClassToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.class_token = nn.Parameter(torch.randn(1, 1, 6))
        self.pos = nn.Parameter(torch.randn(1, 4, 6))

    def forward(self, x):
        x = self.proj(x)
        token = self.class_token.expand(x.shape[0], -1, -1)
        return torch.cat([token, x], dim=1)[:, 1:] + self.pos


def _check(model, x):
    model.eval()
    g = graphc.load(model, example_inputs=x)
    g.verify()
    weights = {p.source: p for p in g.params.values() if p.kind == "weight"}
    assert sum(p.data.size for p in weights.values()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(emit_torch(g)(x), model(x))
    return g, weights


def test_class_token_expanded_to_the_batch_stays_a_weight():
    torch.manual_seed(0)
    g, weights = _check(ClassToken(), torch.randn(3, 4, 4))
    assert weights["class_token"].data.shape == (1, 1, 6)
    assert "expand" in [n.op for n in g.nodes]


def test_swin_relative_position_bias_table_stays_a_weight():
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    torch.manual_seed(0)
    attn = ShiftedWindowAttention(8, [2, 2], [1, 1], num_heads=2)
    g, weights = _check(attn, torch.randn(1, 4, 4, 8))
    assert weights["relative_position_bias_table"].data.shape == (9, 2)
    table = weights["relative_position_bias_table"].value
    assert [u.op for u in table.users()] == ["index_select"]
