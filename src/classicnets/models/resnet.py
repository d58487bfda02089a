"""ResNet: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition" (2015).

A block learns a residual F(x) and outputs relu(F(x) + x) (section 3.1-3.2): if the identity were
optimal, pushing F to zero is easier than fitting an identity with a stack of non-linear layers.

ImageNet nets, Table 1 (blocks per stage conv2_x..conv5_x):

    18: basic [2, 2, 2, 2]   34: basic [3, 4, 6, 3]   50: bottleneck [3, 4, 6, 3]
    101: bottleneck [3, 4, 23, 3]   152: bottleneck [3, 8, 36, 3]

The bottleneck puts its stride on the 3x3 convolution, not on the first 1x1 as in the paper:
torchvision's "v1.5", whose module names (``conv1``, ``bn1``, ``layer1``.. ``layer4``, ``fc``,
``downsample``) are the contract for pretrained weights; its ``state_dict`` loads as is.

CIFAR-10 nets, section 4.2: a 3x3 conv with 16 maps, then three stages of n basic blocks on
32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters, global average pooling and a 10-way FC:
6n+2 weight layers, ``resnet20`` .. ``resnet110`` for n = 3, 5, 7, 9, 18.

``plain*`` are the paper's control (Table 2, Fig. 4, Fig. 6): the same stacks with no shortcut,
which get *worse* as they get deeper (the degradation problem) where the ResNets get better.

Shortcuts where the shape changes (sections 3.3 and 4.1, Table 3): option ``"A"`` is the identity on a
strided input with zero maps padded on (no parameters); ``"B"`` is a 1x1 projection + BN only
where the shape changes; ``"C"`` projects in every block.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import ClassicNet
from .registry import register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BatchNorm that follows every convolution (section 3.4) has its own shift.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A: identity on every ``stride``-th pixel, with zero maps appended for the new channels."""

    def __init__(self, out_planes: int, stride: int) -> None:
        super().__init__()
        self.out_planes, self.stride = out_planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_planes - x.shape[1]))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (Fig. 5 left); the first may stride by 2 to halve the map."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample  # the shortcut where it is not the identity
        self.residual = residual  # False: a plain net's two layers, no shortcut at all

    def zero_init_last_bn(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 restore to 4x the width (Fig. 5 right): cheap depth for 50+ layers."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # v1.5: stride here, not on conv1
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def zero_init_last_bn(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


class _ResNetBase(ClassicNet):
    """What the ImageNet and CIFAR nets share: stages of blocks, shortcuts, init, the ``fc`` head."""

    head_name = "fc"

    def __init__(self, shortcut: str | None, zero_init_residual: bool) -> None:
        super().__init__()
        if shortcut not in ("A", "B", "C", None):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C' (None: plain net), got {shortcut!r}")
        if shortcut is None and zero_init_residual:
            raise ValueError("zero_init_residual needs shortcuts: a plain net's blocks would output zeros")
        self.shortcut = shortcut
        self.zero_init_residual = zero_init_residual

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1  # only a stage's first block downsamples (section 3.3)
            out = planes * block.expansion
            changes_shape = s != 1 or self.inplanes != out
            downsample = None  # the identity shortcut (or none at all in a plain net)
            if self.shortcut == "C" or (self.shortcut in ("A", "B") and changes_shape):
                downsample = (PadShortcut(out, s) if self.shortcut == "A" else
                              nn.Sequential(conv1x1(self.inplanes, out, s), nn.BatchNorm2d(out)))
            layers.append(block(self.inplanes, planes, s, downsample, residual=self.shortcut is not None))
            self.inplanes = out
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # He et al. 2015 [13] ("Delving deep into rectifiers"), as the paper says in section 3.4:
        # N(0, 2/n) with n = k*k*out_channels keeps the gradient scale through ReLU layers.
        # The fc layer keeps PyTorch's default, which is also what reset_classifier gives.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            # Goyal et al. 2017: gamma = 0 on each residual branch's last BN makes every block
            # start as relu(shortcut(x)), so the net starts shallow and grows into its depth.
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last_bn()

    @property
    def features(self) -> nn.Sequential:
        # A view over the existing modules (not a submodule, so state_dict keys stay torchvision's).
        return nn.Sequential(OrderedDict(
            (name, m) for name, m in self.named_children() if name not in ("avgpool", "fc")
        ))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet(_ResNetBase):
    """ImageNet ResNet (Table 1): 7x7/2 conv and 3x3/2 max-pool, four stages, 64..512 widths."""

    def __init__(self, block: Block, layers: list[int], num_classes: int = 1000, in_channels: int = 3,
                 shortcut: str | None = "B", zero_init_residual: bool = False) -> None:
        super().__init__(shortcut, zero_init_residual)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])  # conv2_x, 56x56
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)  # conv3_x, 28x28
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)  # conv4_x, 14x14
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)  # conv5_x, 7x7
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class CifarResNet(_ResNetBase):
    """CIFAR-10 ResNet (section 4.2): 3x3 conv, three stages of n basic blocks, 16/32/64 maps.

    The paper uses identity shortcuts everywhere here, option A, so the residual and plain nets
    have exactly the same parameters; ``shortcut="B"`` gives the projection variant.
    ``width`` is the first stage's number of maps (the paper's 16; stages use w, 2w, 4w): a
    narrower net keeps the depth, and so the degradation problem, at a fraction of the cost.
    """

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3,
                 shortcut: str | None = "A", zero_init_residual: bool = False, width: int = 16) -> None:
        super().__init__(shortcut, zero_init_residual)
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive integer (the paper's is 16), got {width!r}")
        self.inplanes = width
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(BasicBlock, width, n)  # 32x32
        self.layer2 = self._make_layer(BasicBlock, 2 * width, n, stride=2)  # 16x16
        self.layer3 = self._make_layer(BasicBlock, 4 * width, n, stride=2)  # 8x8
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * width, num_classes)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


