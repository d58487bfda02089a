"""The model zoo: one module per family, each registering its builders by name in
:mod:`~classicnets.models.registry`. Importing this package imports every family, so the tables
are full by the time :func:`create_model`, :func:`list_models` or :func:`model_card` reads them.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from ..errors import UnknownModelError
from . import alexnet, lenet, nin, resnet, vgg  # noqa: F401  (imported for registration)
from .base import ClassicNet
from .registry import BUILDERS, CARDS, ModelCard, register_model


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style ``pattern`` (e.g. ``"resnet*"``)."""
    return sorted(n for n in BUILDERS if fnmatch.fnmatchcase(n, pattern))


def _lookup(name: str) -> str:
    if name not in BUILDERS:
        close = [n for n in BUILDERS if n.startswith(name.rstrip("0123456789_")[:3])]
        hint = f"; similar: {', '.join(sorted(close))}" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}: expected one of classicnets.list_models(){hint}"
        )
    return name


def model_card(name: str) -> ModelCard:
    """The :class:`ModelCard` of a registered model."""
    return CARDS[_lookup(name)]


def create_model(
    name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_channels`` default to the model card's (the paper's) values.
    Extra keyword arguments go to the builder (e.g. ``shortcut="B"`` for CIFAR ResNets).
    """
    card = model_card(name)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if in_channels is not None and (not isinstance(in_channels, int) or in_channels < 1):
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    return BUILDERS[name](
        num_classes=card.num_classes if num_classes is None else num_classes,
        in_channels=card.input_size[0] if in_channels is None else in_channels,
        **kwargs,
    )


__all__ = ["ClassicNet", "ModelCard", "create_model", "list_models", "model_card", "register_model"]
