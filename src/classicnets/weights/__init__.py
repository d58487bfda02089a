"""Trained weights in the box: a learner can predict before training anything.

Each set of weights is two files in this folder: ``NAME.safetensors``, a checkpoint exactly as
``classicnets train`` writes its ``model.safetensors`` (the weights, and in its header everything
needed to rebuild the model and read inputs as in training), and ``NAME.json``, its card: the
dataset, the command that reproduces it (``scripts/train_weights.py``), its test accuracy, the
training seconds, the machine and torch version, and the file's SHA-256.

A weights name works wherever a checkpoint path does (``classicnets.load("lenet5-digits")``,
``classicnets predict lenet5-digits img.png``, ``evaluate``, ``show``, ``export``,
``train --init-from``): :func:`classicnets.checkpoint.resolve` asks here when the path does not
exist. An existing path always wins over a name. This module reads files only; it imports no
other part of the package but its errors, so models and checkpoints can both use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CheckpointError

FOLDER = Path(__file__).resolve().parent


class UnknownWeightsError(CheckpointError):
    """A name that is neither an existing path nor shipped weights."""


def list_weights() -> list[str]:
    """The names of the shipped weights, e.g. ``["lenet5-digits", ...]``."""
    return sorted(p.stem for p in FOLDER.glob("*.json") if (FOLDER / f"{p.stem}.safetensors").is_file())


def weights_card(name: str) -> dict:
    """The card of shipped weights: dataset, command, test accuracy, seconds, machine, SHA-256."""
    return json.loads(_path(name, ".json").read_text())


def weights_file(name: str) -> Path:
    """The checkpoint file of shipped weights."""
    return _path(name, ".safetensors")


def looks_like_a_name(text: str | os.PathLike) -> bool:
    """Whether ``text`` could name shipped weights: no folder and no file suffix (``runs/x`` and
    ``model.safetensors`` are paths, whatever exists)."""
    text = os.fspath(text)
    return bool(text) and os.sep not in text and "/" not in text and not Path(text).suffix


def weights_for(model: str, weights: str) -> Path:
    """``create_model(model, weights=...)``: ``"digits"`` means ``"{model}-digits"``; a full name
    must belong to ``model``."""
    name = weights if weights.startswith(f"{model}-") else f"{model}-{weights}"
    if name not in list_weights():
        mine = [n[len(model) + 1:] for n in list_weights() if n.rsplit("-", 1)[0] == model]
        raise UnknownWeightsError(f"weights={weights!r}: {model} has "
                                  f"{'weights ' + ', '.join(repr(m) for m in mine) if mine else 'no shipped weights'}"
                                  f" (all: {', '.join(list_weights())})")
    return weights_file(name)


def _path(name: str, suffix: str) -> Path:
    if name not in list_weights():
        raise UnknownWeightsError(f"{name!r} is neither an existing checkpoint path nor shipped weights; the "
                                  f"weights are {', '.join(list_weights())} (classicnets weights lists them)")
    return FOLDER / f"{name}{suffix}"
