"""The model zoo: one module per family, each registering its builders by name in
:mod:`~classicnets.models.registry`. Importing this package imports every family, so the tables
are full by the time :func:`create_model`, :func:`list_models` or :func:`model_card` reads them.
"""

from __future__ import annotations

import fnmatch
import json

from torch import nn

from ..errors import UnknownModelError
from ..weights import weights_for
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
    name: str, num_classes: int | None = None, in_channels: int | None = None, *, weights: str | None = None,
    **kwargs
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_channels`` default to the model card's (the paper's) values.
    Extra keyword arguments go to the builder (e.g. ``shortcut="B"`` for CIFAR ResNets).
    ``weights`` loads shipped weights (:mod:`classicnets.weights`): ``create_model("lenet5",
    weights="digits")``; the model then takes their classes and channels (for another number of
    classes, call ``reset_classifier(k)`` on it).
    """
    card = model_card(name)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if in_channels is not None and (not isinstance(in_channels, int) or in_channels < 1):
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if weights is not None:
        return _with_weights(name, weights, num_classes, in_channels, kwargs)
    return BUILDERS[name](
        num_classes=card.num_classes if num_classes is None else num_classes,
        in_channels=card.input_size[0] if in_channels is None else in_channels,
        **kwargs,
    )


def _with_weights(name: str, weights: str, num_classes, in_channels, kwargs: dict) -> nn.Module:
    """``name`` built as the shipped weights were trained, with them loaded."""
    from safetensors import safe_open

    path = weights_for(name, weights)
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["classicnets"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    given = dict(num_classes=num_classes, in_channels=in_channels, **kwargs)
    trained = dict(num_classes=meta["num_classes"], in_channels=meta["in_channels"], **meta.get("model_kwargs", {}))
    clash = [f"{k}={v!r} (they have {trained.get(k)!r})" for k, v in given.items()
             if v is not None and v != trained.get(k)]
    if clash:
        raise ValueError(f"weights {path.stem!r} were trained otherwise: {', '.join(clash)}; build with their "
                         f"settings, then e.g. reset_classifier(k) for another number of classes")
    model = BUILDERS[name](**trained)
    model.load_state_dict(state, strict=True)
    return model


__all__ = ["ClassicNet", "ModelCard", "create_model", "list_models", "model_card", "register_model"]
