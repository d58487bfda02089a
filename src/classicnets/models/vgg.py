"""VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (2014).

The paper's Table 1 is a set of columns, one per configuration; here each column is a list:
a number is a 3x3 convolution (stride 1, padding 1) with that many output maps followed by ReLU,
``"M"`` is a 2x2 max-pool with stride 2. All configurations end in the same three fully connected
layers, 4096-4096-classes, with dropout 0.5 after the first two (section 3.1).

Why only 3x3 (section 2.3): two stacked 3x3 convolutions see a 5x5 window and three see 7x7, with
fewer weights than one large filter (3 * 3^2 C^2 = 27 C^2 against 7^2 C^2 = 49 C^2) and a ReLU
between each, which makes the decision function more discriminative.

Module names follow torchvision (``features``, ``avgpool``, ``classifier``), so its ``state_dict``
loads as is; ``vgg*_bn`` insert BatchNorm after each convolution (not in the paper, which predates
BatchNorm; torchvision's variants, kept for their weights).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ClassicNet
from .registry import register_model

# Table 1, columns A, B, D, E (A-LRN and C, with its 1x1 convolutions, are not built).
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # 11 weight layers
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # 13
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # 16
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],  # 19
}


def make_layers(config: list[int | str], in_channels: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """One column of Table 1 as layers: numbers are conv3x3-ReLU, ``"M"`` is max-pool."""
    layers: list[nn.Module] = []
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        # Padding 1 keeps the spatial resolution: only the pools shrink it (section 2.1).
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


class VGG(ClassicNet):
    """Convolutional ``features``, then ``avgpool`` to 7x7 and the 4096-4096-classes ``classifier``."""

    head_name = "classifier.6"

    def __init__(self, config: list[int | str], num_classes: int = 1000, in_channels: int = 3,
                 batch_norm: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_layers(config, in_channels, batch_norm)
        # At 224x224 the five pools leave exactly 7x7, so this is the identity there. It lets other
        # input sizes reach the 512*7*7 first FC layer (the paper's dense evaluation, section 3.2,
        # instead turns the FC layers into convolutions).
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        # Section 3.1: the paper trained A from N(0, 1e-2) and initialised the deeper nets from it,
        # then notes that Glorot & Bengio's initialisation makes that pre-training unnecessary.
        # We build every configuration from scratch, so we use Glorot; biases start at zero.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


_CARD = dict(
    family="vgg",
    paper="Simonyan & Zisserman, 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition",
    reference="arXiv:1409.1556",
    input_size=(3, 224, 224),
    num_classes=1000,
    introduced="Depth (11-19 weight layers) from stacks of 3x3 convolutions only: two 3x3 see 5x5, "
               "three see 7x7, with fewer weights and more non-linearities than one large filter.",
    defaults={"dropout": 0.5},
)
_MACS_NOTE = "macs: torchvision's published GFLOPS (multiply-adds) at 224x224."
_BN_NOTE = "BatchNorm after every convolution: torchvision's variant, not in the paper. "


@register_model(**_CARD, params=132_863_336, macs=7_610_000_000, torchvision_name="vgg11",
                notes="Configuration A of Table 1. " + _MACS_NOTE)
def vgg11(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["A"], num_classes, in_channels, **kwargs)


@register_model(**_CARD, params=133_047_848, macs=11_310_000_000, torchvision_name="vgg13",
                notes="Configuration B of Table 1. " + _MACS_NOTE)
def vgg13(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["B"], num_classes, in_channels, **kwargs)


@register_model(**_CARD, params=138_357_544, macs=15_470_000_000, torchvision_name="vgg16",
                notes="Configuration D of Table 1. " + _MACS_NOTE)
def vgg16(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["D"], num_classes, in_channels, **kwargs)


@register_model(**_CARD, params=143_667_240, macs=19_630_000_000, torchvision_name="vgg19",
                notes="Configuration E of Table 1. " + _MACS_NOTE)
def vgg19(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["E"], num_classes, in_channels, **kwargs)


@register_model(**_CARD, params=132_868_840, macs=7_610_000_000, torchvision_name="vgg11_bn",
                notes="Configuration A of Table 1. " + _BN_NOTE + _MACS_NOTE)
def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["A"], num_classes, in_channels, batch_norm=True, **kwargs)


@register_model(**_CARD, params=133_053_736, macs=11_310_000_000, torchvision_name="vgg13_bn",
                notes="Configuration B of Table 1. " + _BN_NOTE + _MACS_NOTE)
def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["B"], num_classes, in_channels, batch_norm=True, **kwargs)


@register_model(**_CARD, params=138_365_992, macs=15_470_000_000, torchvision_name="vgg16_bn",
                notes="Configuration D of Table 1. " + _BN_NOTE + _MACS_NOTE)
def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["D"], num_classes, in_channels, batch_norm=True, **kwargs)


@register_model(**_CARD, params=143_678_248, macs=19_630_000_000, torchvision_name="vgg19_bn",
                notes="Configuration E of Table 1. " + _BN_NOTE + _MACS_NOTE)
def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return VGG(CONFIGS["E"], num_classes, in_channels, batch_norm=True, **kwargs)
