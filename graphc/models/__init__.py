"""Reference models and built-in examples.

``build(name, size)`` makes an untrained reference model; ``train_example(name, data)`` gives a
trained one (see :mod:`graphc.models.examples`).
"""
from __future__ import annotations

from graphc.errors import InputError
from graphc.models.reference import (MODELS, CifarResNet, InceptionSmall, LeNet5, LeNet300, PlainNet, SmallResNet,
                                     SmallVGG)

__all__ = ["MODELS", "build", "LeNet5", "LeNet300", "SmallVGG", "SmallResNet", "InceptionSmall", "PlainNet",
           "CifarResNet"]


def build(name: str, size: int = 28, in_ch: int = 1, classes: int = 10):
    """An untrained reference model (``size`` is the input's height = width)."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"lenet": "lenet5", "lenet300100": "lenet300", "smallvgg": "vgg", "smallresnet": "resnet", "inceptionsmall": "inception"}
    key = aliases.get(key, key)
    if key not in MODELS:
        raise InputError(f"unknown example model {name!r}: expected one of lenet5, lenet300, small-vgg, small-resnet, "
                         "inception-small, plain20, plain20-resconv, resnet20, resnet56")
    return MODELS[key](size=size, in_ch=in_ch, classes=classes)
