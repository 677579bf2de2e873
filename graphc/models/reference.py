"""Reference models for examples, tests and benchmarks: LeNet-5 (Caffe form), LeNet-300-100, a
small VGG-style CNN, a small ResNet and a small inception-style CNN, each for 1-channel 28x28
(MNIST) or 8x8 (digits) inputs; and the deeper CIFAR-style nets of ResConv layer pruning: a plain
20-layer CNN (``plain20``, optionally with ResConv layers for training) and ResNet-20/56
(16/32/64 channels).

Invariants: a model's layer names are stable (they become IR node names and state-dict keys);
every model is a plain ``nn.Module`` tracing cleanly with torch.fx; the input size only changes
padding/flatten sizes, never the layer list.
"""
from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv20-5, pool, conv50-5, pool, fc500, relu, fc10.

    On 8x8 inputs the convs pad by 2 (a 5x5 kernel would otherwise leave nothing after the
    second pool); on 28x28 they do not pad, as in Caffe.
    """

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10):
        super().__init__()
        pad = 0 if size >= 28 else 2
        self.conv1 = nn.Conv2d(in_ch, 20, 5, padding=pad)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5, padding=pad)
        self.pool2 = nn.MaxPool2d(2)
        s = size
        for _ in range(2):
            s = (s + 2 * pad - 4) // 2
        self.fc1 = nn.Linear(50 * s * s, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, classes)

    def forward(self, x):
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


class LeNet300(nn.Module):
    """LeNet-300-100: fc300, relu, fc100, relu, fc10 on the flattened image."""

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_ch * size * size, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, classes)

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(torch.flatten(x, 1))))))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SmallVGG(nn.Module):
    """VGG-style: [32, 32, pool, 64, 64, pool, 128, pool] 3x3 conv-BN-ReLU blocks, global average
    pool, fc10. On 8x8 inputs the last pool is skipped."""

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        layers: list[nn.Module] = [_conv_bn(in_ch, w), _conv_bn(w, w), nn.MaxPool2d(2),
                                   _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
                                   _conv_bn(2 * w, 4 * w)]
        if size >= 16:
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.down is None else self.down(x)))


class SmallResNet(nn.Module):
    """ResNet with a 3x3 stem and three stages of one basic block each ([16, 32, 64] channels,
    stride 1, 2, 2), global average pool, fc10."""

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layer1 = BasicBlock(w, w, 1)
        self.layer2 = BasicBlock(w, 2 * w, 2)
        self.layer3 = BasicBlock(2 * w, 4 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResConvLayer(nn.Module):
    """One ResConv layer as trained from scratch: relu(alpha * bn(conv(x)) + beta * x), with the
    trainable scalars alpha (the layer scale) and beta (the shortcut's information control)
    starting at 1. After training ``fuse-resconv`` folds it into one ordinary conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.alpha = nn.Parameter(torch.ones(1, 1, 1, 1))
        self.beta = nn.Parameter(torch.ones(1, 1, 1, 1))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) * self.alpha + x * self.beta)


class PlainNet(nn.Module):
    """A deep plain CNN in the CIFAR ResNet layout without shortcuts: a 3x3 stem, three stages of
    ``n`` same-width 3x3 conv-BN-ReLU layers ([16, 32, 64] channels; the first layer of stages 2
    and 3 has stride 2), global average pool, fc10. ``n=6`` gives 20 weight layers (``plain20``).
    With ``resconv=True`` every layer keeping its shape is a :class:`ResConvLayer` (the same
    network after fusion)."""

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10, width: int = 16, n: int = 6,
                 resconv: bool = False):
        super().__init__()
        w = width
        self.stem = _conv_bn(in_ch, w)
        layers: list[nn.Module] = []
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                if resconv and stride == 1 and cin == cout:
                    layers.append(ResConvLayer(cout))
                else:
                    layers.append(nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                                nn.BatchNorm2d(cout), nn.ReLU()))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(self.stem(x))), 1))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2): a 3x3 stem, three stages of ``n`` basic blocks ([16, 32, 64]
    channels, stride 1, 2, 2), global average pool, fc10. The first block of stages 2 and 3
    projects its shortcut with a 1x1 conv + BN (option B of He et al.)."""

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10, width: int = 16, n: int = 3):
        super().__init__()
        w = width
        self.stem = _conv_bn(in_ch, w)
        blocks: list[nn.Module] = []
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def plain20(**kw) -> PlainNet:
    return PlainNet(n=6, **kw)


def plain20_resconv(**kw) -> PlainNet:
    return PlainNet(n=6, resconv=True, **kw)


def resnet20(**kw) -> CifarResNet:
    return CifarResNet(n=3, **kw)


def resnet56(**kw) -> CifarResNet:
    return CifarResNet(n=9, **kw)


class Inception(nn.Module):
    """GoogLeNet's inception module: 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max pool -> 1x1 branches,
    each ending in a ReLU, concatenated on channels."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(), nn.Conv2d(c3r, c3, 3, padding=1), nn.ReLU())
        self.b5 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(), nn.Conv2d(c5r, c5, 5, padding=2), nn.ReLU())
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, cp, 1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionSmall(nn.Module):
    """Inception-style: a 3x3 conv-ReLU stem, 2x2 max pool, an inception module (40 channels),
    2x2 max pool, an inception module (56 channels), global average pool, fc10."""

    def __init__(self, size: int = 28, in_ch: int = 1, classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.inc1 = Inception(w, w // 2, w // 2, w, w // 4, w // 2, w // 2)
        self.pool = nn.MaxPool2d(2)
        self.inc2 = Inception(40 * w // 16, w, w, 3 * w // 2, w // 2, w // 2, w // 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(56 * w // 16, classes)

    def forward(self, x):
        x = self.inc2(self.pool(self.inc1(self.stem(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


MODELS = {
    "lenet5": LeNet5,
    "lenet300": LeNet300,
    "vgg": SmallVGG,
    "resnet": SmallResNet,
    "plain20": plain20,
    "plain20resconv": plain20_resconv,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "inception": InceptionSmall,
}
