"""Network In Network: Lin, Chen & Yan, arXiv:1312.4400 (ICLR 2014), the CIFAR-10 model.

An *mlpconv* layer (section 3.1) is an ordinary convolution followed by a small MLP shared
across positions; the MLP's layers are 1x1 convolutions ("cascaded cross channel parametric
pooling", cccp). Instead of fully connected layers, the last mlpconv emits one map per class and
*global average pooling* turns each map into a class score (section 3.2).

The paper gives the structure (section 4.1: three mlpconv layers, each followed by pooling that
halves the maps, dropout on the outputs of all but the last mlpconv) but not the widths or
kernel sizes. Those come from the authors' released CIFAR-10 configuration, whose layer names
(conv*, cccp*) we keep. It averages after the second block where the paper's text says max
pooling throughout; we follow the configuration, the network the authors released:

    block  conv (kernel/pad)  cccp   cccp   then
    1      192  5x5 / 2       160     96    max pool 3/2, dropout 0.5   32 -> 16
    2      192  5x5 / 2       192    192    avg pool 3/2, dropout 0.5   16 -> 8
    3      192  3x3 / 1       192     10    global average pool         8 -> 1

ReLU follows every convolution, the last (class) one included. 966,986 parameters.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import ClassicNet
from .registry import register_model


def scaled_maps(n: int, width: float) -> int:
    """``n`` maps at ``width`` times the paper's: a cheaper net of the same depth (at least one map)."""
    return max(1, round(n * width))


def _conv(name: str, in_maps: int, out_maps: int, kernel: int = 1, padding: int = 0) -> list:
    conv = nn.Conv2d(in_maps, out_maps, kernel, padding=padding)
    return [(name, conv), (f"relu_{name}", nn.ReLU(inplace=True))]


class NiN(ClassicNet):
    """Three mlpconv blocks; ``features`` is everything before the last 1x1 convolution,
    ``cccp6``, which produces one map per class."""

    head_name = "cccp6"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5,
                 width: float = 1.0) -> None:
        super().__init__()
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
            raise ValueError(f"width must be a positive multiplier of the maps (1.0: the paper's), got {width!r}")

        def maps(n: int) -> int:
            return scaled_maps(n, width)

        # Pools round up (ceil_mode) as the released configuration's framework did: 32 -> 16 -> 8.
        self.features = nn.Sequential(OrderedDict([
            *_conv("conv1", in_channels, maps(192), 5, padding=2),
            *_conv("cccp1", maps(192), maps(160)),
            *_conv("cccp2", maps(160), maps(96)),
            ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
            ("drop1", nn.Dropout(dropout)),
            *_conv("conv2", maps(96), maps(192), 5, padding=2),
            *_conv("cccp3", maps(192), maps(192)),
            *_conv("cccp4", maps(192), maps(192)),
            ("pool2", nn.AvgPool2d(3, stride=2, ceil_mode=True)),
            ("drop2", nn.Dropout(dropout)),
            *_conv("conv3", maps(192), maps(192), 3, padding=1),
            *_conv("cccp5", maps(192), maps(192)),
        ]))
        self.cccp6 = nn.Conv2d(maps(192), num_classes, 1)
        self.relu_cccp6 = nn.ReLU(inplace=True)  # as in the configuration: scores are >= 0
        # Global average pooling: no parameters to overfit, and each class map is a "confidence
        # map" of that class (section 3.2). Adaptive, so any input size works.
        self.pool3 = nn.AdaptiveAvgPool2d(1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool3(self.relu_cccp6(self.cccp6(x))), 1)


@register_model(
    family="nin",
    paper="Lin, Chen & Yan 2013, Network In Network (ICLR 2014)",
    reference="arXiv:1312.4400",
    input_size=(3, 32, 32),
    num_classes=10,
    params=966_986,
    macs=222_486_528,
    introduced="mlpconv layers (a convolution followed by 1x1 convolutions, i.e. an MLP slid "
               "over the image) and global average pooling in place of fully connected layers.",
    torchvision_name=None,
    notes="CIFAR-10 model of the authors' released configuration (widths and kernel sizes are not "
          "in the paper). The paper publishes no multiply-add count: macs is our exact conv count "
          "at 32x32. The paper trains on GCN + ZCA-whitened CIFAR-10; initialisation is PyTorch's "
          "default (the paper sets it by hand and does not give it).",
    defaults={"dropout": 0.5},
)
def nin(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    """Network In Network for CIFAR-10 (Lin, Chen & Yan 2013)."""
    return NiN(num_classes, in_channels, **kwargs)