# --- ImageNet ---------------------------------------------------------------------------------

_PAPER = "He, Zhang, Ren & Sun, 2015, Deep Residual Learning for Image Recognition"
_IMAGENET = dict(family="resnet", paper=_PAPER, reference="arXiv:1512.03385",
                 input_size=(3, 224, 224), num_classes=1000)
_RESNET = dict(**_IMAGENET, defaults={"shortcut": "B", "zero_init_residual": False},
               introduced="Residual learning: blocks fit F(x) and output relu(F(x) + x), so 100+ layer "
                          "nets train and get better with depth instead of worse.")
_PLAIN = dict(**_IMAGENET, defaults={},
              introduced="The paper's control: a ResNet without shortcuts. Deeper is worse "
                         "(the degradation problem, Table 2 and Fig. 4).")
_TV_MACS = "macs: torchvision's published GFLOPS (multiply-adds) at 224x224"
_V15 = ("; stride on the 3x3 conv (torchvision v1.5); the paper's v1 (stride on the first 1x1) "
        "is {} GFLOPs in Table 1.")


@register_model(**_RESNET, params=11_689_512, macs=1_810_000_000, torchvision_name="resnet18",
                notes=_TV_MACS + " (paper Table 1: 1.8 GFLOPs).")
def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, **kwargs)


@register_model(**_RESNET, params=21_797_672, macs=3_660_000_000, torchvision_name="resnet34",
                notes=_TV_MACS + " (paper Table 1: 3.6 GFLOPs).")
def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model(**_RESNET, params=25_557_032, macs=4_090_000_000, torchvision_name="resnet50",
                notes=_TV_MACS + _V15.format(3.8))
def resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model(**_RESNET, params=44_549_160, macs=7_800_000_000, torchvision_name="resnet101",
                notes=_TV_MACS + _V15.format(7.6))
def resnet101(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, **kwargs)


