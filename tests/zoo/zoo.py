"""The torchvision classification zoo, shared by every conformance test.

One ``ZooCase`` per model: the model (random weights, seeded, eval mode), an example input
(as small as the model allows, to keep CI inside its budget), its reference output, and lazily
an ONNX export and graphc graphs from both front-ends. Cases are cached per process so the
round-trip, cost, fuse and prune checks of one model share one build.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import torch

# Input side length per model: the smallest that the architecture accepts and that still
# exercises every layer; 224 where the model fixes its input size (ViT, Swin, MaxViT).
FIXED_224 = {"vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14", "maxvit_t",
             "swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b"}
SIDE = {"inception_v3": 75, "alexnet": 64, "googlenet": 64, "squeezenet1_0": 64, "squeezenet1_1": 64}
DEFAULT_SIDE = 64

# Models whose build + checks take much longer than the rest on a 2-core CPU; `-m "not slow"`
# skips them for a quick local run; CI runs those of them in CI_MODELS.
SLOW = {"vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf",
        "regnet_y_16gf", "regnet_x_16gf", "efficientnet_b7", "efficientnet_v2_l", "convnext_large",
        "swin_v2_b", "swin_b", "vit_b_16", "resnext101_64x4d", "wide_resnet101_2", "maxvit_t"}


# The models a default test run (and CI) checks: one or more of every architecture family
# and every coupling kind the zoo has (plain, residual, depthwise, grouped, SE scaling, dense
# concat, channel shuffle, inception branches, layer scale + LayerNorm, windowed attention,
# the class-token transformer), and beyond that every model cheap enough for CI's budget.
# `GRAPHC_ZOO=all` runs all 80; bench/zoo.py runs all 80 and
# writes docs/zoo.md.
CI_MODELS = ("alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_b2", "googlenet",
             "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
             "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf",
             "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_1_6gf",
             "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "resnet101", "resnet18", "resnet34",
             "resnet50", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
             "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11_bn",
             "vit_b_32")


def all_model_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_names() -> list[str]:
    """The models to check: `GRAPHC_ZOO` unset -> CI_MODELS; `all` -> every classification
    model; otherwise a comma-separated list of names."""
    sel = os.environ.get("GRAPHC_ZOO", "").strip()
    every = all_model_names()
    if sel == "all":
        return every
    names = [n.strip() for n in sel.split(",") if n.strip()] if sel else list(CI_MODELS)
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise ValueError(f"GRAPHC_ZOO names unknown torchvision models: {', '.join(unknown)}")
    return sorted(names)


def input_side(name: str) -> int:
    if name in FIXED_224:
        return 224
    return SIDE.get(name, DEFAULT_SIDE)


class ZooCase:
    def __init__(self, name: str):
        import torchvision

        self.name = name
        torch.manual_seed(0)
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        self.model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
        _randomize_bn(self.model)
        _randomize_zero_weights(self.model)
        side = input_side(name)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(1, 3, side, side, generator=g)
        with torch.no_grad():
            self.y = self.model(self.x)
        self._fx_graph = None
        self._onnx_path = None
        self._onnx_graph = None

    def fx_graph(self):
        """A fresh graphc graph from torch.fx (a clone: callers may mutate it)."""
        import graphc

        if self._fx_graph is None:
            self._fx_graph = graphc.load(self.model, example_inputs=self.x)
        return self._fx_graph.clone()

    def onnx_path(self) -> Path:
        """The model exported by torch.onnx (dynamo=False, opset 17), cached on disk."""
        if self._onnx_path is None:
            d = Path(os.environ.get("GRAPHC_ZOO_CACHE") or tempfile.mkdtemp(prefix="graphc-zoo-"))
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{self.name}.onnx"
            if not p.exists():
                tmp = p.with_suffix(".tmp.onnx")
                _export_onnx(self.model, self.x, tmp)
                tmp.replace(p)
            self._onnx_path = p
        return self._onnx_path

    def onnx_graph(self):
        """A fresh graphc graph imported from the ONNX export."""
        import graphc

        if self._onnx_graph is None:
            self._onnx_graph = graphc.load(str(self.onnx_path()))
        return self._onnx_graph.clone()


def _export_onnx(model, x, path: Path) -> None:
    """torch.onnx.export (TorchScript, opset 17). Grad mode stays on: under no_grad an eval
    nn.MultiheadAttention takes its fused fast path, which has no ONNX export. Models that
    exporter refuses (adaptive pooling to a size that does not divide the input: alexnet and
    vgg at this input size) go through the dynamo exporter instead."""
    try:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    except torch.onnx.errors.OnnxExporterError:
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False)
        program.save(str(path))


def kill_units(group, dead) -> None:
    """Make units ``dead`` of a channel group contribute nothing: zero every param slice of them
    (the conv rows and columns, bias, BN scale and shift), with a BN variance of 1."""
    import numpy as np

    for m in group.params():
        data = m.value.param.data.copy()
        sel = [slice(None)] * data.ndim
        sel[m.axis] = np.isin(m.units, dead)
        use = m.value.uses()[0]
        data[tuple(sel)] = 1.0 if (use.node.op == "batch_norm" and use.index == 4) else 0.0
        m.value.param.set_data(data)


def _randomize_zero_weights(model: torch.nn.Module) -> None:
    """torchvision starts some layers at zero (the ViT classifier head), so the model outputs
    zeros for every input and any comparison against it holds vacuously: give such weights
    small random values."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def _randomize_bn(model: torch.nn.Module) -> None:
    """Fresh BN layers are the identity (mean 0, var 1, weight 1, bias 0), which would let a
    wrong BN fold pass unnoticed: give them non-trivial statistics."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@functools.lru_cache(maxsize=1)
def case(name: str) -> ZooCase:
    """The case for ``name``; only the latest is kept, so memory stays at one model."""
    return ZooCase(name)
