"""The model registry: tables only.

A builder function registers itself with :func:`register_model`, passing its *model card*:
the facts about the model as data (paper, native input size, published parameter count and
multiply-adds, what the design introduced). This module imports no model: each family imports
it, and ``classicnets.models`` imports the families and offers :func:`~classicnets.models.create_model`,
the single way in, so nothing imports in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from torch import nn


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


BUILDERS: dict[str, Callable[..., nn.Module]] = {}
CARDS: dict[str, ModelCard] = {}


def register_model(**card_fields) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes=..., in_channels=..., **kwargs)``.

    The builder's function name is the model's name; ``card_fields`` are the :class:`ModelCard`
    fields other than ``name``.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        BUILDERS[name] = fn
        CARDS[name] = ModelCard(name=name, **card_fields)
        return fn

    return decorate
