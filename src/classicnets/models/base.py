"""The surface every model in the zoo shares.

A model is ``features`` (the backbone: everything up to the last layer that maps to classes)
followed by a head. ``head_name`` is the attribute path of the final, class-producing layer
(``"fc"``, ``"classifier.6"``, ...), so replacing the head or freezing the backbone is one line
for any model::

    model.reset_classifier(5)      # new, freshly initialised last layer with 5 outputs
    model.freeze_features()        # backbone parameters stop training
"""

from __future__ import annotations

import torch
from torch import nn


class ClassicNet(nn.Module):
    """Base class: subclasses define ``features``, ``forward_head`` and ``head_name``."""

    head_name: str = "classifier"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer that produces one output per class."""
        return self.get_submodule(self.head_name)

    @property
    def num_classes(self) -> int:
        head = self.get_classifier()
        if isinstance(head, nn.Linear):
            return head.out_features
        if isinstance(head, nn.Conv2d):
            return head.out_channels
        return int(head.num_classes)  # a custom head (e.g. LeNet-5's RBF) says it itself

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer by a freshly initialised one with ``num_classes`` outputs."""
        old = self.get_classifier()
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                            bias=old.bias is not None)
        else:
            raise TypeError(f"{type(self).__name__} must override reset_classifier for {type(old).__name__}")
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        parent_name, _, child = self.head_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, child, new)

    def freeze_features(self, frozen: bool = True) -> None:
        """Stop (or restart) training everything but the final layer.

        The backbone is everything before the class-producing layer, so in torchvision-style
        layouts (AlexNet, VGG) the hidden fully connected layers freeze too: ``features`` there
        is only the convolutional trunk, but the head is the last layer alone.
        """
        head = {id(p) for p in self.get_classifier().parameters()}
        for p in self.parameters():
            p.requires_grad = (not frozen) or id(p) in head
