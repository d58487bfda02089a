"""The model registry: every architecture is one name away.

A builder function registers itself with :func:`register_model`, passing its *model card*:
the facts about the model as data (paper, native input size, published parameter count and
multiply-adds, what the design introduced). :func:`create_model` is the single way in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from torch import nn

from .errors import UnknownModelError


@dataclass(frozen=True)
class ModelCard:
    """What is known about a model before it is built."""

    name: str
    family: str
    paper: str  # authors, year, title
    reference: str  # arXiv id or DOI
    input_size: tuple[int, int, int]  # native input, (C, H, W)
    num_classes: int  # classes of the default head
    params: int  # exact trainable parameter count of the default model
    macs: int | None  # multiply-adds for one image at input_size (None: not published)
    introduced: str  # what the design brought, in a line or two
    torchvision_name: str | None = None  # state_dict-compatible torchvision model, if any
    notes: str = ""
    defaults: dict = field(default_factory=dict)  # builder defaults shown in the card

    def as_dict(self) -> dict:
        return asdict(self)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CARDS: dict[str, ModelCard] = {}


def register_model(**card_fields) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes=..., in_channels=..., **kwargs)``.

    The builder's function name is the model's name; ``card_fields`` are the :class:`ModelCard`
    fields other than ``name``.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = fn
        _CARDS[name] = ModelCard(name=name, **card_fields)
        return fn

    return decorate


def _ensure_loaded() -> None:
    # Importing the models package runs every @register_model decorator.
    from . import models  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style ``pattern`` (e.g. ``"resnet*"``)."""
    _ensure_loaded()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def _lookup(name: str) -> str:
    _ensure_loaded()
    if name not in _BUILDERS:
        close = [n for n in _BUILDERS if n.startswith(name.rstrip("0123456789_")[:3])]
        hint = f"; similar: {', '.join(sorted(close))}" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}: expected one of classicnets.list_models(){hint}"
        )
    return name


def model_card(name: str) -> ModelCard:
    """The :class:`ModelCard` of a registered model."""
    return _CARDS[_lookup(name)]


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
    return _BUILDERS[name](
        num_classes=card.num_classes if num_classes is None else num_classes,
        in_channels=card.input_size[0] if in_channels is None else in_channels,
        **kwargs,
    )
