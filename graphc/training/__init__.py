"""The shared training loop of graphc's training passes (see :mod:`graphc.training.loop`)."""
from graphc.training.bn import recalibrate_bn
from graphc.training.hooks import CosineLR, Distill, GradMask, Hook, Projection, Regularizer
from graphc.training.loop import TrainResult, evaluate, train

__all__ = ["train", "evaluate", "TrainResult", "Hook", "Regularizer", "Projection", "GradMask", "CosineLR", "Distill",
           "recalibrate_bn"]
