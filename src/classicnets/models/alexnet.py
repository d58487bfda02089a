"""AlexNet, in its two forms.

* ``alexnet_2012``: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
  Convolutional Neural Networks", NeurIPS 2012, as published (section 3, Fig. 2): 96-256-384-
  384-256 kernels, the two-GPU split kept as grouped convolutions, local response
  normalisation, overlapping pooling, dropout in the two hidden FC layers. 60,965,224 params.
* ``alexnet``: torchvision's single-tower variant (64-192-384-256-256 kernels, no LRN, no
  groups), from Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
  networks" (arXiv:1404.5997). Module names match torchvision's, so its ``state_dict`` loads
  as is. 61,100,840 params.

Layers of the 2012 network (section 3.5), for a 227x227 input:

    layer  kernels  size/stride  groups  output      then
    conv1    96     11x11 / 4      1     96x55x55    ReLU, LRN, max pool 3/2
    conv2   256      5x5  / 1      2    256x27x27    ReLU, LRN, max pool 3/2
    conv3   384      3x3  / 1      1    384x13x13    ReLU
    conv4   384      3x3  / 1      2    384x13x13    ReLU
    conv5   256      3x3  / 1      2    256x13x13    ReLU, max pool 3/2 -> 256x6x6
    fc6    4096                                      ReLU, dropout 0.5
    fc7    4096                                      ReLU, dropout 0.5
    fc8    1000
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import ClassicNet
from .registry import register_model

# --------------------------------------------------------------------------------------------
# torchvision's AlexNet
# --------------------------------------------------------------------------------------------


class AlexNet(ClassicNet):
    """torchvision's ``alexnet``: same modules, same order, same names, same default init."""

    head_name = "classifier.6"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),  # 0
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        # Makes any input size >= 63x63 work; the identity at 224x224 (the map is 6x6 already).
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),  # 1
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),  # 4
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),  # 6
        )

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# The 2012 paper's AlexNet
# --------------------------------------------------------------------------------------------

# Section 3.3: b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, with k = 2, n = 5,
# alpha = 1e-4, beta = 0.75. torch's LocalResponseNorm computes
# a_i / (k + alpha/n * sum_j a_j^2)^beta (it averages the squares over the window rather than
# summing them), so the paper's coefficient needs alpha_torch = n * alpha_paper = 5e-4.
# (Caveat: cuda-convnet, the authors' code, also divides its configured `scale` by the window
# size; if the paper's 1e-4 was that configured value, the trained network used 1e-4 / 5. We
# follow the formula as printed in the paper.)
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


class AlexNet2012(ClassicNet):
    """AlexNet as in Fig. 2 of the paper, the two GPUs' towers kept as ``groups=2``.

    conv1 and conv3 take all their input maps (conv1 sees the whole image on both GPUs; conv3's
    kernels connect to all the kernel maps of conv2), so they are ordinary convolutions; conv2,
    conv4 and conv5 see only the maps on their own GPU (sections 3.2 and 3.5).
    """

    head_name = "classifier.fc8"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, kernel_size=11, stride=4)),  # 227 -> 55
            ("relu1", nn.ReLU(inplace=True)),
            ("norm1", _lrn()),  # LRN follows the ReLU (section 3.3) ...
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),  # ... and precedes the pool (3.5)
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),  # 27
            ("relu2", nn.ReLU(inplace=True)),
            ("norm2", _lrn()),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),  # overlapping: z=3 > s=2 (3.4)
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),  # 13
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),  # 13 -> 6
        ]))
        # Dropout zeroes the output of each hidden neuron with probability 0.5, in the first two
        # fully connected layers (section 4.2): after fc6 and fc7, not before them as in
        # torchvision's layout.
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(p=dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(p=dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7 (to give
        the ReLUs positive inputs early on), 0 in the other layers."""
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for name, m in [*self.features.named_children(), *self.classifier.named_children()]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.constant_(m.bias, 1.0 if name in ones else 0.0)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # No adaptive pooling (torchvision's addition): fc6 sees exactly the 6x6 pool5 maps.
        if x.shape[-2:] != (6, 6):
            raise ValueError(
                "alexnet_2012 takes 227x227 images (the paper's '224x224' does not give its 55x55 "
                f"conv1 maps); its last feature map must be 6x6, got {tuple(x.shape[-2:])}"
            )
        return self.classifier(torch.flatten(x, 1))

    def reset_classifier(self, num_classes: int) -> None:
        """A new fc8, initialised as the paper's: N(0, 0.01) weights, zero bias."""
        super().reset_classifier(num_classes)
        head = self.get_classifier()
        with torch.no_grad():
            nn.init.normal_(head.weight, mean=0.0, std=0.01)
            nn.init.zeros_(head.bias)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


@register_model(
    family="alexnet",
    paper="Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks",
    reference="arXiv:1404.5997",
    input_size=(3, 224, 224),
    num_classes=1000,
    params=61_100_840,
    macs=714_000_000,
    introduced="Data parallelism for the convolutional layers, model parallelism for the fully "
               "connected ones; this single-tower AlexNet (64-192-384-256-256 kernels, no LRN, "
               "no groups) is torchvision's.",
    torchvision_name="alexnet",
    notes="state_dict-compatible with torchvision.models.alexnet. macs is torchvision's published "
          "0.714 G ('GFLOPS', counted as multiply-adds); our exact conv+linear count is 714,188,480.",
    defaults={"dropout": 0.5},
)
def alexnet(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    """torchvision's AlexNet (the 2014 "one weird trick" variant)."""
    return AlexNet(num_classes, in_channels, **kwargs)


@register_model(
    family="alexnet",
    paper="Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep Convolutional "
          "Neural Networks (NeurIPS 2012)",
    reference="doi:10.1145/3065386",
    input_size=(3, 227, 227),
    num_classes=1000,
    params=60_965_224,
    macs=724_406_816,
    introduced="ReLU, local response normalisation, overlapping pooling, dropout; two-GPU "
               "training, kept here as grouped convolutions (conv2, conv4, conv5).",
    torchvision_name=None,
    notes="As published (section 3, Fig. 2, section 5 initialisation). The paper publishes no "
          "multiply-add count: macs is our exact conv+linear count at 227x227. The input is "
          "227x227 (the paper's text says 224x224, which does not give 55x55 conv1 maps). "
          "LRN alpha is 5e-4 in torch's convention, the paper's 1e-4 without torch's 1/n. "
          "reference is the CACM 2017 reprint; the NeurIPS 2012 paper has no DOI.",
    defaults={"dropout": 0.5},
)
def alexnet_2012(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ClassicNet:
    """AlexNet exactly as in Krizhevsky, Sutskever & Hinton 2012."""
    return AlexNet2012(num_classes, in_channels, **kwargs)
