"""Fixtures of the pass-manager tests: small hand-built IR graphs and throw-away passes that
are registered for one test only (so the every-pass test never sees them)."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Graph, TensorType
from graphc.registry import register_pass, register_preset, unregister_pass
import graphc.registry as registry


def conv_bn_relu(seed: int = 0, c: int = 4, size: int = 8) -> Graph:
    """x -> conv3x3 -> batch_norm -> relu -> (+ relu) ; a foldable BN and an unused branch-free tail."""
    r = np.random.default_rng(seed)
    g = Graph("cbr")
    x = g.add_input("x", TensorType((1, 3, size, size), "f32"))
    w = g.add_param((r.standard_normal((c, 3, 3, 3)) * 0.3).astype("f4"), source="conv.weight")
    y = g.add_node("conv2d", [x, w], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}, "conv").output
    bn = [g.add_param((r.random(c) + 0.5).astype("f4"), source="bn.weight"),
          g.add_param((r.standard_normal(c) * 0.1).astype("f4"), source="bn.bias"),
          g.add_param((r.standard_normal(c) * 0.1).astype("f4"), source="bn.running_mean", kind="buffer"),
          g.add_param((r.random(c) + 0.5).astype("f4"), source="bn.running_var", kind="buffer")]
    y = g.add_node("batch_norm", [y] + bn, {"eps": 1e-5}, "bn").output
    y = g.add_node("relu", [y], {}, "relu").output
    g.set_outputs([y])
    g.verify()
    return g


def relu_chain(n: int) -> Graph:
    g = Graph("chain")
    y = g.add_input("x", TensorType((1, 4), "f32"))
    for i in range(n):
        y = g.add_node("relu", [y], {}, f"r{i}").output
    g.set_outputs([y])
    return g


@pytest.fixture
def temp_pass():
    """``temp_pass(cls)`` registers a pass for this test only; ``temp_pass.preset(n, p)`` a preset."""
    names, presets = [], []

    def add(cls):
        register_pass(cls)
        names.append(cls.name)
        return cls

    def preset(name, text):
        register_preset(name, text)
        presets.append(name)

    add.preset = preset
    yield add
    for n in names:
        unregister_pass(n)
    for n in presets:
        registry._PRESETS.pop(n, None)


@pytest.fixture
def cbr():
    return conv_bn_relu()


@pytest.fixture
def build():
    """The graph builders above (conftest modules are not importable by name)."""
    import types

    return types.SimpleNamespace(conv_bn_relu=conv_bn_relu, relu_chain=relu_chain)