@register_model(**_RESNET, params=60_192_808, macs=11_510_000_000, torchvision_name="resnet152",
                notes=_TV_MACS + _V15.format(11.3))
def resnet152(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, **kwargs)


@register_model(**_PLAIN, params=11_515_688, macs=1_800_000_000,
                notes="macs: paper Table 1 (1.8 GFLOPs, multiply-adds). Keys are resnet18's minus "
                      "the downsample projections.")
def plain18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, shortcut=None, **kwargs)


@register_model(**_PLAIN, params=21_623_848, macs=3_600_000_000,
                notes="macs: paper Table 1 (3.6 GFLOPs, multiply-adds). Keys are resnet34's minus "
                      "the downsample projections.")
def plain34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, shortcut=None, **kwargs)


# --- CIFAR-10 (section 4.2, Table 6) ------------------------------------------------------------

_CIFAR = dict(family="resnet", paper=_PAPER, reference="arXiv:1512.03385",
              input_size=(3, 32, 32), num_classes=10)
_CIFAR_RESNET = dict(**_CIFAR, defaults={"shortcut": "A", "zero_init_residual": False},
                     introduced="The CIFAR-10 ResNets of section 4.2: 6n+2 layers on 16/32/64 maps "
                                "with parameter-free (option A) shortcuts.")
_CIFAR_PLAIN = dict(**_CIFAR, defaults={},
                    introduced="Section 4.2's plain control: 6n+2 layers without shortcuts; "
                               "deeper is worse (Fig. 6 left).")
_COUNTED = ("macs: the paper gives none per model; this is our exact count of conv + fc "
            "multiply-adds at 32x32 ({} M).")
_SHORTCUT_A = " Option A shortcuts add no multiply-adds; shortcut='B' adds its 1x1 projections."


@register_model(**_CIFAR_RESNET, params=269_722, macs=40_551_040,
                notes=_COUNTED.format(40.6) + _SHORTCUT_A)
def resnet20(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(3, num_classes, in_channels, **kwargs)


@register_model(**_CIFAR_RESNET, params=464_154, macs=68_862_592,
                notes=_COUNTED.format(68.9) + _SHORTCUT_A)
def resnet32(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(5, num_classes, in_channels, **kwargs)


@register_model(**_CIFAR_RESNET, params=658_586, macs=97_174_144,
                notes=_COUNTED.format(97.2) + _SHORTCUT_A)
def resnet44(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(7, num_classes, in_channels, **kwargs)


@register_model(**_CIFAR_RESNET, params=853_018, macs=125_485_696,
                notes=_COUNTED.format(125.5) + _SHORTCUT_A)
def resnet56(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(9, num_classes, in_channels, **kwargs)


@register_model(**_CIFAR_RESNET, params=1_727_962, macs=252_887_680,
                notes=_COUNTED.format(252.9) + _SHORTCUT_A)
def resnet110(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(18, num_classes, in_channels, **kwargs)


@register_model(**_CIFAR_PLAIN, params=269_722, macs=40_551_040, notes=_COUNTED.format(40.6))
def plain20(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(3, num_classes, in_channels, shortcut=None, **kwargs)


@register_model(**_CIFAR_PLAIN, params=464_154, macs=68_862_592, notes=_COUNTED.format(68.9))
def plain32(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(5, num_classes, in_channels, shortcut=None, **kwargs)


@register_model(**_CIFAR_PLAIN, params=658_586, macs=97_174_144, notes=_COUNTED.format(97.2))
def plain44(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(7, num_classes, in_channels, shortcut=None, **kwargs)


@register_model(**_CIFAR_PLAIN, params=853_018, macs=125_485_696, notes=_COUNTED.format(125.5))
def plain56(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(9, num_classes, in_channels, shortcut=None, **kwargs)


@register_model(**_CIFAR_PLAIN, params=1_727_962, macs=252_887_680, notes=_COUNTED.format(252.9))
def plain110(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ClassicNet:
    return CifarResNet(18, num_classes, in_channels, shortcut=None, **kwargs)
