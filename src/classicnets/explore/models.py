"""The trained models the page may use, by name: the shipped weights, and at most one checkpoint
given on the command line. The page chooses among these names; no request ever names a path.

Each is loaded the first time it is asked for (the shipped LeNets take a tenth of a second) and
used under its own lock: one forward pass at a time per model, since the views add and remove
hooks around each pass. Different models run side by side.

The residual view needs a ResNet-20 and a plain-20 on the same input. The shipped
``resnet20-fashion`` weights are used where they are installed, and ``plain20-fashion`` where
they are; otherwise the network is built untrained (He-initialised, as its builder does) for
Fashion-MNIST's images, and the page says it is untrained.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from ..checkpoint import MODEL_FILE, is_shipped, read_meta, resolve
from ..errors import ClassicNetsError
from ..models import create_model, list_models, model_card
from ..predict import Predictor
from ..predict import load as load_predictor
from ..weights import list_weights, weights_card

DEFAULT = "lenet5-digits"
RESIDUAL = ("resnet20", "plain20")
_SEED = 0  # untrained nets are He-initialised from this seed, so every start shows the same one


@dataclass
class Entry:
    """One model the page can use: where it comes from, and once loaded, its predictor."""

    name: str
    source: str  # "weights", "checkpoint" or "untrained"
    path: str | None = None  # a weights name or a checkpoint path: the server's, never the page's
    meta: dict | None = None  # for an untrained net: the metadata it is built and read by
    note: str = ""  # what the page says about it
    lock: threading.Lock = field(default_factory=threading.Lock)
    predictor: Predictor | None = None
    info: dict | None = None  # describe()'s answer, once made

    def load(self) -> Predictor:
        """The predictor, loaded on first use (the caller holds ``lock``)."""
        if self.predictor is None:
            if self.meta is not None:
                with torch.random.fork_rng(devices=[]):  # the process's own random state is left alone
                    torch.manual_seed(_SEED)
                    model = create_model(self.meta["model"], num_classes=self.meta["num_classes"],
                                         in_channels=self.meta["in_channels"])
                self.predictor = Predictor(model, self.meta)
            else:
                self.predictor = load_predictor(self.path)
        return self.predictor

    def describe(self) -> dict:
        """What the page lists: the name, the model, its data and classes (from the file's metadata,
        read once, without loading the weights)."""
        if self.info is None:
            self.info = self._describe()
        return self.info

    def _describe(self) -> dict:
        meta = self.meta if self.meta is not None else read_meta(resolve(self.path))
        info = {"name": self.name, "source": self.source, "model": meta["model"],
                "model_kwargs": meta.get("model_kwargs", {}), "dataset": meta.get("dataset"),
                "classes": meta["classes"], "input_size": meta["input_size"],
                "data_size": meta.get("data_size", meta["input_size"][1:]), "note": self.note}
        if self.source == "weights":
            info["test_accuracy"] = weights_card(self.name).get("test_accuracy")
        return info


def _checkpoint_name(path: str, taken: set[str]) -> str:
    """The name the page shows a checkpoint by: its run directory's name (or its file's)."""
    file = resolve(path)
    name = file.parent.name if file.name == MODEL_FILE else file.stem
    name = name or "checkpoint"
    return name if name not in taken else f"{name} (checkpoint)"


class Models:
    """The models by name. ``checkpoint``: shipped weights to open on, or a checkpoint path to add."""

    def __init__(self, checkpoint: str | os.PathLike | None = None) -> None:
        self.entries: dict[str, Entry] = {n: Entry(n, "weights", path=n) for n in list_weights()}
        self.default = DEFAULT if DEFAULT in self.entries else next(iter(self.entries), None)
        if checkpoint is not None:
            self._add_checkpoint(os.fspath(checkpoint))
        if self.default is None:
            raise ClassicNetsError("no trained weights are installed and no checkpoint was given: "
                                   "classicnets explore RUN_DIR opens a run of classicnets train")
        self.residual = {model: self._residual_entry(model) for model in RESIDUAL}

    def _add_checkpoint(self, given: str) -> None:
        if is_shipped(given):  # a weights name (an unknown bare name raises, listing the names)
            self.default = given
            return
        if not resolve(given).is_file():
            raise ClassicNetsError(f"{given}: no checkpoint there (expected a run directory, its "
                                   f"{MODEL_FILE}, or the name of shipped weights)")
        name = _checkpoint_name(given, set(self.entries))
        self.entries[name] = Entry(name, "checkpoint", path=str(Path(given)))
        self.default = name
        with self.entries[name].lock:
            self.entries[name].load()  # a broken checkpoint fails now, before the address is printed

    def _residual_entry(self, model: str) -> Entry:
        shipped = f"{model}-fashion"
        if shipped in self.entries:  # the same entry as in the menu: one model in memory, one lock
            self.entries[shipped].note = f"trained: the shipped {shipped} weights"
            return self.entries[shipped]
        return Entry(model, "untrained", meta=untrained_meta(model),
                     note=f"untrained: {shipped} weights are not installed, so this {model} is He-initialised "
                          f"(seed {_SEED}) and has learnt nothing")

    def get(self, name: str) -> Entry:
        """The entry called ``name``; a :class:`KeyError` for any other name."""
        if name in self.entries:
            return self.entries[name]
        raise KeyError(name)

    def describe(self) -> dict:
        return {"models": [e.describe() for e in self.entries.values()], "default": self.default,
                "residual": [e.describe() for e in self.residual.values()], "zoo": list_models()}


@lru_cache(maxsize=1)
def example_image():
    """The first digit of the embedded test split (a 1): the residual view's input before anything is
    drawn, and the warm-up's."""
    from PIL import Image

    from ..data.sources import load_split

    return Image.fromarray(load_split("digits", None, "test", size=(28, 28), channels=1).images[0, 0].numpy())



def untrained_meta(model: str, dataset: str = "fashion-mnist") -> dict:
    """The metadata ``classicnets train MODEL --dataset DATASET`` would write, for a net built
    untrained: the dataset's classes, channels, mean and std, at the model's native input size."""
    from ..data.datasets import dataset_info

    info = dataset_info(dataset)
    return {"model": model, "model_kwargs": {}, "num_classes": len(info.classes), "classes": list(info.classes),
            "in_channels": info.channels, "input_size": [info.channels, *model_card(model).input_size[1:]],
            "data_size": list(info.size), "mean": list(info.mean), "std": list(info.std), "dataset": dataset}
