"""Built-in trained examples: a reference model trained briefly on a data spec, so there is a
real model to compress without bringing one.

    module, result = train_example("lenet5", "digits")      # ~97% val accuracy in seconds

The model is built for the data's input size (8x8 digits or 28x28 MNIST; see
:mod:`graphc.models.reference`: LeNet-5 pads its 5x5 convs by 2 on 8x8 inputs) and trained
with the shared loop (:func:`graphc.training.train`): SGD with momentum 0.9, cross-entropy,
batch 64, seeded. Defaults per model are in :data:`DEFAULTS` (epochs, learning rate); the
defaults are chosen for the built-in specs and take seconds on a laptop CPU.

Invariants: the same name, data, epochs and seed give the same weights; the module is
returned in eval mode.
"""
from __future__ import annotations

from graphc.data import load_data
from graphc.errors import DataError
from graphc.models import build

__all__ = ["train_example", "DEFAULTS", "EXAMPLES"]

EXAMPLES = ("lenet5", "lenet300", "small-vgg", "small-resnet", "inception-small", "plain20", "plain20-resconv",
            "resnet20", "resnet56")

# (epochs, lr) per model; BN models take a larger step.
DEFAULTS = {
    "lenet5": (10, 0.02),
    "lenet300": (10, 0.02),
    "vgg": (8, 0.05),
    "resnet": (8, 0.05),
    "inception": (10, 0.1),
    "plain20": (8, 0.05),
    "plain20resconv": (8, 0.05),
    "resnet20": (8, 0.05),
    "resnet56": (8, 0.05),
}


def _key(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    return {"lenet": "lenet5", "lenet300100": "lenet300", "smallvgg": "vgg", "smallresnet": "resnet", "inceptionsmall": "inception"}.get(key, key)


def train_example(name: str, data="digits", *, epochs: float | None = None, lr: float | None = None,
                  seed: int = 0, quiet: bool = True, batch_size: int = 64):
    """Build reference model ``name`` for ``data``'s input and train it; returns
    ``(module, TrainResult)``."""
    import torch

    from graphc.training import train

    data = load_data(data)
    shape = data.input_shape
    if len(shape) != 3 or shape[1] != shape[2]:
        raise DataError(f"example models want square images (C x H x H); {data.name} gives {list(shape)}")
    torch.manual_seed(seed)
    model = build(name, size=shape[1], in_ch=shape[0], classes=data.num_classes)
    e0, lr0 = DEFAULTS[_key(name)]
    res = train(model, data, epochs=e0 if epochs is None else epochs, lr=lr0 if lr is None else lr,
                momentum=0.9, batch_size=batch_size, seed=seed, quiet=quiet, desc=f"train {name}")
    model.eval()
    return model, res
